"""Fixtures of the browser test of the built book (``tests/site``).

The site is ``_build/html`` (or ``$SLMBOOK_SITE``), served on 127.0.0.1 by a
throw-away HTTP server and opened in a real headless Chromium (Debian's
``chromium``, or ``$SLMBOOK_CHROMIUM``) driven by Playwright. Every request to
another host is blocked, as on a machine without network, and recorded.

When these tests run:

* named on the command line (``pytest tests/site``, as ``.ci/run`` does after
  the build): always; a missing site or a missing browser is a failure;
* otherwise (the README's test command): only once the book is built and
  outside CI, so that CI runs them once, after its own build.
"""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent


def site_dir() -> Path:
    """The built HTML: ``$SLMBOOK_SITE`` or ``_build/html``."""
    return Path(os.environ.get("SLMBOOK_SITE", ROOT / "_build" / "html")).resolve()


def screenshots_dir() -> Path:
    """Where each page's screenshot goes: ``_build/screenshots`` beside the HTML."""
    return site_dir().parent / "screenshots"


def pages() -> list[str]:
    """Every HTML page of the site, relative to it (``_static`` and ``_sources`` are files)."""
    root = site_dir()
    if not root.is_dir():
        return []
    return sorted(str(p.relative_to(root)) for p in root.rglob("*.html")
                  if p.relative_to(root).parts[0] not in {"_static", "_sources", "_images"})


def chromium() -> str | None:
    """The Chromium executable: ``$SLMBOOK_CHROMIUM``, Debian's, or one on PATH."""
    for candidate in (os.environ.get("SLMBOOK_CHROMIUM"), "/usr/lib/chromium/chromium"):
        if candidate and Path(candidate).is_file():
            return candidate
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if found := shutil.which(name):
            return found
    return None


def _explicit(config: pytest.Config) -> bool:
    for arg in config.invocation_params.args:
        path = (config.invocation_params.dir / str(arg).split("::")[0]).resolve()
        if path == HERE or HERE in path.parents:
            return True
    return False


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    if collection_path.suffix != ".py" or not collection_path.name.startswith("test_"):
        return None
    if _explicit(config):
        return None
    if not site_dir().is_dir() or os.environ.get("CI") == "true":
        return True
    return None


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "page_path" in metafunc.fixturenames:
        found = pages()
        metafunc.parametrize("page_path", found or ["(no site)"], ids=found or ["no-site"])


@pytest.fixture(scope="session")
def site() -> Path:
    root = site_dir()
    if not (root / "index.html").is_file():
        pytest.fail(f"{root} has no index.html: build the book first with the README's "
                    "build command (.venv/bin/jupyter-book build . -W --keep-going)")
    return root


@pytest.fixture(scope="session")
def site_pages(site: Path) -> list[str]:
    return pages()


@pytest.fixture(scope="session")
def screenshots(site: Path) -> Path:
    out = screenshots_dir()
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    return out


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="session")
def base_url(site: Path):
    handler = functools.partial(_QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="session")
def browser(request: pytest.FixtureRequest):
    exe = chromium()
    if exe is None:
        message = "no Chromium found: apt-get install chromium (or set SLMBOOK_CHROMIUM)"
        if _explicit(request.config) or os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=["--no-sandbox"])
        yield browser
        browser.close()
