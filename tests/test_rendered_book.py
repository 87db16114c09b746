"""A reader's-eye check of the built book (run after `make book`; `make test` does both).

Headless Chromium (started by `headless_chromium.py`, beside this file) opens every chapter
page from a local web server with all other hosts unreachable, waits for MathJax, and checks
what a reader would see: math typeset (MathJax output elements present, no raw TeX delimiters
left in the text), every figure loaded, nothing requested from outside.  Internal links are
resolved against the built files.  Screenshots go to `_build/screenshots/` for a human to
look at.  Without the built book or Chromium these checks skip, except under CI, where they fail.
"""
from __future__ import annotations

import functools
import html.parser
import http.server
import pathlib
import re
import threading
import urllib.parse

import pytest

from headless_chromium import hangul, start_chromium, unavailable  # tests/headless_chromium.py

pytestmark = pytest.mark.render

ROOT = pathlib.Path(__file__).resolve().parent.parent
HTML = ROOT / "_build" / "html"
SHOTS = ROOT / "_build" / "screenshots"
ENGLISH = sorted(p.relative_to(HTML).as_posix() for p in HTML.glob("chapters/*.html")) + ["book/notation.html"]
PAGES = ENGLISH + [f"ko/{page}" for page in ENGLISH]          # the Korean edition: _build/html/ko


@pytest.fixture(scope="module")
def site():
    if not (HTML / "index.html").is_file():
        unavailable("the book is not built: run `make book` first")
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
    # The network is cut off: every host but the local server (127.0.0.1) is unreachable.
    driver = start_chromium(window_size=(1280, 2000), resolver_rules="MAP * ~NOTFOUND, EXCLUDE 127.0.0.1")
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
        unavailable("the book is not built: run `make book` first")
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
    if "chapters/" in page:
        assert view["images"] > 0, f"{page}: a chapter without a single figure"
    if page.startswith("ko/"):
        _check_korean(browser, page, view)


def _check_korean(browser, page, view):
    """Korean text, drawn with a font that has Korean glyphs (not boxes), in a page marked ``lang="ko"``."""
    assert browser.execute_script("return document.documentElement.lang") == "ko", f"{page}: not marked Korean"
    assert hangul(view["text"]) > 0.3 * len(view["text"].split()), f"{page}: little Korean text"
    # emphasis that did not parse shows its asterisks (CommonMark's flanking rules meet Korean particles)
    stray = re.findall(r".{0,20}(?:\*\*|\*[\uac00-\ud7a3]|[\uac00-\ud7a3]\*).{0,20}", view["text"])
    assert not stray, f"{page}: markdown emphasis left unparsed: {stray[:3]}"
    nav = browser.execute_script("return (document.querySelector('nav.bd-docs-nav') || document.body).innerText")
    assert hangul(nav) > 20 and not {"Front matter", "Chapters", "Appendices"} & set(nav.splitlines()), (
        f"{page}: the table of contents is not translated: {nav[:200]!r}")
    # The fonts Chromium actually used for the page's title (DevTools protocol), against the
    # installed fonts that cover Korean (fontconfig).
    import subprocess

    korean_fonts = set(subprocess.run(["fc-list", ":lang=ko", "family"], capture_output=True, text=True,
                                      check=False).stdout.replace("\n", ",").split(","))
    browser.execute_cdp_cmd("DOM.enable", {})
    browser.execute_cdp_cmd("CSS.enable", {})
    root = browser.execute_cdp_cmd("DOM.getDocument", {"depth": -1})["root"]["nodeId"]
    title = browser.execute_cdp_cmd("DOM.querySelector", {"nodeId": root, "selector": "article h1"})["nodeId"]
    used = browser.execute_cdp_cmd("CSS.getPlatformFontsForNode", {"nodeId": title})["fonts"]
    assert any(f["familyName"] in korean_fonts and f["glyphCount"] > 0 for f in used), (
        f"{page}: the title is not drawn with a Korean font: {used} (install fonts-nanum)")


def test_every_page_links_to_its_other_edition(browser, site):
    """The language switch at the top of a page opens the same page in the other language, both ways."""
    for page in ("chapters/03_lstm_gru.html", "book/index.html"):
        browser.get(f"{site}/{page}")
        browser.find_element("css selector", ".language-switch a").click()
        assert browser.current_url == f"{site}/ko/{page}"
        assert browser.execute_script("return document.documentElement.lang") == "ko"
        browser.find_element("css selector", ".language-switch a").click()
        assert browser.current_url == f"{site}/{page}"


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
        unavailable("the book is not built: run `make book` first")
    pages = [HTML / "index.html", *HTML.glob("book/*.html"), *HTML.glob("chapters/*.html"),
             *HTML.glob("ko/book/*.html"), *HTML.glob("ko/chapters/*.html")]
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


def _generate_on_page(browser, page, prime: str, length: int) -> dict:
    """Open the live sampler ``page`` from disk, generate ``length`` characters by argmax after
    ``prime``, wait for the end: the page's state, text, status line, characters per second and
    any resource it requested from outside the book."""
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(page.as_uri())
    WebDriverWait(browser, 60).until(lambda d: d.execute_script(
        "const b = document.getElementById('ls-app'); return b && b.getAttribute('data-state');"))
    browser.execute_script("""
        document.getElementById('ls-prime').value = arguments[0];
        document.getElementById('ls-mode').value = 'argmax';
        document.getElementById('ls-length').value = arguments[1];
        document.getElementById('ls-generate').click();""", prime, str(length))
    WebDriverWait(browser, 120).until(lambda d: d.execute_script(
        "return ['done', 'invalid', 'error'].includes(document.getElementById('ls-app').getAttribute('data-state'))"))
    state, text, status, rate, elsewhere = browser.execute_script("""
        return [document.getElementById('ls-app').getAttribute('data-state'),
                document.getElementById('ls-output').textContent, document.getElementById('ls-status').textContent,
                CharRNNLive.lastRun && CharRNNLive.lastRun.charactersPerSecond,
                performance.getEntriesByType('resource').map(r => r.name).filter(n => !n.startsWith('file://'))];""")
    return dict(state=state, text=text, status=status, rate=rate, elsewhere=elsewhere)


def test_live_sampler_writes_the_librarys_text(browser):
    """The built live sampler page, opened from disk (file://, every other host unreachable), runs
    chapter 5's model: with argmax it writes the library's text for the same prime and length.

    The page computes in float64, the library in float32, so argmax could part at a near-tie:
    the smallest top-2 logit margin along the text and the largest page-vs-library logit
    difference are measured and printed (``pytest -s``), with the page's characters per second.
    """
    import numpy as np
    import tensorflow as tf

    from charrnn_lib import sample, web
    from charrnn_lib.checkpoint import load_checkpoint
    from charrnn_lib.model import zero_states

    page, run = HTML / "book" / "live_sampler.html", web.recipe_run_dir()
    assert page.is_file(), "the book has no live sampler page"
    assert run.is_dir(), f"{run} is missing: `make book` trains chapter 5's recipe run into it"
    model, vocab, config = load_checkpoint(run)
    prime, length = "ROMEO:", 2000
    result = _generate_on_page(browser, page, prime, length)
    text, status, rate, elsewhere = result["text"], result["status"], result["rate"], result["elsewhere"]
    SHOTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(SHOTS / "book_live_sampler.png"))
    expected = sample.Sampler(model, vocab, config).generate(length, prime=prime, mode="argmax")
    page_logits = np.array(browser.execute_script(
        "return CharRNNLive.logitsAlong(CharRNNLive.model, arguments[0])", expected[:-1]))   # (T, K)
    ids = tf.constant(vocab.encode(expected[:-1])[None])
    library_logits = model([ids, *zero_states(config, 1)], training=False)[0].numpy()[0]   # (T, K), float32
    top2 = np.sort(library_logits[len(prime) - 1:], axis=1)[:, -2:]     # the rows that chose the generated text
    margin, difference = float(np.min(top2[:, 1] - top2[:, 0])), float(np.max(np.abs(page_logits - library_logits)))
    print(f"\nlive sampler, chapter 5's model, argmax, {length} characters: smallest top-2 logit margin {margin:.3g}, "
          f"largest page-vs-library logit difference {difference:.3g}; {rate:,.0f} characters per second in the page")
    assert not elsewhere, f"the page requested resources from outside the book: {elsewhere[:5]}"
    assert "characters per second" in status, status
    title, prose = browser.execute_script(
        "return [document.querySelector('article h1').textContent, document.querySelector('article').innerText]")
    assert title.startswith("Live sampler") and "How the page is built" in prose, "the sampler hid the page's text"
    first = next((i for i, (a, b) in enumerate(zip(text, expected)) if a != b), min(len(text), len(expected)))
    assert text == expected, (f"the page parts from the library at character {first} (margin {margin:.3g}, "
                              f"logit difference {difference:.3g}): {text[first - 20:first + 20]!r} vs "
                              f"{expected[first - 20:first + 20]!r}")
    assert difference < 1e-3, f"page and library logits differ by {difference:.3g}, more than float32 rounding"


def test_korean_live_sampler_speaks_korean(browser):
    """The Korean edition's live sampler page (file://, every other host unreachable) runs the same
    model, writes the library's argmax text, and labels its controls and status in Korean."""

    from charrnn_lib import sample, web
    from charrnn_lib.checkpoint import load_checkpoint

    page, run = HTML / "ko" / "book" / "live_sampler.html", web.recipe_run_dir()
    assert page.is_file(), "the Korean edition has no live sampler page"
    assert run.is_dir(), f"{run} is missing: `make book` trains chapter 5's recipe run into it"
    model, vocab, config = load_checkpoint(run)
    prime, length = "ROMEO:", 300
    result = _generate_on_page(browser, page, prime, length)
    state, text, status = result["state"], result["text"], result["status"]
    labels, button, summary = browser.execute_script("""
        const box = document.getElementById('ls-app');
        return [[...box.querySelectorAll('label')].map(e => e.textContent),
                document.getElementById('ls-generate').textContent, box.querySelector('summary').textContent];""")
    SHOTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(SHOTS / "ko_book_live_sampler.png"))
    assert state == "done", f"the Korean page did not generate: {state}"
    assert text == sample.Sampler(model, vocab, config).generate(length, prime=prime, mode="argmax")
    assert len(labels) == 5 and all(hangul(label) > 0 for label in labels), f"labels not in Korean: {labels}"
    assert hangul(button) > 0 and hangul(summary) > 0, f"button or character list not in Korean: {button!r}, {summary!r}"
    assert hangul(status) > 0 and "characters" not in status, f"status line not in Korean: {status!r}"
