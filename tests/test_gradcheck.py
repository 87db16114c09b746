"""charrnn_lib.gradcheck: central differences and the relative error, on functions whose
gradients are known in closed form."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from charrnn_lib.gradcheck import (
    GradCheckError,
    gradient_errors,
    numerical_gradient,
    numerical_gradients,
    relative_error,
)


def test_quadratic_form_gradient_matches_closed_form():
    rng = np.random.default_rng(0)
    A = rng.normal(size=(4, 4))
    x = rng.normal(size=4)
    g = numerical_gradient(lambda: x @ A @ x, x)
    # d/dx x^T A x = (A + A^T) x; central differences are exact for a quadratic up to round-off
    assert relative_error(g, (A + A.T) @ x) < 1e-9


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 4), st.integers(1, 4), st.integers(0, 10_000))
def test_matrix_function_gradient(rows, cols, seed):
    rng = np.random.default_rng(seed)
    M = rng.normal(size=(rows, cols))
    # f(M) = sum sin(M) * M  ->  df/dM = cos(M) * M + sin(M)
    g = numerical_gradient(lambda: float(np.sum(np.sin(M) * M)), M)
    assert g.shape == M.shape
    assert relative_error(g, np.cos(M) * M + np.sin(M)) < 1e-8


def test_central_beats_forward_difference():
    x = np.array([0.7])
    eps = 1e-4
    exact = np.exp(0.7)
    central = numerical_gradient(lambda: float(np.exp(x[0])), x, eps=eps)[0]
    forward = (np.exp(0.7 + eps) - np.exp(0.7)) / eps
    # O(eps^2) against O(eps): several orders of magnitude apart
    assert abs(central - exact) < 1e-3 * abs(forward - exact)


def test_input_restored_exactly():
    x = np.array([[0.1, 0.2], [0.3, 0.4]])
    before = x.copy()
    numerical_gradient(lambda: float(np.sum(x**3)), x)
    np.testing.assert_array_equal(x, before)


def test_numerical_gradients_by_name_and_errors():
    a, b = np.array([1.0, 2.0]), np.array([3.0])
    num = numerical_gradients(lambda: float(a @ a * b[0]), {"a": a, "b": b})
    errs = gradient_errors({"a": 2 * a * b[0], "b": np.array([a @ a])}, num)
    assert set(errs) == {"a", "b"} and max(errs.values()) < 1e-9
    with pytest.raises(GradCheckError, match="unmatched"):
        gradient_errors({"a": a}, num)


def test_wrong_gradient_is_detected():
    x = np.array([0.5, -1.5, 2.0])
    g = numerical_gradient(lambda: float(np.sum(np.tanh(x))), x)
    wrong = 1 - np.tanh(x)  # forgot the square
    assert relative_error(g, wrong) > 0.1


def test_relative_error_properties():
    a = np.array([1.0, 2.0, 3.0])
    assert relative_error(a, a) == 0.0
    assert relative_error(np.zeros(3), np.zeros(3)) == 0.0
    assert relative_error(a, -a) == pytest.approx(2.0)
    assert relative_error(a, a * (1 + 1e-8)) == pytest.approx(1e-8, rel=1e-3)
    # norm-wise: a tiny entry with a large relative error does not dominate
    assert relative_error([1.0, 1e-12], [1.0, 2e-12]) < 1e-11
    with pytest.raises(GradCheckError, match="same shape"):
        relative_error(np.zeros(3), np.zeros((3, 1)))


def test_bad_inputs_raise_helpful_errors():
    with pytest.raises(GradCheckError, match="floating-point NumPy array"):
        numerical_gradient(lambda: 0.0, [1.0, 2.0])
    with pytest.raises(GradCheckError, match="floating-point"):
        numerical_gradient(lambda: 0.0, np.array([1, 2]))
    with pytest.raises(GradCheckError, match="eps must be positive"):
        numerical_gradient(lambda: 0.0, np.zeros(2), eps=0.0)
    with pytest.raises(GradCheckError, match="contiguous"):
        numerical_gradient(lambda: 0.0, np.zeros((3, 3)).T[:, :2])
