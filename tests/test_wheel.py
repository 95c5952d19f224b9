"""The package installs with its pretrained checkpoint from a built wheel.

Builds the wheel from a copy of the repository's packaging files (so the
checkout gets no build/ folder; no dependencies and no build isolation, so no
network), installs it with ``pip install --target`` into a fresh folder,
then, from a working directory outside the repository, imports slmbook from
that folder only and loads ``slmbook.checkpoints.pretrained()``: the
checkpoint must come from the installed package data, not the source tree.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

CHECK = """
import importlib.resources, json, sys
import slmbook
from slmbook.checkpoints import pretrained
site = sys.argv[1]
assert slmbook.__file__.startswith(site), slmbook.__file__
asset = importlib.resources.files("slmbook") / "assets" / "pretrained.pt"
assert str(asset).startswith(site), str(asset)
model, tokenizer = pretrained()
print(json.dumps({"module": slmbook.__file__, "asset": str(asset),
                  "vocab_size": tokenizer.vocab_size, "class": type(model).__name__}))
"""


def _run(args: list[str], **kw) -> subprocess.CompletedProcess:
    result = subprocess.run(args, capture_output=True, text=True, timeout=300, **kw)
    assert result.returncode == 0, f"{args} failed:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.mark.slow
def test_wheel_ships_pretrained_checkpoint(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(ROOT / "slmbook", src / "slmbook",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (ROOT / name).is_file():
            shutil.copy(ROOT / name, src / name)
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation",
          "--no-cache-dir", "-q", "-w", str(dist)])
    (wheel,) = dist.glob("slmbook-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "slmbook/assets/pretrained.pt" in names and "slmbook/assets/pretrained.json" in names

    site = tmp_path / "site"
    _run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-cache-dir", "-q",
          "--target", str(site), str(wheel)])
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "OMP_NUM_THREADS": "1"}
    out = _run([sys.executable, "-c", CHECK, str(site)], cwd=workdir, env=env)
    assert '"class": "GPT"' in out.stdout, out.stdout
