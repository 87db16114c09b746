"""charrnn_lib.clipping: NumPy global-norm and element-wise clipping, checked against
TensorFlow's tf.clip_by_global_norm and tf.clip_by_value."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from charrnn_lib.clipping import ClippingError, clip_by_global_norm, clip_elementwise, global_norm

import tensorflow as tf


def _grads(seed, shapes, scale):
    rng = np.random.default_rng(seed)
    return [rng.normal(0.0, scale, size=s) for s in shapes]


shapes_strategy = st.lists(
    st.lists(st.integers(1, 4), min_size=0, max_size=3).map(tuple), min_size=1, max_size=4
)


@settings(max_examples=30, deadline=None)
@given(shapes_strategy, st.sampled_from([1e-3, 0.1, 1.0, 10.0]), st.sampled_from([0.5, 1.0, 5.0]), st.integers(0, 999))
def test_global_norm_clipping_equals_tensorflow(shapes, scale, clip_norm, seed):
    grads = _grads(seed, shapes, scale)
    ours, norm = clip_by_global_norm(grads, clip_norm)
    theirs, tf_norm = tf.clip_by_global_norm([tf.constant(g) for g in grads], clip_norm)
    np.testing.assert_allclose(norm, tf_norm.numpy(), rtol=1e-12)
    for a, b in zip(ours, theirs):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b.numpy(), rtol=1e-12, atol=1e-300)


@settings(max_examples=30, deadline=None)
@given(shapes_strategy, st.floats(0.01, 100.0), st.floats(0.1, 10.0), st.integers(0, 999))
def test_global_norm_clipping_invariants(shapes, scale, clip_norm, seed):
    grads = _grads(seed, shapes, scale)
    clipped, norm = clip_by_global_norm(grads, clip_norm)
    assert norm == pytest.approx(np.sqrt(sum(np.sum(g**2) for g in grads)))
    # never longer than the threshold, and unchanged when already short enough
    assert global_norm(clipped) <= clip_norm * (1 + 1e-12)
    if norm <= clip_norm:
        for a, b in zip(clipped, grads):
            np.testing.assert_array_equal(a, b)
    else:
        assert global_norm(clipped) == pytest.approx(clip_norm)
    # same direction: every array scaled by the same positive factor
    flat_c = np.concatenate([g.ravel() for g in clipped])
    flat_g = np.concatenate([g.ravel() for g in grads])
    if np.linalg.norm(flat_g) > 0:
        cos = flat_c @ flat_g / (np.linalg.norm(flat_c) * np.linalg.norm(flat_g))
        assert cos == pytest.approx(1.0)


def test_dict_in_dict_out_and_dtype_kept():
    grads = {"W": np.full((2, 2), 3.0, dtype=np.float32), "b": np.array([4.0], dtype=np.float32)}
    clipped, norm = clip_by_global_norm(grads, 5.0)
    assert list(clipped) == ["W", "b"] and clipped["W"].dtype == np.float32
    assert norm == pytest.approx(np.sqrt(4 * 9 + 16))
    assert global_norm(clipped) == pytest.approx(5.0, rel=1e-6)


def test_non_finite_norm_gives_nan_like_tensorflow():
    grads = [np.array([1.0, np.inf]), np.array([2.0])]
    ours, norm = clip_by_global_norm(grads, 5.0)
    theirs, _ = tf.clip_by_global_norm([tf.constant(g) for g in grads], 5.0)
    assert not np.isfinite(norm)
    for a, b in zip(ours, theirs):
        assert np.all(np.isnan(a)) and np.all(np.isnan(b.numpy()))


@settings(max_examples=20, deadline=None)
@given(shapes_strategy, st.floats(0.1, 10.0), st.integers(0, 999))
def test_elementwise_clipping_equals_tensorflow(shapes, limit, seed):
    grads = _grads(seed, shapes, 5.0)
    ours = clip_elementwise(grads, limit)
    for a, g in zip(ours, grads):
        np.testing.assert_array_equal(a, tf.clip_by_value(tf.constant(g), -limit, limit).numpy())
        assert np.all(np.abs(a) <= limit)


def test_elementwise_changes_direction_global_does_not():
    grads = [np.array([10.0, 0.1])]
    (e,) = clip_elementwise(grads, 5.0)
    (g,), _ = clip_by_global_norm(grads, 5.0)
    np.testing.assert_allclose(e, [5.0, 0.1])  # ratio of entries changed from 100 to 50
    np.testing.assert_allclose(g[0] / g[1], 100.0)  # ratio kept


def test_bad_arguments():
    with pytest.raises(ClippingError, match="positive"):
        clip_by_global_norm([np.ones(2)], 0.0)
    with pytest.raises(ClippingError, match="positive"):
        clip_elementwise([np.ones(2)], -1.0)
    with pytest.raises(ClippingError, match=r"Wrap a single array"):
        clip_by_global_norm(np.ones(3), 5.0)
