"""The NumPy LSTM and GRU against Keras's cells and layers with the same weights."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import keras

from charrnn_lib.numpy_gated import (  # noqa: E402
    GatedShapeError,
    GRUParams,
    LSTMParams,
    gru_forward,
    gru_step,
    lstm_forward,
    lstm_step,
    param_count,
)

sizes = st.integers(1, 5)
seeds = st.integers(0, 2**16)


def _states(rng, B, H):
    return rng.normal(size=(B, H)).astype("float32"), rng.normal(size=(B, H)).astype("float32")


@settings(max_examples=12, deadline=None)
@given(B=sizes, D=sizes, H=sizes, seed=seeds)
def test_lstm_step_equals_keras_lstmcell(B, D, H, seed):
    params = LSTMParams.random(D, H, seed=seed, scale=0.7, dtype=np.float32)
    cell = keras.layers.LSTMCell(H)
    cell.build((None, D))
    cell.set_weights(params.to_keras())
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(B, D)).astype("float32")
    h, s = _states(rng, B, H)
    h_k, (h_k2, s_k) = cell(x, [h, s])
    h_n, s_n = lstm_step(params, h, s, x)
    np.testing.assert_allclose(h_n, np.asarray(h_k), atol=1e-5)
    np.testing.assert_allclose(h_n, np.asarray(h_k2), atol=1e-5)
    np.testing.assert_allclose(s_n, np.asarray(s_k), atol=1e-5)


@settings(max_examples=8, deadline=None)
@given(B=sizes, T=st.integers(1, 6), D=sizes, H=sizes, seed=seeds)
def test_lstm_forward_equals_keras_lstm(B, T, D, H, seed):
    params = LSTMParams.random(D, H, seed=seed, dtype=np.float32)
    layer = keras.layers.LSTM(H, return_sequences=True, return_state=True)
    layer.build((None, T, D))
    layer.set_weights(params.to_keras())
    rng = np.random.default_rng(seed)
    xs = rng.normal(size=(B, T, D)).astype("float32")
    h0, s0 = _states(rng, B, H)
    hs_k, h_k, c_k = layer(xs, initial_state=[h0, s0])
    hs, ss = lstm_forward(params, xs, h0, s0)
    np.testing.assert_allclose(hs, np.asarray(hs_k), atol=1e-5)
    np.testing.assert_allclose(hs[:, -1], np.asarray(h_k), atol=1e-5)
    np.testing.assert_allclose(ss[:, -1], np.asarray(c_k), atol=1e-5)


def test_keras_gate_order_is_i_f_g_o():
    """Open only the forget gate (Keras's second block) and close the input gate (first block):
    the cell state must pass through unchanged, in Keras and in NumPy."""
    D, H = 2, 3
    W, U, b = np.zeros((4 * H, H)), np.zeros((4 * H, D)), np.zeros(4 * H)
    b[:H], b[H:2 * H] = -30.0, 30.0  # i ~ 0, f ~ 1
    params = LSTMParams(W, U, b).astype(np.float32)
    cell = keras.layers.LSTMCell(H)
    cell.build((None, D))
    cell.set_weights(params.to_keras())
    s_prev = np.array([[0.5, -1.0, 2.0]], dtype="float32")
    x = np.ones((1, D), dtype="float32")
    _, (_, s_k) = cell(x, [np.zeros_like(s_prev), s_prev])
    _, s_n = lstm_step(params, np.zeros_like(s_prev), s_prev, x)
    np.testing.assert_allclose(np.asarray(s_k), s_prev, atol=1e-6)
    np.testing.assert_allclose(s_n, s_prev, atol=1e-6)


def test_keras_weight_layout_and_unit_forget_bias():
    cell = keras.layers.LSTMCell(4)
    cell.build((None, 3))
    kernel, recurrent, bias = cell.get_weights()
    assert kernel.shape == (3, 16) and recurrent.shape == (4, 16) and bias.shape == (16,)
    np.testing.assert_array_equal(bias, np.r_[np.zeros(4), np.ones(4), np.zeros(8)])
    params = LSTMParams.from_keras(cell.get_weights())
    np.testing.assert_array_equal(params.gate("f")[2], np.ones(4))
    assert params.W.shape == (16, 4) and params.U.shape == (16, 3)


def test_zero_peepholes_change_nothing():
    plain = LSTMParams.random(3, 4, seed=1)
    peep = LSTMParams(plain.W, plain.U, plain.b, np.zeros(4), np.zeros(4), np.zeros(4))
    xs = np.random.default_rng(0).normal(size=(2, 5, 3))
    for a, b in zip(lstm_forward(plain, xs), lstm_forward(peep, xs)):
        np.testing.assert_array_equal(a, b)
    assert peep.num_params() == plain.num_params() + 3 * 4 == param_count("peephole", 3, 4)


def test_peepholes_matter_and_follow_the_formulation():
    """o peeks at the *new* state s_t, i and f at the old one: check against the equations."""
    p = LSTMParams.random(2, 3, seed=2, peepholes=True, scale=0.8)
    rng = np.random.default_rng(3)
    h, s, x = rng.normal(size=(1, 3)), rng.normal(size=(1, 3)), rng.normal(size=(1, 2))
    sig = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    pre = {k: h @ p.gate(k)[0].T + x @ p.gate(k)[1].T + p.gate(k)[2] for k in "ifgo"}
    s_new = sig(pre["f"] + p.p_f * s) * s + sig(pre["i"] + p.p_i * s) * np.tanh(pre["g"])
    h_new = sig(pre["o"] + p.p_o * s_new) * np.tanh(s_new)
    h_n, s_n = lstm_step(p, h, s, x)
    np.testing.assert_allclose(s_n, s_new, rtol=1e-12)
    np.testing.assert_allclose(h_n, h_new, rtol=1e-12)
    plain = LSTMParams(p.W, p.U, p.b)
    assert not np.allclose(lstm_step(plain, h, s, x)[0], h_n)


@settings(max_examples=12, deadline=None)
@given(B=sizes, D=sizes, H=sizes, seed=seeds, reset_after=st.booleans())
def test_gru_step_equals_keras_grucell(B, D, H, seed, reset_after):
    params = GRUParams.random(D, H, seed=seed, reset_after=reset_after, scale=0.7, dtype=np.float32)
    cell = keras.layers.GRUCell(H, reset_after=reset_after)
    cell.build((None, D))
    cell.set_weights(params.to_keras())
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(B, D)).astype("float32")
    h = rng.normal(size=(B, H)).astype("float32")
    h_k, _ = cell(x, [h])
    np.testing.assert_allclose(gru_step(params, h, x), np.asarray(h_k), atol=1e-5)


@settings(max_examples=8, deadline=None)
@given(B=sizes, T=st.integers(1, 6), D=sizes, H=sizes, seed=seeds, reset_after=st.booleans())
def test_gru_forward_equals_keras_gru(B, T, D, H, seed, reset_after):
    params = GRUParams.random(D, H, seed=seed, reset_after=reset_after, dtype=np.float32)
    layer = keras.layers.GRU(H, return_sequences=True, return_state=True, reset_after=reset_after)
    layer.build((None, T, D))
    layer.set_weights(params.to_keras())
    rng = np.random.default_rng(seed)
    xs = rng.normal(size=(B, T, D)).astype("float32")
    h0 = rng.normal(size=(B, H)).astype("float32")
    hs_k, h_k = layer(xs, initial_state=[h0])
    hs = gru_forward(params, xs, h0)
    np.testing.assert_allclose(hs, np.asarray(hs_k), atol=1e-5)
    np.testing.assert_allclose(hs[:, -1], np.asarray(h_k), atol=1e-5)


def test_gru_reset_placement_matters():
    """The two forms differ (unless r = 1), and reset_after=False with an all-ones reset gate
    equals reset_after=True with zero recurrent biases."""
    p = GRUParams.random(2, 3, seed=5, reset_after=False, scale=0.8)
    q = GRUParams(p.W, p.U, p.b, np.zeros(9), reset_after=True)
    rng = np.random.default_rng(0)
    h, x = rng.normal(size=(4, 3)), rng.normal(size=(4, 2))
    assert not np.allclose(gru_step(p, h, x), gru_step(q, h, x))
    p.b[3:6] = q.b[3:6] = 40.0  # r ~ 1
    np.testing.assert_allclose(gru_step(p, h, x), gru_step(q, h, x), atol=1e-12)


def test_gru_update_gate_near_one_keeps_the_state():
    p = GRUParams.random(2, 3, seed=6)
    p.b[:3] = 40.0  # z ~ 1: h_t = h_{t-1}
    h = np.random.default_rng(1).normal(size=(2, 3))
    np.testing.assert_allclose(gru_step(p, h, np.ones((2, 2))), h, atol=1e-12)


@pytest.mark.parametrize("reset_after", [True, False])
def test_gru_keras_round_trip(reset_after):
    p = GRUParams.random(3, 2, seed=7, reset_after=reset_after)
    q = GRUParams.from_keras(p.to_keras())
    assert q.reset_after == reset_after
    for a, b in zip(p.arrays(), q.arrays()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("D,H", [(1, 1), (3, 5), (8, 16)])
def test_param_count_matches_keras(D, H):
    layers = {
        "rnn": keras.layers.SimpleRNN(H),
        "lstm": keras.layers.LSTM(H),
        "gru": keras.layers.GRU(H),
        "gru_v1": keras.layers.GRU(H, reset_after=False),
    }
    for name, layer in layers.items():
        layer.build((None, None, D))
        assert layer.count_params() == param_count(name, D, H), name
    assert LSTMParams.random(D, H).num_params() == param_count("lstm", D, H)
    assert GRUParams.random(D, H).num_params() == param_count("gru", D, H)
    assert GRUParams.random(D, H, reset_after=False).num_params() == param_count("gru_v1", D, H)


def test_helpful_errors():
    p = LSTMParams.random(3, 4)
    with pytest.raises(GatedShapeError, match="add a batch axis"):
        lstm_forward(p, np.zeros((5, 3)))
    with pytest.raises(GatedShapeError, match="D = 3"):
        lstm_step(p, np.zeros((1, 4)), np.zeros((1, 4)), np.zeros((1, 2)))
    with pytest.raises(GatedShapeError, match="from_keras"):
        LSTMParams(p.W.T, p.U, p.b)  # Keras orientation passed by mistake
    with pytest.raises(GatedShapeError, match="all three peepholes"):
        LSTMParams(p.W, p.U, p.b, p_i=np.zeros(4))
    with pytest.raises(GatedShapeError, match="one state per sequence"):
        gru_forward(GRUParams.random(3, 4), np.zeros((2, 5, 3)), h0=np.zeros((3, 4)))
    with pytest.raises(GatedShapeError, match="single bias"):
        GRUParams(np.zeros((6, 2)), np.zeros((6, 1)), np.zeros(6), np.zeros(6), reset_after=False)
    with pytest.raises(ValueError, match="gates are"):
        p.gate("c")
    with pytest.raises(ValueError, match="cell must be one of"):
        param_count("transformer", 3, 4)
