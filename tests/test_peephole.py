"""The Keras peephole LSTM cell: equal to its NumPy twin, correct gradients, serialisable."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import keras
import tensorflow as tf

from charrnn_lib.gradcheck import numerical_gradient, relative_error  # noqa: E402
from charrnn_lib.numpy_gated import LSTMParams, lstm_forward, lstm_step, param_count  # noqa: E402
from charrnn_lib.peephole import PeepholeLSTMCell  # noqa: E402


def _built_cell(params: LSTMParams, dtype="float32") -> PeepholeLSTMCell:
    cell = PeepholeLSTMCell(params.hidden_size, dtype=dtype)
    cell.build((None, params.input_size))
    cell.set_weights(params.to_keras())
    return cell


@settings(max_examples=12, deadline=None)
@given(B=st.integers(1, 4), D=st.integers(1, 5), H=st.integers(1, 5), seed=st.integers(0, 2**16))
def test_step_equals_numpy_twin(B, D, H, seed):
    params = LSTMParams.random(D, H, seed=seed, peepholes=True, scale=0.8, dtype=np.float32)
    cell = _built_cell(params)
    rng = np.random.default_rng(seed)
    x, h, s = (rng.normal(size=shape).astype("float32") for shape in [(B, D), (B, H), (B, H)])
    out, (h_k, s_k) = cell(x, [h, s])
    h_n, s_n = lstm_step(params, h, s, x)
    np.testing.assert_allclose(np.asarray(out), h_n, atol=1e-5)
    np.testing.assert_allclose(np.asarray(h_k), h_n, atol=1e-5)
    np.testing.assert_allclose(np.asarray(s_k), s_n, atol=1e-5)


@settings(max_examples=6, deadline=None)
@given(B=st.integers(1, 3), T=st.integers(1, 6), D=st.integers(1, 4), H=st.integers(1, 4), seed=st.integers(0, 999))
def test_rnn_layer_with_initial_state_equals_numpy(B, T, D, H, seed):
    params = LSTMParams.random(D, H, seed=seed, peepholes=True, dtype=np.float32)
    layer = keras.layers.RNN(PeepholeLSTMCell(H), return_sequences=True, return_state=True)
    layer.build((None, T, D))
    layer.set_weights(params.to_keras())
    rng = np.random.default_rng(seed)
    xs = rng.normal(size=(B, T, D)).astype("float32")
    h0, s0 = (rng.normal(size=(B, H)).astype("float32") for _ in range(2))
    hs_k, h_k, s_k = layer(xs, initial_state=[h0, s0])
    hs, ss = lstm_forward(params, xs, h0, s0)
    np.testing.assert_allclose(np.asarray(hs_k), hs, atol=1e-5)
    np.testing.assert_allclose(np.asarray(h_k), hs[:, -1], atol=1e-5)
    np.testing.assert_allclose(np.asarray(s_k), ss[:, -1], atol=1e-5)


def test_new_cell_equals_keras_lstmcell():
    """Peepholes start at zero and the forget bias at 1: a fresh cell is an LSTMCell."""
    cell = PeepholeLSTMCell(4)
    cell.build((None, 3))
    kernel, recurrent, bias, p_i, p_f, p_o = cell.get_weights()
    assert kernel.shape == (3, 16) and recurrent.shape == (4, 16) and bias.shape == (16,)
    np.testing.assert_array_equal(bias, np.r_[np.zeros(4), np.ones(4), np.zeros(8)])
    for p in (p_i, p_f, p_o):
        np.testing.assert_array_equal(p, np.zeros(4))
    ref = keras.layers.LSTMCell(4)
    ref.build((None, 3))
    ref.set_weights([kernel, recurrent, bias])
    rng = np.random.default_rng(0)
    x, h, s = (rng.normal(size=shape).astype("float32") for shape in [(2, 3), (2, 4), (2, 4)])
    _, (h1, s1) = cell(x, [h, s])
    _, (h2, s2) = ref(x, [h, s])
    np.testing.assert_allclose(np.asarray(h1), np.asarray(h2), atol=1e-6)
    np.testing.assert_allclose(np.asarray(s1), np.asarray(s2), atol=1e-6)
    assert cell.count_params() == param_count("peephole", 3, 4)


def test_gradients_agree_with_finite_differences_float64():
    """GradientTape through the Keras cell (float64) against central differences of the
    NumPy twin, for every weight, the inputs and both initial states."""
    B, T, D, H = 2, 4, 3, 3
    params = LSTMParams.random(D, H, seed=11, peepholes=True, scale=0.9)
    rng = np.random.default_rng(12)
    xs, h0, s0 = rng.normal(size=(B, T, D)), rng.normal(size=(B, H)), rng.normal(size=(B, H))
    w_h, w_s = rng.normal(size=(B, H)), rng.normal(size=(B, H))  # loss = <w_h, h_T> + <w_s, s_T>

    def numpy_loss():
        hs, ss = lstm_forward(params, xs, h0, s0)
        return float(np.sum(w_h * hs[:, -1]) + np.sum(w_s * ss[:, -1]))

    cell = _built_cell(params, dtype="float64")
    xs_v, h0_v, s0_v = (tf.Variable(a) for a in (xs, h0, s0))
    with tf.GradientTape() as tape:
        h, s = h0_v, s0_v
        for t in range(T):
            _, (h, s) = cell(xs_v[:, t], [h, s])
        loss = tf.reduce_sum(w_h * h) + tf.reduce_sum(w_s * s)
    np.testing.assert_allclose(float(loss), numpy_loss(), rtol=1e-12)
    weights = [cell.kernel, cell.recurrent_kernel, cell.bias, cell.p_i, cell.p_f, cell.p_o]
    grads = tape.gradient(loss, [w.value for w in weights] + [xs_v, h0_v, s0_v])
    assert grads[0] is not None

    numeric = [
        numerical_gradient(numpy_loss, params.U).T,  # kernel = U.T
        numerical_gradient(numpy_loss, params.W).T,  # recurrent_kernel = W.T
        numerical_gradient(numpy_loss, params.b),
        numerical_gradient(numpy_loss, params.p_i),
        numerical_gradient(numpy_loss, params.p_f),
        numerical_gradient(numpy_loss, params.p_o),
        numerical_gradient(numpy_loss, xs),
        numerical_gradient(numpy_loss, h0),
        numerical_gradient(numpy_loss, s0),
    ]
    names = ["kernel", "recurrent_kernel", "bias", "p_i", "p_f", "p_o", "xs", "h0", "s0"]
    for name, g, n in zip(names, grads, numeric):
        assert np.linalg.norm(n) > 1e-3, name  # the check is not vacuous
        assert relative_error(np.asarray(g), n) < 1e-7, name


def test_gradients_through_rnn_layer_reach_the_peepholes():
    layer = keras.layers.RNN(PeepholeLSTMCell(3))
    xs = np.random.default_rng(0).normal(size=(2, 5, 2)).astype("float32")
    with tf.GradientTape() as tape:
        y = tf.reduce_sum(layer(xs) ** 2)
    grads = tape.gradient(y, layer.trainable_variables)
    assert len(grads) == 6 and all(g is not None for g in grads)
    assert all(float(tf.norm(g)) > 0 for g in grads)


def test_config_round_trip():
    cell = PeepholeLSTMCell(5, peephole_initializer="ones", unit_forget_bias=False, name="peep")
    config = cell.get_config()
    assert config["units"] == 5 and config["unit_forget_bias"] is False
    clone = PeepholeLSTMCell.from_config(config)
    assert clone.get_config() == config
    layer = keras.layers.RNN(cell)
    clone_layer = keras.layers.RNN.from_config(layer.get_config())
    assert isinstance(clone_layer.cell, PeepholeLSTMCell) and clone_layer.cell.units == 5
    xs = np.random.default_rng(0).normal(size=(2, 4, 3)).astype("float32")
    y = layer(xs)
    clone_layer.build(xs.shape)
    clone_layer.set_weights(layer.get_weights())
    np.testing.assert_array_equal(np.asarray(clone_layer(xs)), np.asarray(y))


# Keras's own saving code converts a tracked list with np.array and NumPy 2 warns about it.
@pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")
def test_keras_file_round_trip(tmp_path):
    keras.utils.set_random_seed(0)
    ids = keras.Input((None, 3))
    hs, h, s = keras.layers.RNN(PeepholeLSTMCell(4), return_sequences=True, return_state=True)(ids)
    model = keras.Model(ids, [keras.layers.Dense(2)(hs), h, s])
    # make the peepholes non-zero so that losing them would show
    layer = model.layers[1]
    layer.set_weights([w + 0.3 for w in layer.get_weights()])
    path = tmp_path / "peephole.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded.layers[1].cell, PeepholeLSTMCell)
    xs = np.random.default_rng(1).normal(size=(2, 6, 3)).astype("float32")
    for a, b in zip(model(xs), loaded(xs)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_works_in_the_charrnn_model():
    from charrnn_lib.model import ModelConfig, build_model, zero_states

    config = ModelConfig(vocab_size=7, hidden_size=4, num_layers=2, cell="peephole")
    model = build_model(config)
    ids = tf.zeros((3, 5), dtype="int32")
    logits, *states = model([ids, *zero_states(config, 3)])
    assert tuple(logits.shape) == (3, 5, 7)
    assert len(states) == 4 and all(tuple(st.shape) == (3, 4) for st in states)


def test_state_size_and_initial_state():
    cell = PeepholeLSTMCell(6)
    assert cell.state_size == [6, 6] and cell.output_size == 6
    h, s = cell.get_initial_state(batch_size=2)
    assert tuple(h.shape) == (2, 6) and not np.any(np.asarray(s))


def test_numpy_integer_units_are_accepted():
    assert PeepholeLSTMCell(np.int64(3)).units == 3


@pytest.mark.parametrize("units", [0, -3, 2.5, "8", True])
def test_bad_units(units):
    with pytest.raises(ValueError, match="positive integer"):
        PeepholeLSTMCell(units)
