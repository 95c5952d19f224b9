"""The setup cell that lets every chapter run on Colab and Binder.

A chapter launched on Colab starts in an environment without slmbook, so its
first import would fail. Every notebook therefore starts (as its first code
cell) with a short setup cell, hidden on the page (tag ``remove-input``): where
``slmbook`` is importable (the book's own build, Binder, a reader's clone with
``requirements.txt`` installed) it does nothing; elsewhere it runs::

    python -m pip install "slmbook @ git+<repository url>"

with the URL taken from ``repository.url`` in ``_config.yml``, the one place
the repository is named.

Usage, from the repository root::

    python scripts/setup_cell.py            # print the cell's source
    python scripts/setup_cell.py --check    # exit 1 if a notebook lacks the current cell
    python scripts/setup_cell.py --apply    # insert or update it in every book/*.ipynb

``--apply`` is idempotent: a notebook whose first code cell is already the
setup cell gets it updated in place (source, tags, id), any other notebook
gets it inserted just before its first code cell. Notebooks are written back
in Jupyter's own JSON layout (one-space indent, sorted keys), so the diff is
the cell alone.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
MARKER = "# slmbook setup (Colab, Binder)"
CELL_ID = "slmbook-setup"
TAGS = ["remove-input"]


def repository_url(config: Path = ROOT / "_config.yml") -> str:
    """Return ``repository.url`` from the book's ``_config.yml``.

    Raises ``ValueError`` when the setting is missing or not an https URL.
    """
    data = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
    url = (data.get("repository") or {}).get("url")
    if not isinstance(url, str) or not url.startswith("https://"):
        raise ValueError(f"{config}: repository.url must be an https URL, got {url!r}")
    return url.rstrip("/")


def install_requirement(url: str) -> str:
    """The pip requirement that installs slmbook from the repository at ``url``."""
    return f"slmbook @ git+{url}"


def cell_source(url: str) -> str:
    """The source of the setup cell for the repository at ``url``."""
    return (
        f"{MARKER}: installs slmbook only where it is missing.\n"
        "import importlib\n"
        "import importlib.util\n"
        "import subprocess\n"
        "import sys\n"
        "\n"
        'if importlib.util.find_spec("slmbook") is None:\n'
        "    subprocess.check_call([sys.executable, \"-m\", \"pip\", \"install\", \"-q\",\n"
        f"                           {json.dumps(install_requirement(url))}])\n"
        "    importlib.invalidate_caches()"
    )


def make_cell(url: str) -> dict:
    """The setup cell as an nbformat 4.5 code cell (no outputs)."""
    return {
        "cell_type": "code",
        "execution_count": None,
        "id": CELL_ID,
        "metadata": {"tags": list(TAGS)},
        "outputs": [],
        "source": cell_source(url).splitlines(keepends=True),
    }


def _is_setup_cell(cell: dict) -> bool:
    source = "".join(cell.get("source", ""))
    return cell.get("cell_type") == "code" and source.startswith(MARKER)


def has_current_cell(nb: dict, url: str) -> bool:
    """True when the first code cell of ``nb`` is exactly the current setup cell."""
    code = [c for c in nb.get("cells", []) if c.get("cell_type") == "code"]
    if not code:
        return False
    first, want = code[0], make_cell(url)
    return ("".join(first.get("source", "")) == cell_source(url)
            and first.get("metadata", {}).get("tags") == want["metadata"]["tags"])


def apply_to(nb: dict, url: str) -> dict:
    """Return ``nb`` with the current setup cell as its first code cell."""
    cells = [c for c in nb.get("cells", []) if not _is_setup_cell(c)]
    first_code = next((i for i, c in enumerate(cells) if c.get("cell_type") == "code"),
                      len(cells))
    cells.insert(first_code, make_cell(url))
    return {**nb, "cells": cells}


def _dump(nb: dict) -> str:
    return json.dumps(nb, indent=1, ensure_ascii=False, sort_keys=True) + "\n"


def notebooks(book: Path = ROOT / "book") -> list[Path]:
    """The book's chapter notebooks, in order."""
    return sorted(book.glob("*.ipynb"))


def missing(url: str, paths: list[Path]) -> list[Path]:
    """The notebooks among ``paths`` whose first code cell is not the current setup cell."""
    return [p for p in paths
            if not has_current_cell(json.loads(p.read_text(encoding="utf-8")), url)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--apply", action="store_true",
                       help="insert or update the cell in every book/*.ipynb")
    group.add_argument("--check", action="store_true",
                       help="exit 1 if a notebook lacks the current cell")
    parser.add_argument("--config", type=Path, default=ROOT / "_config.yml")
    parser.add_argument("--book", type=Path, default=ROOT / "book")
    args = parser.parse_args(argv)
    url = repository_url(args.config)
    paths = notebooks(args.book)
    if args.check:
        bad = missing(url, paths)
        for path in bad:
            print(f"{path}: first code cell is not the current setup cell "
                  "(run python scripts/setup_cell.py --apply)", file=sys.stderr)
        return 1 if bad else 0
    if args.apply:
        for path in paths:
            text = path.read_text(encoding="utf-8")
            new = _dump(apply_to(json.loads(text), url))
            if new != text:
                path.write_text(new, encoding="utf-8")
                print(f"updated {path}")
        return 0
    print(cell_source(url))
    return 0


if __name__ == "__main__":
    sys.exit(main())
