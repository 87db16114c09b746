"""The Korean edition's catalogues (book/translations.py): complete, not fuzzy, up to date with the
English sources, and with the markup Sphinx needs intact in every translation."""
import importlib.util
import pathlib
import re
from collections import Counter

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("translations", ROOT / "book" / "translations.py")
translations = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(translations)

ROLE = re.compile(r"\{(ref|numref|eq|cite|cite:p|cite:t|doc|term)\}`([^`]*)`")
MATH = re.compile(r"\$\$.+?\$\$|\$[^$]+\$", re.S)
CODE = re.compile(r"``[^`]+``|`[^`]+`")


def _catalogues():
    from babel.messages.pofile import read_po

    return {p.relative_to(translations.LOCALE).with_suffix("").as_posix(): read_po(p.open("rb"))
            for p in sorted(translations.LOCALE.rglob("*.po"))}


def _targets(text: str) -> Counter:
    """Cross-references and citations of a message: (role, target); a ref's display text may change."""
    found = Counter()
    for role, body in ROLE.findall(text):
        target = re.search(r"<([^<>]+)>$", body)
        found[role, target.group(1) if target and role in ("ref", "numref", "doc", "term") else body] += 1
    return found


def test_every_page_of_the_book_has_a_catalogue():
    import yaml

    toc = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))
    pages = [toc["root"]] + [c["file"] for part in toc["parts"] for c in part["chapters"]]
    missing = [p for p in pages if not (translations.LOCALE / f"{p}.po").is_file()]
    assert not missing, f"pages without a Korean catalogue (python book/translations.py update): {missing}"


def test_every_message_is_translated_and_none_is_fuzzy():
    found = translations.problems()
    assert not found, f"{len(found)} message(s) to translate or revise, e.g.:\n" + "\n".join(found[:20])


def test_translations_keep_references_math_and_code():
    bad = []
    for page, catalogue in _catalogues().items():
        for m in catalogue:
            if not (m.id and m.string):
                continue
            if _targets(m.id) != _targets(m.string):
                bad.append(f"{page}: references differ: {m.id[:60]!r}")
            if Counter(MATH.findall(m.id)) != Counter(MATH.findall(m.string)):
                bad.append(f"{page}: math differs: {m.id[:60]!r}")
            if Counter(CODE.findall(ROLE.sub("", m.id))) != Counter(CODE.findall(ROLE.sub("", m.string))):
                bad.append(f"{page}: inline code differs: {m.id[:60]!r}")
    assert not bad, "\n".join(bad[:20])


def test_the_checks_find_what_they_look_for(tmp_path, monkeypatch):
    """An untranslated, a fuzzy and a stale message are each reported."""
    from babel.messages.catalog import Catalog
    from babel.messages.pofile import write_po

    catalogue = Catalog(locale="ko")
    catalogue.add("Done", "완료")
    catalogue.add("Not yet")
    catalogue.add("Changed", "바뀜", flags=["fuzzy"])
    catalogue.add("Gone", "사라짐")
    (tmp_path / "book").mkdir()
    with (tmp_path / "book" / "page.po").open("wb") as f:
        write_po(f, catalogue)
    monkeypatch.setattr(translations, "LOCALE", tmp_path)
    found = translations.problems({"book/page": ["Done", "Not yet", "Changed", "New"], "book/other": ["x"]})
    text = "\n".join(found)
    assert "untranslated: 'Not yet'" in text and "fuzzy" in text and "'Changed'" in text
    assert "not in the catalogue yet (run update): 'New'" in text and "no longer in the English page" in text
    assert "book/other: no catalogue" in text
    assert len(found) == 5


@pytest.mark.slow
def test_the_catalogues_are_up_to_date_with_the_english_sources(tmp_path):
    """Extract the messages from the sources now (Sphinx's gettext builder) and compare."""
    sources = translations.extract(tmp_path / "gettext")
    assert "chapters/05_training_charrnn" in sources and len(sources["chapters/05_training_charrnn"]) > 50
    stale = [line for line in translations.problems(sources) if "stale" in line or "catalogue" in line]
    assert not stale, "run `python book/translations.py update`, then translate:\n" + "\n".join(stale[:20])
