"""The Colab/Binder setup cell (scripts/setup_cell.py), without the network.

Covers: the URL comes from ``_config.yml``'s one repository setting; the cell
does nothing where slmbook is importable; where it is not, it runs exactly
``python -m pip install -q "slmbook @ git+<url>"`` (``subprocess.check_call``
is replaced by a recorder, so nothing is installed); ``--apply`` inserts the
cell before the first code cell, keeps everything else, and is idempotent;
``--check`` reports notebooks without the current cell.

Whether every chapter already carries the cell is checked by
``test_every_chapter_starts_with_the_setup_cell``, which is enforced once the
cell has been applied to the book (``ENFORCE`` below) or when the variable
``SLMBOOK_CHECK_SETUP_CELL=1`` is set.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("setup_cell", ROOT / "scripts" / "setup_cell.py")
setup_cell = importlib.util.module_from_spec(spec)
spec.loader.exec_module(setup_cell)

# Set to True once `python scripts/setup_cell.py --apply` has been run on book/.
ENFORCE = True
URL = "https://example.org/someone/slmbook"


def _run_cell(monkeypatch, *, importable: bool) -> list[list[str]]:
    calls: list[list[str]] = []
    real_find_spec = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        if name == "slmbook":
            return real_find_spec(name) if importable else None
        return real_find_spec(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    monkeypatch.setattr(subprocess, "check_call", lambda args, **kw: calls.append(list(args)))
    exec(compile(setup_cell.cell_source(URL), "<setup cell>", "exec"), {})
    return calls


def test_repository_url_is_read_from_config(tmp_path):
    assert setup_cell.repository_url() == "https://github.com/slmbook/slmbook"
    config = tmp_path / "_config.yml"
    config.write_text("repository:\n  url: https://example.org/a/b/\n", encoding="utf-8")
    assert setup_cell.repository_url(config) == "https://example.org/a/b"


def test_missing_repository_url_is_an_error(tmp_path):
    config = tmp_path / "_config.yml"
    config.write_text("title: x\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"repository\.url must be an https URL"):
        setup_cell.repository_url(config)


def test_cell_is_a_no_op_where_slmbook_is_importable(monkeypatch):
    assert _run_cell(monkeypatch, importable=True) == []


def test_cell_installs_from_the_repository_where_slmbook_is_missing(monkeypatch):
    calls = _run_cell(monkeypatch, importable=False)
    assert calls == [[sys.executable, "-m", "pip", "install", "-q",
                      f"slmbook @ git+{URL}"]]


def test_cell_source_is_valid_python_that_ruff_would_accept():
    source = setup_cell.cell_source(URL)
    compile(source, "<setup cell>", "exec")
    assert source.startswith(setup_cell.MARKER)
    assert all(len(line) <= 100 for line in source.splitlines())


def _notebook(*cells: dict) -> dict:
    return {"cells": list(cells), "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


def _md(text: str, cid: str) -> dict:
    return {"cell_type": "markdown", "id": cid, "metadata": {}, "source": [text]}


def _code(text: str, cid: str) -> dict:
    return {"cell_type": "code", "execution_count": None, "id": cid, "metadata": {},
            "outputs": [], "source": [text]}


def test_apply_inserts_before_the_first_code_cell_and_is_idempotent(tmp_path):
    book = tmp_path / "book"
    book.mkdir()
    config = tmp_path / "_config.yml"
    config.write_text(f"repository:\n  url: {URL}\n", encoding="utf-8")
    nb = _notebook(_md("# 1. Title", "a"), _code("import slmbook", "b"), _md("text", "c"))
    path = book / "01_x.ipynb"
    path.write_text(json.dumps(nb, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    args = ["--config", str(config), "--book", str(book)]

    assert setup_cell.main([*args, "--check"]) == 1
    assert setup_cell.main([*args, "--apply"]) == 0
    after = json.loads(path.read_text(encoding="utf-8"))
    assert [c["id"] for c in after["cells"]] == ["a", setup_cell.CELL_ID, "b", "c"]
    assert after["cells"][1]["metadata"]["tags"] == ["remove-input"]
    assert setup_cell.has_current_cell(after, URL)
    assert setup_cell.main([*args, "--check"]) == 0

    once = path.read_text(encoding="utf-8")
    assert setup_cell.main([*args, "--apply"]) == 0
    assert path.read_text(encoding="utf-8") == once

    config.write_text("repository:\n  url: https://example.org/moved/slmbook\n",
                      encoding="utf-8")
    assert setup_cell.main([*args, "--check"]) == 1
    setup_cell.main([*args, "--apply"])
    moved = json.loads(path.read_text(encoding="utf-8"))
    assert [c["id"] for c in moved["cells"]] == ["a", setup_cell.CELL_ID, "b", "c"]
    assert "git+https://example.org/moved/slmbook" in "".join(moved["cells"][1]["source"])


def test_every_chapter_starts_with_the_setup_cell():
    if not (ENFORCE or os.environ.get("SLMBOOK_CHECK_SETUP_CELL") == "1"):
        return  # not applied to the book yet: see ENFORCE above
    url = setup_cell.repository_url()
    bad = setup_cell.missing(url, setup_cell.notebooks())
    assert not bad, f"run python scripts/setup_cell.py --apply: {[p.name for p in bad]}"
