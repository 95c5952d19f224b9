"""A local Sphinx extension for the book's HTML (named in ``_config.yml``).

Jupyter Book 1.0.4 writes two of its inline scripts twice into every page
(sphinx-thebe's ``const THEBE_JS_URL = ...`` and sphinx-togglebutton's
selector): the second ``const`` declaration is a JavaScript error on every
page. This extension drops exact duplicates from each page's scripts, keeping
the first of each; the browser test (``tests/site``) checks that no page has a
JavaScript error.
"""

from __future__ import annotations

from typing import Any


def _key(script: Any) -> tuple:
    attributes = getattr(script, "attributes", {}) or {}
    return (getattr(script, "filename", None) or "", getattr(script, "priority", 500),
            tuple(sorted((k, str(v)) for k, v in attributes.items())))


def drop_duplicate_scripts(app, pagename: str, templatename: str, context: dict,
                           doctree) -> None:
    """Keep the first of each identical script of the page (same file or body)."""
    scripts = context.get("script_files")
    if not scripts:
        return
    seen: set[tuple] = set()
    unique = []
    for script in scripts:
        key = _key(script)
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"] = unique


def setup(app) -> dict:
    # Late (priority 900), after the extensions that add scripts to the page.
    app.connect("html-page-context", drop_duplicate_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
