"""Gradient clipping: keep one bad step from throwing the parameters far away.

An RNN's loss surface has cliffs: regions where the gradient is suddenly huge because a
product of many Jacobians explodes (chapter 2).  A plain gradient step taken there can
move the parameters so far that training never recovers.  Clipping limits the step.

Global-norm clipping (Pascanu et al. 2013; ``tf.clip_by_global_norm``; the deck's
``grad_clip = 5``) treats all gradients as one long vector ``g`` with Euclidean norm
``||g||`` and rescales it when it is too long::

    g  <-  g * theta / max(||g||, theta)

The direction is unchanged; only the length is capped at ``theta``.

Element-wise clipping (karpathy's min-char-rnn: ``np.clip(dparam, -5, 5)``) clamps each
entry to ``[-theta, theta]`` separately.  It is cheaper but changes the direction of the
step: large entries are flattened while small ones keep their size.

Both functions take a list (or tuple) of arrays and return a list, or a mapping of
names to arrays and return a dict.  This module imports NumPy only.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


class ClippingError(ValueError):
    """A clipping argument is unusable; the message says what to pass instead."""


def _as_arrays(grads):
    if isinstance(grads, Mapping):
        return list(grads.keys()), [np.asarray(g) for g in grads.values()]
    if isinstance(grads, np.ndarray) or not isinstance(grads, Sequence):
        raise ClippingError(
            "grads must be a list of arrays (one per parameter) or a dict of them; "
            f"got {type(grads).__name__}. Wrap a single array as [g]."
        )
    return None, [np.asarray(g) for g in grads]


def _pack(keys, arrays):
    return arrays if keys is None else dict(zip(keys, arrays))


def _check_threshold(name: str, value) -> float:
    value = float(value)
    if not value > 0 or not np.isfinite(value):
        raise ClippingError(f"{name} must be a positive finite number (the deck uses 5), got {value}.")
    return value


def global_norm(grads) -> float:
    """``||g||``: the Euclidean norm of all gradient arrays taken together as one vector."""
    _, arrays = _as_arrays(grads)
    return float(np.sqrt(sum(float(np.sum(np.square(g, dtype=np.float64))) for g in arrays)))


def clip_by_global_norm(grads, clip_norm: float):
    """Rescale all gradients together so that their global norm is at most ``clip_norm``.

    Returns ``(clipped, norm)`` where ``norm`` is the global norm *before* clipping, like
    ``tf.clip_by_global_norm``.  Each array is multiplied by
    ``clip_norm / max(norm, clip_norm)``: unchanged when ``norm <= clip_norm``.  As in
    TensorFlow, a non-finite norm (an inf or NaN anywhere) makes every entry NaN, so that
    the failure is visible instead of silently zeroing most of the step.
    Arrays keep their shapes and dtypes.
    """
    clip_norm = _check_threshold("clip_norm", clip_norm)
    keys, arrays = _as_arrays(grads)
    norm = global_norm(arrays)
    if not np.isfinite(norm):
        return _pack(keys, [np.full_like(g, np.nan, dtype=np.result_type(g, np.float32)) for g in arrays]), norm
    scale = clip_norm / max(norm, clip_norm)
    return _pack(keys, [(g * scale).astype(g.dtype, copy=False) for g in arrays]), norm


def clip_elementwise(grads, limit: float):
    """Clamp every entry to ``[-limit, limit]`` separately (min-char-rnn's ``np.clip``).

    Returns the clipped arrays only (there is no single norm to report).
    """
    limit = _check_threshold("limit", limit)
    keys, arrays = _as_arrays(grads)
    return _pack(keys, [np.clip(g, -limit, limit) for g in arrays])
