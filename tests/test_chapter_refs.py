"""Every docstring's "See chapter N, ..." names a chapter that exists, with its title.

Covers: each reference of the form ``chapter N, "Title" (book/NN_name.ipynb)``
in slmbook's sources names a notebook that exists, whose number is ``N`` and
whose first heading is ``# N. Title``; a ``(book/...ipynb)`` link outside that
form, or a "See chapter N" without the title, is an error too.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path

import pytest

import slmbook

ROOT = Path(slmbook.__file__).parent.parent
MODULES = sorted(p.name for p in (ROOT / "slmbook").glob("*.py"))
REFERENCE = re.compile(
    r'(?:[Cc]hapter|[Aa]ppendix) (\d+|[A-Z]), "([^"]+)" \(book/((\d\d|[A-Z])_[a-z0-9_]+)\.ipynb\)')
LINK = re.compile(r"\(book/[^)\s]*\.ipynb\)")
TITLED = re.compile(r'(?:[Cc]hapter \d+|[Aa]ppendix [A-Z]), "[^"]+"')
BARE = re.compile(r"\bSee (?:chapter \d+(?!\d|, \")|appendix [A-Z](?![\w,]))")


@cache
def heading(notebook: str) -> str | None:
    """The first markdown heading of ``book/<notebook>.ipynb``, or ``None`` if there is none."""
    path = ROOT / "book" / f"{notebook}.ipynb"
    if not path.exists():
        return None
    for cell in json.loads(path.read_text("utf-8"))["cells"]:
        if cell["cell_type"] == "markdown":
            for line in "".join(cell["source"]).splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return None


def references(text: str) -> list[tuple[str, str, str, str]]:
    return REFERENCE.findall(" ".join(text.split()))


def problems(text: str) -> list[str]:
    text = " ".join(text.replace("#", " ").split())  # references wrap over lines and comments
    out = []
    for number, title, notebook, nn in REFERENCE.findall(text):
        found = heading(notebook)
        if nn != number and not (nn.isdigit() and number.isdigit() and int(nn) == int(number)):
            out.append(f"chapter {number} points to book/{notebook}.ipynb")
        elif found is None:
            out.append(f"book/{notebook}.ipynb does not exist (or has no '# ' heading)")
        elif found != f"{number}. {title}":
            out.append(f'chapter {number}, "{title}": the notebook\'s heading is "{found}"')
    if len(TITLED.findall(text)) != len(REFERENCE.findall(text)):
        out.append('a chapter N, "Title" without its (book/NN_name.ipynb)')
    if len(LINK.findall(text)) != len(REFERENCE.findall(text)):
        out.append('a (book/...ipynb) link that is not in the form chapter N, "Title" (book/...)')
    out += [f"{m.group()!r} without the chapter's title" for m in BARE.finditer(text)]
    return out


def test_checker_catches_drift():
    assert problems('See chapter 9, "Retrieval" (book/09_retrieval.ipynb).') == []
    assert problems('See chapter 7, "Iterate" (book/07_iterate.ipynb).') == [
        'chapter 7, "Iterate": the notebook\'s heading is "7. Iterating"'
    ]
    assert problems('chapter 7, "Updating the parameters" (book/06_update.ipynb)') == [
        "chapter 7 points to book/06_update.ipynb"
    ]
    assert "does not exist" in problems('chapter 13, "Later" (book/13_later.ipynb)')[0]
    assert problems("See chapter 4.") == ["'See chapter 4' without the chapter's title"]
    assert problems('See chapter 1, "The data: X and Y".') == [
        'a chapter N, "Title" without its (book/NN_name.ipynb)'
    ]
    assert problems('See chapter\n    3, "The forward pass"\n    (book/03_forward.ipynb)') == []
    assert problems('See appendix A, "Beyond one machine" (book/A_distributed.ipynb).') == []
    assert problems('See appendix A, "Beyond one machine".') == [
        'a chapter N, "Title" without its (book/NN_name.ipynb)'
    ]
    assert problems('appendix B, "Beyond one machine" (book/A_distributed.ipynb)') == [
        "chapter B points to book/A_distributed.ipynb"
    ]


def test_there_are_references():
    total = sum(len(references((ROOT / "slmbook" / m).read_text("utf-8"))) for m in MODULES)
    assert total >= 100, total


@pytest.mark.parametrize("module", MODULES)
def test_chapter_references(module):
    assert problems((ROOT / "slmbook" / module).read_text("utf-8")) == []
