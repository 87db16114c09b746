"""The Korean edition: message catalogues kept beside the English sources, and its build.

The book is translated with Sphinx's own internationalisation (gettext).  Every page's
translatable text -- paragraphs, headings, list items, captions, admonitions, exercises --
is a *message*; ``locale/ko/LC_MESSAGES/<page>.po`` pairs each English message (``msgid``)
with its Korean translation (``msgstr``).  The Korean build reads the same notebooks, with
the same code and stored outputs, and replaces each message by its translation: there is
no second copy of any notebook.  Code, outputs and math are not messages.

Jupyter Book's command line cannot pass ``-D language=ko`` to Sphinx, so this script calls
Jupyter Book's own ``build_sphinx`` -- the function behind ``jupyter-book build`` -- with the
configuration it derives from ``_config.yml`` plus the language (one source for every
other setting)::

    python book/translations.py update   # after an English change: refresh the catalogues
    python book/translations.py check    # every message translated, none fuzzy, none stale
    python book/translations.py build    # the Korean edition into _build/html/ko (warnings are errors)

``update`` extracts the messages (Sphinx's gettext builder) and merges them into the
catalogues: a new message arrives untranslated, a changed one keeps its old translation
marked *fuzzy* (to be revised, then the flag removed), a deleted one is dropped.  ``check``
fails until every message is translated and not fuzzy, and when the catalogues are out of
date with the sources.  ``TRANSLATING.md`` is the translators' guide.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import pathlib
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
LANGUAGE = "ko"
LOCALE = ROOT / "locale" / LANGUAGE / "LC_MESSAGES"
HTML = ROOT / "_build" / "html"


def _build(builder: str, out_dir: pathlib.Path, doctrees: pathlib.Path, language: str | None,
           quiet: bool = True) -> int:
    """Run Sphinx as ``jupyter-book build . --builder <builder> -W -n --keep-going`` would."""
    from jupyter_book.sphinx import build_sphinx

    overrides = {"external_toc_path": str(ROOT / "_toc.yml"), "latex_individualpages": False, "nitpicky": True}
    if language:
        overrides["language"] = language
        title = _translated_title()
        if title:                                  # the sidebar's and the browser tab's title
            overrides["html_title"] = title
    result = build_sphinx(ROOT, out_dir, noconfig=True, path_config=str(ROOT / "_config.yml"),
                          confoverrides=overrides, doctreedir=doctrees, builder=builder,
                          warningiserror=True, keep_going=True, freshenv=True, quiet=quiet)
    return result if isinstance(result, int) else 1


def _translated_title() -> str | None:
    """The book's title as the landing page's catalogue translates it (``_config.yml``'s ``title``)."""
    import yaml
    from babel.messages.pofile import read_po

    title = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))["title"]
    path = LOCALE / "book" / "index.po"
    message = read_po(path.open("rb")).get(title) if path.is_file() else None
    return message.string if message is not None and message.string and not message.fuzzy else None


def extract(out_dir: pathlib.Path) -> dict[str, list[str]]:
    """The English messages of every page, ``{page: [msgid, ...]}``, via Sphinx's gettext builder."""
    from babel.messages.pofile import read_po

    with tempfile.TemporaryDirectory() as doctrees:
        if _build("gettext", out_dir, pathlib.Path(doctrees), None):
            raise SystemExit("message extraction failed (see the warnings above)")
    return {pot.relative_to(out_dir).with_suffix("").as_posix():
            [m.id for m in read_po(pot.open("rb")) if m.id]
            for pot in sorted(out_dir.rglob("*.pot"))}


def _catalogue(page: str) -> pathlib.Path:
    return LOCALE / f"{page}.po"


def update() -> int:
    """Merge the sources' messages into the catalogues (new: empty; changed: fuzzy; gone: dropped)."""
    from babel.messages.pofile import read_po, write_po

    with tempfile.TemporaryDirectory() as tmp:
        out = pathlib.Path(tmp)
        extract(out)
        for pot in sorted(out.rglob("*.pot")):
            page = pot.relative_to(out).with_suffix("").as_posix()
            template = read_po(pot.open("rb"))
            path = _catalogue(page)
            if path.is_file():
                catalogue = read_po(path.open("rb"), locale=LANGUAGE)
            else:
                from babel.messages.catalog import Catalog

                catalogue = Catalog(locale=LANGUAGE)
            catalogue.update(template, no_fuzzy_matching=False)
            catalogue.obsolete.clear()             # deleted messages leave; git keeps their history
            catalogue.project, catalogue.version = "Recurrent Neural Networks from the Ground Up", ""
            catalogue.fuzzy = False                 # the header; fuzzy *messages* stay flagged
            path.parent.mkdir(parents=True, exist_ok=True)
            buffer = io.BytesIO()
            write_po(buffer, catalogue, width=0, omit_header=False, sort_output=False)
            path.write_bytes(buffer.getvalue())
            messages = [m for m in catalogue if m.id]
            todo = sum(1 for m in messages if not m.string or m.fuzzy)
            print(f"{path.relative_to(ROOT)}: {len(messages)} messages, {todo} to translate or revise")
    return 0


def problems(sources: dict[str, list[str]] | None = None) -> list[str]:
    """What keeps the Korean edition from being complete, one line each (empty: complete).

    ``sources``: the messages extracted from the English pages (``extract``); given, the
    catalogues are also compared with them (a page without a catalogue, a message missing
    from its catalogue or left over in it).
    """
    from babel.messages.pofile import read_po

    found = []
    for path in sorted(LOCALE.rglob("*.po")):
        page = path.relative_to(LOCALE).with_suffix("").as_posix()
        catalogue = read_po(path.open("rb"))
        messages = [m for m in catalogue if m.id]
        for m in messages:
            if not m.string:
                found.append(f"{page}: untranslated: {m.id[:80]!r}")
            elif m.fuzzy:
                found.append(f"{page}: fuzzy (the English changed; revise and drop the flag): {m.id[:80]!r}")
        if sources is not None:
            have, want = {m.id for m in messages}, set(sources.get(page, ()))
            if page not in sources:
                found.append(f"{page}: the catalogue has no English page any more: delete it")
            found += [f"{page}: stale: not in the catalogue yet (run update): {i[:80]!r}" for i in sorted(want - have)]
            found += [f"{page}: stale: no longer in the English page (run update): {i[:80]!r}"
                      for i in sorted(have - want)]
    if sources is not None:
        found += [f"{page}: no catalogue (run update)" for page in sorted(sources)
                  if not _catalogue(page).is_file()]
    return found


def check() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        found = problems(extract(pathlib.Path(tmp)))
    for line in found:
        print(line)
    print(f"{len(found)} problem(s)" if found else "the Korean catalogues are complete and up to date")
    return 1 if found else 0


def build() -> int:
    """The Korean edition into ``_build/html/ko``, with warnings as errors."""
    out = HTML / LANGUAGE
    if not (HTML / "index.html").is_file():
        print("build the English book first (make book)", file=sys.stderr)
        return 2
    status = _build("html", out, ROOT / "_build" / f".doctrees-{LANGUAGE}", LANGUAGE, quiet=True)
    if status == 0:
        # the landing page redirects to the root page, as jupyter-book writes it for the English book
        (out / "index.html").write_text((HTML / "index.html").read_text(encoding="utf-8"), encoding="utf-8")
    return status


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python book/translations.py", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=("update", "check", "build"))
    args = parser.parse_args(argv)
    with contextlib.chdir(ROOT):
        return {"update": update, "check": check, "build": build}[args.command]()


if __name__ == "__main__":
    raise SystemExit(main())
