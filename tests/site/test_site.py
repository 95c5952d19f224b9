"""What a reader of the built book sees, checked in a real headless Chromium.

Every HTML page of ``_build/html`` is opened once, with every request to
another host blocked (as on a machine without network), and checked:

* no JavaScript error (uncaught exceptions, ``console.error``), except the
  browser's own report of a blocked outside request, and every local file the
  page asks for exists;
* the only outside requests are the ones the page works without (the launch
  and repository links are links, never requests);
* every image loads (natural width > 0);
* every equation is typeset by MathJax, which is served from the site itself:
  each ``.math`` element holds an ``mjx-container``, no MathJax error, and no
  raw ``\\(``, ``\\[`` or ``$$`` left in the visible text outside code; a page
  whose source has math shows typeset math;
* every widget has a static rendering on the page (the widget itself, drawn
  from its saved state, or an image or text beside it in the same cell), and
  every ``to_jshtml`` animation has its frames and the icons of its buttons;
* every internal link points to an existing file, and to an existing anchor.

Plus: the search page finds "cross-entropy" in chapter 4, a chapter opened as
a local file (``file://``, the downloaded HTML) still shows its equations, and a
full-page screenshot of every page is written under ``_build/screenshots/``.
"""

from __future__ import annotations

import json
import re
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

import pytest

# Outside requests a page may make and still work without (they are blocked and
# recorded; any other is a failure). matplotlib's to_jshtml() animations link
# Font Awesome 4 for their button icons; the theme's own (local) Font Awesome
# draws those icons, which test_every_animation_has_its_controls checks.
ALLOWED_OUTSIDE: tuple[str, ...] = ("https://maxcdn.bootstrapcdn.com/font-awesome/",)

COLLECT = r"""
() => {
  const skip = "pre, code, script, style, textarea, mjx-container, .highlight, .linenos";
  const visible = (el) => !!(el.offsetWidth || el.offsetHeight || el.getClientRects().length);
  const raw = [], rawTables = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const parent = node.parentElement;
    if (!parent || parent.closest(skip) || !visible(parent)) continue;
    const m = node.textContent.match(/\\\(|\\\[|\$\$/);
    if (m) raw.push(node.textContent.slice(Math.max(0, m.index - 40), m.index + 60));
    // a Markdown table left as text: its delimiter row ("|---|", or "|—|" once smartquoted)
    const t = node.textContent.match(/\|\s*:?(-{3,}|\u2014+):?\s*\|/);
    if (t) rawTables.push(node.textContent.slice(0, 80));
  }
  const maths = [...document.querySelectorAll(".math")];
  const widgets = [...document.querySelectorAll(
      'script[type="application/vnd.jupyter.widget-view+json"]')].map((s) => {
    const cell = s.closest(".cell_output, .output, .cell") || s.parentElement;
    const drawn = [...cell.querySelectorAll(".jupyter-widgets, .widget-area, .lm-Widget")]
        .some((el) => el.offsetHeight > 0);
    const images = [...cell.querySelectorAll("img")].some((i) => i.naturalWidth > 0);
    const text = [...cell.querySelectorAll(".output, pre, .text_html, .output_html")]
        .filter((el) => !el.querySelector('script[type*="widget-view"]') && visible(el))
        .some((el) => el.innerText.trim().length > 0);
    return {drawn, images, text, model: JSON.parse(s.textContent).model_id};
  });
  const animations = [...document.querySelectorAll(".animation")].map((a) => ({
    frames: a.querySelectorAll("img").length,
    buttons: a.querySelectorAll("button").length,
    icons: [...a.querySelectorAll("button")].filter((b) =>
        [...b.querySelectorAll("svg, i")].some((i) => i.getBoundingClientRect().width > 0)).length,
  }));
  return {
    title: document.title,
    animations,
    images: [...document.images].map((i) => ({src: i.currentSrc || i.src,
                                              ok: i.complete && i.naturalWidth > 0})),
    maths: maths.length,
    typeset: maths.filter((m) => m.querySelector("mjx-container")).length,
    untypeset: maths.filter((m) => !m.querySelector("mjx-container"))
                    .map((m) => m.textContent.slice(0, 80)),
    containers: document.querySelectorAll("mjx-container").length,
    merrors: [...document.querySelectorAll("mjx-merror")].map((e) => e.textContent),
    raw,
    rawTables,
    widgets,
    links: [...document.querySelectorAll("a[href]")].map((a) => a.href),
    ids: [...document.querySelectorAll("[id], a[name]")].map((e) => e.id || e.name),
    mathjax_src: [...document.scripts].map((s) => s.src).filter((s) => /mathjax/i.test(s)),
  };
}
"""

WAIT_FOR_MATHJAX = """
async () => {
  if (window.MathJax && window.MathJax.startup && window.MathJax.startup.promise) {
    await window.MathJax.startup.promise;
  }
}
"""


@dataclass
class Page:
    """What one page showed."""

    path: str
    data: dict = field(default_factory=dict)
    js_errors: list[str] = field(default_factory=list)
    missing_local: list[str] = field(default_factory=list)
    outside: list[str] = field(default_factory=list)
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)


def _block_outside(context, base: str, record: dict[str, list[str]]) -> None:
    def handle(route):
        url = route.request.url
        if url.startswith(base) or url.startswith(("data:", "blob:", "file:")):
            route.continue_()
        else:
            record.setdefault("current", []).append(url)
            route.abort("blockedbyclient")

    context.route("**/*", handle)


REDIRECT = re.compile(r'<meta http-equiv="Refresh" content="0; url=([^"]+)"', re.I)
EMPTY = {"title": "", "animations": [], "images": [], "maths": 0, "typeset": 0, "untypeset": [], "containers": 0,
         "merrors": [], "raw": [], "rawTables": [], "widgets": [], "links": [], "ids": [], "mathjax_src": []}


def _visit(context, base: str, path: str, record: dict, shots: Path, site: Path) -> Page:
    redirect = REDIRECT.search((site / path).read_text(encoding="utf-8", errors="replace"))
    if redirect:  # a redirect stub (index.html): check where it points, nothing to render
        return Page(path, data={**EMPTY, "links": [urllib.parse.urljoin(base + path,
                                                                        redirect.group(1))]})
    page, result = context.new_page(), Page(path)
    record["current"] = []
    page.on("pageerror", lambda e: result.js_errors.append(f"uncaught: {e}"))
    page.on("console", lambda m: m.type == "error" and result.js_errors.append(m.text))
    page.on("response", lambda r: r.status >= 400 and r.url.startswith(base)
            and result.missing_local.append(f"{r.status} {r.url}"))
    start = time.perf_counter()
    page.goto(base + path, wait_until="load")
    timings = {"load": time.perf_counter() - start}
    page.evaluate(WAIT_FOR_MATHJAX)
    timings["mathjax"] = time.perf_counter() - start
    for img in page.locator("img").all():  # lazy images load once scrolled to
        if not img.evaluate("i => i.complete && i.naturalWidth > 0"):
            img.scroll_into_view_if_needed()
            img.evaluate("i => i.decode().catch(() => null)")
    timings["images"] = time.perf_counter() - start
    result.data = page.evaluate(COLLECT)
    timings["collect"] = time.perf_counter() - start
    name = path.removesuffix(".html").replace("/", "__") + ".png"
    height = page.evaluate("document.documentElement.scrollHeight")
    page.screenshot(path=str(shots / name), full_page=True,  # the first 12,000 px at most
                    clip={"x": 0, "y": 0, "width": 1280, "height": min(height, 12_000)})
    result.seconds = time.perf_counter() - start
    timings["shot"] = result.seconds
    result.timings = {k: round(v, 2) for k, v in timings.items()}
    result.outside = list(record["current"])
    blocked = re.compile(r"net::ERR_BLOCKED_BY_CLIENT|Failed to load resource")
    result.js_errors = [e for e in result.js_errors if not blocked.search(e)]
    page.close()
    return result


@pytest.fixture(scope="session")
def crawl(site: Path, site_pages: list[str], base_url: str, browser,
          screenshots: Path) -> dict[str, Page]:
    results = {}
    for path in site_pages:  # a fresh context per page: a first-time reader, no local storage
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        record: dict[str, list[str]] = {}
        _block_outside(context, base_url, record)
        try:
            results[path] = _visit(context, base_url, path, record, screenshots, site)
        except Exception as exc:  # one page that cannot be opened fails its own tests only
            results[path] = Page(path, data=dict(EMPTY), js_errors=[f"could not open: {exc}"])
        context.close()
    return results


def _summary(crawl: dict[str, Page]) -> str:
    d = [p.data for p in crawl.values()]
    return (f"{len(crawl)} pages, {sum(len(x['images']) for x in d)} images, "
            f"{sum(x['containers'] for x in d)} typeset equations, "
            f"{sum(len(x['widgets']) for x in d)} widgets, "
            f"{sum(len(x['links']) for x in d)} links, "
            f"{sum(p.seconds for p in crawl.values()):.0f} s in the browser")


def test_page_has_no_javascript_error(crawl, page_path):
    page = crawl[page_path]
    assert page.js_errors == []
    assert page.missing_local == []


def test_page_reaches_no_outside_host_it_needs(crawl, page_path):
    outside = [u for u in crawl[page_path].outside if not u.startswith(ALLOWED_OUTSIDE)]
    assert outside == [], "the page asks outside hosts for these (blocked here)"


def test_every_image_loads(crawl, page_path):
    broken = [img["src"] for img in crawl[page_path].data["images"] if not img["ok"]]
    assert broken == []


def test_every_equation_is_typeset(crawl, page_path):
    data = crawl[page_path].data
    assert data["untypeset"] == [], "math elements MathJax did not typeset"
    assert data["merrors"] == [], "MathJax errors (bad TeX)"
    assert data["raw"] == [], "raw TeX delimiters in the visible text"
    if data["maths"]:
        assert any("/_static/mathjax/" in src for src in data["mathjax_src"]), data["mathjax_src"]


def test_every_markdown_table_is_rendered(crawl, page_path):
    """A table a cell writes as Markdown is an HTML table, not its source text."""
    assert crawl[page_path].data["rawTables"] == [], "Markdown tables shown as text"


def test_every_widget_has_a_static_rendering(crawl, page_path):
    bare = [w["model"] for w in crawl[page_path].data["widgets"]
            if not (w["drawn"] or w["images"] or w["text"])]
    assert bare == [], "widgets that show nothing on the static page"


def test_every_animation_has_its_controls(crawl, page_path):
    for animation in crawl[page_path].data["animations"]:
        assert animation["frames"] >= 1
        assert animation["buttons"] >= 5 and animation["icons"] == animation["buttons"], animation


def test_every_internal_link_resolves(crawl, site: Path, base_url: str, page_path):
    broken = []
    for href in crawl[page_path].data["links"]:
        if not href.startswith(base_url):
            continue
        url = urllib.parse.urlsplit(href)
        rel = urllib.parse.unquote(url.path)[1:] or "index.html"
        target = site / rel
        if target.is_dir():
            rel, target = rel.rstrip("/") + "/index.html", target / "index.html"
        if not target.is_file():
            broken.append(f"{href}: no file {rel}")
        elif url.fragment and rel in crawl:
            if urllib.parse.unquote(url.fragment) not in crawl[rel].data["ids"]:
                broken.append(f"{href}: no anchor #{url.fragment} in {rel}")
    assert broken == []


def test_every_page_has_a_screenshot(crawl, screenshots: Path):
    shots = sorted(screenshots.glob("*.png"))
    assert len(shots) == sum(1 for p in crawl.values() if p.seconds > 0)  # redirects have none
    assert all(p.stat().st_size > 1000 for p in shots)
    report = {path: {"seconds_after_start": page.timings, "images": len(page.data["images"]),
                     "equations": page.data["containers"], "widgets": len(page.data["widgets"]),
                     "outside_requests_blocked": page.outside}
              for path, page in crawl.items()}
    (screenshots / "report.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    print(f"{_summary(crawl)}; screenshots and report.json in {screenshots}")


def test_the_book_has_pages_images_equations_and_widgets(crawl):
    chapters = [p for p in crawl if re.fullmatch(r"book/\d\d_\w+\.html", p)]
    assert len(chapters) >= 9, sorted(crawl)
    assert sum(len(crawl[p].data["images"]) for p in chapters) >= 20
    assert sum(crawl[p].data["containers"] for p in chapters) >= 50
    assert sum(len(crawl[p].data["widgets"]) for p in chapters) >= 1


def _source_has_math(source: Path) -> bool:
    if source.suffix == ".ipynb":
        cells = json.loads(source.read_text(encoding="utf-8"))["cells"]
        text = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    else:
        text = source.read_text(encoding="utf-8")
    return bool(re.search(r"\$[^$\s][^$]*\$|\$\$|\{math\}|```\{math\}", text))


def test_every_page_whose_source_has_math_shows_typeset_math(crawl, site: Path):
    missing = []
    for path, page in crawl.items():
        stem = path.removesuffix(".html")
        sources = [site / "_sources" / f"{stem}{ext}" for ext in (".ipynb", ".md")]
        if any(src.is_file() and _source_has_math(src) for src in sources):
            if page.data["containers"] == 0:
                missing.append(path)
    assert missing == []


def test_search_finds_cross_entropy(browser, base_url: str):
    context = browser.new_context()
    _block_outside(context, base_url, {})
    page = context.new_page()
    page.goto(base_url + "search.html?q=cross-entropy", wait_until="load")
    page.wait_for_selector("#search-results ul.search li", timeout=30_000)
    hits = page.eval_on_selector_all("#search-results ul.search li a",
                                     "links => links.map(a => a.href)")
    context.close()
    assert any("book/04_loss.html" in h for h in hits), hits


def test_a_chapter_opened_as_a_local_file_shows_its_equations(browser, site: Path):
    context = browser.new_context()
    outside: list[str] = []

    def handle(route):
        if route.request.url.startswith("file:"):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort("blockedbyclient")

    context.route("**/*", handle)
    page = context.new_page()
    page.goto((site / "book" / "04_loss.html").as_uri(), wait_until="load")
    page.evaluate(WAIT_FOR_MATHJAX)
    typeset = page.evaluate("document.querySelectorAll('.math mjx-container').length")
    context.close()
    assert typeset >= 10
    assert not [u for u in outside if "mathjax" in u.lower()]


BROKEN_PAGE = """<!doctype html><html><head><title>broken</title>
<script src="https://cdn.example.org/lib.js"></script></head><body>
<p>Raw maths: <span class="math">\\(x^2\\)</span> and $$y$$.</p>
<p>| a | b |
|&mdash;|&mdash;|
| 1 | 2 |</p>
<img src="missing.png" alt="missing">
<a href="nowhere.html">a dead link</a> <a href="#no-such-anchor">a dead anchor</a>
<script>undefinedFunction();</script>
<div class="animation"><img src="data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="><button><i class="fa fa-play"></i></button></div>
</body></html>"""


def test_the_checks_catch_a_broken_page(browser, tmp_path: Path):
    """The checks above, run on a page with one of each fault, report each fault."""
    import functools
    import http.server
    import threading

    (tmp_path / "broken.html").write_text(BROKEN_PAGE, encoding="utf-8")
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        context = browser.new_context()
        record: dict[str, list[str]] = {}
        _block_outside(context, base, record)
        shots = tmp_path / "shots"
        shots.mkdir()
        page = _visit(context, base, "broken.html", record, shots, tmp_path)
        context.close()
    finally:
        server.shutdown()
        server.server_close()
    data = page.data
    assert any("undefinedFunction" in e for e in page.js_errors), page.js_errors
    assert page.outside == ["https://cdn.example.org/lib.js"]
    assert [img["ok"] for img in data["images"]] == [False, True]  # missing.png, the frame
    assert f"{base}missing.png" in " ".join(page.missing_local)
    assert data["untypeset"] == ["\\(x^2\\)"] and len(data["raw"]) == 2
    assert len(data["rawTables"]) == 1
    assert data["animations"] == [{"frames": 1, "buttons": 1, "icons": 0}]
    assert f"{base}nowhere.html" in data["links"] and "no-such-anchor" not in data["ids"]
    assert (shots / "broken.png").stat().st_size > 1000
