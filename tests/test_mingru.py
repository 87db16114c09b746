"""minGRU (charrnn_lib.mingru): the log-space scan equals the step-by-step recurrence.

References used here that do not come from the code under test: the paper's own placement
of h_0 (as the k = 0 term of the log-space scan), a naive cumulative-product scan (to show
why the logarithms are needed), central finite differences, TensorFlow's autodiff of the
step-by-step form, and the book's own sampler (``charrnn_lib.sample.Stepper``).
"""
import types

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import keras
import tensorflow as tf

from charrnn_lib.gradcheck import numerical_gradients, relative_error
from charrnn_lib.mingru import (MinGRU, MinGRUCell, MinGRUParams, g, init_params, log_g, mingru_parallel,
                                mingru_sequential)
from charrnn_lib.model import recurrent_layers
from charrnn_lib.sample import Stepper

RTOL64 = 1e-10


def _inputs(rng, B, T, D, H, scale=1.0):
    xs = rng.normal(0.0, scale, (B, T, D))
    h0 = rng.uniform(0.05, 2.0, (B, H))  # positive: the paper's requirement, so its form applies too
    return xs, h0


def _paper_scan(params: MinGRUParams, xs, h0):
    """The paper's placement: log h_0 is the k = 0 term of the scan, with a*_0 = 0 (needs h_0 > 0)."""
    k = xs @ params.U_z.T + params.b_z
    p = xs @ params.U_h.T + params.b_h
    log_coeffs = -np.logaddexp(0, k)
    log_values = np.concatenate([np.log(h0)[:, None], -np.logaddexp(0, -k) + log_g(p)], axis=1)  # (B, T+1, H)
    a_star = np.concatenate([np.zeros_like(h0)[:, None], np.cumsum(log_coeffs, axis=1)], axis=1)
    return np.exp(a_star + np.logaddexp.accumulate(log_values - a_star, axis=1))[:, 1:]


def _naive_scan(params: MinGRUParams, xs, h0):
    """h_t = A_t (h_0 + sum_k b_k / A_k) with a plain cumulative product: underflows for long T."""
    k = xs @ params.U_z.T + params.b_z
    z = 1 / (1 + np.exp(-k))
    A = np.cumprod(1 - z, axis=1)
    with np.errstate(all="ignore"):
        return A * (h0[:, None] + np.cumsum(z * g(xs @ params.U_h.T + params.b_h) / A, axis=1))


# --------------------------------------------------------------------------- NumPy


def test_g_is_positive_continuous_and_log_g_is_its_log():
    x = np.concatenate([np.linspace(-30, 30, 2001), [0.0, -1e-300, 1e-300]])
    assert np.all(g(x) > 0)
    np.testing.assert_allclose(log_g(x), np.log(g(x)), rtol=1e-14, atol=1e-15)
    assert g(0.0) == 0.5 and g(-1e-12) == pytest.approx(0.5) and g(2.0) == 2.5
    assert log_g(-800.0) == -800.0  # where g itself underflows to 0, log g stays exact


@settings(max_examples=40, deadline=None)
@given(B=st.integers(1, 4), T=st.integers(1, 40), D=st.integers(1, 5), H=st.integers(1, 5),
       scale=st.floats(0.05, 6.0), seed=st.integers(0, 2**32 - 1))
def test_parallel_equals_sequential(B, T, D, H, scale, seed):
    rng = np.random.default_rng(seed)
    params = init_params(D, H, rng, scale=scale)
    xs, h0 = _inputs(rng, B, T, D, H, scale)
    hs = mingru_sequential(params, xs, h0)
    assert hs.shape == (B, T, H) and np.all(hs > 0)
    np.testing.assert_allclose(mingru_parallel(params, xs, h0), hs, rtol=RTOL64, atol=0)
    np.testing.assert_allclose(_paper_scan(params, xs, h0), hs, rtol=RTOL64, atol=0)


@pytest.mark.parametrize("T", [500, 2000])
def test_long_sequences_stay_exact_where_the_naive_scan_breaks(T):
    rng = np.random.default_rng(T)
    params = init_params(3, 6, rng)
    params.b_z = params.b_z + 3.0  # z near 0.95: A_t = prod(1 - z) falls by ~e^-3 a step, below 1e-308 by t ~ 240
    xs, h0 = _inputs(rng, 2, T, 3, 6)
    hs = mingru_sequential(params, xs, h0)
    np.testing.assert_allclose(mingru_parallel(params, xs, h0), hs, rtol=RTOL64, atol=0)
    naive = _naive_scan(params, xs, h0)
    np.testing.assert_allclose(naive[:, :50], hs[:, :50], rtol=1e-8)  # fine while A_t is representable
    assert not np.all(np.isfinite(naive[:, -1]))  # then 0 * inf = nan


def test_any_real_initial_state_and_zeros_by_default():
    rng = np.random.default_rng(1)
    params = init_params(4, 5, rng)
    xs = rng.normal(size=(3, 20, 4))
    for h0 in (np.zeros((3, 5)), rng.normal(0, 3, (3, 5))):  # zeros (the book's start) and mixed signs
        hs = mingru_sequential(params, xs, h0)
        np.testing.assert_allclose(mingru_parallel(params, xs, h0), hs, rtol=0, atol=1e-13 * np.abs(hs).max())
    np.testing.assert_array_equal(mingru_parallel(params, xs), mingru_parallel(params, xs, np.zeros((3, 5))))
    np.testing.assert_array_equal(mingru_sequential(params, xs), mingru_sequential(params, xs, np.zeros((3, 5))))
    with pytest.raises(ValueError, match="h0 must have shape"):
        mingru_parallel(params, xs, np.zeros((3, 4)))
    with pytest.raises(ValueError, match="xs must have shape"):
        mingru_sequential(params, xs[0])


# --------------------------------------------------------------------------- Keras


def _layer(params: MinGRUParams, dtype="float64", **kwargs) -> MinGRU:
    layer = MinGRU(params.hidden_size, return_sequences=True, return_state=True, dtype=dtype, **kwargs)
    layer.build((None, None, params.input_size))
    layer.set_weights([w.astype(dtype) for w in params.to_keras()])
    return layer


def _step_cell(cell, xs, h0):
    """The sequential form in Keras: the cell called once per time step (what the sampler does)."""
    h, outs = h0, []
    for t in range(xs.shape[1]):
        out, (h,) = cell(xs[:, t], [h])
        outs.append(out)
    return tf.stack(outs, axis=1), h


def test_keras_layer_pieces_and_weights():
    params = init_params(3, 4, np.random.default_rng(0))
    layer = _layer(params)
    assert isinstance(layer, keras.layers.RNN) and isinstance(layer.cell, MinGRUCell)
    assert layer.cell.state_size == 4 and layer.cell.output_size == 4 and layer.units == 4
    assert [tuple(w.shape) for w in layer.weights] == [(3, 8), (8,)]  # 2 H (D + 1) parameters
    kernel, bias = layer.get_weights()
    back = MinGRUParams.from_keras([kernel, bias])
    np.testing.assert_array_equal(back.U_z, params.U_z)
    np.testing.assert_array_equal(back.b_h, params.b_h)


@settings(max_examples=8, deadline=None)
@given(B=st.integers(1, 3), T=st.integers(1, 12), D=st.integers(1, 4), H=st.integers(1, 4),
       seed=st.integers(0, 2**16))
def test_keras_float64_parallel_equals_stepping_the_cell_and_numpy(B, T, D, H, seed):
    rng = np.random.default_rng(seed)
    params = init_params(D, H, rng, scale=2.0)
    xs, h0 = _inputs(rng, B, T, D, H, 2.0)
    layer = _layer(params)
    hs, h_T = layer(xs, initial_state=[h0])
    assert hs.dtype == tf.float64 and tuple(hs.shape) == (B, T, H) and tuple(h_T.shape) == (B, H)
    np.testing.assert_array_equal(h_T.numpy(), hs.numpy()[:, -1])  # the final state is the last output
    stepped, h_step = _step_cell(layer.cell, tf.constant(xs), tf.constant(h0))
    np.testing.assert_allclose(hs.numpy(), stepped.numpy(), rtol=RTOL64, atol=0)
    np.testing.assert_allclose(h_T.numpy(), h_step.numpy(), rtol=RTOL64, atol=0)
    np.testing.assert_allclose(hs.numpy(), mingru_sequential(params, xs, h0), rtol=RTOL64, atol=0)


def test_keras_return_sequences_false_gives_the_last_output():
    rng = np.random.default_rng(10)
    params = init_params(3, 4, rng)
    xs, h0 = _inputs(rng, 2, 7, 3, 4)
    layer = MinGRU(4, dtype="float64")
    layer.build((None, None, 3))
    layer.set_weights(params.to_keras())
    h_T = layer(xs, initial_state=[h0])
    np.testing.assert_allclose(h_T.numpy(), mingru_sequential(params, xs, h0)[:, -1], rtol=RTOL64, atol=0)


def test_keras_default_initial_state_is_zeros():
    rng = np.random.default_rng(2)
    params = init_params(3, 4, rng)
    xs = rng.normal(size=(2, 6, 3))
    layer = _layer(params)
    hs, _ = layer(xs)
    np.testing.assert_allclose(hs.numpy(), mingru_sequential(params, xs, np.zeros((2, 4))), rtol=RTOL64, atol=0)
    np.testing.assert_array_equal(layer.cell.get_initial_state(2)[0].numpy(), np.zeros((2, 4)))


def test_keras_float32_against_float64_reference():
    """float32 errors relative to max|h|, measured at T = 50: scan 2.2e-6, stepped cell 1.6e-7.

    The scan's error grows like |a*_T| * eps (the sum a*_t + logcumsumexp(...) of two large
    numbers of opposite sign): 4.2e-5 at T = 500.  The stepped cell's does not grow."""
    rng = np.random.default_rng(3)
    params = init_params(8, 16, rng)
    xs, h0 = _inputs(rng, 4, 50, 8, 16)
    ref = mingru_sequential(params, xs, h0)
    layer = _layer(params, dtype="float32")
    hs, _ = layer(xs.astype("float32"), initial_state=[h0.astype("float32")])
    stepped, _ = _step_cell(layer.cell, tf.constant(xs, tf.float32), tf.constant(h0, tf.float32))
    scale = np.abs(ref).max()
    assert hs.dtype == tf.float32
    assert np.abs(hs.numpy() - ref).max() < 1e-5 * scale
    assert np.abs(stepped.numpy() - ref).max() < 1e-6 * scale
    assert np.abs(hs.numpy() - stepped.numpy()).max() < 1e-5 * scale


def test_keras_gradients_parallel_equal_sequential():
    rng = np.random.default_rng(4)
    params = init_params(3, 5, rng, scale=1.5)
    xs, h0 = (tf.constant(a) for a in _inputs(rng, 2, 15, 3, 5, 1.5))
    layer = _layer(params)
    w_out = tf.constant(rng.normal(size=(2, 15, 5)))  # a random linear read-out makes the loss a scalar

    def grads(run):
        with tf.GradientTape() as tape:
            tape.watch([xs, h0])
            hs, h_T = run()
            loss = tf.reduce_sum(w_out * hs) + tf.reduce_sum(h_T ** 2)
        return tape.gradient(loss, [*layer.trainable_variables, xs, h0])

    parallel = grads(lambda: layer(xs, initial_state=[h0]))
    sequential = grads(lambda: _step_cell(layer.cell, xs, h0))
    for a, b in zip(parallel, sequential):
        assert relative_error(a.numpy(), b.numpy()) < 1e-12  # measured 3.3e-14


def test_finite_differences_of_numpy_parallel_form_match_keras_autodiff():
    rng = np.random.default_rng(5)
    params = init_params(3, 4, rng)
    xs, h0 = _inputs(rng, 2, 6, 3, 4)
    w_out = rng.normal(size=(2, 6, 4))
    arrays = {"U_z": params.U_z, "b_z": params.b_z, "U_h": params.U_h, "b_h": params.b_h, "xs": xs, "h0": h0}
    numeric = numerical_gradients(lambda: np.sum(w_out * mingru_parallel(params, xs, h0)), arrays)
    layer = _layer(params)
    x_t, h_t = tf.constant(xs), tf.constant(h0)
    with tf.GradientTape() as tape:
        tape.watch([x_t, h_t])
        loss = tf.reduce_sum(w_out * layer(x_t, initial_state=[h_t])[0])
    d_kernel, d_bias, d_x, d_h0 = (t.numpy() for t in tape.gradient(loss, [layer.cell.kernel, layer.cell.bias,
                                                                            x_t, h_t]))
    analytic = MinGRUParams.from_keras([d_kernel, d_bias])
    analytic = {"U_z": analytic.U_z, "b_z": analytic.b_z, "U_h": analytic.U_h, "b_h": analytic.b_h,
                "xs": d_x, "h0": d_h0}
    for name in arrays:
        assert relative_error(analytic[name], numeric[name]) < 1e-8, name  # measured 4e-11 to 2.1e-10


def test_keras_under_tf_function_with_unknown_time():
    rng = np.random.default_rng(6)
    params = init_params(3, 4, rng)
    layer = _layer(params)
    traces = []

    @tf.function(input_signature=[tf.TensorSpec((None, None, 3), tf.float64), tf.TensorSpec((None, 4), tf.float64)])
    def run(xs, h0):
        traces.append(xs.shape)
        return layer(xs, initial_state=[h0])

    for B, T in [(2, 5), (3, 17), (1, 1)]:
        xs, h0 = _inputs(rng, B, T, 3, 4)
        hs, h_T = run(tf.constant(xs), tf.constant(h0))
        np.testing.assert_allclose(hs.numpy(), mingru_sequential(params, xs, h0), rtol=RTOL64, atol=0)
        np.testing.assert_array_equal(h_T.numpy(), hs.numpy()[:, -1])
    assert len(traces) == 1 and traces[0].as_list() == [None, None, 3]


def test_keras_mixed_precision_scans_in_float32():
    rng = np.random.default_rng(7)
    params = init_params(4, 8, rng)
    xs, h0 = _inputs(rng, 2, 30, 4, 8)
    layer = MinGRU(8, return_sequences=True, return_state=True, dtype="mixed_float16")
    layer.build((None, None, 4))
    layer.set_weights([w.astype("float32") for w in params.to_keras()])
    hs, h_T = layer(xs.astype("float32"), initial_state=[h0.astype("float32")])
    assert hs.dtype == tf.float16 and h_T.dtype == tf.float16
    ref = mingru_sequential(params, xs, h0)
    # float16 inputs, weights and outputs (eps 9.8e-4): measured 3.8e-4 of max|h|
    assert np.abs(hs.numpy().astype(np.float64) - ref).max() < 2e-3 * np.abs(ref).max()


def test_keras_refuses_masks_and_backwards():
    layer = MinGRU(4, return_sequences=True)
    x = np.random.default_rng(8).normal(size=(2, 5, 3)).astype("float32")
    with pytest.raises(NotImplementedError, match="masking"):
        layer(x, mask=np.ones((2, 5), bool))
    with pytest.raises(ValueError, match="go_backwards"):
        MinGRU(4, go_backwards=True)


def test_keras_config_round_trip_and_saving(tmp_path):
    layer = MinGRU(6, return_sequences=True, return_state=True, name="mingru_0")
    clone = MinGRU.from_config(layer.get_config())
    assert (clone.units, clone.return_sequences, clone.return_state, clone.name) == (6, True, True, "mingru_0")
    x_in = keras.Input((None, 3))
    model = keras.Model(x_in, layer(x_in))
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    x = np.random.default_rng(9).normal(size=(2, 4, 3)).astype("float32")
    for a, b in zip(model(x), loaded(x)):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert isinstance(loaded.layers[-1], MinGRU)


# --------------------------------------------------------------------------- the book's model pattern

TEXT = "the cat sat on the mat. the dog sat on the log. " * 20


def _charrnn(K, H, E, L=2):
    """Embedding -> L x MinGRU -> Dense, built like charrnn_lib.model.build_model (explicit states)."""
    ids = keras.Input(shape=(None,), dtype="int32", name="ids")
    x = keras.layers.Embedding(K, E, name="embedding")(ids)  # (batch, time, E)
    state_inputs, new_states = [], []
    for index in range(L):
        h = keras.Input(shape=(H,), name=f"layer{index}_h")
        state_inputs.append(h)
        x, h_new = MinGRU(H, return_sequences=True, return_state=True, name=f"mingru_{index}")(x, initial_state=[h])
        new_states.append(h_new)
    logits = keras.layers.Dense(K, name="logits")(x)  # (batch, time, K)
    return keras.Model([ids, *state_inputs], [logits, *new_states])


def test_model_pattern_carried_state_and_sampler_steps():
    keras.utils.set_random_seed(0)
    K, H, L = 11, 8, 2
    model = _charrnn(K, H, E=5, L=L)
    assert [layer.name for layer in recurrent_layers(model)] == ["mingru_0", "mingru_1"]
    ids = tf.constant(np.random.default_rng(0).integers(0, K, (3, 10)), tf.int32)
    zeros = [tf.zeros((3, H)) for _ in range(L)]  # what charrnn_lib.model.zero_states gives
    logits, *states = model([ids, *zeros])
    # Two chunks with the state carried across equal one pass (truncated BPTT's forward).
    # float32; measured differences 4.3e-7 (chunks) and 3.6e-7 (stepper) with |logits| <= 1.2.
    first, *mid = model([ids[:, :4], *zeros])
    second, *end = model([ids[:, 4:], *mid])
    np.testing.assert_allclose(np.concatenate([first, second], axis=1), logits.numpy(), atol=2e-6)
    for a, b in zip(end, states):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=2e-6)
    # The book's sampler steps layer.cell one character at a time: the same logits.
    stepper = Stepper(model, types.SimpleNamespace(states_per_layer=1, num_states=L, hidden_size=H))
    step_states = zeros
    for t in range(ids.shape[1]):
        step_logits, step_states = stepper(ids[:, t], step_states)
        np.testing.assert_allclose(step_logits.numpy(), logits.numpy()[:, t], atol=2e-6)
    for a, b in zip(step_states, states):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=2e-6)


def test_tiny_model_trains_on_a_repeated_text():
    """Measured (seeds 0-3, K = 14, ln K = 2.64): mean of the first 5 losses 2.46-2.67 nats, of the
    last 5 0.11-0.19, a fall of 2.29-2.56; we ask for 1.5 (and under 0.8 at the end)."""
    keras.utils.set_random_seed(0)
    chars = sorted(set(TEXT))
    K, H, B, T = len(chars), 32, 8, 24
    data = np.array([chars.index(c) for c in TEXT], dtype="int32")
    model = _charrnn(K, H, E=16)
    optimizer = keras.optimizers.Adam(0.01)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    zeros = [tf.zeros((B, H)) for _ in range(2)]

    @tf.function
    def train_step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model([x, *zeros])[0])
        optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
        return loss

    rng = np.random.default_rng(0)
    losses = []
    for _ in range(100):
        starts = rng.integers(0, len(data) - T - 1, B)
        x = np.stack([data[s:s + T] for s in starts])
        y = np.stack([data[s + 1:s + T + 1] for s in starts])
        losses.append(float(train_step(x, y)))
    first, last = np.mean(losses[:5]), np.mean(losses[-5:])
    assert np.all(np.isfinite(losses))
    assert first - last > 1.5 and last < 0.8, (first, last)
