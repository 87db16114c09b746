"""Gradient checking: compare a hand-written gradient with central finite differences.

A backward pass is easy to get almost right.  The cure is an independent reference that
needs no calculus at all: nudge one input by a tiny ``eps`` in both directions and look at
how the loss moves,

    df/dx_i  ~=  (f(x + eps e_i) - f(x - eps e_i)) / (2 eps).

This *central* difference is accurate to O(eps**2) (the first-order error terms of the
two one-sided differences cancel), against O(eps) for the forward difference
``(f(x + eps e_i) - f(x)) / eps``.  Round-off adds an error of order
``machine_eps * |f| / eps``, so ``eps`` cannot be made arbitrarily small: in float64
``eps = 1e-5`` balances the two (the optimum is near ``machine_eps ** (1/3)``) and leaves
an absolute error around ``1e-11 * |f|``.
In float32 the same check is hopeless at that precision, which is why gradient checks
run in float64.

The agreement is measured by :func:`relative_error`, a norm-wise relative difference, so
that one tiny gradient entry (where any absolute error is a large *relative* error) does
not spoil a check of the whole array.

This module imports NumPy only.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np


class GradCheckError(ValueError):
    """An argument of a gradient check is unusable; the message says how to fix it."""


def relative_error(a, b, floor: float = 1e-300) -> float:
    """Norm-wise relative difference ``||a - b|| / max(||a||, ||b||)`` (Euclidean norms).

    0 when the arrays are equal; about 1e-16 in float64 when they agree to the last bit;
    1 or more when they are unrelated.  Both arrays zero gives 0; ``floor`` keeps the
    division finite otherwise.  Shapes must match exactly (no broadcasting: a broadcast
    would hide a gradient of the wrong shape).
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise GradCheckError(f"relative_error needs arrays of the same shape, got {a.shape} and {b.shape}.")
    diff = float(np.linalg.norm((a - b).ravel()))
    if diff == 0.0:
        return 0.0
    scale = max(float(np.linalg.norm(a.ravel())), float(np.linalg.norm(b.ravel())), floor)
    return diff / scale


def numerical_gradient(f: Callable[[], float], x: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    """Central-difference gradient of the scalar ``f()`` with respect to the array ``x``.

    ``f`` takes no arguments and reads ``x`` (directly or through an object that holds it);
    each entry of ``x`` is changed *in place* to ``x_i +- eps``, ``f`` is called, and the
    entry is restored.  Costs ``2 * x.size`` calls of ``f``.

    x: any shape, floating dtype (float64 for a meaningful check)  ->  same shape as x.
    """
    if not isinstance(x, np.ndarray) or not np.issubdtype(x.dtype, np.floating):
        raise GradCheckError(
            "numerical_gradient perturbs x in place, so x must be a floating-point NumPy array "
            f"that f reads; got {type(x).__name__} with dtype {getattr(x, 'dtype', None)}."
        )
    if not eps > 0:
        raise GradCheckError(f"eps must be positive, got {eps}.")
    grad = np.zeros_like(x, dtype=np.float64)
    flat = x.reshape(-1)  # a view: writing to it writes to x
    if not np.shares_memory(flat, x):
        raise GradCheckError("x must be contiguous so that it can be perturbed in place; pass np.ascontiguousarray(x).")
    gflat = grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        f_plus = float(f())
        flat[i] = old - eps
        f_minus = float(f())
        flat[i] = old  # restore exactly
        gflat[i] = (f_plus - f_minus) / (2.0 * eps)
    return grad


def numerical_gradients(
    f: Callable[[], float], arrays: Mapping[str, np.ndarray], eps: float = 1e-5
) -> dict[str, np.ndarray]:
    """:func:`numerical_gradient` for several named arrays: ``{name: d f / d array}``."""
    return {name: numerical_gradient(f, x, eps) for name, x in arrays.items()}


def gradient_errors(analytic: Mapping[str, np.ndarray], numeric: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Relative error per name, for the names the two mappings share (both must hold them all)."""
    missing = set(analytic) ^ set(numeric)
    if missing:
        raise GradCheckError(f"analytic and numeric gradients must name the same arrays; unmatched: {sorted(missing)}.")
    return {name: relative_error(analytic[name], numeric[name]) for name in analytic}
