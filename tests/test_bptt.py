"""charrnn_lib.bptt: the backward pass through time, checked against central finite
differences (float64, Hypothesis over shapes) and against tf.GradientTape on a Keras
SimpleRNN + Dense with copied weights; truncated BPTT and the state Jacobians."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from charrnn_lib.bptt import (
    BPTTError,
    bptt,
    forward_chunks,
    jacobian_norms,
    sequence_loss,
    spectral_radius,
    split_time,
    state_jacobians,
    target_array,
    truncated_bptt,
    with_spectral_radius,
)
from charrnn_lib.gradcheck import numerical_gradient, numerical_gradients, relative_error
from charrnn_lib.numpy_rnn import RNNParams, RNNShapeError, rnn_forward, to_keras

TOL = 1e-7  # the chapter's promise: relative error at most 1e-7 in float64


def _problem(B, T, D, H, K, output, seed):
    rng = np.random.default_rng(seed)
    params = RNNParams.random(D, H, K, seed=seed)
    xs = rng.normal(size=(B, T, D))
    h0 = rng.normal(0.0, 0.5, size=(B, H))
    if output == "softmax":
        targets = rng.integers(0, K, size=(B, T))
    else:
        targets = (rng.random((B, T, K)) < 0.5).astype(np.float64)
    return params, xs, h0, targets


# derandomize: the same examples on every run, so CI cannot flake on a rare draw whose
# gradient is so small that the finite difference's round-off floor (~1e-11 |L|) shows.
@settings(max_examples=50, deadline=None, derandomize=True)
@given(
    B=st.integers(1, 3),
    T=st.integers(1, 5),
    D=st.integers(1, 3),
    H=st.integers(1, 4),
    K=st.integers(2, 4),
    output=st.sampled_from(["softmax", "sigmoid"]),
    reduction=st.sampled_from(["sum", "mean"]),
    seed=st.integers(0, 10_000),
)
def test_bptt_matches_finite_differences(B, T, D, H, K, output, reduction, seed):
    params, xs, h0, targets = _problem(B, T, D, H, K, output, seed)
    result = bptt(params, xs, targets, h0, output=output, reduction=reduction)
    assert result.loss == pytest.approx(sequence_loss(params, xs, targets, h0, output, reduction), rel=1e-14)
    arrays = {"W": params.W, "U": params.U, "b": params.b, "V": params.V, "c": params.c, "h0": h0}
    numeric = numerical_gradients(lambda: sequence_loss(params, xs, targets, h0, output, reduction), arrays)
    for name, g in result.grads.as_dict().items():
        assert g.shape == arrays[name].shape, name
        assert relative_error(g, numeric[name]) <= TOL, name


def test_one_hot_targets_equal_class_ids():
    params, xs, h0, ids = _problem(2, 4, 3, 5, 6, "softmax", 1)
    a = bptt(params, xs, ids, h0)
    b = bptt(params, xs, np.eye(6)[ids], h0)
    assert a.loss == pytest.approx(b.loss, rel=1e-15)
    for ga, gb in zip(a.grads.arrays(), b.grads.arrays()):
        np.testing.assert_allclose(ga, gb, rtol=1e-14)


def test_mean_is_sum_over_batch_and_time():
    params, xs, h0, ids = _problem(3, 5, 2, 4, 3, "softmax", 2)
    s = bptt(params, xs, ids, h0, reduction="sum")
    m = bptt(params, xs, ids, h0, reduction="mean")
    assert m.loss == pytest.approx(s.loss / 15)
    np.testing.assert_allclose(m.grads.W, s.grads.W / 15, rtol=1e-13)


# --- agreement with TensorFlow -----------------------------------------------------------


@pytest.mark.parametrize("output", ["softmax", "sigmoid"])
@pytest.mark.parametrize("shape", [(1, 1, 1, 1, 2), (2, 6, 3, 5, 4), (4, 9, 2, 7, 3)])
def test_bptt_equals_gradient_tape(shape, output):
    import tensorflow as tf
    import keras
    B, T, D, H, K = shape
    params, xs, h0, targets = _problem(B, T, D, H, K, output, seed=sum(shape))
    rnn = keras.layers.SimpleRNN(H, return_sequences=True, dtype="float64")
    dense = keras.layers.Dense(K, dtype="float64")
    rnn.build((None, T, D))
    dense.build((None, T, H))
    weights = to_keras(params)
    rnn.set_weights(weights["simple_rnn"])
    dense.set_weights(weights["dense"])
    h0_t = tf.constant(h0)
    with tf.GradientTape() as tape:
        tape.watch(h0_t)
        logits = dense(rnn(tf.constant(xs), initial_state=[h0_t]))  # (batch, time, output)
        if output == "softmax":
            per_step = tf.nn.sparse_softmax_cross_entropy_with_logits(tf.constant(targets), logits)
        else:
            per_step = tf.nn.sigmoid_cross_entropy_with_logits(tf.constant(targets), logits)
        loss = tf.reduce_sum(per_step)
    cell = rnn.cell
    tf_vars = [cell.recurrent_kernel, cell.kernel, cell.bias, dense.kernel, dense.bias]
    tf_grads = tape.gradient(loss, tf_vars + [h0_t])
    result = bptt(params, xs, targets, h0, output=output)
    assert logits.dtype == tf.float64
    assert result.loss == pytest.approx(float(loss), rel=1e-13)
    g = result.grads
    # Keras stores transposes: kernel = U^T, recurrent_kernel = W^T, dense kernel = V^T
    ours = [g.W.T, g.U.T, g.b, g.V.T, g.c, g.h0]
    for name, a, b in zip(["W", "U", "b", "V", "c", "h0"], ours, tf_grads):
        assert relative_error(a, b.numpy()) < 1e-12, name


# --- truncated BPTT ----------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(T=st.integers(1, 12), k=st.integers(1, 14), seed=st.integers(0, 1000))
def test_chunks_with_carried_state_equal_whole_sequence(T, k, seed):
    params, xs, h0, _ = _problem(2, T, 3, 4, 2, "softmax", seed)
    chunks = split_time(xs, k)
    assert sum(c.shape[1] for c in chunks) == T and all(c.shape[1] <= k for c in chunks)
    np.testing.assert_array_equal(forward_chunks(params, xs, k, h0), rnn_forward(params, xs, h0))


@pytest.mark.parametrize("output", ["softmax", "sigmoid"])
def test_truncated_with_k_at_least_T_is_full_bptt(output):
    params, xs, h0, targets = _problem(2, 7, 3, 4, 3, output, 5)
    full = bptt(params, xs, targets, h0, output=output)
    for k in (7, 8, 50):
        tr = truncated_bptt(params, xs, targets, k, h0, output=output)
        for a, b in zip(tr.grads.arrays(), full.grads.arrays()):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_truncated_gradient_is_gradient_with_carried_states_held_constant(k):
    """Independent reference: finite differences of the sum of chunk losses, each chunk
    starting from a carried state computed once and then frozen (a stop-gradient)."""
    params, xs, h0, targets = _problem(2, 8, 2, 3, 3, "softmax", k)
    hs = rnn_forward(params, xs, h0)
    starts = list(range(0, 8, k))
    frozen = [h0] + [hs[:, s - 1].copy() for s in starts[1:]]

    def surrogate():
        return sum(
            sequence_loss(params, xs[:, s : s + k], targets[:, s : s + k], h_start)
            for s, h_start in zip(starts, frozen)
        )

    tr = truncated_bptt(params, xs, targets, k, h0)
    full = bptt(params, xs, targets, h0)
    assert tr.loss == pytest.approx(full.loss, rel=1e-13)  # the forward pass is exact
    for name in ("W", "U", "b", "V", "c"):
        num = numerical_gradient(surrogate, getattr(params, name))
        assert relative_error(getattr(tr.grads, name), num) <= TOL, name
    # V and c never see the recurrence: truncation leaves their gradients untouched
    np.testing.assert_allclose(tr.grads.V, full.grads.V, rtol=1e-12)
    np.testing.assert_allclose(tr.grads.c, full.grads.c, rtol=1e-12)
    if k < 8:
        assert relative_error(tr.grads.W, full.grads.W) > 1e-6  # and W's does change


# --- Jacobians dh_T/dh_t -------------------------------------------------------------------


def test_state_jacobians_match_finite_differences():
    params, xs, h0, _ = _problem(2, 6, 3, 4, 2, "softmax", 7)
    J = state_jacobians(params, xs, h0)
    B, T, H = 2, 6, 4
    assert J.shape == (B, T + 1, H, H)
    hs = rnn_forward(params, xs, h0)
    for j in range(T + 1):
        t = T - j  # dh_T / dh_t, t = 0 is h0
        for b in range(B):
            h_t = (h0 if t == 0 else hs[:, t - 1])[b : b + 1].copy()

            def h_T_entry(i, h_t=h_t, t=t, b=b):
                out = rnn_forward(params, xs[b : b + 1, t:], h_t)[0, -1] if t < T else h_t[0]
                return out[i]

            num = np.stack([numerical_gradient(lambda i=i: h_T_entry(i), h_t)[0] for i in range(H)])
            # entries fall to ~1e-4 at long lags while h_T is of order 1: the difference's
            # round-off floor (~1e-11) is then 1e-7 of the entries, hence the looser bound
            assert relative_error(J[b, j], num) <= 1e-6, (j, b)


def test_linear_regime_jacobian_is_matrix_power():
    """At the fixed point h = 0 (no input, no bias) tanh' = 1 and dh_T/dh_t = W^(T-t)."""
    params = RNNParams.random(2, 5, 2, seed=3)
    params.b[:] = 0.0
    J = state_jacobians(params, np.zeros((1, 10, 2)))
    for j in range(11):
        np.testing.assert_allclose(J[0, j], np.linalg.matrix_power(params.W, j), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("rho", [0.5, 0.9, 1.1, 1.5])
def test_norms_grow_or_shrink_like_spectral_radius(rho):
    rng = np.random.default_rng(0)
    H = 16
    params = RNNParams.random(1, H, 1, seed=0)
    params.W = with_spectral_radius(rng.normal(size=(H, H)), rho)
    params.b[:] = 0.0
    assert spectral_radius(params.W) == pytest.approx(rho)
    norms = jacobian_norms(params, np.zeros((1, 80, 1)))[0]  # (T + 1,)
    # Gelfand: ||W^n||^(1/n) -> rho; the slope of log-norm against the lag approaches log rho
    slope = np.polyfit(np.arange(40, 81), np.log(norms[40:]), 1)[0]
    assert slope == pytest.approx(np.log(rho), abs=0.03)


def test_saturation_only_shrinks_the_jacobian():
    """tanh' <= 1, so with inputs (saturating states) each factor is smaller than at h = 0."""
    H, T = 8, 30
    rng = np.random.default_rng(1)
    Q, _ = np.linalg.qr(rng.normal(size=(H, H)))
    params = RNNParams(W=1.3 * Q, U=rng.normal(size=(H, 2)), b=np.zeros(H), V=np.ones((1, H)), c=np.zeros(1))
    linear = jacobian_norms(params, np.zeros((1, T, 2)))[0]
    driven = jacobian_norms(params, 3.0 * rng.normal(size=(4, T, 2)))  # (4, T + 1)
    np.testing.assert_allclose(linear, 1.3 ** np.arange(T + 1), rtol=1e-10)  # scaled orthogonal W
    assert np.all(driven <= linear * (1 + 1e-12))
    assert np.all(driven[:, -1] < 1e-3 * linear[-1])


def test_frobenius_norm_option():
    params, xs, h0, _ = _problem(1, 4, 2, 3, 2, "softmax", 0)
    fro = jacobian_norms(params, xs, h0, ord="fro")
    two = jacobian_norms(params, xs, h0)
    assert np.all(two <= fro + 1e-15) and fro[0, 0] == pytest.approx(np.sqrt(3))
    with pytest.raises(BPTTError, match="ord"):
        jacobian_norms(params, xs, h0, ord=1)


# --- errors ------------------------------------------------------------------------------


def test_bad_arguments_raise_helpful_errors():
    params, xs, h0, ids = _problem(2, 3, 2, 3, 4, "softmax", 0)
    with pytest.raises(BPTTError, match="output must be one of"):
        bptt(params, xs, ids, output="tanh")
    with pytest.raises(BPTTError, match="reduction"):
        bptt(params, xs, ids, reduction="avg")
    with pytest.raises(BPTTError, match=r"\[0, 3\]"):
        bptt(params, xs, ids + 4)
    with pytest.raises(BPTTError, match=r"shape \(B, T, K=4\)"):
        bptt(params, xs, np.zeros((2, 3, 5)), output="sigmoid")
    with pytest.raises(BPTTError, match="class ids of shape"):
        target_array(np.zeros((2, 3, 4), dtype=int), 4)
    with pytest.raises(RNNShapeError, match="h0"):
        bptt(params, xs, ids, h0=np.zeros((3, 3)))
    with pytest.raises(BPTTError, match="truncation length"):
        truncated_bptt(params, xs, ids, 0)
    with pytest.raises(BPTTError, match="square"):
        spectral_radius(np.zeros((2, 3)))
    with pytest.raises(BPTTError, match="spectral radius 0"):
        with_spectral_radius(np.zeros((2, 2)), 1.0)
