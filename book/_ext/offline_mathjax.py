"""Serve MathJax from the built book instead of a CDN.

Sphinx's default ``mathjax_path`` points at a CDN, so a reader without internet (and
every test here) would see raw TeX.  The PyPI package ``django-static-mathjax`` ships
MathJax 3 as plain files (the ``mathjax`` package folder).  This extension copies its
``es5`` build into ``_build/html/_static/mathjax`` and points ``mathjax_path`` there.
"""
from __future__ import annotations

import importlib.util
import pathlib
import shutil

from sphinx.application import Sphinx
from sphinx.errors import ExtensionError

SCRIPT = "tex-chtml.js"


def _mathjax_es5() -> pathlib.Path:
    spec = importlib.util.find_spec("mathjax")
    if spec is None or not spec.submodule_search_locations:
        raise ExtensionError(
            "MathJax files not found: install the pinned dev dependencies "
            "(`make setup`, which installs django-static-mathjax)."
        )
    es5 = pathlib.Path(list(spec.submodule_search_locations)[0]) / "static" / "mathjax" / "es5"
    if not (es5 / SCRIPT).is_file():
        raise ExtensionError(f"{es5 / SCRIPT} is missing: reinstall django-static-mathjax.")
    return es5


def _point_at_local_copy(app: Sphinx, config) -> None:
    _mathjax_es5()  # fail early, with a clear message, if the files are not there
    config.mathjax_path = f"mathjax/{SCRIPT}"


def _copy_files(app: Sphinx, exception) -> None:
    if exception is not None or app.builder.format != "html":
        return
    dest = pathlib.Path(app.outdir) / "_static" / "mathjax"
    if dest.exists():
        shutil.rmtree(dest)
    # The whole es5 build: tex-chtml.js loads extensions (input/tex/extensions, a11y,
    # ui, sre) and the CHTML web fonts lazily, relative to its own location.
    shutil.copytree(_mathjax_es5(), dest, ignore=shutil.ignore_patterns("*.map"))


def setup(app: Sphinx):
    app.connect("config-inited", _point_at_local_copy)
    app.connect("build-finished", _copy_files)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
