"""Every ``>>>`` example in slmbook's docstrings runs and prints what it shows.

Runs :mod:`doctest` over each module of the package (the same examples
``pytest --doctest-modules slmbook`` would collect), one test per module, so
``pytest`` alone, the README's command, checks them.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import slmbook

MODULES = sorted(
    m.name for m in pkgutil.iter_modules(slmbook.__path__, "slmbook.") if m.name != "slmbook.__main__"
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # an example that writes a file writes it here
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    failures = []
    for test in finder.find(module, name):
        result = runner.run(test, out=failures.append)
        assert result.failed == 0, "".join(failures)


def test_examples_exist():
    finder = doctest.DocTestFinder(exclude_empty=True)
    count = sum(
        len(t.examples) for name in MODULES for t in finder.find(importlib.import_module(name), name)
    )
    assert count >= 30, count
