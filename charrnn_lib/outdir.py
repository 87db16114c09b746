"""The folder a training run writes into: one writer at a time, checked before the work starts.

``train(..., out_dir=...)`` and ``python -m charrnn_lib train --out`` keep their checkpoints
in one folder.  Atomic saves (``charrnn_lib.checkpoint``) make each checkpoint safe on its
own; two things they cannot prevent are handled here.

* **Two runs in one folder.**  Each would replace the other's checkpoints, and one's
  start-up cleanup would delete the other's half-written save.  :func:`lock_out_dir` takes
  an operating-system lock (``fcntl.flock``, exclusive, non-blocking) on the file
  ``LOCK_NAME`` in the folder; a second run fails at once with :class:`OutDirBusyError`,
  which names the holder.  The process id and host written into the file are for that
  message only: the kernel releases the lock when the holder exits, however it exits
  (even ``SIGKILL``), so no stale lock is ever left behind -- unlike a PID file.  The lock
  is re-entrant within a thread (the command line takes it before ``train`` takes it again).
  Where ``fcntl`` does not exist (Windows) there is no lock.
* **A folder that cannot be used** -- no permission, a read-only or pseudo file system such
  as ``/proc``, a parent that is a file, too little free space -- would otherwise be found
  only at the first save, after minutes of training.  :func:`claim_out_dir` creates the
  folder, locks it, writes and removes a probe file and compares the free space with what
  the run's checkpoints need; it raises :class:`OutDirError` with the reason, and removes
  the folders it created if it fails.

Plain Python: no NumPy, no TensorFlow.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import socket
import threading
import time
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no flock; the lock is then a no-op
    fcntl = None

__all__ = [
    "LOCK_NAME",
    "OutDirBusyError",
    "OutDirError",
    "check_free_space",
    "claim_out_dir",
    "lock_out_dir",
    "make_out_dir",
    "probe_writable",
]

LOCK_NAME = ".lock"
_PROBE_BYTES = 4096


class OutDirError(OSError):
    """The output folder cannot be created or written, or has too little free space."""


class OutDirBusyError(OutDirError):
    """Another run (another process, or another thread of this one) holds the folder's lock."""


def _reason(exc: OSError) -> str:
    """``exc``'s reason in words, without the path (which the caller names)."""
    return exc.strerror or str(exc)


def human_bytes(n: float) -> str:
    """``1536`` -> ``'1.5 KB'``: bytes in decimal units, three significant figures."""
    for unit in ("bytes", "KB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.3g} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------- the lock


# Locks this process holds: resolved folder -> [file descriptor, depth, owning thread].
_HELD: dict[str, list] = {}
_HELD_GUARD = threading.Lock()


def _read_holder(fd: int) -> str:
    try:
        text = os.pread(fd, 300, 0).decode("utf-8", "replace").strip()
    except OSError:
        text = ""
    return text or "a process that has not written its name yet"


def _acquire(folder: Path) -> int:
    """Open ``folder/LOCK_NAME`` and lock it; the descriptor.  Raise OutDirBusyError if taken."""
    path = folder / LOCK_NAME
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
        except OSError as exc:
            raise OutDirError(f"cannot create the lock file {path}: {_reason(exc)}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise OutDirBusyError(f"{folder} is in use by another training run ({holder}); wait for it "
                                  f"to finish or stop it, or train into another folder") from None
        except OSError as exc:
            os.close(fd)
            raise OutDirError(f"cannot lock {path}: {_reason(exc)} (the file system does not "
                              f"support file locks; train into a folder on a local disk)") from None
        # The previous holder deletes the file when it lets go; if it did so between our
        # open and our lock, we hold a lock on a file nobody else will see: open again.
        try:
            if os.path.samestat(os.fstat(fd), os.stat(path)):
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    info = (f"pid {os.getpid()} on {socket.gethostname()}, "
            f"since {time.strftime('%Y-%m-%d %H:%M:%S')}\n").encode("utf-8")
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, info, 0)
    except OSError:
        pass  # the information is a courtesy; the lock is what counts
    return fd


def _release(fd: int, folder: Path) -> None:
    path = folder / LOCK_NAME
    try:  # delete it while still holding the lock (see _acquire), unless it was replaced
        if os.path.samestat(os.fstat(fd), os.stat(path)):
            os.unlink(path)
    except OSError:
        pass
    os.close(fd)  # releases the lock


@contextlib.contextmanager
def lock_out_dir(out_dir):
    """Hold the exclusive lock of the existing folder ``out_dir`` for the ``with`` block.

    Raises :class:`OutDirBusyError` at once if another process (or another thread) holds
    it; re-entrant within one thread.  The lock file is deleted again on exit.
    """
    folder = Path(out_dir)
    if fcntl is None:
        yield folder
        return
    key = str(folder.resolve())
    me = threading.get_ident()
    with _HELD_GUARD:
        held = _HELD.get(key)
        if held is not None:
            if held[2] != me:
                raise OutDirBusyError(f"{folder} is in use by another thread of this process")
            held[1] += 1
    if held is not None:  # taken already by this thread: just count
        try:
            yield folder
        finally:
            with _HELD_GUARD:
                held[1] -= 1
        return
    fd = _acquire(folder)
    with _HELD_GUARD:
        _HELD[key] = [fd, 1, me]
    try:
        yield folder
    finally:
        with _HELD_GUARD:
            del _HELD[key]
        _release(fd, folder)


# --------------------------------------------------------------------------- checks


def make_out_dir(out_dir) -> list[Path]:
    """Create ``out_dir`` and its missing parents; the folders created, outermost first."""
    folder = Path(out_dir)
    missing, p = [], folder
    while not os.path.lexists(p) and p != p.parent:
        missing.append(p)
        p = p.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutDirError(f"cannot create {folder}: it exists and is not a folder") from None
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename and str(exc.filename) != str(folder) else ""
        raise OutDirError(f"cannot create {folder}: {_reason(exc)}{where}") from None
    return missing[::-1]


def probe_writable(out_dir) -> None:
    """Write a small file into ``out_dir``, flush it to the disk and delete it; OutDirError if not."""
    folder = Path(out_dir)
    probe = folder / f".probe-{os.getpid()}-{threading.get_ident()}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, b"\0" * _PROBE_BYTES)
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise OutDirError(f"cannot write into {folder}: {_reason(exc)}") from None
    finally:
        with contextlib.suppress(OSError):
            probe.unlink()


def check_free_space(out_dir, needed_bytes: int, what: str = "the checkpoints") -> None:
    """OutDirError if the file system of ``out_dir`` has less than ``needed_bytes`` free."""
    try:
        free = shutil.disk_usage(out_dir).free
    except OSError:
        return  # cannot tell: the probe write has passed, let the run try
    if free < needed_bytes:
        raise OutDirError(f"{out_dir} has {human_bytes(free)} free, but {what} need about "
                          f"{human_bytes(needed_bytes)}; free some space or train into another folder")


@contextlib.contextmanager
def claim_out_dir(out_dir, needed_bytes: int = 0, what: str = "the checkpoints"):
    """Create, lock and check ``out_dir`` for the ``with`` block (see the module's docstring).

    If the checks -- or the block -- fail, the folders this call created are removed again
    when they are empty, so a refused run leaves nothing behind.
    """
    folder = Path(out_dir)
    created = make_out_dir(folder)
    try:
        with lock_out_dir(folder):
            probe_writable(folder)
            check_free_space(folder, needed_bytes, what)
            yield folder
    except BaseException:
        for path in reversed(created):  # innermost first; stop at the first one with content
            try:
                path.rmdir()
            except OSError:
                break
        raise
