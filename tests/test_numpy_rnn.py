"""The NumPy forward pass against Keras (SimpleRNN + Dense in float64), and its invariants."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from charrnn_lib.numpy_rnn import (
    RNNParams,
    RNNShapeError,
    birnn_forward,
    dtanh,
    from_keras,
    rnn_forward,
    rnn_logits,
    rnn_outputs,
    rnn_step,
    sigmoid,
    sigmoid_derivative,
    softmax,
    to_keras,
)

import keras


def keras_rnn_and_dense(params: RNNParams, activation="sigmoid"):
    """A float64 SimpleRNN(return_sequences) and Dense holding ``params`` (Keras layout)."""
    rnn = keras.layers.SimpleRNN(params.hidden_size, return_sequences=True, dtype="float64")
    dense = keras.layers.Dense(params.output_size, activation=activation, dtype="float64")
    rnn.build((None, None, params.input_size))
    dense.build((None, None, params.hidden_size))
    weights = to_keras(params)
    rnn.set_weights(weights["simple_rnn"])
    dense.set_weights(weights["dense"])
    return rnn, dense


@settings(max_examples=12, deadline=None)
@given(
    B=st.integers(1, 3),
    T=st.integers(1, 7),
    D=st.integers(1, 5),
    H=st.integers(1, 6),
    K=st.integers(1, 4),
    nonzero_h0=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_forward_matches_keras_simple_rnn_and_dense(B, T, D, H, K, nonzero_h0, seed):
    rng = np.random.default_rng(seed)
    params = RNNParams.random(D, H, K, seed=seed, scale=0.8)
    xs = rng.normal(size=(B, T, D))
    h0 = rng.uniform(-1, 1, size=(B, H)) if nonzero_h0 else None

    hs = rnn_forward(params, xs, h0)
    rnn, dense = keras_rnn_and_dense(params)
    if h0 is None:
        hs_keras = np.asarray(rnn(xs))
    else:
        hs_keras = np.asarray(rnn(xs, initial_state=[h0]))
    assert hs.shape == (B, T, H)
    np.testing.assert_allclose(hs, hs_keras, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(rnn_outputs(params, hs), np.asarray(dense(hs_keras)), rtol=1e-12, atol=1e-12)


def test_softmax_output_matches_keras_dense_softmax():
    params = RNNParams.random(3, 4, 5, seed=1)
    hs = rnn_forward(params, np.random.default_rng(1).normal(size=(2, 6, 3)))
    _, dense = keras_rnn_and_dense(params, activation="softmax")
    np.testing.assert_allclose(rnn_outputs(params, hs, "softmax"), np.asarray(dense(hs)), rtol=1e-12, atol=1e-14)


def test_nonzero_initial_state_changes_the_output():
    params = RNNParams.random(2, 3, 1, seed=2)
    xs = np.ones((1, 4, 2))
    a = rnn_forward(params, xs)
    b = rnn_forward(params, xs, h0=np.full((1, 3), 0.5))
    assert not np.allclose(a, b)
    np.testing.assert_array_equal(a, rnn_forward(params, xs, h0=np.zeros((1, 3))))


def test_forward_is_repeated_step():
    params = RNNParams.random(3, 4, 2, seed=3)
    xs = np.random.default_rng(3).normal(size=(2, 5, 3))
    h = np.zeros((2, 4))
    for t in range(5):
        h = rnn_step(params, h, xs[:, t])
        np.testing.assert_array_equal(h, rnn_forward(params, xs)[:, t])
    # the column-vector equation of the book, one sequence at a time
    h_col = np.zeros(4)
    for t in range(5):
        h_col = np.tanh(params.W @ h_col + params.U @ xs[1, t] + params.b)
    np.testing.assert_allclose(h_col, h[1], rtol=1e-14)


def test_logits_are_affine_in_h():
    params = RNNParams.random(2, 3, 4, seed=4)
    hs = np.random.default_rng(4).normal(size=(2, 5, 3))
    np.testing.assert_allclose(rnn_logits(params, hs), np.einsum("kh,bth->btk", params.V, hs) + params.c)


@settings(max_examples=30, deadline=None)
@given(
    z=arrays(np.float64, st.tuples(st.integers(1, 4), st.integers(1, 6)), elements=st.floats(-50, 50)),
    shift=st.floats(-100, 100),
)
def test_softmax_rows_sum_to_one_and_are_shift_invariant(z, shift):
    p = softmax(z)
    assert np.all(p >= 0)
    np.testing.assert_allclose(p.sum(axis=-1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(softmax(z + shift), p, rtol=1e-9, atol=1e-15)


def test_softmax_is_stable_and_takes_an_axis():
    z = np.array([[1000.0, 1000.0, -1000.0]])
    with np.errstate(over="raise", divide="raise", invalid="raise"):
        np.testing.assert_allclose(softmax(z), [[0.5, 0.5, 0.0]])
        np.testing.assert_allclose(softmax(z.T, axis=0), [[0.5], [0.5], [0.0]])


def test_sigmoid_matches_formula_and_never_overflows():
    z = np.linspace(-30, 30, 61)
    np.testing.assert_allclose(sigmoid(z), 1.0 / (1.0 + np.exp(-z)), rtol=1e-14)
    with np.errstate(over="raise", divide="raise", invalid="raise"):
        s = sigmoid(np.array([-1e4, 0.0, 1e4]))
    np.testing.assert_array_equal(s, [0.0, 0.5, 1.0])
    assert sigmoid(np.float32(1.0)).dtype == np.float32


def test_derivatives_match_central_differences_and_their_maxima():
    a = np.linspace(-4, 4, 81)
    eps = 1e-6
    np.testing.assert_allclose(dtanh(a), (np.tanh(a + eps) - np.tanh(a - eps)) / (2 * eps), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(
        sigmoid_derivative(a), (sigmoid(a + eps) - sigmoid(a - eps)) / (2 * eps), rtol=1e-8, atol=1e-10
    )
    assert dtanh(0.0) == 1.0 and sigmoid_derivative(0.0) == 0.25
    assert dtanh(a).max() == 1.0 and sigmoid_derivative(a).max() == 0.25


@pytest.mark.parametrize("D,H,K", [(1, 1, 1), (3, 5, 2), (10, 32, 7)])
def test_parameter_count_is_independent_of_T(D, H, K):
    params = RNNParams.random(D, H, K)
    assert params.num_params() == H * H + H * D + H + K * H + K
    counts = set()
    for T in (1, 7, 50):
        inputs = keras.Input((T, D))
        out = keras.layers.Dense(K)(keras.layers.SimpleRNN(H, return_sequences=True)(inputs))
        counts.add(keras.Model(inputs, out).count_params())
        assert rnn_forward(params, np.zeros((1, T, D))).shape == (1, T, H)  # same params, any T
    assert counts == {params.num_params()}


def test_keras_round_trip_and_layout():
    params = RNNParams.random(3, 4, 2, seed=5)
    w = to_keras(params)
    assert [a.shape for a in w["simple_rnn"]] == [(3, 4), (4, 4), (4,)]
    assert [a.shape for a in w["dense"]] == [(4, 2), (2,)]
    np.testing.assert_array_equal(w["simple_rnn"][0], params.U.T)  # kernel = U^T
    np.testing.assert_array_equal(w["simple_rnn"][1], params.W.T)  # recurrent_kernel = W^T
    back = from_keras(w["simple_rnn"], w["dense"])
    for x, y in zip(back.arrays(), params.arrays()):
        np.testing.assert_array_equal(x, y)
    # and through real Keras layers
    rnn, dense = keras_rnn_and_dense(params)
    again = from_keras(rnn.get_weights(), dense.get_weights())
    for x, y in zip(again.arrays(), params.arrays()):
        np.testing.assert_array_equal(x, y)


def test_random_params_shapes_determinism_scale_and_dtype():
    p = RNNParams.random(3, 4, 5, seed=7)
    assert (p.input_size, p.hidden_size, p.output_size) == (3, 4, 5)
    assert (p.W.shape, p.U.shape, p.b.shape, p.V.shape, p.c.shape) == ((4, 4), (4, 3), (4,), (5, 4), (5,))
    q = RNNParams.random(3, 4, 5, seed=7)
    assert all(np.array_equal(a, b) for a, b in zip(p.arrays(), q.arrays()))
    assert not np.array_equal(p.W, RNNParams.random(3, 4, 5, seed=8).W)
    big = RNNParams.random(50, 200, 3, seed=0, scale=2.0)
    assert 1.9 < big.W.std() < 2.1
    default = RNNParams.random(50, 200, 3, seed=0)
    assert abs(default.W.std() - 1 / np.sqrt(200)) < 0.01 and abs(default.U.std() - 1 / np.sqrt(50)) < 0.01
    f32 = RNNParams.random(2, 3, 1, dtype=np.float32)
    assert all(a.dtype == np.float32 for a in f32.arrays())
    assert rnn_forward(f32, np.zeros((1, 2, 2), np.float32)).dtype == np.float32
    c = p.copy()
    c.W[0, 0] += 1.0
    assert c.W[0, 0] != p.W[0, 0]
    assert p.astype(np.float32).dtype == np.float32


def test_bad_shapes_raise_helpful_errors():
    p = RNNParams.random(3, 4, 2)
    with pytest.raises(RNNShapeError, match="from_keras"):
        RNNParams(p.W, p.U.T, p.b, p.V, p.c)  # Keras layout by mistake
    with pytest.raises(RNNShapeError, match=r"x\[None\]"):
        rnn_forward(p, np.zeros((5, 3)))  # a single sequence without a batch axis
    with pytest.raises(RNNShapeError, match="D = 3"):
        rnn_forward(p, np.zeros((1, 5, 2)))
    with pytest.raises(RNNShapeError, match="batch size"):
        rnn_forward(p, np.zeros((2, 5, 3)), h0=np.zeros((1, 4)))
    with pytest.raises(ValueError, match="activation"):
        rnn_outputs(p, np.zeros((1, 1, 4)), activation="relu")
    with pytest.raises(ValueError, match="hidden_size"):
        RNNParams.random(3, 0, 2)
    with pytest.raises(ValueError, match="kernel, recurrent_kernel, bias"):
        from_keras([p.U.T, p.W.T], [p.V.T, p.c])
    assert issubclass(RNNShapeError, ValueError)


@pytest.mark.parametrize("merge_mode", ["concat", "sum"])
@pytest.mark.parametrize("B, T, D, H", [(2, 5, 3, 4), (1, 1, 2, 3), (3, 9, 1, 2)])
def test_birnn_forward_matches_keras_bidirectional(merge_mode, B, T, D, H):
    fwd, bwd = RNNParams.random(D, H, 1, seed=3, scale=0.8), RNNParams.random(D, H, 1, seed=4, scale=0.8)
    layer = keras.layers.Bidirectional(
        keras.layers.SimpleRNN(H, return_sequences=True, dtype="float64"), merge_mode=merge_mode, dtype="float64"
    )
    layer.build((None, None, D))
    layer.set_weights(to_keras(fwd)["simple_rnn"] + to_keras(bwd)["simple_rnn"])  # forward layer first
    xs = np.random.default_rng(B * 100 + T).normal(size=(B, T, D))
    out = birnn_forward(fwd, bwd, xs, merge_mode)
    assert out.shape == (B, T, 2 * H if merge_mode == "concat" else H)
    np.testing.assert_allclose(out, np.asarray(layer(xs)), rtol=1e-12, atol=1e-14)


def test_birnn_forward_reversal_swaps_directions_and_sees_the_future():
    fwd, bwd = RNNParams.random(3, 4, 1, seed=1), RNNParams.random(3, 4, 1, seed=2)
    xs = np.random.default_rng(0).normal(size=(2, 6, 3))
    out = birnn_forward(fwd, bwd, xs)
    # the forward half is the causal RNN; the backward half is the causal RNN on the reversed input
    np.testing.assert_array_equal(out[..., :4], rnn_forward(fwd, xs))
    swapped = birnn_forward(bwd, fwd, xs[:, ::-1])[:, ::-1]
    np.testing.assert_allclose(out, np.concatenate([swapped[..., 4:], swapped[..., :4]], axis=-1), rtol=1e-15)
    later = xs.copy()
    later[:, -1] += 1.0  # change only the last input
    changed = birnn_forward(fwd, bwd, later)
    np.testing.assert_array_equal(changed[:, :-1, :4], out[:, :-1, :4])  # forward half: causal
    assert np.all(np.abs(changed[:, 0, 4:] - out[:, 0, 4:]).max(axis=-1) > 1e-6)  # backward half: not


def test_birnn_forward_rejects_bad_merge_modes():
    p, q = RNNParams.random(3, 4, 1), RNNParams.random(3, 5, 1)
    with pytest.raises(ValueError, match="merge_mode"):
        birnn_forward(p, p, np.zeros((1, 2, 3)), merge_mode="mul")
    with pytest.raises(RNNShapeError, match="equal hidden sizes"):
        birnn_forward(p, q, np.zeros((1, 2, 3)), merge_mode="sum")
    assert birnn_forward(p, q, np.zeros((1, 2, 3))).shape == (1, 2, 9)
