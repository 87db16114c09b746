"""charrnn_lib.fast: the fused stacked LSTM computes the Keras model's function and gradients,
and the fused step plugs in where the reference step would run."""
import numpy as np
import pytest
import tensorflow as tf

from charrnn_lib.fast.fused_lstm import lstm_recurrence, stacked_lstm_logits, supports
from charrnn_lib.model import ModelConfig, build_model
from charrnn_lib.repro import seed_everything


def _loss_and_grads(forward, model, ids, targets, states):
    with tf.GradientTape() as tape:
        tape.watch(states)
        logits, new_states = forward(ids, states)
        loss = tf.reduce_mean(
            tf.nn.sparse_softmax_cross_entropy_with_logits(labels=targets, logits=logits))
        # Let the final state matter too, so its backward path is exercised.
        loss += 0.1 * tf.add_n([tf.reduce_mean(s * s) for s in new_states])
    grads = tape.gradient(loss, [*model.trainable_variables, *states])
    return logits, new_states, [tf.convert_to_tensor(g) for g in grads]


@pytest.mark.parametrize("hidden, layers, embed", [(8, 2, None), (6, 1, 5), (5, 3, 7)])
def test_fused_equals_keras_forward_and_gradients(hidden, layers, embed):
    seed_everything(0)
    config = ModelConfig(vocab_size=11, hidden_size=hidden, num_layers=layers, embedding_dim=embed)
    model = build_model(config)
    rng = np.random.default_rng(1)
    B, T = 3, 7
    ids = tf.constant(rng.integers(0, 11, (B, T)), tf.int32)
    targets = tf.constant(rng.integers(0, 11, (B, T)), tf.int32)
    states = [tf.constant(rng.normal(size=(B, hidden)), tf.float32) for _ in range(2 * layers)]

    def keras_forward(x, s):
        logits, *new = model([x, *s], training=True)
        return logits, new

    def fused_forward(x, s):
        return stacked_lstm_logits(model, config, x, s)

    ref_logits, ref_states, ref_grads = _loss_and_grads(keras_forward, model, ids, targets, states)
    logits, new_states, grads = _loss_and_grads(fused_forward, model, ids, targets, states)
    np.testing.assert_allclose(logits, ref_logits, rtol=1e-5, atol=1e-6)
    for a, b in zip(new_states, ref_states):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert len(grads) == len(ref_grads)
    for g, r in zip(grads, ref_grads):
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-6)


def test_recurrence_gradient_matches_finite_differences():
    """Central differences in float64 on a tiny recurrence: the hand-written backward is right."""
    rng = np.random.default_rng(0)
    T, B, H = 4, 2, 3
    zx = tf.constant(rng.normal(size=(T, B, 4 * H)), tf.float64)
    h0 = tf.constant(rng.normal(size=(B, H)), tf.float64)
    s0 = tf.constant(rng.normal(size=(B, H)), tf.float64)
    w_t = tf.constant(rng.normal(size=(H, 4 * H)) * 0.5, tf.float64)
    probe = [tf.constant(rng.normal(size=shape), tf.float64) for shape in [(T, B, H), (B, H), (B, H)]]

    def scalar(zx, h0, s0, w_t):
        outs, h, s = lstm_recurrence(zx, h0, s0, w_t)
        return (tf.reduce_sum(outs * probe[0]) + tf.reduce_sum(h * probe[1])
                + tf.reduce_sum(s * probe[2]))

    args = [zx, h0, s0, w_t]
    with tf.GradientTape() as tape:
        tape.watch(args)
        value = scalar(*args)
    grads = tape.gradient(value, args)
    eps = 1e-6
    for k, arg in enumerate(args):
        flat = arg.numpy().ravel()
        for j in rng.choice(flat.size, size=min(6, flat.size), replace=False):
            plus, minus = flat.copy(), flat.copy()
            plus[j] += eps
            minus[j] -= eps
            a_plus = [tf.constant(plus.reshape(arg.shape)) if i == k else a for i, a in enumerate(args)]
            a_minus = [tf.constant(minus.reshape(arg.shape)) if i == k else a for i, a in enumerate(args)]
            numeric = (scalar(*a_plus) - scalar(*a_minus)).numpy() / (2 * eps)
            np.testing.assert_allclose(grads[k].numpy().ravel()[j], numeric, rtol=1e-6, atol=1e-8)


def test_supports_only_plain_lstm():
    assert supports(ModelConfig(vocab_size=5))
    assert not supports(ModelConfig(vocab_size=5, cell="gru"))
    assert not supports(ModelConfig(vocab_size=5, dropout=0.2))
    config = ModelConfig(vocab_size=5, cell="gru", hidden_size=4)
    with pytest.raises(ValueError, match="fused path"):
        stacked_lstm_logits(build_model(config), config, tf.zeros((1, 2), tf.int32), [])


# --------------------------------------------------------------------------- the fast step


def test_row_groups_cover_the_rows_in_order():
    from charrnn_lib.fast import row_groups

    assert row_groups(50, 2) == [(0, 25), (25, 50)]
    assert row_groups(7, 3) == [(0, 3), (3, 5), (5, 7)]
    assert row_groups(3, 8) == [(0, 1), (1, 2), (2, 3)]   # never an empty group
    assert row_groups(4, 1) == [(0, 4)]
    with pytest.raises(ValueError, match="positive integer"):
        row_groups(4, 0)


def test_the_fast_path_applies_only_where_it_computes_the_model(monkeypatch):
    """An LSTM without dropout, float32, ``fused=True`` and no GPU: anything else takes the
    reference step (on a GPU Keras's cuDNN kernel is faster than the fused loop)."""
    from charrnn_lib.config import TrainConfig
    from charrnn_lib.fast import uses_fused_step

    lstm, tc = ModelConfig(vocab_size=11), TrainConfig()
    assert supports(lstm) and uses_fused_step(lstm, tc)
    assert not uses_fused_step(ModelConfig(vocab_size=11, cell="gru"), tc)
    assert not uses_fused_step(ModelConfig(vocab_size=11, dropout=0.1), tc)
    assert not uses_fused_step(lstm, TrainConfig(fused=False))
    assert not uses_fused_step(lstm, TrainConfig(mixed_precision=True))
    real = tf.config.list_logical_devices

    def with_a_gpu(kind=None):
        gpu = tf.config.LogicalDevice(name="/device:GPU:0", device_type="GPU")
        return [gpu] if kind == "GPU" else real(kind) + ([gpu] if kind is None else [])

    monkeypatch.setattr(tf.config, "list_logical_devices", with_a_gpu)
    assert not uses_fused_step(lstm, tc)


def test_fused_loss_and_grads_equal_the_reference_on_one_batch():
    """The two ``loss_and_grads`` functions ``make_train_step`` can plug in, on the same rows."""
    from charrnn_lib.fast import fused_loss_and_grads
    from charrnn_lib.train import keras_loss_and_grads

    seed_everything(0)
    config = ModelConfig(vocab_size=13, hidden_size=8)
    model = build_model(config)
    rng = np.random.default_rng(2)
    x, y = (tf.constant(rng.integers(0, 13, (6, 9)), tf.int32) for _ in range(2))
    states = [tf.constant(rng.normal(size=(6, 8)) * 0.5, tf.float32) for _ in range(config.num_states)]
    reference = keras_loss_and_grads(model)(x, y, states)
    for groups in (1, 2, 4):
        fused = fused_loss_and_grads(model, config, rows=6, groups=groups)(x, y, states)
        np.testing.assert_allclose(float(fused[0]), float(reference[0]), rtol=1e-6)
        for a, b in zip(fused[1] + fused[2], reference[1] + reference[2]):
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-6)
