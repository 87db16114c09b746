"""Backpropagation through time for the LSTM, in plain NumPy (chapter 3, section ``lstm-bptt``).

The forward pass is :func:`charrnn_lib.numpy_gated.lstm_step` (same parameters, same gate
order ``i, f, g, o``); this module keeps what the backward pass needs and runs the recursion
backwards.  With ``a_{*,t} = W_* h_{t-1} + U_* x_t + b_*`` the pre-activation of gate
``* in {i, f, g, o}``, the error signals ``delta_{*,t} = dL/da_{*,t}``, and ``hbar_t``,
``sbar_t`` the *total* derivatives of the loss with respect to ``h_t`` and ``s_t``
(through every later step), for ``t = T, ..., 1``::

    hbar_t      = dL/dh_t (direct)  + sum_* W_*^T delta_{*,t+1}          (second term: t < T)
    sbar_t      = hbar_t * o_t * (1 - tanh(s_t)^2)  + sbar_{t+1} * f_{t+1}  (second: t < T)
    delta_{o,t} = hbar_t * tanh(s_t) * o_t (1 - o_t)
    delta_{i,t} = sbar_t * g_t * i_t (1 - i_t)
    delta_{f,t} = sbar_t * s_{t-1} * f_t (1 - f_t)
    delta_{g,t} = sbar_t * i_t * (1 - g_t^2)

and the weight gradients are sums over time::

    dL/dW_* = sum_t delta_{*,t} h_{t-1}^T    dL/dU_* = sum_t delta_{*,t} x_t^T    dL/db_* = sum_t delta_{*,t}

``sbar_{t+1} * f_{t+1}`` is the constant error carousel: the part of the error that goes
back along the cell state is only multiplied, elementwise, by the forget gate.

Conventions as in :mod:`charrnn_lib.numpy_gated`: batches of row vectors, ``xs`` (B, T, D),
states (B, H), stacked parameters ``W`` (4H, H), ``U`` (4H, D), ``b`` (4H,).  The loss is
described by what arrives from outside: ``dhs`` (B, T, H), ``dL/dh_t`` through the outputs
(and, at ``t = T``, through a returned final ``h_T``), and ``ds_last`` (B, H), ``dL/ds_T``
through a returned final cell state.  Plain LSTM only (no peepholes).

This module imports NumPy only.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from charrnn_lib.numpy_gated import GatedShapeError, LSTMParams, lstm_step


@dataclasses.dataclass
class LSTMCache:
    """What the forward pass leaves for the backward pass.  Step ``t = 1..T`` is index ``t-1``.

    xs (B, T, D); h0, s0 (B, H); hs, ss (B, T, H): h_1..h_T, s_1..s_T;
    gates (B, T, 4H): [i, f, g, o] of every step, after their nonlinearities.
    """

    xs: np.ndarray
    h0: np.ndarray
    s0: np.ndarray
    hs: np.ndarray
    ss: np.ndarray
    gates: np.ndarray

    def gate(self, name: str) -> np.ndarray:
        """One gate over time, (B, T, H); ``name`` in ``"i", "f", "g", "o"``."""
        k = "ifgo".index(name)
        H = self.hs.shape[-1]
        return self.gates[..., k * H:(k + 1) * H]

    def h_prev(self) -> np.ndarray:
        """h_0..h_{T-1}, (B, T, H)."""
        return np.concatenate([self.h0[:, None], self.hs[:, :-1]], axis=1)

    def s_prev(self) -> np.ndarray:
        """s_0..s_{T-1}, (B, T, H)."""
        return np.concatenate([self.s0[:, None], self.ss[:, :-1]], axis=1)


@dataclasses.dataclass
class LSTMGrads:
    """Gradients of the loss: W (4H, H), U (4H, D), b (4H,) -- the layout of ``LSTMParams`` --
    and xs (B, T, D), h0 (B, H), s0 (B, H)."""

    W: np.ndarray
    U: np.ndarray
    b: np.ndarray
    xs: np.ndarray
    h0: np.ndarray
    s0: np.ndarray

    NAMES = ("W", "U", "b", "xs", "h0", "s0")

    def as_dict(self) -> dict[str, np.ndarray]:
        return {n: getattr(self, n) for n in self.NAMES}

    def to_keras(self) -> list[np.ndarray]:
        """``[d kernel (D, 4H), d recurrent_kernel (H, 4H), d bias (4H,)]``: Keras's layout."""
        return [self.U.T.copy(), self.W.T.copy(), self.b.copy()]


def _plain(params: LSTMParams) -> None:
    if params.peepholes:
        raise GatedShapeError("lstm_bptt handles the plain LSTM; a peephole LSTM has extra paths through s. "
                              "Differentiate PeepholeLSTMCell with tf.GradientTape instead.")


def lstm_forward_cache(params: LSTMParams, xs, h0=None, s0=None) -> LSTMCache:
    """Run the LSTM over ``xs`` (B, T, D) from ``h0``, ``s0`` (B, H; None: zeros), keeping the gates."""
    _plain(params)
    xs = np.asarray(xs)
    if xs.ndim != 3 or xs.shape[-1] != params.input_size:
        raise GatedShapeError(f"xs must be (B, T, D) with D = {params.input_size}, got shape {xs.shape}.")
    B, T, _ = xs.shape
    H = params.hidden_size
    dtype = np.result_type(xs.dtype, params.dtype)
    h = np.zeros((B, H), dtype) if h0 is None else np.asarray(h0, dtype)
    s = np.zeros((B, H), dtype) if s0 is None else np.asarray(s0, dtype)
    if h.shape != (B, H) or s.shape != (B, H):
        raise GatedShapeError(f"h0 and s0 must be (B, H) = {(B, H)}, got {h.shape} and {s.shape}.")
    cache = LSTMCache(xs, h, s, np.empty((B, T, H), dtype), np.empty((B, T, H), dtype),
                      np.empty((B, T, 4 * H), dtype))
    for t in range(T):
        h, s, g = lstm_step(params, h, s, xs[:, t], return_gates=True)
        cache.hs[:, t], cache.ss[:, t] = h, s
        cache.gates[:, t] = np.concatenate([g["i"], g["f"], g["g"], g["o"]], axis=1)
    return cache


def lstm_backward(params: LSTMParams, cache: LSTMCache, dhs, ds_last=None) -> LSTMGrads:
    """The full-sequence backward pass (BPTT) of the LSTM.

    dhs: (B, T, H), dL/dh_t from outside the recurrence (outputs; at t = T also a returned h_T).
    ds_last: (B, H) or None, dL/ds_T from outside (a returned final cell state).
    Returns :class:`LSTMGrads`.
    """
    _plain(params)
    dhs = np.asarray(dhs)
    B, T, H = cache.hs.shape
    if dhs.shape != (B, T, H):
        raise GatedShapeError(f"dhs must have the shape of the hidden states {(B, T, H)}, got {dhs.shape}.")
    i, f, g, o = (cache.gate(n) for n in "ifgo")            # (B, T, H) each
    tanh_s = np.tanh(cache.ss)                               # (B, T, H)
    s_prev = cache.s_prev()                                  # (B, T, H): s_{t-1}
    deltas = np.empty_like(cache.gates)                      # (B, T, 4H): [delta_i, delta_f, delta_g, delta_o]
    h_back = np.zeros((B, H), cache.hs.dtype)                # sum_* W_*^T delta_{*,t+1}, as rows (B, H)
    s_back = np.zeros((B, H), cache.hs.dtype) if ds_last is None else np.asarray(ds_last)  # sbar_{t+1} f_{t+1}
    for t in range(T - 1, -1, -1):
        hbar = dhs[:, t] + h_back                            # (B, H) all that reaches h_t
        sbar = s_back + hbar * o[:, t] * (1.0 - tanh_s[:, t] ** 2)  # (B, H) all that reaches s_t
        deltas[:, t] = np.concatenate([
            sbar * g[:, t] * i[:, t] * (1.0 - i[:, t]),      # delta_i
            sbar * s_prev[:, t] * f[:, t] * (1.0 - f[:, t]),  # delta_f
            sbar * i[:, t] * (1.0 - g[:, t] ** 2),           # delta_g
            hbar * tanh_s[:, t] * o[:, t] * (1.0 - o[:, t]),  # delta_o
        ], axis=1)
        h_back = deltas[:, t] @ params.W                     # (B, 4H) @ (4H, H): sum_* W_*^T delta_{*,t}
        s_back = sbar * f[:, t]                              # the carousel: elementwise by f_t
    flat = deltas.reshape(B * T, 4 * H)                      # (B*T, 4H)
    dW = flat.T @ cache.h_prev().reshape(B * T, H)          # (4H, H)  = sum_t delta_t h_{t-1}^T
    dU = flat.T @ cache.xs.reshape(B * T, -1)               # (4H, D)  = sum_t delta_t x_t^T
    db = flat.sum(axis=0)                                    # (4H,)    = sum_t delta_t
    dxs = deltas @ params.U                                  # (B, T, D) = U^T delta_t per step
    return LSTMGrads(W=dW, U=dU, b=db, xs=dxs, h0=h_back, s0=s_back)


def lstm_bptt(params: LSTMParams, xs, dhs, h0=None, s0=None, ds_last=None) -> LSTMGrads:
    """Forward with cache, then :func:`lstm_backward`."""
    return lstm_backward(params, lstm_forward_cache(params, xs, h0, s0), dhs, ds_last)


# ---------------------------------------------------------------------------
# Jacobians of the state: the carousel, measured
# ---------------------------------------------------------------------------


def step_jacobian(params: LSTMParams, cache: LSTMCache, t: int) -> np.ndarray:
    """Jacobian of the state (h_t, s_t) with respect to (h_{t-1}, s_{t-1}) at step t = 1..T.

    Returns (B, 2H, 2H) with blocks [[dh_t/dh_{t-1}, dh_t/ds_{t-1}], [ds_t/dh_{t-1}, ds_t/ds_{t-1}]];
    ds_t/ds_{t-1} (with h_{t-1} held) is diag(f_t), every other path goes through h_{t-1}.
    """
    _plain(params)
    T = cache.hs.shape[1]
    if not 1 <= t <= T:
        raise ValueError(f"t must be a step 1..{T}, got {t}")
    k = t - 1
    i, f, g, o = (cache.gate(n)[:, k] for n in "ifgo")     # (B, H) each
    tanh_s = np.tanh(cache.ss[:, k])
    s_prev = cache.s_prev()[:, k]
    Wi, Wf, Wg, Wo = (params.gate(n)[0] for n in "ifgo")  # (H, H) each
    # ds_t/dh_{t-1}: through the input gate, the forget gate and the candidate      (B, H, H)
    ds_dh = ((g * i * (1 - i))[:, :, None] * Wi + (s_prev * f * (1 - f))[:, :, None] * Wf
             + (i * (1 - g ** 2))[:, :, None] * Wg)
    ds_ds = np.einsum("bh,hk->bhk", f, np.eye(f.shape[1]))  # diag(f_t)             (B, H, H)
    dh_ds_t = (o * (1 - tanh_s ** 2))[:, :, None]             # dh_t/ds_t, diagonal  (B, H, 1)
    dh_dh = (tanh_s * o * (1 - o))[:, :, None] * Wo + dh_ds_t * ds_dh
    dh_ds = dh_ds_t * ds_ds
    return np.concatenate([np.concatenate([dh_dh, dh_ds], axis=2),
                           np.concatenate([ds_dh, ds_ds], axis=2)], axis=1)


def cell_state_jacobian(params: LSTMParams, cache: LSTMCache, t: int) -> np.ndarray:
    """d s_T / d s_t with h_t held fixed, t = 0..T-1, through every path: (B, H, H).

    The product of the step Jacobians from t+1 to T, lower-right block."""
    T, H = cache.hs.shape[1], cache.hs.shape[2]
    if not 0 <= t < T:
        raise ValueError(f"t must be a state index 0..{T - 1}, got {t}")
    B = cache.hs.shape[0]
    J = np.broadcast_to(np.eye(2 * H), (B, 2 * H, 2 * H)).copy()  # (B, 2H, 2H)
    for step in range(t + 1, T + 1):
        J = step_jacobian(params, cache, step) @ J
    return J[:, H:, H:]


def forget_path(cache: LSTMCache, t: int) -> np.ndarray:
    """The cell-state path alone: f_{t+1} * ... * f_T, (B, H) -- the diagonal of
    d s_T / d s_t when every path through h is removed."""
    return np.prod(cache.gate("f")[:, t:], axis=1)
