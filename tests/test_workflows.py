"""The GitHub workflows, the release check and the version, without the network.

Covers: actionlint accepts every workflow; ``ci.yml`` runs ``.ci/run`` with
``CI=true``; ``pages.yml`` builds with the README's own build command and
deploys ``_build/html`` with the official Pages actions and the permissions
they need; ``release.yml`` builds, runs ``twine check`` through
``scripts/check_dist.py`` and publishes only on tags; ``.ci/run`` runs the
browser test of the built site and the release check as steps of their own;
the version is the same in ``pyproject.toml``, ``slmbook.__version__`` and
``CHANGELOG.md``; ``scripts/check_dist.py`` notices a wheel or sdist without
an asset.
"""

from __future__ import annotations

import importlib.util
import io
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = ROOT / ".github" / "workflows"
spec = importlib.util.spec_from_file_location("check_dist", ROOT / "scripts" / "check_dist.py")
check_dist = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check_dist)


def _load(name: str) -> dict:
    data = yaml.safe_load((WORKFLOWS / name).read_text(encoding="utf-8"))
    data["on"] = data.pop(True, data.get("on"))  # YAML 1.1 reads the key `on` as True
    return data


def _steps(job: dict) -> list[dict]:
    return job["steps"]


def _uses(job: dict) -> list[str]:
    return [step["uses"].split("@")[0] for step in _steps(job) if "uses" in step]


def _runs(job: dict) -> str:
    return "\n".join(step.get("run", "") for step in _steps(job))


def _readme_command(heading: str) -> str:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    return lines[lines.index(heading) + 1] if heading in lines else next(
        lines[i + 1] for i, line in enumerate(lines) if line.startswith(heading))


def _actionlint() -> str | None:
    local = Path(sys.executable).parent / "actionlint"
    return str(local) if local.is_file() else shutil.which("actionlint")


def test_actionlint_accepts_every_workflow():
    exe = _actionlint()
    if exe is None:
        if os.environ.get("CI") == "true":
            pytest.fail("actionlint is missing: pip install -r requirements.txt")
        pytest.skip("actionlint not installed (pip install -r requirements.txt)")
    files = sorted(str(p) for p in WORKFLOWS.glob("*.yml"))
    assert len(files) == 3
    result = subprocess.run([exe, "-no-color", *files], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ci_workflow_runs_ci_run():
    wf = _load("ci.yml")
    assert {"push", "pull_request"} <= set(wf["on"])
    (job,) = wf["jobs"].values()
    (step,) = [s for s in _steps(job) if "run" in s]
    assert step["run"] == "bash .ci/run" and step["env"]["CI"] == "true"
    assert _uses(job)[:2] == ["actions/checkout", "actions/setup-python"]
    assert wf["permissions"] == {"contents": "read"}


def test_pages_workflow_builds_with_the_readme_command_and_deploys_the_html():
    wf = _load("pages.yml")
    assert wf["permissions"]["pages"] == "write" and wf["permissions"]["id-token"] == "write"
    build, deploy = wf["jobs"]["build"], wf["jobs"]["deploy"]
    assert _readme_command("# Build the book") in _runs(build)
    assert _uses(build) == ["actions/checkout", "actions/setup-python",
                            "actions/configure-pages", "actions/upload-pages-artifact"]
    upload = next(s for s in _steps(build) if "upload-pages-artifact" in s.get("uses", ""))
    assert upload["with"]["path"] == "_build/html"
    assert deploy["needs"] == "build" and deploy["environment"]["name"] == "github-pages"
    assert _uses(deploy) == ["actions/deploy-pages"]


def test_release_workflow_builds_checks_and_publishes_only_tags():
    wf = _load("release.yml")
    assert wf["on"]["push"]["tags"] == ["v*"]
    dist, release = wf["jobs"]["dist"], wf["jobs"]["github-release"]
    runs = _runs(dist)
    assert "python -m build --sdist --wheel" in runs
    assert "python scripts/check_dist.py dist/*" in runs
    assert release["needs"] == "dist" and "refs/tags/" in release["if"]
    assert release["permissions"] == {"contents": "write"}


def test_ci_run_runs_the_browser_test_and_the_release_check_after_the_build():
    script = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    build = script.index('eval "$build_cmd"')
    site = script.index("-m pytest tests/site")
    dist = script.index("scripts/check_dist.py")
    assert build < site and build < dist


def test_the_version_is_the_same_everywhere():
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    version = check_dist.package_version()
    assert re.fullmatch(r"\d+\.\d+\.\d+", version)
    declared = re.search(r'^version = "([^"]+)"', pyproject, re.M)
    if declared is not None:  # otherwise it is dynamic, read from slmbook.__version__
        assert declared.group(1) == version
    assert check_dist.changelog_version() == version


def _fake_dist(tmp_path: Path, members: list[str]) -> tuple[Path, Path]:
    wheel = tmp_path / "slmbook-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for name in members:
            zf.writestr(name, b"x")
    sdist = tmp_path / "slmbook-0.1.0.tar.gz"
    with tarfile.open(sdist, "w:gz") as tf:
        for name in members:
            info = tarfile.TarInfo(f"slmbook-0.1.0/{name}")
            info.size = 1
            tf.addfile(info, io.BytesIO(b"x"))
    return wheel, sdist


def test_check_dist_notices_a_missing_asset_and_a_wrong_version(tmp_path):
    assets = ["slmbook/assets/pretrained.pt", "slmbook/assets/reader.pt"]
    wheel, sdist = _fake_dist(tmp_path, ["slmbook/__init__.py", assets[0]])
    found = check_dist.problems(wheel, sdist, assets, "0.1.0")
    assert found == [f"{wheel.name}: lacks {assets[1]}", f"{sdist.name}: lacks {assets[1]}"]
    wheel, sdist = _fake_dist(tmp_path, ["slmbook/__init__.py", *assets])
    assert check_dist.problems(wheel, sdist, assets, "0.1.0") == []
    assert len(check_dist.problems(wheel, sdist, assets, "0.2.0")) == 2


def test_committed_assets_include_the_pretrained_model():
    assert "slmbook/assets/pretrained.pt" in check_dist.committed_assets()
