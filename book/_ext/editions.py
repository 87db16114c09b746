"""The two editions, English and Korean (한국어): what Sphinx's gettext leaves to us.

1. A link on every page to the same page in the other edition (English <-> 한국어).
2. The table of contents' part captions ("Chapters", ...) in the Korean edition: they come
   from ``_toc.yml`` through sphinx-external-toc, whose toctrees are inserted after Sphinx
   has translated the page, so the captions -- extracted into the landing page's catalogue
   like every other message -- are translated here from that catalogue.

The link.

The English book is built into ``_build/html`` and the Korean one, from the same sources
and message catalogues (``book/translations.py``), into ``_build/html/ko``.  A page
``chapters/03_lstm_gru`` is therefore ``chapters/03_lstm_gru.html`` in one and
``ko/chapters/03_lstm_gru.html`` in the other, and the link between them is relative, so
it works from a web server and from files opened on disk alike.  The link is put at the
top of the page's body, above the title.
"""
from __future__ import annotations

import html

from sphinx.application import Sphinx

KOREAN = "ko"
LABELS = {"en": ("한국어", KOREAN, "이 페이지의 한국어판"), KOREAN: ("English", "en", "This page in English")}


def counterpart(pagename: str, language: str) -> str:
    """The relative URL of ``pagename`` in the other edition, seen from ``pagename`` in ``language``."""
    up = "../" * pagename.count("/")                    # from the page's folder to its edition's root
    if language == KOREAN:
        return f"{up}../{pagename}.html"                # ko/<page> -> <page>
    return f"{up}{KOREAN}/{pagename}.html"              # <page> -> ko/<page>


def _add_link(app: Sphinx, pagename: str, templatename: str, context: dict, doctree) -> None:
    if doctree is None or "body" not in context:        # genindex, search: generated pages
        return
    language = KOREAN if app.config.language == KOREAN else "en"
    text, lang, title = LABELS[language]
    link = (f'<p class="language-switch" style="text-align: right; margin: 0;">'
            f'<a href="{html.escape(counterpart(pagename, language))}" hreflang="{lang}" lang="{lang}" '
            f'title="{html.escape(title)}">{html.escape(text)}</a></p>\n')
    context["body"] = link + context["body"]


def _translate_captions(app: Sphinx, doctree) -> None:
    if app.config.language != KOREAN:
        return
    from os import path

    from sphinx import addnodes
    from sphinx.locale import init as init_locale
    from sphinx.util.i18n import docname_to_domain

    domain = docname_to_domain(app.env.docname, app.config.gettext_compact)
    catalog, found = init_locale([path.join(app.srcdir, d) for d in app.config.locale_dirs], KOREAN, domain)
    if not found:
        return
    for toctree in doctree.findall(addnodes.toctree):
        if toctree.get("caption"):
            toctree["caption"] = catalog.gettext(toctree["caption"])


def setup(app: Sphinx) -> dict:
    app.connect("html-page-context", _add_link)
    app.connect("doctree-read", _translate_captions)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
