"""Backpropagation through time (BPTT) for the simple RNN, in plain NumPy.

Unroll the recurrence over T steps and the RNN is an ordinary feed-forward graph, T layers
deep, whose layers all share the same parameters.  BPTT is backpropagation on that graph
(Werbos 1990).  Two things make it more than "backprop, again":

1. **Shared weights: gradients are summed over time.**  ``W`` is used at every step, so
   ``dL/dW`` is the sum of the contributions of every use: ``sum_t delta_t h_{t-1}^T``.
2. **Errors flow backwards through the hidden state.**  ``h_t`` feeds both the output at
   ``t`` and the next state ``h_{t+1}``, so its gradient has two parts, and the second one
   arrives from the future::

       dL/dh_t  = V^T (y_t - yhat_t)  +  W^T delta_{t+1}
       delta_t  = dL/da_t = (1 - h_t**2) * dL/dh_t          (tanh'(a_t) = 1 - h_t**2)

   The recursion runs from t = T down to 1 with ``delta_{T+1} = 0``.

For both output layers of the book the error at the logits has the same simple form
``dL/do_t = y_t - yhat_t``: softmax with cross-entropy (one class of K) and sigmoid with
binary cross-entropy (K independent yes/no outputs).  The loss values differ; this
gradient does not.

Row-vector code: a batch of B sequences at once, ``xs`` (B, T, D), ``hs`` (B, T, H); the
equations above are per sequence, and the batch just adds a sum over rows.

The module also holds the tools of the chapter's analysis: truncated BPTT (run a long
sequence in chunks of k steps, carry the state, cut the gradient at chunk boundaries,
Williams and Peng 1990), and the Jacobians ``dh_T/dh_t`` whose norms vanish or explode
with ``T - t`` (Bengio et al. 1994; Pascanu et al. 2013).

This module imports NumPy only.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from charrnn_lib.numpy_rnn import RNNParams, RNNShapeError, rnn_forward, rnn_logits, sigmoid, softmax

OUTPUTS = ("softmax", "sigmoid")
REDUCTIONS = ("sum", "mean")


class BPTTError(ValueError):
    """An argument of a BPTT function is unusable; the message says what to pass instead."""


# ---------------------------------------------------------------------------
# Containers
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class RNNGrads:
    """Gradients of a scalar loss with respect to every parameter and the initial state.

    Same shapes as the arrays they belong to: ``W`` (H, H), ``U`` (H, D), ``b`` (H,),
    ``V`` (K, H), ``c`` (K,), ``h0`` (B, H) (one initial state per sequence).
    """

    W: np.ndarray
    U: np.ndarray
    b: np.ndarray
    V: np.ndarray
    c: np.ndarray
    h0: np.ndarray

    NAMES = ("W", "U", "b", "V", "c", "h0")

    def arrays(self) -> tuple[np.ndarray, ...]:
        """The arrays in a fixed order: (W, U, b, V, c, h0)."""
        return tuple(getattr(self, n) for n in self.NAMES)

    def params_arrays(self) -> tuple[np.ndarray, ...]:
        """The parameter gradients only, in the order of ``RNNParams.arrays()``: (W, U, b, V, c)."""
        return self.arrays()[:5]

    def as_dict(self) -> dict[str, np.ndarray]:
        return dict(zip(self.NAMES, self.arrays()))

    def __add__(self, other: "RNNGrads") -> "RNNGrads":
        """Sum of parameter gradients; ``h0`` is kept from the left operand (the earliest chunk)."""
        return RNNGrads(*(a + b for a, b in zip(self.params_arrays(), other.params_arrays())), h0=self.h0)


@dataclasses.dataclass
class BPTTResult:
    """What one forward-backward pass returns.

    ``loss``: the scalar loss; ``grads``: :class:`RNNGrads`; ``hs``: the states h_1..h_T,
    (B, T, H).  ``h_last`` is the state to carry into the next chunk.
    """

    loss: float
    grads: RNNGrads
    hs: np.ndarray

    @property
    def h_last(self) -> np.ndarray:
        return self.hs[:, -1]  # (batch, hidden)


# ---------------------------------------------------------------------------
# Output layer: loss and its gradient at the logits
# ---------------------------------------------------------------------------


def _check_output(output: str) -> None:
    if output not in OUTPUTS:
        raise BPTTError(f"output must be one of {OUTPUTS}, got {output!r}.")


def _check_reduction(reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise BPTTError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}.")


def target_array(targets, output_size: int, output: str = "softmax", dtype=np.float64) -> np.ndarray:
    """Targets as an array of shape (B, T, K), the ``yhat_t`` of the equations.

    ``output="softmax"``: integer class ids (B, T) become one-hot rows; a float array
    (B, T, K) (one-hot or any distribution) is used as it is.
    ``output="sigmoid"``: a float array (B, T, K) of 0/1 labels (or probabilities).
    """
    _check_output(output)
    targets = np.asarray(targets)
    if output == "softmax" and np.issubdtype(targets.dtype, np.integer):
        if targets.ndim != 2:
            raise BPTTError(f"integer targets must be class ids of shape (B, T), got shape {targets.shape}.")
        if targets.size and (targets.min() < 0 or targets.max() >= output_size):
            raise BPTTError(f"class ids must lie in [0, {output_size - 1}], got values in [{targets.min()}, {targets.max()}].")
        return np.eye(output_size, dtype=dtype)[targets]  # (batch, time, output)
    if targets.ndim != 3 or targets.shape[-1] != output_size:
        hint = " or integer class ids (B, T)" if output == "softmax" else ""
        raise BPTTError(f"targets must have shape (B, T, K={output_size}){hint}, got {targets.shape}.")
    return targets.astype(dtype, copy=False)


def output_loss_and_grad(logits, targets, output: str = "softmax"):
    """Summed loss over batch and time, and its gradient with respect to the logits.

    logits: (B, T, K); targets: (B, T, K) as from :func:`target_array`.
    Softmax + cross-entropy:  L_t = -sum_k yhat_k log softmax(o_t)_k
    Sigmoid + binary CE:      L_t = -sum_k [yhat_k log y_k + (1 - yhat_k) log(1 - y_k)]
    Both computed from the logits without forming log(0).  Returns ``(loss, dL/do)`` with
    ``dL/do = y - yhat`` (softmax: ``y * sum_k yhat_k - yhat``, the same for one-hot rows).
    """
    _check_output(output)
    o = np.asarray(logits)
    if output == "softmax":
        shifted = o - o.max(axis=-1, keepdims=True)
        log_y = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))  # log softmax
        loss = -np.sum(targets * log_y)
        dlogits = softmax(o) * targets.sum(axis=-1, keepdims=True) - targets
    else:
        # -[yhat log s(o) + (1 - yhat) log(1 - s(o))] = log(1 + e^o) - yhat * o
        loss = np.sum(np.logaddexp(0.0, o) - targets * o)
        dlogits = sigmoid(o) - targets
    return float(loss), dlogits  # dlogits: (batch, time, output)


# ---------------------------------------------------------------------------
# Forward and backward through time
# ---------------------------------------------------------------------------


def _initial_state(params: RNNParams, xs: np.ndarray, h0) -> np.ndarray:
    B = xs.shape[0]
    if h0 is None:
        return np.zeros((B, params.hidden_size), dtype=np.result_type(xs.dtype, params.dtype))
    h0 = np.asarray(h0)
    if h0.shape != (B, params.hidden_size):
        raise RNNShapeError(f"h0 must have shape (B, H) = {(B, params.hidden_size)}, got {h0.shape}.")
    return h0


def backward(params: RNNParams, xs, hs, dlogits, h0=None) -> RNNGrads:
    """The backward pass through time, given the error at the logits.

    xs: (B, T, D) inputs; hs: (B, T, H) states from the forward pass; dlogits: (B, T, K),
    ``dL/do_t`` for every step; h0: (B, H) or None (zeros).

    Output layer (used once per step, gradients summed over t and the batch):
        dV = sum_t dlogits_t^T h_t          dc = sum_t dlogits_t
    Hidden layer, from t = T down to 1 (``dh_next`` is ``W^T delta_{t+1}``, 0 at t = T):
        dh_t    = dlogits_t V + dh_next     (B, H)   two paths into h_t
        delta_t = dh_t * (1 - h_t**2)       (B, H)   through tanh
        dW += delta_t^T h_{t-1};  dU += delta_t^T x_t;  db += sum over rows of delta_t
        dh_next = delta_t W
    and ``dh0`` is the last ``dh_next``.
    """
    xs, hs, dlogits = np.asarray(xs), np.asarray(hs), np.asarray(dlogits)
    B, T, _ = xs.shape
    if hs.shape != (B, T, params.hidden_size) or dlogits.shape != (B, T, params.output_size):
        raise RNNShapeError(
            f"backward needs hs (B, T, H) = {(B, T, params.hidden_size)} and dlogits (B, T, K) = "
            f"{(B, T, params.output_size)}, got {hs.shape} and {dlogits.shape}."
        )
    h0 = _initial_state(params, xs, h0)
    dV = np.einsum("btk,bth->kh", dlogits, hs)  # (output, hidden)
    dc = dlogits.sum(axis=(0, 1))  # (output,)
    dhs = dlogits @ params.V  # (batch, time, hidden): the direct path o_t <- h_t
    dW, dU, db = np.zeros_like(params.W), np.zeros_like(params.U), np.zeros_like(params.b)
    dh_next = np.zeros_like(h0)  # (batch, hidden): W^T delta_{t+1}, from the future
    for t in reversed(range(T)):
        h_prev = hs[:, t - 1] if t > 0 else h0  # (batch, hidden)
        delta = (dhs[:, t] + dh_next) * (1.0 - hs[:, t] ** 2)  # (batch, hidden)
        dW += delta.T @ h_prev
        dU += delta.T @ xs[:, t]
        db += delta.sum(axis=0)
        dh_next = delta @ params.W
    return RNNGrads(W=dW, U=dU, b=db, V=dV, c=dc, h0=dh_next)


def _scale(reduction: str, xs: np.ndarray) -> float:
    _check_reduction(reduction)
    return 1.0 if reduction == "sum" else 1.0 / (xs.shape[0] * xs.shape[1])


def sequence_loss(params: RNNParams, xs, targets, h0=None, output: str = "softmax", reduction: str = "sum") -> float:
    """The loss ``L = sum_t L_t`` summed over the batch too (``reduction="sum"``), or
    divided by ``B * T`` (``reduction="mean"``, per step and sequence, as Keras averages).

    xs: (B, T, D); targets: class ids (B, T) or (B, T, K), see :func:`target_array`.
    """
    xs = np.asarray(xs)
    scale = _scale(reduction, xs)
    hs = rnn_forward(params, xs, h0)
    y_hat = target_array(targets, params.output_size, output)
    loss, _ = output_loss_and_grad(rnn_logits(params, hs), y_hat, output)
    return loss * scale


def bptt(params: RNNParams, xs, targets, h0=None, output: str = "softmax", reduction: str = "sum") -> BPTTResult:
    """Loss and exact gradients of :func:`sequence_loss` by backpropagation through time.

    xs: (B, T, D); targets: (B, T) ids or (B, T, K); h0: (B, H) or None (zeros).
    Returns a :class:`BPTTResult` with gradients for W, U, b, V, c and h0.
    """
    xs = np.asarray(xs)
    scale = _scale(reduction, xs)
    h0 = _initial_state(params, xs, h0)
    hs = rnn_forward(params, xs, h0)  # (batch, time, hidden)
    y_hat = target_array(targets, params.output_size, output)
    loss, dlogits = output_loss_and_grad(rnn_logits(params, hs), y_hat, output)
    grads = backward(params, xs, hs, dlogits * scale, h0)
    return BPTTResult(loss=loss * scale, grads=grads, hs=hs)


# ---------------------------------------------------------------------------
# Truncated BPTT: chunks of k steps, state carried, gradient cut
# ---------------------------------------------------------------------------


def split_time(array, k: int) -> list[np.ndarray]:
    """Split (B, T, ...) or (B, T) along time into chunks of ``k`` steps (the last may be shorter)."""
    array = np.asarray(array)
    if int(k) != k or k < 1:
        raise BPTTError(f"the truncation length k must be a positive integer, got {k!r}.")
    if array.ndim < 2:
        raise BPTTError(f"expected an array (B, T, ...) with a time axis, got shape {array.shape}.")
    k = int(k)
    return [array[:, s : s + k] for s in range(0, array.shape[1], k)]


def forward_chunks(params: RNNParams, xs, k: int, h0=None) -> np.ndarray:
    """Run the sequence chunk by chunk, each chunk starting from the last state of the one
    before.  Returns all states (B, T, H): the same numbers as ``rnn_forward`` on the whole
    sequence, because carrying the state makes the chunks one computation again.
    """
    xs = np.asarray(xs)
    h = _initial_state(params, xs, h0)
    out = []
    for chunk in split_time(xs, k):
        hs = rnn_forward(params, chunk, h)  # (batch, chunk time, hidden)
        out.append(hs)
        h = hs[:, -1]  # carry the state into the next chunk
    return np.concatenate(out, axis=1)


def truncated_bptt(
    params: RNNParams, xs, targets, k: int, h0=None, output: str = "softmax", reduction: str = "sum"
) -> BPTTResult:
    """Truncated BPTT as char-rnn training does it, summed over one whole sequence.

    The sequence is cut into chunks of ``k`` steps.  Each chunk starts from the carried
    state of the previous chunk (forward pass exact) but its backward pass stops at the
    chunk's start: the carried state is treated as a constant, so no error crosses a chunk
    boundary.  The returned gradient is the sum of the chunk gradients (what one update per
    chunk would apply, here added up at fixed parameters); ``grads.h0`` is the first
    chunk's.  With ``k >= T`` it is exactly :func:`bptt`.
    """
    xs = np.asarray(xs)
    scale = _scale(reduction, xs)
    h = _initial_state(params, xs, h0)
    y_hat = target_array(targets, params.output_size, output)
    total, grads, hs_all = 0.0, None, []
    for x_chunk, y_chunk in zip(split_time(xs, k), split_time(y_hat, k)):
        r = bptt(params, x_chunk, y_chunk, h, output=output, reduction="sum")
        total += r.loss
        grads = r.grads if grads is None else grads + r.grads
        hs_all.append(r.hs)
        h = r.h_last  # carried forward; its gradient is dropped (a stop-gradient)
    grads = RNNGrads(*(g * scale for g in grads.arrays()))
    return BPTTResult(loss=total * scale, grads=grads, hs=np.concatenate(hs_all, axis=1))


# ---------------------------------------------------------------------------
# Vanishing and exploding gradients: the Jacobians dh_T / dh_t
# ---------------------------------------------------------------------------


def state_jacobians(params: RNNParams, xs, h0=None) -> np.ndarray:
    """All Jacobians of the last state with respect to the earlier ones.

    Returns J of shape (B, T + 1, H, H) with ``J[:, j] = dh_T / dh_{T-j}`` (indexed by the
    lag ``j = T - t``, j = 0..T; ``J[:, 0]`` is the identity).  Built backwards with
    ``dh_T/dh_{t-1} = dh_T/dh_t  diag(1 - h_t**2)  W``: a product of T - t factors, each a
    tanh derivative (<= 1) times the same matrix W.
    """
    xs = np.asarray(xs)
    h0 = _initial_state(params, xs, h0)
    hs = rnn_forward(params, xs, h0)  # (batch, time, hidden)
    B, T, H = hs.shape
    J = np.empty((B, T + 1, H, H), dtype=hs.dtype)
    J[:, 0] = np.eye(H, dtype=hs.dtype)
    for j in range(1, T + 1):
        t = T - j + 1  # the factor dh_t/dh_{t-1} uses h_t = hs[:, t - 1]
        d = 1.0 - hs[:, t - 1] ** 2  # (batch, hidden)
        J[:, j] = (J[:, j - 1] * d[:, None, :]) @ params.W
    return J


def jacobian_norms(params: RNNParams, xs, h0=None, ord=2) -> np.ndarray:
    """``||dh_T / dh_{T-j}||`` for lags j = 0..T, shape (B, T + 1).

    ``ord=2``: spectral norm (largest singular value, the most a unit perturbation of
    h_{T-j} can change h_T); ``ord="fro"``: Frobenius norm.
    """
    if ord not in (2, "fro"):
        raise BPTTError(f"ord must be 2 (spectral norm) or 'fro' (Frobenius), got {ord!r}.")
    J = state_jacobians(params, xs, h0)
    return np.linalg.norm(J, ord=ord, axis=(-2, -1))


def spectral_radius(W) -> float:
    """rho(W): the largest absolute value of the eigenvalues of the square matrix W."""
    W = np.asarray(W)
    if W.ndim != 2 or W.shape[0] != W.shape[1]:
        raise BPTTError(f"the spectral radius needs a square matrix, got shape {W.shape}.")
    return float(np.max(np.abs(np.linalg.eigvals(W))))


def with_spectral_radius(W, rho: float) -> np.ndarray:
    """W rescaled so that its spectral radius is ``rho`` (all eigenvalues scale together)."""
    current = spectral_radius(W)
    if current == 0.0:
        raise BPTTError("W has spectral radius 0 (nilpotent or zero); rescaling cannot change it.")
    return np.asarray(W) * (float(rho) / current)
