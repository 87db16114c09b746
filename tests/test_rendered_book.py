"""A reader's-eye check of the built book (run after `make book`; `make test` does both).

Headless Chromium opens every chapter page from a local web server with all other hosts
unreachable, waits for MathJax, and checks what a reader would see: math typeset (MathJax
output elements present, no raw TeX delimiters left in the text), every figure loaded,
nothing requested from outside.  Internal links are resolved against the built files.
Screenshots go to `_build/screenshots/` for a human to look at.
"""
from __future__ import annotations

import functools
import html.parser
import http.server
import os
import pathlib
import shutil
import threading
import urllib.parse

import pytest

pytestmark = pytest.mark.render

ROOT = pathlib.Path(__file__).resolve().parent.parent
HTML = ROOT / "_build" / "html"
SHOTS = ROOT / "_build" / "screenshots"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
PAGES = sorted(p.relative_to(HTML).as_posix() for p in HTML.glob("chapters/*.html")) + ["book/notation.html"]


def _unavailable(reason: str):
    if IN_CI:
        pytest.fail(f"{reason} (under CI this check must run, never skip)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def site():
    if not (HTML / "index.html").is_file():
        _unavailable("the book is not built: run `make book` first")
    handler = functools.partial(_QuietHandler, directory=str(HTML))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def browser(site):
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver_path:
        _unavailable("headless Chromium is not installed (Debian packages chromium and chromium-driver; "
                     "`make test` installs them when it runs as root)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--disable-quic", "--window-size=1280,2000",
                 # The network is cut off: every host but the local server is unreachable.
                 "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(60)
    driver.set_script_timeout(60)
    yield driver
    driver.quit()


WAIT_FOR_MATHJAX = """
const done = arguments[arguments.length - 1];
const ready = () => window.MathJax && MathJax.startup && MathJax.startup.promise;
let tries = 0;
(function poll() {
  if (ready()) { MathJax.startup.promise.then(() => done(true), () => done(false)); }
  else if (++tries > 200) { done(false); }
  else { setTimeout(poll, 50); }
})();
"""

READER_VIEW = """
const article = document.querySelector('article') || document.body;
const clone = article.cloneNode(true);
clone.querySelectorAll('pre, code, mjx-container, script, style, .cell_output').forEach(e => e.remove());
const images = [...article.querySelectorAll('img')];
return {
  text: clone.innerText,
  math: article.querySelectorAll('mjx-container').length,
  mathSource: article.querySelectorAll('.math, span.math, div.math').length,
  images: images.length,
  broken: images.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.getAttribute('src')),
  external: performance.getEntriesByType('resource').map(r => r.name)
             .filter(n => !n.startsWith(location.origin) && !n.startsWith('data:')),
};
"""


def test_there_are_chapter_pages():
    if not HTML.is_dir():
        _unavailable("the book is not built: run `make book` first")
    assert any(p.startswith("chapters/") for p in PAGES), "no chapter pages were built"


@pytest.mark.parametrize("page", PAGES)
def test_page_reads_well(browser, site, page):
    browser.get(f"{site}/{page}")
    assert browser.execute_async_script(WAIT_FOR_MATHJAX), f"{page}: MathJax did not load or failed"
    view = browser.execute_script(READER_VIEW)
    SHOTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(SHOTS / (page.replace("/", "_").removesuffix(".html") + ".png")))
    assert view["mathSource"] > 0, f"{page}: the page has no math at all"
    assert view["math"] >= view["mathSource"], f"{page}: {view['mathSource']} math blocks but only {view['math']} typeset"
    for raw in ("$$", "\\(", "\\[", "\\begin{", "\\mathbf"):
        assert raw not in view["text"], f"{page}: raw TeX {raw!r} left in the text a reader sees"
    assert not view["broken"], f"{page}: figures that did not load: {view['broken']}"
    assert not view["external"], f"{page}: requested resources from outside the book: {view['external'][:5]}"
    if page.startswith("chapters/"):
        assert view["images"] > 0, f"{page}: a chapter without a single figure"


class _Anchors(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids, self.hrefs = set(), []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if attrs.get("id"):
            self.ids.add(attrs["id"])
        if tag == "a" and attrs.get("name"):
            self.ids.add(attrs["name"])
        if tag == "a" and attrs.get("href"):
            self.hrefs.append(attrs["href"])


@functools.lru_cache(maxsize=None)
def _parse(path: pathlib.Path) -> _Anchors:
    parser = _Anchors()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


def test_internal_links_resolve():
    if not (HTML / "index.html").is_file():
        _unavailable("the book is not built: run `make book` first")
    pages = [HTML / "index.html", *HTML.glob("book/*.html"), *HTML.glob("chapters/*.html")]
    broken = []
    for page in pages:
        for href in _parse(page).hrefs:
            url = urllib.parse.urlparse(href)
            if url.scheme or url.netloc or href.startswith(("mailto:", "javascript:")):
                continue
            target = (page.parent / urllib.parse.unquote(url.path)).resolve() if url.path else page
            if target.is_dir():
                target = target / "index.html"
            if not target.is_file():
                broken.append(f"{page.relative_to(HTML)} -> {href} (no such file)")
            elif url.fragment and target.suffix == ".html" and url.fragment not in _parse(target).ids:
                broken.append(f"{page.relative_to(HTML)} -> {href} (no such anchor)")
    assert not broken, "broken internal links:\n  " + "\n  ".join(broken[:30])
