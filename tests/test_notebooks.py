"""Guards that keep `pytest --nbval chapters/` strict.

nbval compares only the cells it can: a code cell stored without an execution count is
silently skipped, and a notebook saved half-run compares nothing useful.  These checks
fail when a chapter is stored unexecuted, out of order, with an error, with stray stderr,
or with an ignored output that no assertion checks afterwards.
"""
from __future__ import annotations

import json
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
CHAPTERS = sorted((ROOT / "chapters").glob("*.ipynb"))


def notebook_problems(nb: dict) -> list[str]:
    """Everything that would make strict nbval weaker than it looks, as messages."""
    problems = []
    if nb.get("metadata", {}).get("kernelspec", {}).get("name") != "python3":
        problems.append("kernelspec is not python3")
    counts = []
    code_cells = [(i, c) for i, c in enumerate(nb.get("cells", [])) if c.get("cell_type") == "code"]
    if not code_cells:
        problems.append("no code cells")
    for pos, (i, cell) in enumerate(code_cells):
        source = "".join(cell.get("source", ""))
        if not source.strip():
            problems.append(f"cell {i}: empty code cell")
            continue
        tags = cell.get("metadata", {}).get("tags", [])
        count = cell.get("execution_count")
        if count is None:
            problems.append(f"cell {i}: no execution_count (unexecuted cells are skipped by nbval)")
        else:
            counts.append(count)
        for out in cell.get("outputs", []):
            kind = out.get("output_type")
            if kind == "error" and "raises-exception" not in tags:
                problems.append(f"cell {i}: stored error {out.get('ename')}")
            if kind == "stream" and out.get("name") == "stderr" and "nbval-ignore-output" not in tags:
                problems.append(f"cell {i}: stderr output {''.join(out.get('text', ''))[:80]!r}")
        if "raises-exception" in tags and not any(o.get("output_type") == "error" for o in cell.get("outputs", [])):
            problems.append(f"cell {i}: tagged raises-exception but stores no error")
        if "nbval-ignore-output" in tags:
            following = [c for _, c in code_cells[pos + 1: pos + 3]]
            if not any(re.search(r"\bassert\b|assert_allclose|assert_array", "".join(c.get("source", "")))
                       for c in following):
                problems.append(f"cell {i}: output ignored by nbval but no assertion in the next cells checks it")
    if counts and counts != list(range(1, len(counts) + 1)):
        problems.append(f"execution counts {counts[:8]}... are not 1..N: restart the kernel and run all")
    sources = "\n".join("".join(c.get("source", "")) for _, c in code_cells)
    if not re.search(r"\bassert\b|assert_allclose|assert_array", sources):
        problems.append("no assertion anywhere: the chapter checks nothing")
    return problems


def _load(path: pathlib.Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def test_there_are_chapters():
    assert CHAPTERS, "chapters/ holds no notebooks"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_chapter_is_stored_executed_and_strict(path):
    problems = notebook_problems(_load(path))
    assert not problems, f"{path.name}:\n  " + "\n  ".join(problems)


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_chapter_has_label_goals_summary_and_exercises(path):
    cells = _load(path)["cells"]
    markdown = ["".join(c["source"]) for c in cells if c["cell_type"] == "markdown"]
    assert re.match(r"\((chapter|appendix)-[a-z]+\)=\s*\n# ", markdown[0]), \
        "first cell must be '(chapter-…)=' (or '(appendix-…)=') then the H1 title"
    assert sum(1 for m in markdown for line in m.splitlines() if line.startswith("# ")) == 1, "exactly one H1"
    text = "\n".join(markdown)
    assert re.search(r"learning goals|you will learn|in this chapter you", text, re.I), "no learning goals"
    assert re.search(r"^## Summary", text, re.M), "no '## Summary' section"
    assert "```{exercise}" in text and "```{solution}" in text, "no exercises with solutions"
    assert ":class: dropdown" in text, "solutions must be folded (dropdown)"


def test_every_chapter_is_in_the_table_of_contents():
    toc = (ROOT / "_toc.yml").read_text(encoding="utf-8")
    listed = set(re.findall(r"file:\s*chapters/(\S+)", toc))
    on_disk = {p.stem for p in CHAPTERS}
    assert on_disk == listed, f"in chapters/ but not in _toc.yml: {on_disk - listed}; listed but missing: {listed - on_disk}"


# The guard itself must catch what it claims to catch.
def _cell(source, count, outputs=(), tags=()):
    return {"cell_type": "code", "source": source, "execution_count": count, "outputs": list(outputs),
            "metadata": {"tags": list(tags)}}


def _nb(*cells):
    return {"metadata": {"kernelspec": {"name": "python3"}}, "cells": list(cells)}


def test_guard_accepts_a_clean_notebook():
    assert notebook_problems(_nb(_cell("x = 1", 1), _cell("assert x == 1", 2))) == []


def test_guard_rejects_an_unexecuted_notebook():
    problems = notebook_problems(_nb(_cell("x = 1", None), _cell("assert x == 1", None)))
    assert any("no execution_count" in p for p in problems)


def test_guard_rejects_out_of_order_counts():
    problems = notebook_problems(_nb(_cell("x = 1", 2), _cell("assert x == 1", 1)))
    assert any("not 1..N" in p for p in problems)


def test_guard_rejects_stored_errors_and_stderr():
    err = {"output_type": "error", "ename": "ValueError", "evalue": "", "traceback": []}
    noise = {"output_type": "stream", "name": "stderr", "text": "I0000 absl notice"}
    problems = notebook_problems(_nb(_cell("boom()", 1, [err]), _cell("assert 1", 2, [noise])))
    assert any("stored error" in p for p in problems) and any("stderr" in p for p in problems)
    tagged = _cell("boom()", 1, [err], tags=["raises-exception"])
    assert notebook_problems(_nb(tagged, _cell("assert 1", 2))) == []


def test_guard_rejects_unchecked_ignored_output():
    ignored = _cell("loss = train()", 1, tags=["nbval-ignore-output"])
    problems = notebook_problems(_nb(ignored, _cell("print(loss)", 2), _cell("y = 2", 3), _cell("assert y", 4)))
    assert any("no assertion" in p for p in problems)


def broken_inline_math(markdown: str) -> list[str]:
    """Lines that start with '+ ', '- ' or '* ' while an inline $…$ is open.

    Markdown reads such a line as a list item, which cuts the formula in two and leaves raw
    TeX on the page (found by the rendered-book check; this catches it before a build).
    """
    found = []
    for paragraph in markdown.split("\n\n"):
        text = paragraph.replace("$$", "")
        lines = text.split("\n")
        open_math = False
        for line in lines:
            if open_math and line.lstrip()[:2] in ("+ ", "- ", "* "):
                found.append(line.strip()[:60])
            open_math ^= line.count("$") % 2 == 1
    return found


MARKDOWN_SOURCES = sorted((ROOT / "book").glob("*.md")) + CHAPTERS


@pytest.mark.parametrize("path", MARKDOWN_SOURCES, ids=lambda p: p.name)
def test_no_inline_math_broken_by_a_list_marker(path):
    if path.suffix == ".ipynb":
        cells = _load(path)["cells"]
        texts = ["".join(c["source"]) for c in cells if c["cell_type"] == "markdown"]
    else:
        texts = [path.read_text(encoding="utf-8")]
    bad = [line for t in texts for line in broken_inline_math(t)]
    assert not bad, f"{path.name}: inline math broken across a line starting with a list marker: {bad}"


def test_inline_math_guard_catches_the_bug():
    assert broken_inline_math("so $a = b\n+ c$ and") == ["+ c$ and"]
    assert broken_inline_math("$a$ and\n- item") == []
