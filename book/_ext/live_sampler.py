"""Ship the live sampler's weights with the built book (page ``book/live_sampler.md``).

The page's code, ``book/_static/live_sampler.js``, is a source file; the model it runs is
not: ``make book`` writes chapter 5's trained weights as a script, ``WEIGHTS`` below
(git-ignored, under ``_build``), with ``python -m charrnn_lib.web`` before Sphinx starts.
This extension adds that script's folder to ``html_static_path``, so Sphinx copies it to
``_build/html/_static/`` beside ``live_sampler.js``, and stops the build with a message that
says what to run when the script is missing (a plain static path would only warn about
a missing folder).
"""
from __future__ import annotations

import pathlib

from sphinx.application import Sphinx
from sphinx.errors import ExtensionError

WEIGHTS = "_build/live_sampler/live_sampler_weights.js"   # relative to the book's root; the page loads it by name


def _add_weights(app: Sphinx) -> None:
    if app.builder.format != "html":      # e.g. the gettext builder that extracts the messages to translate
        return
    config = app.config
    path = pathlib.Path(app.srcdir) / WEIGHTS
    if not path.is_file():
        raise ExtensionError(f"{WEIGHTS} is missing: the live sampler page needs chapter 5's model as a script. "
                             f"`make book` writes it; by hand: `python -m charrnn_lib.web {WEIGHTS}`")
    config.html_static_path.append(str(path.parent))


def setup(app: Sphinx):
    app.connect("builder-inited", _add_weights)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
