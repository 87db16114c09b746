"""From text to batches: the data side of char-rnn.

A character-level language model sees a corpus as one long sequence of integers.  Four
steps turn a text file into what the training loop consumes:

1. ``read_text``: the file's bytes decoded as UTF-8 (or another encoding you name), with
   clear errors for a missing, empty or undecodable file.
2. ``Vocab``: the distinct characters, most frequent first (ties by code point); a
   character's id is its position.  ``encode``/``decode`` map text <-> ids.
3. ``make_batches``: the deck's batching.  Cut the id sequence to a multiple of
   ``batch_size * seq_length``, let the targets be the inputs shifted by one (the very last
   target wraps round to the first character), lay the sequence out as ``batch_size`` rows
   and cut the rows along time into ``num_batches`` chunks of ``seq_length``.  Row ``r`` of
   batch ``b + 1`` continues row ``r`` of batch ``b``, which is what makes it correct to
   carry the recurrent state from one batch to the next (truncated BPTT).
4. ``TextLoader``: reads, builds the vocabulary from the whole text, encodes, caches the
   result (``vocab.json`` + ``ids.npy`` + ``meta.json``; never a pickle, and rebuilt when
   the source changes), splits off the last ``val_fraction`` of the characters as a
   contiguous validation part, and batches both parts.

Shapes: ``x`` and ``y`` are ``(num_batches, B, T)`` int32 arrays; one batch is ``(B, T)``.
NumPy only; TensorFlow is imported inside ``TextLoader.dataset`` and nowhere else.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from charrnn_lib.corpora import corpus_path, default_data_dir
from charrnn_lib.files import write_atomically

__all__ = [
    "CorpusEncodingError",
    "CorpusTooSmallError",
    "EmptyCorpusError",
    "TextLoader",
    "UnknownCharactersError",
    "Vocab",
    "make_batches",
    "read_text",
]

CACHE_FORMAT = 1  # bump when the cache layout changes: old caches are then rebuilt


# --------------------------------------------------------------------------- errors


class EmptyCorpusError(ValueError):
    """The corpus file has no characters."""


class CorpusEncodingError(ValueError):
    """The corpus file's bytes are not valid in the encoding asked for."""


class UnknownCharactersError(ValueError):
    """Text contains characters the vocabulary does not have."""

    def __init__(self, message: str, unknown: tuple[str, ...] = ()):
        super().__init__(message)
        self.unknown = unknown


class CorpusTooSmallError(ValueError):
    """The text is shorter than one batch of ``batch_size * seq_length`` characters."""


# --------------------------------------------------------------------------- reading


def read_text(path: str | os.PathLike, encoding: str = "utf-8") -> str:
    """The text of a file, decoded strictly; newlines are kept exactly as stored."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"corpus file not found: {path}")
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder; pass the path of a text file")
    data = path.read_bytes()
    if not data:
        raise EmptyCorpusError(f"corpus file {path} is empty: a language model needs text")
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        bad = data[exc.start:exc.start + 4]
        raise CorpusEncodingError(
            f"{path} is not valid {encoding}: byte {exc.start} ({bad!r}...) cannot be "
            f"decoded ({exc.reason}). If the file uses another encoding, pass it, e.g. "
            f"encoding='cp949' (command line: --encoding cp949)."
        ) from None
    except LookupError as exc:
        raise ValueError(f"unknown encoding {encoding!r}: {exc}") from None
    if not text:  # e.g. a file holding only a byte-order mark
        raise EmptyCorpusError(f"corpus file {path} has no characters after decoding")
    return text


# --------------------------------------------------------------------------- vocabulary


@dataclass(frozen=True)
class Vocab:
    """The characters of a corpus; the id of a character is its index in ``chars``.

    ``Vocab.from_text`` orders the characters by frequency, most frequent first, and breaks
    ties by code point.  (The deck sorts with a stable sort on a ``Counter``, so its ties
    fall in order of first occurrence; ordering ties by code point instead makes the
    vocabulary depend only on the character counts, not on where in the text each
    character first appears.)
    """

    chars: tuple[str, ...]
    index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        chars = tuple(self.chars)
        for ch in chars:
            if not isinstance(ch, str) or len(ch) != 1:
                raise ValueError(f"a vocabulary holds single characters, got {ch!r}")
        if len(set(chars)) != len(chars):
            dupes = sorted({c for c in chars if chars.count(c) > 1})
            raise ValueError(f"duplicate characters in vocabulary: {dupes!r}")
        if not chars:
            raise ValueError("a vocabulary needs at least one character")
        object.__setattr__(self, "chars", chars)
        object.__setattr__(self, "index", {ch: i for i, ch in enumerate(chars)})
        # Sorted code points and their ids: encode() maps a whole text with searchsorted.
        points = np.array([ord(c) for c in chars], dtype=np.int64)
        order = np.argsort(points)
        object.__setattr__(self, "_sorted_points", points[order])
        object.__setattr__(self, "_sorted_ids", order.astype(np.int32))

    @classmethod
    def from_text(cls, text: str) -> "Vocab":
        """Distinct characters of ``text``, most frequent first, ties by code point."""
        if not text:
            raise EmptyCorpusError("cannot build a vocabulary from empty text")
        counts = Counter(text)
        return cls(tuple(sorted(counts, key=lambda ch: (-counts[ch], ord(ch)))))

    def __len__(self) -> int:
        return len(self.chars)

    def __contains__(self, ch: object) -> bool:
        return ch in self.index

    def encode(self, text: str) -> np.ndarray:
        """Ids of the characters of ``text``: an int32 array of shape ``(len(text),)``."""
        points = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
        points = points.astype(np.int64)
        pos = np.searchsorted(self._sorted_points, points)
        pos = np.minimum(pos, len(self._sorted_points) - 1)
        known = self._sorted_points[pos] == points
        if not known.all():
            unknown = tuple(sorted(set(chr(p) for p in points[~known])))
            shown = ", ".join(repr(c) for c in unknown[:20])
            more = f" and {len(unknown) - 20} more" if len(unknown) > 20 else ""
            raise UnknownCharactersError(
                f"{len(unknown)} character(s) not in the vocabulary: {shown}{more}. "
                "The vocabulary comes from the training corpus; remove these characters "
                "or build the vocabulary from a text that contains them.",
                unknown,
            )
        return self._sorted_ids[pos]

    def decode(self, ids) -> str:
        """The text of a sequence of ids (any integer array-like of shape ``(n,)``)."""
        ids = np.asarray(ids)
        if ids.size and (ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer)):
            raise ValueError(f"decode expects a 1-D sequence of integer ids, got shape "
                             f"{ids.shape} and dtype {ids.dtype}")
        if ids.size and (ids.min() < 0 or ids.max() >= len(self.chars)):
            raise ValueError(f"ids must lie in [0, {len(self.chars) - 1}], got values in "
                             f"[{ids.min()}, {ids.max()}]")
        return "".join([self.chars[i] for i in ids.tolist()])

    def to_json(self) -> str:
        """A JSON string that ``Vocab.from_json`` turns back into this vocabulary."""
        return json.dumps({"format": "charrnn-vocab", "version": 1, "chars": list(self.chars)},
                          ensure_ascii=False)

    @classmethod
    def from_json(cls, s: str) -> "Vocab":
        try:
            obj = json.loads(s)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not a vocabulary JSON document: {exc}") from None
        if not (isinstance(obj, dict) and obj.get("format") == "charrnn-vocab"
                and isinstance(obj.get("chars"), list)):
            raise ValueError("not a vocabulary JSON document (expected "
                             '{"format": "charrnn-vocab", "chars": [...]})')
        return cls(tuple(obj["chars"]))


# --------------------------------------------------------------------------- batching


def _fitting_shapes(n: int, batch_size: int, seq_length: int) -> str:
    """A hint naming batch shapes that fit ``n`` characters."""
    hints = []
    if n // seq_length >= 1:
        hints.append(f"batch_size={min(batch_size - 1, n // seq_length)} with "
                     f"seq_length={seq_length}")
    if n // batch_size >= 1:
        hints.append(f"seq_length={min(seq_length - 1, n // batch_size)} with "
                     f"batch_size={batch_size}")
    if not hints:
        hints.append(f"batch_size=1 with seq_length={n}")
    return " or ".join(hints)


def make_batches(ids, batch_size: int, seq_length: int, *,
                 what: str = "the text") -> tuple[np.ndarray, np.ndarray]:
    """The deck's batching of an id sequence into inputs ``x`` and targets ``y``.

    Returns ``x, y`` of shape ``(num_batches, batch_size, seq_length)``, int32, with
    ``num_batches = len(ids) // (batch_size * seq_length)``; the tail that does not fill a
    whole batch is dropped.  ``y`` is ``x`` shifted by one character, and the last target
    wraps round to the first character.  Batch ``b + 1``, row ``r`` continues batch ``b``,
    row ``r``: ``x[b + 1, r, 0]`` follows ``x[b, r, -1]`` in the text.
    """
    for name, value in (("batch_size", batch_size), ("seq_length", seq_length)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    ids = np.asarray(ids)
    if ids.ndim != 1:
        raise ValueError(f"ids must be a 1-D sequence, got shape {ids.shape}")
    n = ids.shape[0]
    per_batch = batch_size * seq_length
    num_batches = n // per_batch
    if num_batches == 0:
        raise CorpusTooSmallError(
            f"{what} has {n} characters, but one batch of batch_size={batch_size} x "
            f"seq_length={seq_length} needs {per_batch}. Use a smaller batch shape, e.g. "
            f"{_fitting_shapes(n, batch_size, seq_length)}, or a longer text."
        )
    xdata = ids[: num_batches * per_batch].astype(np.int32)   # (N,) with N = nb * B * T
    ydata = np.roll(xdata, -1)                                 # y[i] = x[i+1]; y[-1] = x[0]
    # Rows: the text cut into B equal pieces; batches: each row cut into T-long chunks.
    x = xdata.reshape(batch_size, num_batches, seq_length).swapaxes(0, 1)  # (nb, B, T)
    y = ydata.reshape(batch_size, num_batches, seq_length).swapaxes(0, 1)  # (nb, B, T)
    return np.ascontiguousarray(x), np.ascontiguousarray(y)


# --------------------------------------------------------------------------- cache


def default_cache_dir(source: Path) -> Path:
    """``<corpus folder>/<corpus stem>_cache`` if writable, else under ``default_data_dir()``."""
    source = Path(source).resolve()
    beside = source.parent / f"{source.stem}_cache"
    if os.access(source.parent, os.W_OK):
        return beside
    tag = hashlib.sha256(str(source).encode("utf-8")).hexdigest()[:12]
    return default_data_dir() / "cache" / f"{source.stem}-{tag}"


# --------------------------------------------------------------------------- loader


class TextLoader:
    """A corpus as batches for char-rnn: the deck's ``TextLoader``, made safe and checked.

    ``path`` is a text file or a corpus name (``"shakespeare"``, ``"python-source"``,
    ``"korean"``, see ``charrnn_lib.corpora``).  The vocabulary is built from the whole
    text; the last ``val_fraction`` of the characters (a contiguous block) is held out for
    validation and the rest is training data.  Both parts are batched with
    ``make_batches``: ``x_batches``/``y_batches`` (training) and ``val_x``/``val_y``
    (validation, ``None`` when ``val_fraction == 0``), each ``(num_batches, B, T)`` int32.

    The encoded corpus is cached in ``cache_dir`` as ``vocab.json``, ``ids.npy`` and
    ``meta.json``.  ``meta.json`` records the source's size, modification time, SHA-256
    and encoding; when the SHA-256 (or encoding) differs, the cache is stale and rebuilt.
    ``loaded_from_cache`` says which happened.
    """

    def __init__(self, path, batch_size: int = 50, seq_length: int = 50,
                 encoding: str = "utf-8", val_fraction: float = 0.05, cache_dir=None):
        if not 0.0 <= float(val_fraction) < 1.0:
            raise ValueError(f"val_fraction must lie in [0, 1), got {val_fraction!r}")
        self.path = corpus_path(path)
        self.batch_size = batch_size
        self.seq_length = seq_length
        self.encoding = encoding
        self.val_fraction = float(val_fraction)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir(self.path)

        self.vocab, ids, self.loaded_from_cache = self._load_or_build()
        self.vocab_size = len(self.vocab)
        self.chars = self.vocab.chars  # the deck's name for the character list

        n_val = int(len(ids) * self.val_fraction)
        self.train_ids = ids[: len(ids) - n_val]  # (N_train,)
        self.val_ids = ids[len(ids) - n_val:]      # (N_val,), the END of the text

        self.x_batches, self.y_batches = make_batches(
            self.train_ids, batch_size, seq_length,
            what=f"the training part of {self.path.name}")
        self.num_batches = self.x_batches.shape[0]
        if n_val == 0:
            self.val_x = self.val_y = None
            self.num_val_batches = 0
        else:
            try:
                self.val_x, self.val_y = make_batches(self.val_ids, batch_size, seq_length)
            except CorpusTooSmallError:
                raise CorpusTooSmallError(
                    f"the validation part (the last {self.val_fraction:g} of "
                    f"{self.path.name}) has {n_val} characters, fewer than one batch of "
                    f"batch_size={batch_size} x seq_length={seq_length} = "
                    f"{batch_size * seq_length}. Use a smaller batch shape (e.g. "
                    f"{_fitting_shapes(n_val, batch_size, seq_length)}), a larger "
                    "val_fraction, or val_fraction=0 to train without validation."
                ) from None
            self.num_val_batches = self.val_x.shape[0]
        self.reset_batch_pointer()

    # -- cache ----------------------------------------------------------------------

    def _source_record(self, data: bytes) -> dict:
        stat = self.path.stat()
        return {"cache_format": CACHE_FORMAT, "source": str(self.path.resolve()),
                "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
                "sha256": hashlib.sha256(data).hexdigest(), "encoding": self.encoding}

    def _load_or_build(self) -> tuple[Vocab, np.ndarray, bool]:
        data = self.path.read_bytes()
        record = self._source_record(data)
        cached = self._load_cache(record)
        if cached is not None:
            return (*cached, True)
        text = read_text(self.path, self.encoding)
        vocab = Vocab.from_text(text)
        ids = vocab.encode(text)  # (N,) int32
        self._save_cache(record, vocab, ids)
        return vocab, ids, False

    def _load_cache(self, record: dict):
        """``(vocab, ids)`` from the cache if it exists and matches ``record``, else None."""
        meta_file = self.cache_dir / "meta.json"
        try:
            meta = json.loads(meta_file.read_text(encoding="utf-8"))
            if any(meta.get(k) != record[k] for k in ("cache_format", "sha256", "encoding")):
                return None  # stale: the source (or how to read it) changed
            vocab = Vocab.from_json((self.cache_dir / "vocab.json").read_text(encoding="utf-8"))
            ids = np.load(self.cache_dir / "ids.npy", allow_pickle=False)  # never unpickle
        except (OSError, ValueError):
            return None  # missing or damaged: rebuild
        if (ids.dtype != np.int32 or ids.ndim != 1 or ids.shape[0] != meta.get("num_chars")
                or len(vocab) != meta.get("vocab_size")
                or (ids.size and (ids.min() < 0 or ids.max() >= len(vocab)))):
            return None
        return vocab, ids

    def _save_cache(self, record: dict, vocab: Vocab, ids: np.ndarray) -> None:
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            write_atomically(self.cache_dir / "vocab.json",
                          lambda f: f.write(vocab.to_json().encode("utf-8")))
            write_atomically(self.cache_dir / "ids.npy",
                          lambda f: np.save(f, ids, allow_pickle=False))
            meta = dict(record, num_chars=int(ids.shape[0]), vocab_size=len(vocab))
            # meta.json last: a cache without it (an interrupted write) is never trusted.
            write_atomically(self.cache_dir / "meta.json",
                          lambda f: f.write(json.dumps(meta, indent=1).encode("utf-8")))
        except OSError:
            pass  # a read-only place: work without a cache

    # -- the deck's iteration -----------------------------------------------------------

    def next_batch(self) -> tuple[np.ndarray, np.ndarray]:
        """The next training batch ``(x, y)``, each ``(B, T)``; then advance the pointer."""
        if self.pointer >= self.num_batches:
            raise IndexError(f"all {self.num_batches} batches of this epoch were used; "
                             "call reset_batch_pointer() to start the next epoch")
        x, y = self.x_batches[self.pointer], self.y_batches[self.pointer]
        self.pointer += 1
        return x, y

    def reset_batch_pointer(self) -> None:
        self.pointer = 0

    def batches(self, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
        """``(x, y)`` arrays of one split, ``(num_batches, B, T)``."""
        if split == "train":
            return self.x_batches, self.y_batches
        if split in ("val", "validation"):
            if self.val_x is None:
                raise ValueError("this loader has no validation split (val_fraction=0)")
            return self.val_x, self.val_y
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")

    def dataset(self, split: str = "train"):
        """A ``tf.data.Dataset`` of ``(x, y)`` int32 batches ``(B, T)``, in order.

        Not shuffled: row ``r`` of each batch continues row ``r`` of the previous one, so
        the recurrent state may be carried from batch to batch.
        """
        x, y = self.batches(split)
        import tensorflow as tf  # lazily: the rest of this module needs only NumPy

        return tf.data.Dataset.from_tensor_slices((x, y))

    def __repr__(self) -> str:
        return (f"TextLoader({str(self.path)!r}, batch_size={self.batch_size}, "
                f"seq_length={self.seq_length}, vocab_size={self.vocab_size}, "
                f"num_batches={self.num_batches}, num_val_batches={self.num_val_batches})")
