"""Sampling: the three modes, temperature, priming, seeds, and compiled == naive.

References are independent of the compiled loop: the next-character distributions come
from the Keras model run over the *whole* text so far (no state carried by us), and the
choice rules are re-applied by hand in NumPy.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from charrnn_lib import sample
from charrnn_lib.data import UnknownCharactersError, Vocab
from charrnn_lib.model import ModelConfig, build_model, zero_states
from charrnn_lib.repro import seed_everything

TEXT = "the cat sat on the mat. a dog ran to the cat and the cat ran off.\n" * 2


@pytest.fixture(scope="module")
def vocab():
    return Vocab.from_text(TEXT)


@pytest.fixture(scope="module")
def lstm(vocab):
    seed_everything(0)
    cfg = ModelConfig(len(vocab), hidden_size=16, num_layers=2, cell="lstm", init="unit_normal")
    model = build_model(cfg)
    return model, cfg, sample.Sampler(model, vocab, cfg)


_graph_models = {}


def next_char_logits(model, cfg, vocab, text):
    """The logits after each character of ``text``, from one full-sequence model call: (T, K)."""
    import tensorflow as tf

    if id(model) not in _graph_models:  # the Keras model in a graph, any length: fast and retraced once

        def run(ids):
            return model([ids, *zero_states(cfg, 1)], training=False)[0]

        _graph_models[id(model)] = tf.function(run, input_signature=[tf.TensorSpec([1, None], tf.int32)])
    return _graph_models[id(model)](tf.constant(vocab.encode(text)[None])).numpy()[0]


def test_argmax_is_greedy_decoding_by_hand(lstm, vocab):
    model, cfg, sampler = lstm
    prime = "the c"
    text = sampler.generate(20, prime=prime, mode="argmax")
    assert text.startswith(prime) and len(text) == len(prime) + 20
    by_hand = prime  # re-run the model over the whole text at every step: no carried state
    for _ in range(20):
        by_hand += vocab.chars[int(np.argmax(next_char_logits(model, cfg, vocab, by_hand)[-1]))]
    assert text == by_hand


def test_sample_mode_is_weighted_pick_of_the_model_distribution(lstm, vocab):
    model, cfg, sampler = lstm
    prime, n = "a dog", 60
    text = sampler.generate(n, prime=prime, mode="sample", temperature=0.7, seed=5)
    logits = next_char_logits(model, cfg, vocab, text)  # (T, K)
    u = sample.uniforms(5, n, 1)[0]
    for j in range(n):
        t = len(prime) - 1 + j  # distribution after text[t] chooses text[t + 1]
        p = sample.softmax_with_temperature(logits[t], 0.7)
        assert text[t + 1] == vocab.chars[sample.weighted_pick(p, u[j])]
    assert len(set(text[len(prime):])) > 3  # really random: not a greedy loop


def test_space_mode_is_random_only_after_a_space(lstm, vocab):
    model, cfg, sampler = lstm
    prime, n = "the ", 120
    text = sampler.generate(n, prime=prime, mode="space", seed=3)
    probs = sample.softmax_with_temperature(next_char_logits(model, cfg, vocab, text))  # (T, K)
    u = sample.uniforms(3, n, 1)[0]
    after_space = differs_from_argmax = 0
    for j in range(n):
        t = len(prime) - 1 + j
        greedy = vocab.chars[int(np.argmax(probs[t]))]
        if text[t] == " ":
            after_space += 1
            assert text[t + 1] == vocab.chars[sample.weighted_pick(probs[t], u[j])]
            differs_from_argmax += text[t + 1] != greedy
        else:
            assert text[t + 1] == greedy
    assert after_space >= 1 and differs_from_argmax >= 1  # the random branch was exercised


def test_choose_rules_on_hand_made_probabilities():
    import tensorflow as tf

    logits = np.log(np.array([[0.5, 0.3, 0.2]] * 4, np.float32))  # argmax is 0
    prev = tf.constant([0, 2, 1, 2])  # id 2 plays the space
    u = tf.constant([0.9, 0.9, 0.9, 0.1])  # u = 0.9 -> index 2; u = 0.1 -> index 0
    for mode, expected in (("argmax", [0, 0, 0, 0]), ("sample", [2, 2, 2, 0]), ("space", [0, 2, 0, 0])):
        got = sample.choose_next(tf.constant(logits), prev, u, tf.constant(sample.MODES.index(mode)), 1.0, 2)
        assert got.numpy().tolist() == expected, mode


def test_temperature_to_zero_is_argmax(lstm):
    _, _, sampler = lstm
    greedy = sampler.generate(80, prime="the ", mode="argmax")
    for seed in (0, 1):
        assert sampler.generate(80, prime="the ", mode="sample", temperature=1e-4, seed=seed) == greedy
    assert sampler.generate(80, prime="the ", mode="sample", temperature=1.0, seed=0) != greedy


def test_same_seed_same_text_other_seed_other_text(lstm):
    _, _, sampler = lstm
    a = sampler.generate(100, seed=7)
    assert a == sampler.generate(100, seed=7)
    assert a != sampler.generate(100, seed=8)


@pytest.mark.parametrize("mode", sample.MODES)
def test_compiled_equals_naive(lstm, vocab, mode):
    model, cfg, sampler = lstm
    kwargs = dict(prime="on the", mode=mode, temperature=0.9, seed=11)
    naive = sample.generate_naive(model, vocab, cfg, 25, **kwargs)
    assert sampler.generate(25, **kwargs) == naive


def test_xla_and_graph_executor_and_chunking_agree(lstm, vocab):
    model, cfg, sampler = lstm
    kwargs = dict(prime="on the", mode="sample", temperature=0.9, seed=11)
    reference = sampler.generate(70, **kwargs)  # one chunk of 256 steps, XLA (one stream)
    for jit in (True, False):
        chunked = sample.Sampler(model, vocab, cfg, chunk=16, jit_compile=jit)  # five chunks
        assert chunked.generate(70, **kwargs) == reference, jit


@pytest.mark.parametrize("cell", ["gru", "rnn", "peephole", "mingru"])
def test_other_cells_compiled_equals_naive(vocab, cell):
    seed_everything(1)
    cfg = ModelConfig(len(vocab), hidden_size=8, num_layers=2, cell=cell, init="unit_normal")
    model = build_model(cfg)
    a = sample.generate(model, vocab, cfg, 15, prime="the", seed=2)
    assert a == sample.generate_naive(model, vocab, cfg, 15, prime="the", seed=2)


def test_streams(lstm):
    _, _, sampler = lstm
    texts = sampler.generate(40, prime="the", num_streams=6, seed=1)
    assert isinstance(texts, list) and len(texts) == 6
    assert all(t.startswith("the") and len(t) == 43 for t in texts)
    assert len(set(texts)) > 1  # independent random numbers per stream
    greedy = sampler.generate(40, prime="the", num_streams=3, mode="argmax")
    assert greedy == [sampler.generate(40, prime="the", mode="argmax")] * 3


def test_prime_warms_up_the_state(lstm):
    _, _, sampler = lstm
    # Same last character, different history: with the whole prime fed, the output differs.
    a = sampler.generate(40, prime="the cat sat on t", mode="argmax", include_prime=False)
    b = sampler.generate(40, prime="a dog ran to t", mode="argmax", include_prime=False)
    c = sampler.generate(40, prime="t", mode="argmax", include_prime=False)
    assert len({a, b, c}) > 1
    assert sampler.generate(0, prime="the") == "the"


def test_unknown_prime_characters_are_named(lstm):
    _, _, sampler = lstm
    with pytest.raises(UnknownCharactersError, match=r"'Z'.*'é'") as info:
        sampler.generate(10, prime="the Zé")
    assert isinstance(info.value, sample.SamplingError) and info.value.unknown == ("Z", "é")
    with pytest.raises(UnknownCharactersError, match="NFC"):  # decomposed Hangul: a hint to normalise
        sample.check_prime("\u1100\u1161", ["가", " "])


@pytest.mark.parametrize("kwargs", [dict(mode="beam"), dict(temperature=0.0), dict(temperature=-1.0),
                                    dict(temperature=1e-45), dict(temperature=float("inf")),
                                    dict(temperature=float("nan")), dict(length=-1), dict(num_streams=0),
                                    dict(prime="")])
def test_bad_options_raise(lstm, kwargs):
    _, _, sampler = lstm
    with pytest.raises(sample.SamplingError):
        sampler.generate(**{"length": 5, **kwargs})


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0.0, 1.0), min_size=2, max_size=8).filter(lambda p: sum(p) > 1e-3),
       st.floats(1e-6, 1.0))
def test_weighted_pick_inverts_the_cdf(p, u):
    p = np.asarray(p, np.float64)
    k = sample.weighted_pick(p, u)
    c = np.cumsum(p)
    assert 0 <= k < len(p) and p[k] > 0
    assert c[k] >= u * c[-1] and (k == 0 or c[k - 1] < u * c[-1])


def test_weighted_pick_frequencies_follow_p():
    p = np.array([0.1, 0.6, 0.05, 0.25])
    n = 2000
    picks = [sample.weighted_pick(p, (i + 0.5) / n) for i in range(n)]  # evenly spread u
    np.testing.assert_allclose(np.bincount(picks, minlength=4) / n, p, atol=1 / n)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(-5, 5), min_size=3, max_size=10))
def test_lower_temperature_lowers_entropy(logits):
    logits = np.asarray(logits)
    entropies = [float(-(q * np.log(q + 1e-300)).sum())
                 for q in (sample.softmax_with_temperature(logits, t) for t in (2.0, 1.0, 0.5, 0.1))]
    assert all(a >= b - 1e-9 for a, b in zip(entropies, entropies[1:]))
    q = sample.softmax_with_temperature(logits, 1e-6)  # all mass on the largest logit(s)
    assert q[logits >= logits.max() - 1e-3].sum() > 1 - 1e-9


def test_the_smallest_temperature_is_still_a_distribution(lstm):
    _, _, sampler = lstm
    greedy = sampler.generate(60, prime="the ", mode="argmax")
    assert sampler.generate(60, prime="the ", temperature=sample.MIN_TEMPERATURE, seed=3) == greedy
    with pytest.raises(sample.SamplingError, match="mode='argmax'"):
        sampler.generate(60, prime="the ", temperature=sample.MIN_TEMPERATURE / 10)


@pytest.mark.parametrize("buffer", [None, 1, 700])  # the default; one block per call; a few blocks
def test_uniform_stream_hands_out_the_whole_draw(buffer, monkeypatch):
    if buffer is not None:
        monkeypatch.setattr(sample.UniformStream, "BUFFER_NUMBERS", buffer)
    for seed, length, streams in [(0, 7, 1), (5, 257, 3), (2**40, 100, 4), (1, 0, 2), (2**63 - 1, 600, 2)]:
        source = sample.UniformStream(seed, length, streams)
        blocks = [source.take(n) for n in (1, 5, 3, 256, 256, 100)]
        np.testing.assert_array_equal(np.concatenate(blocks, axis=1), sample.uniforms(seed, length, streams))
        assert source.take(10).shape == (streams, 0)


def test_uniforms_do_not_depend_on_how_they_are_taken():
    """The Philox blocks are keyed by (seed, block index): however the columns are cut --
    one at a time, across block boundaries, all at once -- and however long the generation
    or however many the streams, column j of stream b is the same number."""
    B = sample.UNIFORM_BLOCK
    whole = sample.uniforms(9, 3 * B + 17, 4)  # (4, 3B + 17)
    assert whole.shape == (4, 3 * B + 17) and whole.dtype == np.float32
    rng = np.random.default_rng(0)
    for blocks_per_call in (1, 2, 100):  # random cuts, including sizes above a block, and refills
        source, pieces = sample.UniformStream(9, 3 * B + 17, 4), []
        source.blocks_per_call = blocks_per_call
        while source.position < source.length:
            pieces.append(source.take(int(rng.integers(1, 2 * B + 2))))
        np.testing.assert_array_equal(np.concatenate(pieces, axis=1), whole)
    one_by_one = sample.UniformStream(9, B + 3, 4)
    np.testing.assert_array_equal(np.concatenate([one_by_one.take(1) for _ in range(B + 3)], axis=1),
                                  whole[:, :B + 3])
    np.testing.assert_array_equal(sample.uniforms(9, 40, 4), whole[:, :40])  # a longer draw extends a shorter
    np.testing.assert_array_equal(sample.uniforms(9, 3 * B + 17, 2), whole[:2])  # rows do not depend on B
    np.testing.assert_array_equal(sample.uniforms(9, 3 * B + 17, 1)[0], whole[0])
    # ... and block j really is the Philox draw keyed by (seed, j), row b its b-th run of B numbers
    import tensorflow as tf

    block2 = 1.0 - tf.random.stateless_uniform([4, B], seed=[9, 2], alg="philox").numpy()
    np.testing.assert_array_equal(whole[:, 2 * B:3 * B], block2)
    assert not np.array_equal(sample.uniforms(10, 40, 1), whole[:1, :40])  # another seed, other numbers


def test_uniforms_are_in_the_half_open_unit_interval_and_uniform():
    n_streams, n = 8, 12_500  # 100,000 numbers
    u = sample.uniforms(123, n, n_streams).ravel().astype(np.float64)
    assert u.min() > 0.0 and u.max() <= 1.0  # (0, 1]: the weighted pick never sees u = 0
    assert np.all(np.round(u * 2**23) == u * 2**23)  # float32 steps of 2**-23, as 1 - x maps them exactly
    # Chi-square over 20 equal bins: 19 degrees of freedom, mean 19, sd ~6.2; above 50 has
    # probability ~1e-4 for a uniform source, and any real bias of a few per cent fails it.
    counts = np.bincount(np.minimum((u * 20).astype(int), 19), minlength=20)
    expected = u.size / 20
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 50, chi2
    assert abs(u.mean() - 0.5) < 4 * np.sqrt(1 / 12 / u.size)  # within 4 standard errors
    lag1 = np.corrcoef(u[:-1], u[1:])[0, 1]  # neighbours (within and across blocks) uncorrelated
    assert abs(lag1) < 4 / np.sqrt(u.size)


@pytest.mark.parametrize("seed", [-1, 2**63, 1.5, "3", True])
def test_bad_seeds_are_refused(lstm, seed):
    _, _, sampler = lstm
    with pytest.raises(sample.SamplingError, match="seed must be an integer"):
        sampler.generate(5, seed=seed)
    with pytest.raises(sample.SamplingError, match="seed must be an integer"):
        sampler.stream(5, seed=seed)
    with pytest.raises(sample.SamplingError, match="seed must be an integer"):
        sample.uniforms(seed, 5)


@pytest.mark.parametrize("kwargs", [dict(), dict(num_streams=3, mode="space"), dict(prime="the cat sat on the mat. "),
                                    dict(length=0), dict(include_prime=False, mode="argmax")])
def test_stream_yields_the_generated_text_piece_by_piece(lstm, vocab, kwargs):
    model, cfg, _ = lstm
    sampler = sample.Sampler(model, vocab, cfg, chunk=16)  # several chunks, the prime across them
    kwargs = dict(dict(length=70, prime="on the", temperature=0.9, seed=11), **kwargs)
    whole = sampler.generate(**kwargs)
    whole = [whole] if isinstance(whole, str) else whole
    pieces = list(sampler.stream(**kwargs))
    assert all(len(p) == len(whole) for p in pieces) and max(len(t) for p in pieces for t in p) <= 16 + 24
    assert ["".join(p[b] for p in pieces) for b in range(len(whole))] == whole
    with pytest.raises(sample.SamplingError):  # checked at the call, not at the first piece
        sampler.stream(length=5, prime="Z")
