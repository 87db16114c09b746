"""charrnn_lib.files: a file is replaced whole or not at all."""
import pytest

from charrnn_lib.files import write_atomically


def test_write_creates_the_folder_and_replaces_the_file(tmp_path):
    path = tmp_path / "deep" / "er" / "f.bin"
    assert write_atomically(path, lambda f: f.write(b"one")) == path
    write_atomically(path, lambda f: f.write(b"two"))
    assert path.read_bytes() == b"two"
    assert [p.name for p in path.parent.iterdir()] == ["f.bin"]          # no temporary file left


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "f.txt"
    path.write_text("old")

    def half_then_fail(f):
        f.write(b"new but incomp")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomically(path, half_then_fail)
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["f.txt"]
