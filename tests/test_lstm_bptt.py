"""charrnn_lib.lstm_bptt: the LSTM's backward pass through time, checked against central
finite differences (float64, Hypothesis over shapes) and against tf.GradientTape through
keras.layers.LSTM (float64) with copied weights; the state Jacobians against finite
differences and the carousel's exact case."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from charrnn_lib.gradcheck import numerical_gradient, relative_error
from charrnn_lib.lstm_bptt import (
    cell_state_jacobian,
    forget_path,
    lstm_bptt,
    lstm_forward_cache,
    step_jacobian,
)
from charrnn_lib.numpy_gated import GatedShapeError, LSTMParams, lstm_forward

TOL = 1e-7  # the chapter's promise for finite differences in float64


def _problem(B, T, D, H, seed, forget_bias=0.0):
    params = LSTMParams.random(D, H, seed=seed, scale=0.8, forget_bias=forget_bias)
    rng = np.random.default_rng(seed + 1)
    xs, h0, s0 = rng.normal(size=(B, T, D)), rng.normal(size=(B, H)), rng.normal(size=(B, H))
    dhs, ds = rng.normal(size=(B, T, H)), rng.normal(size=(B, H))
    return params, xs, h0, s0, dhs, ds


def _loss(params, xs, h0, s0, dhs, ds):
    hs, ss = lstm_forward(params, xs, h0, s0)
    return float(np.sum(dhs * hs) + np.sum(ds * ss[:, -1]))


@settings(max_examples=10, deadline=None)
@given(B=st.integers(1, 3), T=st.integers(1, 5), D=st.integers(1, 3), H=st.integers(1, 4),
       seed=st.integers(0, 2**16), forget_bias=st.sampled_from([0.0, 1.0, 4.0]))
def test_backward_equals_finite_differences(B, T, D, H, seed, forget_bias):
    params, xs, h0, s0, dhs, ds = _problem(B, T, D, H, seed, forget_bias)
    grads = lstm_bptt(params, xs, dhs, h0, s0, ds_last=ds).as_dict()
    arrays = {"W": params.W, "U": params.U, "b": params.b, "xs": xs, "h0": h0, "s0": s0}
    for name, arr in arrays.items():
        numeric = numerical_gradient(lambda: _loss(params, xs, h0, s0, dhs, ds), arr)
        assert grads[name].shape == arr.shape
        # a near-zero gradient makes the relative error meaningless: then compare absolutely
        if np.linalg.norm(numeric) > 1e-6:
            assert relative_error(grads[name], numeric) < TOL, name
        else:
            np.testing.assert_allclose(grads[name], numeric, atol=1e-9)


def test_without_ds_last_only_the_outputs_count():
    params, xs, h0, s0, dhs, _ = _problem(2, 4, 3, 3, seed=3)
    grads = lstm_bptt(params, xs, dhs, h0, s0)
    numeric = numerical_gradient(lambda: _loss(params, xs, h0, s0, dhs, 0.0), params.W)
    assert relative_error(grads.W, numeric) < TOL


def test_backward_equals_gradienttape_through_keras_lstm():
    import tensorflow as tf
    import keras
    B, T, D, H = 3, 6, 2, 5
    params, xs, h0, s0, dhs, ds = _problem(B, T, D, H, seed=11, forget_bias=1.0)
    layer = keras.layers.LSTM(H, return_sequences=True, return_state=True, dtype="float64")
    layer.build((None, T, D))
    layer.set_weights(params.to_keras())
    inputs = [tf.Variable(a) for a in (xs, h0, s0)]
    with tf.GradientTape() as tape:
        hs, _, s_T = layer(inputs[0], initial_state=inputs[1:])
        loss = tf.reduce_sum(dhs * hs) + tf.reduce_sum(ds * s_T)
    theirs = tape.gradient(loss, [w.value for w in layer.weights] + inputs)
    ours = lstm_bptt(params, xs, dhs, h0, s0, ds_last=ds)
    assert theirs[0].dtype == tf.float64
    for a, b in zip(ours.to_keras() + [ours.xs, ours.h0, ours.s0], theirs):
        assert relative_error(a, np.asarray(b)) < 1e-12


def test_matches_the_fused_training_kernel():
    import tensorflow as tf
    from charrnn_lib.fast.fused_lstm import lstm_recurrence

    params, xs, h0, s0, dhs, ds = _problem(2, 5, 3, 4, seed=5)
    zx = tf.constant(np.transpose(xs @ params.U.T + params.b, (1, 0, 2)))   # (T, B, 4H)
    h0_t, s0_t, w_t = tf.constant(h0), tf.constant(s0), tf.constant(params.W.T)
    with tf.GradientTape() as tape:
        tape.watch([zx, h0_t, s0_t, w_t])
        outs, _, s_last = lstm_recurrence(zx, h0_t, s0_t, w_t)
        loss = tf.reduce_sum(dhs * tf.transpose(outs, [1, 0, 2])) + tf.reduce_sum(ds * s_last)
    d_zx, d_h0, d_s0, d_w_t = tape.gradient(loss, [zx, h0_t, s0_t, w_t])
    ours = lstm_bptt(params, xs, dhs, h0, s0, ds_last=ds)
    d_b = np.asarray(d_zx).sum(axis=(0, 1))
    assert relative_error(ours.W, np.asarray(d_w_t).T) < 1e-12
    assert relative_error(ours.b, d_b) < 1e-12
    assert relative_error(ours.h0, np.asarray(d_h0)) < 1e-12
    assert relative_error(ours.s0, np.asarray(d_s0)) < 1e-12


def test_cell_state_jacobian_equals_finite_differences():
    params, xs, h0, s0, _, _ = _problem(2, 7, 3, 4, seed=4, forget_bias=2.0)
    cache = lstm_forward_cache(params, xs, h0, s0)
    for t in (0, 3, 6):
        J = cell_state_jacobian(params, cache, t)             # (B, H, H)
        h_t = h0 if t == 0 else cache.hs[:, t - 1]
        s_t = s0 if t == 0 else cache.ss[:, t - 1]

        def s_last(s):
            return lstm_forward(params, xs[:, t:], h_t, s)[1][:, -1]

        cols = [(s_last(s_t + 1e-6 * e) - s_last(s_t - 1e-6 * e)) / 2e-6 for e in np.eye(4)]
        assert relative_error(J, np.stack(cols, axis=-1)) < 1e-7


def test_step_jacobian_equals_finite_differences():
    params, xs, h0, s0, _, _ = _problem(1, 3, 2, 3, seed=9)
    cache = lstm_forward_cache(params, xs, h0, s0)
    J = step_jacobian(params, cache, 2)[0]                     # (2H, 2H)
    state = np.concatenate([cache.hs[0, 0], cache.ss[0, 0]])

    def step(z):
        h, s = lstm_forward(params, xs[:, 1:2], z[None, :3], z[None, 3:])
        return np.concatenate([h[0, -1], s[0, -1]])

    cols = [(step(state + 1e-6 * e) - step(state - 1e-6 * e)) / 2e-6 for e in np.eye(6)]
    assert relative_error(J, np.stack(cols, axis=-1)) < 1e-7


def test_without_recurrent_weights_the_carousel_is_exact():
    params, xs, h0, s0, _, _ = _problem(2, 6, 3, 4, seed=2, forget_bias=3.0)
    params = LSTMParams(np.zeros_like(params.W), params.U, params.b)
    cache = lstm_forward_cache(params, xs, h0, s0)
    J = cell_state_jacobian(params, cache, 1)
    expected = np.stack([np.diag(r) for r in forget_path(cache, 1)])
    np.testing.assert_allclose(J, expected, rtol=1e-13, atol=0)
    # and with recurrent weights the h-paths add to it
    params2 = _problem(2, 6, 3, 4, seed=2, forget_bias=3.0)[0]
    cache2 = lstm_forward_cache(params2, xs, h0, s0)
    J2 = cell_state_jacobian(params2, cache2, 1)
    assert np.abs(J2 - np.stack([np.diag(r) for r in forget_path(cache2, 1)])).max() > 1e-3


def test_shape_errors_say_what_is_expected():
    params, xs, h0, s0, dhs, _ = _problem(2, 4, 3, 3, seed=0)
    with pytest.raises(GatedShapeError, match="dhs"):
        lstm_bptt(params, xs, dhs[:, :-1], h0, s0)
    with pytest.raises(GatedShapeError, match="xs"):
        lstm_forward_cache(params, xs[0], h0, s0)
    peep = LSTMParams.random(3, 3, peepholes=True)
    with pytest.raises(GatedShapeError, match="peephole"):
        lstm_forward_cache(peep, xs, h0, s0)
