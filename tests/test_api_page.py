"""The API reference page (book/api.md) documents every public module of slmbook.

Covers: each ``slmbook/<name>.py`` whose name does not start with an
underscore has an ``.. automodule:: slmbook.<name>`` block on the page, and
the page names no module that does not exist.
"""

from __future__ import annotations

import re
from pathlib import Path

import slmbook

ROOT = Path(slmbook.__file__).parent.parent


def test_api_page_lists_every_public_module():
    page = (ROOT / "book" / "api.md").read_text("utf-8")
    listed = set(re.findall(r"^\.\. automodule:: slmbook\.(\w+)$", page, flags=re.M))
    public = {p.stem for p in (ROOT / "slmbook").glob("*.py") if not p.stem.startswith("_")}
    assert public - listed == set(), f"add these modules to book/api.md: {sorted(public - listed)}"
    assert listed - public == set(), f"book/api.md names missing modules: {sorted(listed - public)}"
