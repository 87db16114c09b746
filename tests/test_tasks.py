"""Long-lag task generators: shapes, labels, markers, determinism, baselines."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from charrnn_lib.tasks import ADDING_BASELINE_MSE, TaskError, adding_problem, marked_bit


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 20), length=st.integers(1, 40), seed=st.integers(0, 2**16))
def test_marked_bit_structure(n, length, seed):
    x, y = marked_bit(n, length, seed)
    assert x.shape == (n, length, 2) and x.dtype == np.float32
    assert y.shape == (n,) and y.dtype == np.int32
    assert set(np.unique(x[:, :, 0])) <= {-1.0, 1.0}
    np.testing.assert_array_equal(x[:, 0, 1], 1.0)  # the marker is on step 1 ...
    assert x[:, 1:, 1].sum() == 0  # ... and nowhere else
    np.testing.assert_array_equal(y, (x[:, 0, 0] == 1.0).astype(np.int32))


def test_marked_bit_answer_is_independent_of_the_rest():
    """Only the first bit decides the label: the distractors carry no information about it."""
    x, y = marked_bit(20000, 5, 0)
    assert abs(y.mean() - 0.5) < 0.02
    for t in range(1, 5):
        assert abs(np.corrcoef(x[:, t, 0], y)[0, 1]) < 0.03


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 20), length=st.integers(2, 40), seed=st.integers(0, 2**16))
def test_adding_problem_structure(n, length, seed):
    x, y = adding_problem(n, length, seed)
    assert x.shape == (n, length, 2) and x.dtype == np.float32 and y.dtype == np.float32
    assert np.all((0 <= x[:, :, 0]) & (x[:, :, 0] < 1))
    half = length // 2
    np.testing.assert_array_equal(x[:, :half, 1].sum(axis=1), 1.0)  # one marker per half
    np.testing.assert_array_equal(x[:, half:, 1].sum(axis=1), 1.0)
    np.testing.assert_allclose(y, (x[:, :, 0] * x[:, :, 1]).sum(axis=1), rtol=1e-6)


def test_adding_baseline_is_one_sixth():
    _, y = adding_problem(200000, 10, 1)
    assert abs(np.mean((y - 1.0) ** 2) - ADDING_BASELINE_MSE) < 0.003


def test_same_seed_same_data_and_generator_advances():
    for task in (marked_bit, adding_problem):
        a, b = task(4, 6, 3), task(4, 6, 3)
        np.testing.assert_array_equal(a[0], b[0])
        rng = np.random.default_rng(3)
        first, second = task(4, 6, rng), task(4, 6, rng)
        assert not np.array_equal(first[0], second[0])


@pytest.mark.parametrize("n,length", [(0, 5), (3, 0), (2.5, 4), (3, 1.5)])
def test_bad_sizes(n, length):
    with pytest.raises(TaskError, match="must be"):
        marked_bit(n, length)


def test_adding_needs_two_steps_and_a_real_rng():
    with pytest.raises(TaskError, match="at least 2"):
        adding_problem(3, 1)
    with pytest.raises(TaskError, match="Generator or an integer seed"):
        marked_bit(3, 4, rng="seed")
