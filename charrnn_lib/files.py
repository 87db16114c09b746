"""Writing a file so that a crash never leaves half of it: write beside it, then rename.

``os.replace`` is atomic on one file system, so a reader sees either the old file or the
whole new one.  The corpora, the batch cache and the tokenised corpora all write through
``write_atomically``; a checkpoint, being several files, is written into a temporary
folder that is renamed the same way (``charrnn_lib.checkpoint``).  Plain Python.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["write_atomically"]


def write_atomically(path, write) -> Path:
    """Call ``write(f)`` on a new binary file beside ``path``, then rename it to ``path``.

    The folder is created if missing.  If ``write`` (or the rename) fails, the temporary
    file is removed and ``path`` is left as it was.  Returns ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
