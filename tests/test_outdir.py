"""The output folder: an exclusive, re-entrant lock that no crash leaves behind; checks that
find an unusable folder before any work, and leave nothing when they refuse."""
import os
import shutil
import subprocess
import sys
import threading

import pytest

from charrnn_lib import outdir
from charrnn_lib.outdir import OutDirBusyError, OutDirError, claim_out_dir, lock_out_dir

HOLD = ("import sys; from charrnn_lib.outdir import lock_out_dir\n"
        "with lock_out_dir(sys.argv[1]):\n    print('locked', flush=True)\n    sys.stdin.readline()\n")


def test_lock_is_exclusive_across_processes_and_names_the_holder(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(OutDirBusyError, match=rf"in use by another training run \(pid {holder.pid} on "):
            with lock_out_dir(tmp_path):
                pass
    finally:
        holder.communicate("\n", timeout=30)
    with lock_out_dir(tmp_path):  # released with its holder
        assert (tmp_path / outdir.LOCK_NAME).read_text().startswith(f"pid {os.getpid()} on ")
    assert not (tmp_path / outdir.LOCK_NAME).exists()  # and deleted again


def test_a_killed_holder_leaves_no_lock(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    holder.kill()  # SIGKILL: no clean-up runs
    holder.wait(timeout=30)
    assert (tmp_path / outdir.LOCK_NAME).exists()  # the file stays, but the kernel released the lock
    with lock_out_dir(tmp_path):
        pass


def test_lock_is_reentrant_in_a_thread_and_exclusive_between_threads(tmp_path):
    errors = []
    with lock_out_dir(tmp_path):
        with lock_out_dir(tmp_path / "." ):  # the same folder, spelled otherwise: re-entered
            pass
        assert (tmp_path / outdir.LOCK_NAME).exists()  # still held by the outer block

        def other():
            try:
                with lock_out_dir(tmp_path):
                    pass
            except OutDirBusyError as exc:
                errors.append(str(exc))

        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
    assert errors and "another thread of this process" in errors[0]
    assert not (tmp_path / outdir.LOCK_NAME).exists()


def test_make_out_dir_returns_what_it_created(tmp_path):
    assert outdir.make_out_dir(tmp_path / "a" / "b") == [tmp_path / "a", tmp_path / "a" / "b"]
    assert outdir.make_out_dir(tmp_path / "a" / "b") == []
    (tmp_path / "file").write_text("x")
    for bad in (tmp_path / "file", tmp_path / "file" / "sub"):
        with pytest.raises(OutDirError, match="cannot create"):
            outdir.make_out_dir(bad)


def test_claim_checks_and_removes_what_it_created_when_refused(tmp_path, monkeypatch):
    with claim_out_dir(tmp_path / "new" / "run", needed_bytes=1000) as folder:
        assert folder.is_dir() and (folder / outdir.LOCK_NAME).exists()
    assert [p.name for p in folder.iterdir()] == []  # the probe file and the lock are gone

    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9 - 500, 500))
    with pytest.raises(OutDirError, match=r"has 500 bytes free, but the checkpoints need about 1 KB"):
        with claim_out_dir(tmp_path / "other" / "run", needed_bytes=1000):
            raise AssertionError("not reached")
    assert not (tmp_path / "other").exists()
    monkeypatch.undo()

    with pytest.raises(RuntimeError):  # the block fails before writing anything: removed too
        with claim_out_dir(tmp_path / "third"):
            raise RuntimeError("boom")
    assert not (tmp_path / "third").exists()
    (tmp_path / "kept").mkdir()
    with pytest.raises(RuntimeError):  # a folder that existed before is never removed
        with claim_out_dir(tmp_path / "kept"):
            raise RuntimeError("boom")
    assert (tmp_path / "kept").is_dir()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_probe_finds_a_read_only_folder(tmp_path):
    folder = tmp_path / "readonly"
    folder.mkdir(mode=0o555)
    with pytest.raises(OutDirError, match="cannot write into"):
        outdir.probe_writable(folder)


def test_human_bytes():
    assert [outdir.human_bytes(n) for n in (999, 1500, 2.5e9, 3.2e12)] == ["999 bytes", "1.5 KB", "2.5 GB", "3.2 TB"]
