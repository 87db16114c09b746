"""Keeping freed memory in the process: a training step without page faults.

A training step allocates tens of megabytes of temporaries and frees them before the
next step.  XLA plans a compiled function's temporaries as one block (the gates, cell
states and outputs of every layer at every position of the batch, and their gradients).
glibc's ``malloc`` serves a block that large with an ``mmap`` of its own and returns it to
the kernel on ``free`` (its *mmap threshold* starts at 128 KiB and rises by itself only up
to 32 MiB), and it gives back the free top of its heap as soon as more than 128 KiB lie
there (the *trim threshold*).  So every step asks the kernel for fresh memory again, and
the kernel zero-fills each 4 KiB page when it is first touched: a page fault per page,
every step (the appendix "Making it fast on a CPU" counts them and times the difference).

``keep_freed_memory()`` changes two settings with ``mallopt``: large blocks come from the
heap instead of an ``mmap`` of their own, and up to 256 MiB of freed heap stay in the
process for the next step.  The process holds on to its peak memory instead of returning
it between steps -- the right trade for a training loop.  It is process-wide, it cannot
be undone, and it does nothing where the C library is not glibc (macOS, Windows, musl):
there the call returns ``False``.  So no library function calls it: the entry points that
want it do: the command line's ``train``, ``charrnn_lib.bench`` and ``charrnn_lib.bench_quality``,
and the first cell of the chapters that train (the appendix "Making it fast on a CPU" measures
what it buys).
"""
from __future__ import annotations

import ctypes
import platform

__all__ = ["TRIM_THRESHOLD", "keep_freed_memory"]

# mallopt's parameter numbers, from glibc's <malloc.h>
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
TRIM_THRESHOLD = 256 << 20   # bytes of free heap kept before any is returned to the kernel

_done = False


def keep_freed_memory() -> bool:
    """Tell glibc's malloc to keep freed blocks for reuse; ``True`` if it took the setting.

    Calling it again does nothing more.
    """
    global _done
    if _done:
        return True
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # at most 0 blocks with an mmap of their own (glibc still maps memory when the heap
    # cannot grow); then the trim threshold
    _done = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return _done
