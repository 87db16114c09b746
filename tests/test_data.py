"""Tests of charrnn_lib.data: reading, the vocabulary, the deck's batching, the loader."""
import json
import os
import re
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from charrnn_lib.data import (
    CorpusEncodingError,
    CorpusTooSmallError,
    EmptyCorpusError,
    TextLoader,
    UnknownCharactersError,
    Vocab,
    make_batches,
    read_text,
)

KOREAN = "대한민국은 민주공화국이다.\n대한민국의 주권은 국민에게 있고, 모든 권력은 국민으로부터 나온다.\n"
ENGLISH = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"


def deck_batches(tensor, batch_size, seq_length):
    """The deck's TextLoader.create_batches, line for line (np.split along time)."""
    num_batches = int(tensor.size / (batch_size * seq_length))
    tensor = tensor[:num_batches * batch_size * seq_length]
    xdata = tensor
    ydata = np.copy(tensor)
    ydata[:-1] = xdata[1:]
    ydata[-1] = xdata[0]
    x_batches = np.split(xdata.reshape(batch_size, -1), num_batches, 1)
    y_batches = np.split(ydata.reshape(batch_size, -1), num_batches, 1)
    return x_batches, y_batches


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def corpus(tmp_path):
    """A 12,000-character corpus mixing English and Korean; ends with a rare character."""
    rng = np.random.default_rng(0)
    words = ["the ", "king ", "대한 ", "민국 ", "speak, ", "\n", "o ", "헌법 "]
    text = "".join(rng.choice(words, size=4000))
    assert len(text) >= 12_000
    text = text[:11_999] + "~"
    return write(tmp_path / "corpus.txt", text)


# --------------------------------------------------------------------------- read_text


def test_read_text_reads_utf8_and_other_encodings(tmp_path):
    assert read_text(write(tmp_path / "k.txt", KOREAN)) == KOREAN
    cp949 = tmp_path / "k949.txt"
    cp949.write_bytes(KOREAN.encode("cp949"))
    assert read_text(cp949, encoding="cp949") == KOREAN


def test_read_text_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        read_text(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_bytes(b"")
    with pytest.raises(EmptyCorpusError, match="empty"):
        read_text(tmp_path / "empty.txt")
    with pytest.raises(IsADirectoryError):
        read_text(tmp_path)
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("café au lait".encode("latin-1"))  # é is byte 0xe9, at offset 3
    with pytest.raises(CorpusEncodingError, match=r"byte 3 .*encoding=.*--encoding") as info:
        read_text(bad)
    assert isinstance(info.value, ValueError)
    assert read_text(bad, encoding="latin-1") == "café au lait"


# --------------------------------------------------------------------------- Vocab


def test_vocab_orders_by_frequency_then_code_point():
    vocab = Vocab.from_text("hello world")
    assert vocab.chars == ("l", "o", " ", "d", "e", "h", "r", "w")
    assert vocab.index["l"] == 0 and len(vocab) == 8


@settings(max_examples=60, deadline=None)
@given(st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=300))
def test_vocab_frequency_order_property(text):
    vocab = Vocab.from_text(text)
    counts = Counter(text)
    assert set(vocab.chars) == set(text)
    keys = [(-counts[c], ord(c)) for c in vocab.chars]
    assert keys == sorted(keys)


BASE = ENGLISH + KOREAN + "ㄱㅏ 가각 \t~\u00e9"


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet=st.sampled_from(sorted(set(BASE))), max_size=200))
def test_vocab_round_trip_over_vocabulary(s):
    vocab = Vocab.from_text(BASE)
    ids = vocab.encode(s)
    assert ids.dtype == np.int32 and ids.shape == (len(s),)
    assert [vocab.chars[i] for i in ids] == list(s)  # each id names its character
    assert vocab.decode(ids) == s


@settings(max_examples=60, deadline=None)
@given(st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=200))
def test_vocab_round_trip_any_text(text):
    vocab = Vocab.from_text(text)
    ids = vocab.encode(text)
    np.testing.assert_array_equal(ids, [vocab.index[c] for c in text])
    assert vocab.decode(ids) == text
    assert Vocab.from_json(vocab.to_json()) == vocab


def test_hangul_syllables_are_single_characters():
    vocab = Vocab.from_text("한국어")
    assert len(vocab) == 3 and vocab.encode("한국어").shape == (3,)


def test_vocab_unknown_characters_are_named():
    vocab = Vocab.from_text("abc")
    with pytest.raises(UnknownCharactersError, match=r"'z'.*'한'|'한'.*'z'") as info:
        vocab.encode("abz한")
    assert isinstance(info.value, ValueError)
    assert set(info.value.unknown) == {"z", "한"}


def test_vocab_is_immutable_and_validated():
    vocab = Vocab.from_text("abc")
    with pytest.raises(AttributeError):
        vocab.chars = ("x",)
    with pytest.raises(ValueError, match="duplicate"):
        Vocab(("a", "a"))
    with pytest.raises(ValueError, match="single characters"):
        Vocab(("ab",))
    with pytest.raises(ValueError, match=r"\[0, 2\]"):
        vocab.decode([0, 3])
    with pytest.raises(ValueError, match="vocabulary JSON"):
        Vocab.from_json('{"chars": ["a"]}')
    with pytest.raises(EmptyCorpusError):
        Vocab.from_text("")


def test_vocab_json_is_plain_json():
    vocab = Vocab.from_text(KOREAN)
    obj = json.loads(vocab.to_json())
    assert obj["chars"] == list(vocab.chars)


# --------------------------------------------------------------------------- make_batches


@settings(max_examples=80, deadline=None)
@given(st.integers(1, 6), st.integers(1, 7), st.integers(0, 400), st.integers(0, 2**32 - 1))
def test_make_batches_equals_the_decks_code(batch_size, seq_length, extra, seed):
    n = batch_size * seq_length + extra
    ids = np.random.default_rng(seed).integers(0, 50, size=n).astype(np.int32)
    x, y = make_batches(ids, batch_size, seq_length)
    xs, ys = deck_batches(ids.copy(), batch_size, seq_length)
    num_batches = n // (batch_size * seq_length)
    assert x.shape == y.shape == (num_batches, batch_size, seq_length)
    assert x.dtype == y.dtype == np.int32
    np.testing.assert_array_equal(x, np.stack(xs))
    np.testing.assert_array_equal(y, np.stack(ys))


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 6), st.integers(1, 7), st.integers(1, 5), st.integers(0, 2**32 - 1))
def test_rows_continue_across_batches(batch_size, seq_length, num_batches, seed):
    n = batch_size * seq_length * num_batches
    ids = np.random.default_rng(seed).integers(0, 1000, size=n)
    x, y = make_batches(ids, batch_size, seq_length)
    for r in range(batch_size):
        row = np.concatenate(list(x[:, r, :]))  # row r of batch 0, then of batch 1, ...
        start = r * num_batches * seq_length
        np.testing.assert_array_equal(row, ids[start:start + num_batches * seq_length])
    # y is x shifted by one in the text; the very last target wraps to the first character
    flat_y = y.swapaxes(0, 1).reshape(-1)
    np.testing.assert_array_equal(flat_y, np.roll(ids, -1))
    assert y[-1, -1, -1] == x[0, 0, 0]


def test_make_batches_too_small_names_sizes_that_fit():
    ids = np.arange(100)
    with pytest.raises(CorpusTooSmallError) as info:
        make_batches(ids, 50, 50)
    message = str(info.value)
    assert "100 characters" in message and "needs 2500" in message
    assert isinstance(info.value, ValueError)
    suggestions = re.findall(r"(batch_size|seq_length)=(\d+) with (batch_size|seq_length)=(\d+)",
                             message)
    assert len(suggestions) == 2
    for k1, v1, k2, v2 in suggestions:
        shape = {k1: int(v1), k2: int(v2)}
        x, _ = make_batches(ids, shape["batch_size"], shape["seq_length"])  # it fits
        assert x.shape[0] >= 1


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, None])
def test_make_batches_rejects_bad_shapes(bad):
    with pytest.raises(ValueError, match="positive integer"):
        make_batches(np.arange(100), bad, 5)
    with pytest.raises(ValueError, match="positive integer"):
        make_batches(np.arange(100), 5, bad)


def test_make_batches_rejects_2d_ids():
    with pytest.raises(ValueError, match="1-D"):
        make_batches(np.zeros((10, 10), dtype=np.int32), 2, 2)


# --------------------------------------------------------------------------- TextLoader


def test_loader_shapes_split_and_vocabulary(corpus, tmp_path):
    loader = TextLoader(corpus, batch_size=4, seq_length=25, cache_dir=tmp_path / "c")
    text = corpus.read_text(encoding="utf-8")
    assert loader.vocab == Vocab.from_text(text) and loader.vocab_size == len(loader.vocab)
    assert "~" in loader.vocab and "~" not in loader.vocab.decode(loader.train_ids)
    assert len(loader.val_ids) == 600  # the last 5 % of 12,000 characters
    assert loader.vocab.decode(loader.val_ids) == text[-600:]
    assert loader.vocab.decode(loader.train_ids) == text[:-600]
    assert loader.x_batches.shape == (114, 4, 25) == loader.y_batches.shape
    assert loader.num_batches == 114 and loader.val_x.shape == (6, 4, 25)
    x_ref, y_ref = make_batches(loader.train_ids, 4, 25)
    np.testing.assert_array_equal(loader.x_batches, x_ref)
    np.testing.assert_array_equal(loader.y_batches, y_ref)


def test_loader_next_batch_walks_an_epoch(corpus, tmp_path):
    loader = TextLoader(corpus, batch_size=8, seq_length=50, cache_dir=tmp_path / "c")
    for b in range(loader.num_batches):
        x, y = loader.next_batch()
        np.testing.assert_array_equal(x, loader.x_batches[b])
        np.testing.assert_array_equal(y, loader.y_batches[b])
    assert loader.pointer == loader.num_batches
    with pytest.raises(IndexError, match="reset_batch_pointer"):
        loader.next_batch()
    loader.reset_batch_pointer()
    np.testing.assert_array_equal(loader.next_batch()[0], loader.x_batches[0])


def test_cache_is_reused_without_reencoding(corpus, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first = TextLoader(corpus, batch_size=4, seq_length=25, cache_dir=cache)
    assert not first.loaded_from_cache
    assert sorted(p.name for p in cache.iterdir()) == ["ids.npy", "meta.json", "vocab.json"]
    meta = json.loads((cache / "meta.json").read_text())
    assert meta["size"] == corpus.stat().st_size and len(meta["sha256"]) == 64
    assert "mtime_ns" in meta

    def no_encoding(self, text):
        raise AssertionError("the corpus was encoded again although the cache is valid")

    monkeypatch.setattr(Vocab, "encode", no_encoding)
    second = TextLoader(corpus, batch_size=4, seq_length=25, cache_dir=cache)
    assert second.loaded_from_cache and second.vocab == first.vocab
    np.testing.assert_array_equal(second.x_batches, first.x_batches)
    os.utime(corpus)  # touched, content unchanged: the SHA-256 still matches
    assert TextLoader(corpus, batch_size=4, seq_length=25, cache_dir=cache).loaded_from_cache


def test_cache_is_rebuilt_when_the_source_changes(corpus, tmp_path):
    cache = tmp_path / "cache"
    TextLoader(corpus, batch_size=4, seq_length=25, cache_dir=cache)
    stat = corpus.stat()
    text = corpus.read_text(encoding="utf-8")
    write(corpus, "Q" + text[1:])  # same size; and we even restore the modification time
    os.utime(corpus, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert corpus.stat().st_size == stat.st_size
    loader = TextLoader(corpus, batch_size=4, seq_length=25, cache_dir=cache)
    assert not loader.loaded_from_cache
    assert "Q" in loader.vocab and loader.vocab.decode(loader.x_batches[0, 0])[0] == "Q"
    assert TextLoader(corpus, batch_size=4, seq_length=25, cache_dir=cache).loaded_from_cache


def test_damaged_or_pickled_cache_is_never_trusted(corpus, tmp_path):
    cache = tmp_path / "cache"
    good = TextLoader(corpus, batch_size=4, seq_length=25, cache_dir=cache)
    # An ids.npy holding a pickled object array: np.load(allow_pickle=False) refuses it.
    np.save(cache / "ids.npy", np.array([{"evil": 1}], dtype=object), allow_pickle=True)
    loader = TextLoader(corpus, batch_size=4, seq_length=25, cache_dir=cache)
    assert not loader.loaded_from_cache
    np.testing.assert_array_equal(loader.x_batches, good.x_batches)
    (cache / "vocab.json").write_text("garbage")
    assert not TextLoader(corpus, batch_size=4, seq_length=25, cache_dir=cache).loaded_from_cache
    assert not list(cache.glob("*.pkl"))


def test_loader_validation_too_small_and_disabled(corpus, tmp_path):
    with pytest.raises(CorpusTooSmallError, match=r"validation part.*val_fraction=0") as info:
        TextLoader(corpus, batch_size=50, seq_length=50, cache_dir=tmp_path / "c")
    assert "600 characters" in str(info.value)
    loader = TextLoader(corpus, batch_size=50, seq_length=50, val_fraction=0,
                        cache_dir=tmp_path / "c")
    assert loader.val_x is None and loader.num_val_batches == 0 and loader.num_batches == 4
    with pytest.raises(ValueError, match="no validation"):
        loader.dataset("val")
    with pytest.raises(ValueError, match="val_fraction"):
        TextLoader(corpus, val_fraction=1.0, cache_dir=tmp_path / "c")


def test_loader_corpus_too_small(tmp_path):
    tiny = write(tmp_path / "tiny.txt", "hello world\n")
    with pytest.raises(CorpusTooSmallError, match=r"training part.*has 12 characters"):
        TextLoader(tiny, val_fraction=0, cache_dir=tmp_path / "c")


def test_loader_bad_inputs(tmp_path):
    with pytest.raises(FileNotFoundError, match="shakespeare"):
        TextLoader(tmp_path / "nope.txt")
    (tmp_path / "e.txt").write_bytes(b"")
    with pytest.raises(EmptyCorpusError):
        TextLoader(tmp_path / "e.txt", cache_dir=tmp_path / "c")
    (tmp_path / "b.txt").write_bytes(b"ok \xff\xfe")
    with pytest.raises(CorpusEncodingError, match="byte 3"):
        TextLoader(tmp_path / "b.txt", cache_dir=tmp_path / "c2")


def test_loader_default_cache_next_to_corpus(corpus):
    loader = TextLoader(corpus, batch_size=4, seq_length=25)
    assert (corpus.parent / "corpus_cache" / "ids.npy").is_file()
    assert TextLoader(corpus, batch_size=4, seq_length=25).loaded_from_cache
    assert loader.vocab.decode(np.concatenate([loader.train_ids, loader.val_ids])) == \
        corpus.read_text(encoding="utf-8")


def test_loader_by_corpus_name(tmp_path, monkeypatch):
    monkeypatch.setenv("CHARRNN_DATA", str(tmp_path))
    loader = TextLoader("korean", batch_size=16, seq_length=32)
    assert loader.path == tmp_path / "korean.txt"
    assert loader.vocab_size > 500 and loader.vocab.chars[0] == " "
    text = loader.path.read_text(encoding="utf-8")
    assert loader.vocab.decode(np.concatenate([loader.train_ids, loader.val_ids])) == text


def test_loader_dataset_yields_batches_in_order(corpus, tmp_path):
    loader = TextLoader(corpus, batch_size=4, seq_length=25, cache_dir=tmp_path / "c")
    ds = loader.dataset()
    assert ds.element_spec[0].shape == (4, 25) and ds.element_spec[0].dtype.name == "int32"
    got = list(ds.as_numpy_iterator())
    assert len(got) == loader.num_batches
    for b, (x, y) in enumerate(got):
        np.testing.assert_array_equal(x, loader.x_batches[b])
        np.testing.assert_array_equal(y, loader.y_batches[b])
    val = list(loader.dataset("val").as_numpy_iterator())
    assert len(val) == loader.num_val_batches
    with pytest.raises(ValueError, match="'train' or 'val'"):
        loader.dataset("test")
