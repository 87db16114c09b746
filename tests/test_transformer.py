"""The character Transformer: causal mask, KV cache == full recomputation, attention against
Keras's MultiHeadAttention, the whole forward pass against NumPy float64, parameter and
cache sizes in closed form, a tiny training run through the book's step, and the config.

References come from elsewhere: ``keras.layers.MultiHeadAttention`` with our weights
copied in, a float64 NumPy forward written here, and the full model rerun on the whole
text (or its window) at every step instead of the cache.  The weights are redrawn larger
than GPT-2's N(0, 0.02) (``randomise``), so that the logits are of order 1 and a wrong
position, mask or cache shows up far above float32 rounding.
"""
from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from charrnn_lib.config import TrainConfig
from charrnn_lib.data import Vocab
from charrnn_lib.sample import softmax_with_temperature, uniforms, weighted_pick
from charrnn_lib.train import keras_loss_and_grads, make_train_step
from charrnn_lib.transformer import (CausalSelfAttention, CharTransformer, TransformerConfig, TransformerSampler,
                                     build_transformer, cache_bytes, causal_mask,
                                     transformer_parameter_count)

TEXT = "the cat sat on the mat. a dog ran to the cat and the cat ran off.\n"
# Logits of order 1 (|logit| up to 2.8): measured max |difference| 8e-7 between the cached
# steps and the full model, 1.2e-6 for the XLA-compiled loop, 8e-7 between the model and the
# float64 NumPy forward.
ATOL = 1e-5


def randomise(model, seed=0):
    """Redraw every weight: kernels N(0, 1/fan_in), biases and embeddings N(0, 0.5^2), LayerNorm
    gains 1 + N(0, 0.2^2).  Logits of order 1, attention far from uniform."""
    rng = np.random.default_rng(seed)
    for w in model.weights:
        shape, name = tuple(w.shape), w.path
        if name.endswith("gamma"):
            value = 1.0 + 0.2 * rng.standard_normal(shape)
        elif name.endswith("kernel"):
            value = rng.standard_normal(shape) / math.sqrt(shape[0])
        else:
            value = 0.5 * rng.standard_normal(shape)
        w.assign(value.astype(np.float32))
    return model


@pytest.fixture(scope="module")
def vocab():
    return Vocab.from_text(TEXT)


@pytest.fixture(scope="module")
def small(vocab):
    keras.utils.set_random_seed(0)
    config = TransformerConfig(len(vocab), d_model=24, num_layers=2, num_heads=3, context=12)
    model = randomise(build_transformer(config))
    full = tf.function(lambda ids: model(ids), input_signature=[tf.TensorSpec((None, None), tf.int32)])
    return config, model, full


def last_logits(full, ids):
    """The full model's last-position logits on ids (T,): (K,)."""
    return full(tf.constant(np.asarray(ids, np.int32)[None]))[0, -1].numpy()


# --------------------------------------------------------------------------- the mask


def test_causal_mask_is_lower_triangular_and_offset_for_the_cache():
    m = causal_mask(4, 4).numpy()
    np.testing.assert_array_equal(m == 0, np.tril(np.ones((4, 4), bool)))
    assert np.all(np.isneginf(m[np.triu_indices(4, 1)]))
    np.testing.assert_array_equal(causal_mask(1, 5).numpy(), np.zeros((1, 5)))      # one new query: sees all
    np.testing.assert_array_equal(causal_mask(2, 5).numpy() == 0, [[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]])


@pytest.mark.parametrize("j", [0, 3, 7, 11])
def test_changing_position_j_changes_only_positions_from_j_on(small, j):
    config, model, full = small
    rng = np.random.default_rng(j)
    ids = rng.integers(0, config.vocab_size, (2, config.context)).astype(np.int32)
    other = ids.copy()
    other[:, j] = (ids[:, j] + 1 + rng.integers(0, config.vocab_size - 1, 2)) % config.vocab_size
    a, b = full(tf.constant(ids)).numpy(), full(tf.constant(other)).numpy()
    before = np.abs(a[:, :j] - b[:, :j]).max(initial=0.0)
    assert before <= 1e-6                                   # measured: exactly 0
    after = np.abs(a[:, j:] - b[:, j:]).max(axis=-1)        # (2, T - j): every later position moves
    assert after.min() > 1e-3


# --------------------------------------------------------------------------- attention references


def test_attention_equals_keras_multi_head_attention_with_the_same_weights():
    keras.utils.set_random_seed(1)
    d, heads = 12, 2                                        # d_head = 6: the 1/sqrt(6) scaling rounds
    ours = CausalSelfAttention(d, heads, name="ours")
    x = tf.constant(np.random.default_rng(1).standard_normal((2, 7, d)), tf.float32)
    ours(x)
    rng = np.random.default_rng(2)
    for w in ours.weights:
        w.assign(rng.standard_normal(w.shape).astype(np.float32) / (math.sqrt(w.shape[0]) if len(w.shape) == 2 else 2))
    mha = keras.layers.MultiHeadAttention(num_heads=heads, key_dim=d // heads)
    mha(x, x, use_causal_mask=True)
    dh = d // heads
    copied = []
    for dense in (ours.query, ours.key, ours.value):        # (d, d) -> (d, heads, dh); (d,) -> (heads, dh)
        copied += [dense.kernel.numpy().reshape(d, heads, dh), dense.bias.numpy().reshape(heads, dh)]
    copied += [ours.out.kernel.numpy().reshape(heads, dh, d), ours.out.bias.numpy()]
    mha.set_weights(copied)
    expected = mha(x, x, use_causal_mask=True).numpy()
    np.testing.assert_allclose(ours(x).numpy(), expected, rtol=0, atol=1e-5)   # measured: 2.4e-7
    assert np.abs(expected).max() > 0.5


def numpy_forward(model, config, ids):
    """The whole model in float64 NumPy, from its weights: ids (T,) -> logits (T, K)."""
    w = {v.path.split("/", 1)[1]: v.numpy().astype(np.float64) for v in model.weights}
    erf = np.vectorize(math.erf)

    def layer_norm(x, name):
        mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + 1e-5) * w[f"{name}/gamma"] + w[f"{name}/beta"]

    def dense(x, name):
        return x @ w[f"{name}/kernel"] + w[f"{name}/bias"]

    T, H, dh = len(ids), config.num_heads, config.d_head
    x = w["token_embedding/embeddings"][ids] + w["position_embedding/embeddings"][:T]   # (T, d)
    future = np.triu(np.ones((T, T), bool), 1)
    for i in range(config.num_layers):
        b = f"block_{i}"
        h = layer_norm(x, f"{b}/ln1")
        q, k, v = (dense(h, f"{b}/attention/{n}").reshape(T, H, dh).transpose(1, 0, 2)
                   for n in ("query", "key", "value"))                                # (H, T, dh)
        s = q @ k.transpose(0, 2, 1) / math.sqrt(dh)
        s[:, future] = -np.inf
        p = np.exp(s - s.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        x = x + dense((p @ v).transpose(1, 0, 2).reshape(T, -1), f"{b}/attention/out")
        u = dense(layer_norm(x, f"{b}/ln2"), f"{b}/fc")
        x = x + dense(0.5 * u * (1 + erf(u / math.sqrt(2))), f"{b}/proj")
    return dense(layer_norm(x, "ln_f"), "logits")


def test_the_model_equals_a_float64_numpy_forward(small):
    config, model, full = small
    ids = np.random.default_rng(3).integers(0, config.vocab_size, config.context).astype(np.int32)
    expected = numpy_forward(model, config, ids)
    assert np.abs(expected).max() > 1.0
    np.testing.assert_allclose(full(tf.constant(ids[None])).numpy()[0], expected, rtol=0, atol=ATOL)


# --------------------------------------------------------------------------- the KV cache


def test_cached_steps_equal_the_full_model_on_each_prefix(small):
    config, model, full = small
    sampler = TransformerSampler(model, Vocab(tuple(chr(97 + i) for i in range(config.vocab_size))), config)
    ids = np.random.default_rng(4).integers(0, config.vocab_size, (3, config.context)).astype(np.int32)
    logits, cache = sampler.prefill(ids[:, :4])
    worst = np.abs(logits.numpy() - full(tf.constant(ids[:, :4])).numpy()).max()
    for t in range(4, config.context):
        step_logits, cache = sampler.step(ids[:, t], cache)
        assert cache[0][0].shape == (3, config.num_heads, t + 1, config.d_head)
        expected = full(tf.constant(ids[:, :t + 1])).numpy()[:, -1]
        worst = max(worst, np.abs(step_logits.numpy() - expected).max())
    assert worst < ATOL, worst
    with pytest.raises(ValueError, match="full"):
        sampler.step(ids[:, 0], cache)


def reference_windows(n_prime, length, context, keep):
    """The window start used for each generated character, by the rule written out again:
    the text read is text[s : i + 1]; when that would pass context characters, s = i - keep."""
    s, starts = 0, []
    for i in range(n_prime + length - 1):
        if i + 1 - s > context:
            s = i - keep
        if i >= n_prime - 1:
            starts.append(s)
    return starts


@pytest.mark.parametrize("mode", ["argmax", "sample"])
@pytest.mark.parametrize("keep", [None, 5, 0])
def test_generation_past_the_context_equals_recomputing_the_window(small, vocab, keep, mode):
    """Each character's logits equal the full model's on the window read (the last ``context``
    characters for the default ``keep``), and the text equals the one chosen by hand from
    logits recomputed on the window at every step."""
    config, model, full = small
    sampler = TransformerSampler(model, vocab, config, keep=keep)
    prime = vocab.encode("the cat sat on")                 # longer than the context: 14 > 12
    length, seed = 30, 3
    ids, used = sampler.generate_ids(prime, length, mode=mode, seed=seed)
    text = list(prime) + list(ids)
    starts = reference_windows(len(prime), length, config.context, config.context - 1 if keep is None else keep)
    if keep is None:                                        # exact sliding window: the last `context` characters
        assert starts == [max(0, i + 1 - config.context) for i in range(len(prime) - 1, len(text) - 1)]
    else:                                                   # re-primed now and then: windows of keep + 1 .. 12
        assert min(len(text[s:i + 1]) for i, s in enumerate(starts, len(prime) - 1)) == keep + 1
    u, worst, by_hand = uniforms(seed, length, 1)[0], 0.0, list(prime)
    for t, s in enumerate(starts):
        i = len(prime) - 1 + t                              # the last character read
        worst = max(worst, np.abs(used[t] - last_logits(full, text[s:i + 1])).max())
        o = last_logits(full, by_hand[s:])                  # recomputed on the hand-made text's window
        by_hand.append(int(np.argmax(o)) if mode == "argmax" else
                       weighted_pick(softmax_with_temperature(o).astype(np.float32), u[t]))
    assert worst < ATOL, worst
    assert by_hand[len(prime):] == list(ids)
    if mode == "sample":
        assert len(set(ids.tolist())) > 5


def test_sampling_equals_recomputation_by_hand_and_a_seed_fixes_the_text(small, vocab):
    config, model, full = small
    sampler = TransformerSampler(model, vocab, config)
    prime, length, temperature, seed = "a dog", 20, 0.8, 7
    text = sampler.generate(length, prime=prime, mode="sample", temperature=temperature, seed=seed)
    assert text.startswith(prime) and len(text) == len(prime) + length
    u, by_hand = uniforms(seed, length, 1)[0], list(vocab.encode(prime))
    for t in range(length):
        p = softmax_with_temperature(last_logits(full, by_hand[-config.context:]), temperature).astype(np.float32)
        by_hand.append(weighted_pick(p, u[t]))
    assert text == vocab.decode(by_hand)
    assert sampler.generate(length, prime=prime, temperature=temperature, seed=seed) == text
    assert sampler.generate(length, prime=prime, temperature=temperature, seed=seed + 1) != text
    assert sampler.generate(0, prime=prime) == prime


def test_cache_bytes_is_linear_and_equals_the_cache_arrays(small):
    config, model, _ = small
    sampler = TransformerSampler(model, Vocab(tuple(chr(97 + i) for i in range(config.vocab_size))), config)
    ids = np.zeros((3, 5), np.int32)
    _, cache = sampler.prefill(ids)
    actual = lambda c: sum(k.numpy().nbytes + v.numpy().nbytes for k, v in c)   # noqa: E731
    assert actual(cache) == cache_bytes(config, 5, batch=3)
    _, cache = sampler.step(ids[:, 0], cache)
    assert actual(cache) == cache_bytes(config, 6, batch=3) == 2 * 2 * 3 * 6 * 24 * 4
    sizes = [cache_bytes(config, n) for n in range(0, 50, 7)]
    assert sizes[0] == 0 and len(set(np.diff(sizes))) == 1 and sizes[1] > 0
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError):
            cache_bytes(config, bad)


def test_the_compiled_loops_buffer_holds_the_same_keys_and_values(small):
    """The preallocated cache of ``generate``: slots < n equal the growing cache, the rest are
    empty, and its size is cache_bytes at the full context."""
    config, model, _ = small
    sampler = TransformerSampler(model, Vocab(tuple(chr(97 + i) for i in range(config.vocab_size))), config)
    ids = np.random.default_rng(5).integers(0, config.vocab_size, (2, 7)).astype(np.int32)
    buffer = sampler.buffer(ids).numpy()
    assert buffer.shape == (config.num_layers, 2, 2, config.num_heads, config.context, config.d_head)
    assert buffer.nbytes == cache_bytes(config, config.context, batch=2)
    _, cache = sampler.prefill(ids)
    np.testing.assert_array_equal(buffer[..., :7, :], np.stack([np.stack(kv) for kv in cache]))
    assert not buffer[..., 7:, :].any()
    assert not sampler.buffer(np.zeros((1, 0), np.int32)).numpy().any()


def test_sampler_checks_its_arguments(small, vocab):
    config, model, _ = small
    for keep in (-1, config.context, 2.0):
        with pytest.raises(ValueError, match="keep"):
            TransformerSampler(model, vocab, config, keep=keep)
    sampler = TransformerSampler(model, vocab, config)
    with pytest.raises(ValueError, match="context"):
        sampler.prefill(np.zeros((1, config.context + 1), np.int32))
    with pytest.raises(ValueError):
        sampler.generate(5, prime="xyz!")                  # characters outside the vocabulary
    with pytest.raises(ValueError):
        sampler.generate(5, mode="beam")
    with pytest.raises(ValueError, match="context"):
        model(np.zeros((1, config.context + 1), np.int32))


# --------------------------------------------------------------------------- sizes


@pytest.mark.parametrize("kwargs", [
    dict(vocab_size=7, d_model=8, num_layers=1, num_heads=2, context=5),
    dict(vocab_size=64, d_model=104, num_layers=2, num_heads=4, context=128),
    dict(vocab_size=30, d_model=12, num_layers=3, num_heads=3, context=9, mlp_ratio=2, dropout=0.1),
    dict(vocab_size=2, d_model=6, num_layers=2, num_heads=6, context=1, mlp_ratio=1),
])
def test_parameter_count_in_closed_form(kwargs):
    config = TransformerConfig(**kwargs)
    model = build_transformer(config)
    assert transformer_parameter_count(config) == model.count_params()
    assert transformer_parameter_count(config) == sum(int(np.prod(v.shape)) for v in model.trainable_variables)


# --------------------------------------------------------------------------- training


def test_a_tiny_model_learns_through_the_books_train_step(vocab):
    keras.utils.set_random_seed(0)
    config = TransformerConfig(len(vocab), d_model=32, num_layers=2, num_heads=2, context=32)
    model = build_transformer(config)
    B, T = 16, 32
    ids = vocab.encode(TEXT * 12)
    starts = np.random.default_rng(0).integers(0, len(ids) - T - 1, (100, B))
    x = np.stack([[ids[s:s + T] for s in row] for row in starts])         # (steps, B, T)
    y = np.stack([[ids[s + 1:s + T + 1] for s in row] for row in starts])

    loss_and_grads = keras_loss_and_grads(model)       # the reference step: forward() without states
    loss, grads, states = loss_and_grads(tf.constant(x[0]), tf.constant(y[0]), [])
    assert states == [] and len(grads) == len(model.trainable_variables)
    assert all(isinstance(g, tf.Tensor) and g.shape == v.shape for g, v in zip(grads, model.trainable_variables))
    p = softmax_with_temperature(model(x[0]).numpy())                     # (B, T, K), float64
    np.testing.assert_allclose(float(loss), -np.log(np.take_along_axis(p, y[0][..., None], -1)).mean(), rtol=1e-5)

    train_config = TrainConfig(batch_size=B, seq_length=T, learning_rate=3e-3, grad_clip=1.0)
    optimizer = keras.optimizers.Adam(train_config.learning_rate)
    optimizer.build(model.trainable_variables)
    step = make_train_step(model, optimizer, None, train_config, loss_and_grads=loss_and_grads)
    lr = tf.constant(train_config.learning_rate, tf.float32)
    losses = [float(step(tf.constant(x[i]), tf.constant(y[i]), lr, [])[0]) for i in range(100)]
    assert abs(losses[0] - math.log(len(vocab))) < 0.2                    # untrained: about ln K
    # measured: 2.78 (ln 16 = 2.77) at the first step, 0.40 over the last 10 of 100
    assert np.mean(losses[-10:]) < 0.3 * losses[0], losses[::10]


# --------------------------------------------------------------------------- the config


def test_config_round_trips_and_knows_its_head_width():
    config = TransformerConfig(65, d_model=96, num_heads=6, dropout=0.1)
    assert config.d_head == 16
    assert TransformerConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown"):
        TransformerConfig.from_dict({**config.to_dict(), "hidden_size": 3})


def test_the_model_rebuilds_from_its_keras_config_and_drops_out_only_in_training():
    config = TransformerConfig(11, d_model=8, num_heads=2, context=6, dropout=0.5)
    model = build_transformer(config)
    clone = CharTransformer.from_config(model.get_config())
    assert clone.transformer_config == config
    ids = np.arange(12, dtype=np.int32).reshape(2, 6) % 11
    np.testing.assert_array_equal(model(ids, training=False), model(ids, training=False))
    assert np.abs(model(ids, training=True) - model(ids, training=False)).max() > 1e-4


@pytest.mark.parametrize("bad", [
    dict(vocab_size=1), dict(vocab_size=2.0), dict(d_model=0), dict(num_layers=-1), dict(num_heads=True),
    dict(context=0), dict(mlp_ratio=1.5), dict(d_model=10, num_heads=4), dict(dropout=1.0),
    dict(dropout=-0.1), dict(dropout=float("nan")), dict(dropout="0.1"),
])
def test_config_rejects_bad_values(bad):
    with pytest.raises(ValueError):
        TransformerConfig(**{"vocab_size": 10, **bad})


# --------------------------------------------------------------------------- the book's training loop


def test_train_trains_a_transformer_and_resumes_it_exactly(tmp_path):
    """``charrnn_lib.train.train`` takes a ``TransformerConfig``: no carried state, the same
    checkpoints, and an interrupted run resumes to the weights of an uninterrupted one."""
    from charrnn_lib.checkpoint import load_checkpoint
    from charrnn_lib.config import TrainConfig
    from charrnn_lib.data import TextLoader
    from charrnn_lib.train import evaluate, train

    corpus = tmp_path / "tiny.txt"
    corpus.write_text("the cat sat on the mat. the dog sat on the log. " * 30, encoding="utf-8")
    tc = TrainConfig(batch_size=4, seq_length=16, num_epochs=1, val_fraction=0.1, learning_rate=0.01,
                     checkpoint_every=0)
    loader = TextLoader(corpus, batch_size=4, seq_length=16, val_fraction=0.1, cache_dir=tmp_path / "cache")
    config = TransformerConfig(loader.vocab_size, d_model=16, num_layers=1, num_heads=2, context=16)
    whole = train(loader, config, tc, out_dir=tmp_path / "whole", progress=False, max_batches=6)
    train(loader, config, tc, out_dir=tmp_path / "split", progress=False, max_batches=3)
    rest = train(loader, config, tc, out_dir=tmp_path / "split", progress=False, max_batches=3)
    assert rest.resumed and rest.global_step == 6 and rest.history.train_loss == whole.history.train_loss
    for a, b in zip(whole.model.weights, rest.model.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    model, vocab, saved = load_checkpoint(tmp_path / "split")
    assert saved == config and vocab == loader.vocab
    assert evaluate(model, loader.val_x, loader.val_y, saved) == evaluate(rest.model, loader.val_x, loader.val_y, config)
    with pytest.raises(ValueError, match="longer than the Transformer's context"):
        train(loader, TransformerConfig(loader.vocab_size, d_model=16, num_layers=1, num_heads=2, context=8), tc,
              progress=False)
