"""Guards that keep `pytest --nbval chapters/` strict.

nbval compares only the cells it can: a code cell stored without an execution count is
silently skipped, and a notebook saved half-run compares nothing useful.  These checks
fail when a chapter is stored unexecuted, out of order, with an error, with stray stderr,
or with an ignored output that no assertion checks afterwards.  A second guard,
`vacuous_assertions`, reads the code cells with `ast` and rejects assertions that cannot
fail: an expression compared with itself, a timing compared with zero, a constant.
"""
from __future__ import annotations

import ast
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


# --------------------------------------------------------------------------- vacuous assertions
# An assertion must be able to fail.  These are the mechanical cases: the same expression on
# both sides of a comparison (or as the two arrays of np.testing.assert_*), a timing compared
# with zero, a length or absolute value compared with zero, and an assert of a constant or a
# tuple.  What an assertion means cannot be checked mechanically; the review still has to.

#: Functions whose first two arguments are compared: an identical pair compares a value with
#: itself.  The assert_* ones are checks wherever they stand; the others only inside an assert.
PAIRWISE_ASSERTS = frozenset({
    "assert_allclose", "assert_array_equal", "assert_equal", "assert_array_almost_equal",
    "assert_almost_equal", "assert_approx_equal", "assert_array_almost_equal_nulp",
    "assert_array_max_ulp", "assert_array_less", "assert_string_equal", "assertEqual",
    "assertAlmostEqual",
})
PAIRWISE_PREDICATES = frozenset({"allclose", "isclose", "array_equal", "array_equiv"})

#: A timing is an expression that names one of these words, as a whole part of an identifier
#: (split at '_', at lower-to-upper case changes and at digits) or of a string subscript
#: (`bench["seconds"]`), or contains one of TIMING_SUBSTRINGS.  A duration or a throughput
#: is positive by construction, so comparing it with zero checks nothing.  "rate" is left
#: out on purpose (learning_rate, error_rate and dropout_rate are not timings), and so are
#: "second" (a second derivative) and "times" (a count).
TIMING_WORDS = frozenset({
    "time", "timing", "timings", "timer", "seconds", "secs", "sec", "ms",
    "elapsed", "duration", "durations", "speed", "speeds", "speedup", "throughput", "latency",
    "wall", "walltime", "perf", "monotonic",
})
TIMING_SUBSTRINGS = ("per_second", "per_sec", "persec", "perf_counter", "chars_per_s", "steps_per_s")

#: Calls whose value is never negative: `len(x) >= 0` is always true.
NON_NEGATIVE_CALLS = frozenset({"len", "abs", "fabs", "norm", "absolute", "count_params", "size"})


def _call_name(node: ast.AST) -> str | None:
    func = node.func if isinstance(node, ast.Call) else None
    if isinstance(func, ast.Attribute):
        return func.attr
    if isinstance(func, ast.Name):
        return func.id
    return None


def _words(name: str) -> set[str]:
    spaced = re.sub(r"([a-z])([A-Z])", r"\1_\2", name)
    return {w for w in re.split(r"[_\W\d]+", spaced.lower()) if w}


def names_a_timing(node: ast.AST, bound: dict[str, list[ast.AST]] | None = None) -> bool:
    """Whether an expression mentions a timing (see TIMING_WORDS).

    `bound` maps the loop variables of the cell's comprehensions to what they iterate
    over, so that `all(v > 0 for v in throughput.values())` counts as a timing.
    """
    for sub in ast.walk(node):
        if bound and isinstance(sub, ast.Name) and any(names_a_timing(it) for it in bound.get(sub.id, ())):
            return True
        names = []
        if isinstance(sub, ast.Name):
            names.append(sub.id)
        elif isinstance(sub, ast.Attribute):
            names.append(sub.attr)
        elif isinstance(sub, ast.Subscript) and isinstance(sub.slice, ast.Constant) \
                and isinstance(sub.slice.value, str):
            names.append(sub.slice.value)
        for name in names:
            if _words(name) & TIMING_WORDS or any(s in name.lower() for s in TIMING_SUBSTRINGS):
                return True
    return False


def _is_zero(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and not isinstance(node.value, bool) \
        and isinstance(node.value, (int, float)) and node.value == 0


def _same(a: ast.AST, b: ast.AST) -> bool:
    """Same expression: equal source text once parsed (whitespace, comments and redundant
    parentheses do not count)."""
    return ast.dump(a) == ast.dump(b)


def _code(source: str) -> str:
    """A code cell as plain Python: IPython magics and shell lines become `pass`."""
    return "\n".join("pass" if line.lstrip().startswith(("%", "!")) else line
                     for line in source.splitlines())


def vacuous_assertions(nb: dict) -> list[str]:
    """Assertions in the code cells that cannot fail, as messages.

    Comparisons are examined only inside `assert` statements (elsewhere `x != x` is the NaN
    test, and `t > 0` may be a branch); np.testing.assert_* calls wherever they stand.
    """
    problems = []
    for i, cell in enumerate(nb.get("cells", [])):
        if cell.get("cell_type") != "code":
            continue
        try:
            tree = ast.parse(_code("".join(cell.get("source", ""))))
        except SyntaxError:
            continue                                    # nbval reports the failing cell itself
        bound: dict[str, list[ast.AST]] = {}            # comprehension variable -> its iterables
        for gen in (n for n in ast.walk(tree) if isinstance(n, ast.comprehension)):
            for target in ast.walk(gen.target):
                if isinstance(target, ast.Name):
                    bound.setdefault(target.id, []).append(gen.iter)
        asserted = {id(sub) for a in ast.walk(tree) if isinstance(a, ast.Assert) for sub in ast.walk(a.test)}
        for node in ast.walk(tree):
            where = f"cell {i}, line {getattr(node, 'lineno', '?')}"
            text = ast.unparse(node)[:70] if isinstance(node, (ast.Assert, ast.Compare, ast.Call)) else ""
            if isinstance(node, ast.Assert):
                if isinstance(node.test, ast.Tuple) or (isinstance(node.test, ast.Constant) and node.test.value):
                    problems.append(f"{where}: `{text}` asserts a constant or a tuple, which is always true")
            elif isinstance(node, ast.Compare) and id(node) in asserted:
                operands = [node.left, *node.comparators]
                for left, op, right in zip(operands, node.ops, operands[1:]):
                    if _same(left, right):
                        problems.append(f"{where}: `{text}` compares an expression with itself")
                    lower_bound = ((isinstance(op, (ast.Gt, ast.GtE, ast.NotEq)) and _is_zero(right), left)
                                   if not _is_zero(left) else
                                   (isinstance(op, (ast.Lt, ast.LtE, ast.NotEq)), right))
                    checked_zero, side = lower_bound
                    if not checked_zero:
                        continue
                    if names_a_timing(side, bound):
                        problems.append(f"{where}: `{text}` compares a timing with zero, which checks nothing")
                    elif isinstance(op, (ast.GtE, ast.LtE)) and _call_name(side) in NON_NEGATIVE_CALLS:
                        problems.append(f"{where}: `{text}` compares a non-negative quantity with 0, always true")
            elif isinstance(node, ast.Call) and len(node.args) >= 2 and _same(node.args[0], node.args[1]) \
                    and (_call_name(node) in PAIRWISE_ASSERTS
                         or (_call_name(node) in PAIRWISE_PREDICATES and id(node) in asserted)):
                problems.append(f"{where}: `{text}` compares an expression with itself")
    return problems


#: Chapters known to fail the guard, each fixed by whoever owns it; strict, so that the mark
#: must be removed in the same change that fixes the chapter.
@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_chapter_assertions_can_fail(path):
    problems = vacuous_assertions(_load(path))
    assert not problems, f"{path.name}:\n  " + "\n  ".join(problems)


def test_vacuous_guard_accepts_real_checks():
    cells = [_cell(src, n) for n, src in enumerate([
        "%matplotlib inline\nx, y = 1, 1",
        "assert x == y and x + 1 == y + 1",
        "np.testing.assert_allclose(a, b, rtol=1e-6)",
        "assert seconds > 0.5 * baseline_seconds",        # a timing against another: a claim
        "assert learning_rate > 0 and len(xs) > 0",       # not timings; len > 0 can fail
        "assert elapsed < 10.0",                          # an upper bound can fail
        "assert np.allclose(h[0], h[1])",
        "assert all(v > 0 for v in probabilities)",       # a loop variable that is not a timing
        "bad = x != x\nif elapsed > 0: rate = n / elapsed",  # NaN test and a branch: no assertions
        "assert second[0] == 0.0 and n_times >= 1",       # a second derivative, a count
    ], start=1)]
    assert vacuous_assertions(_nb(*cells)) == []


def test_vacuous_guard_rejects_self_comparison():
    for src in ("assert x == x", "assert f(a ,b)  ==  f(a, b)", "assert a == b == b",
                "np.testing.assert_allclose(h_tf, h_tf, rtol=1e-6)", "assert np.array_equal(x[0], (x[0]))",
                "assert (loss) <= loss"):
        problems = vacuous_assertions(_nb(_cell(src, 1)))
        assert any("with itself" in p for p in problems), src


def test_vacuous_guard_rejects_timing_compared_with_zero():
    for src in ("assert elapsed_s > 0", "assert seconds >= 0.0", "assert chars_per_second > 0",
                "assert 0 < bench['throughput']", "assert time.perf_counter() - t0 > 0",
                "assert stepTime != 0", "assert result.duration > 0 and ok", "assert 0 <= wall_ms",
                "assert all(v > 0 for v in throughput.values())", "assert all(t > 0 for _, t in seconds_by_run)"):
        problems = vacuous_assertions(_nb(_cell(src, 1)))
        assert any("timing" in p for p in problems), src


def test_vacuous_guard_rejects_constants_and_non_negative_bounds():
    for src in ("assert True", "assert (x == 1, 'message')", "assert 'always'", "assert len(xs) >= 0",
                "assert np.linalg.norm(g) >= 0", "assert 0 <= abs(d)"):
        problems = vacuous_assertions(_nb(_cell(src, 1)))
        assert problems, src
