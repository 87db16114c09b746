"""Gated recurrent cells in plain NumPy: the LSTM, the peephole LSTM and the GRU (forward pass).

A simple RNN overwrites its whole state at every step.  A gated cell computes, from the
input and the previous state, numbers between 0 and 1 -- *gates* -- and multiplies parts of
the computation by them: a gate near 1 lets a signal through, a gate near 0 blocks it.

LSTM (Hochreiter & Schmidhuber 1997, with the forget gate of Gers et al. 2000), one
sequence, column vectors, ``sigma`` the logistic sigmoid::

    i_t = sigma(W_i h_{t-1} + U_i x_t + b_i [+ p_i * s_{t-1}])    input gate         (H,)
    f_t = sigma(W_f h_{t-1} + U_f x_t + b_f [+ p_f * s_{t-1}])    forget gate        (H,)
    g_t = tanh (W_g h_{t-1} + U_g x_t + b_g)                      candidate content  (H,)
    s_t = f_t * s_{t-1} + i_t * g_t                               cell state         (H,)
    o_t = sigma(W_o h_{t-1} + U_o x_t + b_o [+ p_o * s_t])        output gate        (H,)
    h_t = o_t * tanh(s_t)                                         hidden state       (H,)

The bracketed terms are the *peepholes* (Gers, Schraudolph & Schmidhuber 2002), in the
formulation of TensorFlow 1's ``LSTMCell(use_peepholes=True)``: the input and forget gates
look at the old cell state, the output gate at the new one.  ``p_*`` are vectors (diagonal
matrices), so ``p * s`` is elementwise.

GRU (Cho et al. 2014), in Keras's convention (``z`` near 1 keeps the old state)::

    z_t = sigma(W_z h_{t-1} + U_z x_t + b_z [+ b'_z])             update gate        (H,)
    r_t = sigma(W_r h_{t-1} + U_r x_t + b_r [+ b'_r])             reset gate         (H,)
    n_t = tanh(U_n x_t + b_n + r_t * (W_n h_{t-1} + b'_n))        reset_after=True   (H,)
    n_t = tanh(U_n x_t + b_n + W_n (r_t * h_{t-1}))               reset_after=False  (H,)
    h_t = z_t * h_{t-1} + (1 - z_t) * n_t

``reset_after=False`` is the form of Cho et al.'s published paper (arXiv 1406.1078v3,
EMNLP 2014): the reset gate scales the old state *before* the matrix product.  (Their
first arXiv version, v1, put it after the product, as cuDNN does.)  ``reset_after=True`` (Keras's default, the form cuDNN
implements) applies it *after*, which lets all three recurrent products ``W h_{t-1}`` be
done as one matrix multiplication; it has a second, recurrent-side bias ``b'``.

Storage.  The per-gate matrices are stacked in Keras's gate order -- LSTM ``i, f, g, o``
(Keras names the candidate ``c``), GRU ``z, r, n`` (Keras: ``h``) -- in the orientation of
the equations: ``W`` is ``(4H, H)`` for an LSTM, ``U`` is ``(4H, D)``, ``b`` is ``(4H,)``.
Keras stores the transposes: ``kernel = U.T`` (D, 4H), ``recurrent_kernel = W.T`` (H, 4H),
``bias = b`` (4H,).  :meth:`LSTMParams.to_keras` / :meth:`LSTMParams.from_keras` (and the
GRU twins) convert.  Code works on batches, one sequence per row: ``x_t`` is ``(B, D)``,
``h`` and ``s`` are ``(B, H)``, whole sequences ``(B, T, D)``.

This module imports NumPy only.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from charrnn_lib.numpy_rnn import sigmoid

LSTM_GATES = ("i", "f", "g", "o")  # Keras's order; Keras calls g "c"
GRU_GATES = ("z", "r", "n")  # Keras's order; Keras calls n "h"


class GatedShapeError(ValueError):
    """An array given to a gated cell has the wrong shape; the message says what was expected."""


# ---------------------------------------------------------------------------
# Parameter counts, closed form
# ---------------------------------------------------------------------------


def param_count(cell: str, input_size: int, hidden_size: int) -> int:
    """Number of trainable scalars of one recurrent layer, from the formulas.

    ``cell``: ``"rnn"``  H(D + H + 1)            (W, U, b)
              ``"lstm"`` 4H(D + H + 1)           (four of them)
              ``"peephole"`` 4H(D + H + 1) + 3H  (plus p_i, p_f, p_o)
              ``"gru"``  3H(D + H + 2)           (three, plus Keras's recurrent bias b')
              ``"gru_v1"`` 3H(D + H + 1)         (reset_after=False: one bias)
    """
    D, H = int(input_size), int(hidden_size)
    one = H * (D + H + 1)
    counts = {"rnn": one, "lstm": 4 * one, "peephole": 4 * one + 3 * H, "gru": 3 * one + 3 * H, "gru_v1": 3 * one}
    if cell not in counts:
        raise ValueError(f"cell must be one of {sorted(counts)}, got {cell!r}")
    return counts[cell]


# ---------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------


def _check_batch(name: str, arr: np.ndarray, ndim: int, last: int, what: str) -> None:
    if arr.ndim != ndim:
        layout = {3: "(B, T, D)", 2: "(B, H)" if what == "H" else "(B, D)"}[ndim]
        raise GatedShapeError(
            f"{name} must have {ndim} dimensions {layout}, got shape {arr.shape}. "
            "For a single sequence or a single state add a batch axis: a[None]."
        )
    if arr.shape[-1] != last:
        raise GatedShapeError(f"{name} has last dimension {arr.shape[-1]}, but the parameters expect {what} = {last}.")


def _initial(name: str, given, B: int, H: int, dtype) -> np.ndarray:
    if given is None:
        return np.zeros((B, H), dtype=dtype)  # (batch, hidden)
    arr = np.asarray(given)
    _check_batch(name, arr, 2, H, "H")
    if arr.shape[0] != B:
        raise GatedShapeError(f"{name} has batch size {arr.shape[0]} but xs has {B}; give one state per sequence.")
    return arr


def _stacked(W, U, b, n_gates: int, cls: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    W, U, b = (np.asarray(a) for a in (W, U, b))
    if W.ndim != 2 or W.shape[0] != n_gates * W.shape[1]:
        raise GatedShapeError(
            f"{cls}.W has shape {W.shape}, expected ({n_gates}H, H): the {n_gates} recurrent matrices stacked "
            "row-wise. If your weights come from Keras, use from_keras() (Keras stores W.T)."
        )
    if U.ndim != 2 or U.shape[0] != W.shape[0]:
        raise GatedShapeError(f"{cls}.U has shape {U.shape}, expected ({W.shape[0]}, D) to match W {W.shape}.")
    if b.shape != (W.shape[0],):
        raise GatedShapeError(f"{cls}.b has shape {b.shape}, expected ({W.shape[0]},).")
    return W, U, b


# ---------------------------------------------------------------------------
# LSTM (with optional peepholes)
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class LSTMParams:
    """Parameters of an LSTM layer, gates stacked in Keras's order ``i, f, g, o``.

    Shapes (equation orientation)::

        W    (4H, H)   [W_i; W_f; W_g; W_o]   recurrent weights
        U    (4H, D)   [U_i; U_f; U_g; U_o]   input weights
        b    (4H,)     [b_i, b_f, b_g, b_o]   biases
        p_i, p_f, p_o  (H,) each, or all None  peephole weights (None: a plain LSTM)
    """

    W: np.ndarray
    U: np.ndarray
    b: np.ndarray
    p_i: np.ndarray | None = None
    p_f: np.ndarray | None = None
    p_o: np.ndarray | None = None

    def __post_init__(self):
        self.W, self.U, self.b = _stacked(self.W, self.U, self.b, 4, "LSTMParams")
        peeps = (self.p_i, self.p_f, self.p_o)
        if any(p is None for p in peeps) and not all(p is None for p in peeps):
            raise GatedShapeError("give all three peepholes p_i, p_f, p_o, or none of them (a plain LSTM).")
        if self.p_i is not None:
            self.p_i, self.p_f, self.p_o = (np.asarray(p) for p in peeps)
            for name in ("p_i", "p_f", "p_o"):
                if getattr(self, name).shape != (self.hidden_size,):
                    raise GatedShapeError(
                        f"LSTMParams.{name} has shape {getattr(self, name).shape}, expected ({self.hidden_size},): "
                        "a peephole is one weight per cell (a diagonal matrix)."
                    )

    @property
    def hidden_size(self) -> int:
        return self.W.shape[1]

    @property
    def input_size(self) -> int:
        return self.U.shape[1]

    @property
    def peepholes(self) -> bool:
        return self.p_i is not None

    @property
    def dtype(self):
        return self.W.dtype

    def gate(self, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(W_*, U_*, b_*)`` of one gate, ``name`` in ``"i", "f", "g", "o"``: (H,H), (H,D), (H,)."""
        if name not in LSTM_GATES:
            raise ValueError(f"LSTM gates are {LSTM_GATES} (Keras's order; Keras calls g 'c'), got {name!r}")
        k, H = LSTM_GATES.index(name), self.hidden_size
        rows = slice(k * H, (k + 1) * H)
        return self.W[rows], self.U[rows], self.b[rows]

    def arrays(self) -> tuple[np.ndarray, ...]:
        """``(W, U, b)``, then ``(p_i, p_f, p_o)`` for a peephole LSTM."""
        return (self.W, self.U, self.b) + ((self.p_i, self.p_f, self.p_o) if self.peepholes else ())

    def num_params(self) -> int:
        return sum(a.size for a in self.arrays())

    def astype(self, dtype) -> "LSTMParams":
        return LSTMParams(*(a.astype(dtype) for a in self.arrays()))

    def to_keras(self) -> list[np.ndarray]:
        """``[kernel (D,4H) = U.T, recurrent_kernel (H,4H) = W.T, bias (4H,)]``, plus
        ``[p_i, p_f, p_o]`` for a peephole LSTM: the order of ``LSTMCell.get_weights()`` and
        of ``charrnn_lib.peephole.PeepholeLSTMCell.get_weights()``."""
        return [self.U.T.copy(), self.W.T.copy(), self.b.copy()] + [p.copy() for p in self.arrays()[3:]]

    @classmethod
    def from_keras(cls, weights) -> "LSTMParams":
        """Inverse of :meth:`to_keras`: 3 arrays (``LSTMCell``) or 6 (``PeepholeLSTMCell``)."""
        if len(weights) not in (3, 6):
            raise ValueError(
                f"expected [kernel, recurrent_kernel, bias] (+ 3 peepholes), got {len(weights)} arrays; "
                "was the layer built with use_bias=False? Append a zero bias."
            )
        kernel, recurrent_kernel, bias, *peeps = (np.asarray(w) for w in weights)
        return cls(recurrent_kernel.T.copy(), kernel.T.copy(), bias.copy(), *peeps)

    @classmethod
    def random(cls, input_size: int, hidden_size: int, seed: int = 0, peepholes: bool = False,
               forget_bias: float = 0.0, scale: float | None = None, dtype=np.float64) -> "LSTMParams":
        """Random parameters: normal matrices with std ``1/sqrt(fan_in)`` (or ``scale``), biases
        and peepholes normal with std 0.1 (or ``scale``), ``forget_bias`` added to ``b_f``."""
        if int(input_size) != input_size or input_size < 1 or int(hidden_size) != hidden_size or hidden_size < 1:
            raise ValueError(f"input_size and hidden_size must be positive integers, got {input_size}, {hidden_size}")
        rng = np.random.default_rng(seed)
        D, H = int(input_size), int(hidden_size)
        small = 0.1 if scale is None else scale
        W = rng.normal(0.0, scale or 1 / np.sqrt(H), (4 * H, H))
        U = rng.normal(0.0, scale or 1 / np.sqrt(D), (4 * H, D))
        b = rng.normal(0.0, small, 4 * H)
        b[H:2 * H] += forget_bias
        peeps = [rng.normal(0.0, small, H) for _ in range(3)] if peepholes else []
        return cls(W, U, b, *peeps).astype(dtype)


def lstm_step(params: LSTMParams, h_prev, s_prev, x_t, return_gates: bool = False):
    """One LSTM step.  h_prev, s_prev: (B, H); x_t: (B, D)  ->  h_t, s_t: (B, H).

    With ``return_gates=True`` also returns ``{"i", "f", "g", "o"}``, each (B, H).
    """
    h_prev, s_prev, x_t = np.asarray(h_prev), np.asarray(s_prev), np.asarray(x_t)
    H = params.hidden_size
    _check_batch("h_prev", h_prev, 2, H, "H")
    _check_batch("s_prev", s_prev, 2, H, "H")
    _check_batch("x_t", x_t, 2, params.input_size, "D")
    a = h_prev @ params.W.T + x_t @ params.U.T + params.b  # (batch, 4 * hidden): all four pre-activations
    a_i, a_f, a_g, a_o = (a[:, k * H:(k + 1) * H] for k in range(4))  # (batch, hidden) each
    if params.peepholes:
        a_i = a_i + params.p_i * s_prev  # i and f peek at the old cell state
        a_f = a_f + params.p_f * s_prev
    i, f, g = sigmoid(a_i), sigmoid(a_f), np.tanh(a_g)
    s = f * s_prev + i * g  # (batch, hidden): keep part of the old content, add part of the new
    if params.peepholes:
        a_o = a_o + params.p_o * s  # o peeks at the new cell state
    o = sigmoid(a_o)
    h = o * np.tanh(s)  # (batch, hidden)
    if return_gates:
        return h, s, {"i": i, "f": f, "g": g, "o": o}
    return h, s


def lstm_forward(params: LSTMParams, xs, h0=None, s0=None):
    """Run an LSTM over a batch of sequences.

    xs: (B, T, D); h0, s0: (B, H) or None (zeros)  ->  ``(hs, ss)``, each (B, T, H):
    the hidden states h_1..h_T and the cell states s_1..s_T.  ``hs[:, -1]`` and
    ``ss[:, -1]`` are what ``keras.layers.LSTM(return_state=True)`` returns as ``h`` and ``c``.
    """
    xs = np.asarray(xs)
    _check_batch("xs", xs, 3, params.input_size, "D")
    B, T, _ = xs.shape
    H = params.hidden_size
    dtype = np.result_type(xs.dtype, params.dtype)
    h, s = _initial("h0", h0, B, H, dtype), _initial("s0", s0, B, H, dtype)
    hs = np.empty((B, T, H), dtype=dtype)  # (batch, time, hidden)
    ss = np.empty((B, T, H), dtype=dtype)  # (batch, time, hidden)
    for t in range(T):
        h, s = lstm_step(params, h, s, xs[:, t])
        hs[:, t], ss[:, t] = h, s
    return hs, ss


# ---------------------------------------------------------------------------
# GRU (both placements of the reset gate)
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class GRUParams:
    """Parameters of a GRU layer, gates stacked in Keras's order ``z, r, n``.

    Shapes (equation orientation)::

        W      (3H, H)   [W_z; W_r; W_n]
        U      (3H, D)   [U_z; U_r; U_n]
        b      (3H,)     input-side biases [b_z, b_r, b_n]
        b_rec  (3H,)     recurrent-side biases b' (reset_after=True only; None means zeros)
        reset_after      True: Keras's default / cuDNN form; False: the published (v3) form
    """

    W: np.ndarray
    U: np.ndarray
    b: np.ndarray
    b_rec: np.ndarray | None = None
    reset_after: bool = True

    def __post_init__(self):
        self.W, self.U, self.b = _stacked(self.W, self.U, self.b, 3, "GRUParams")
        if not self.reset_after:
            if self.b_rec is not None:
                raise GatedShapeError("a GRU with reset_after=False has a single bias b; pass b_rec=None.")
        else:
            self.b_rec = np.zeros_like(self.b) if self.b_rec is None else np.asarray(self.b_rec)
            if self.b_rec.shape != self.b.shape:
                raise GatedShapeError(f"GRUParams.b_rec has shape {self.b_rec.shape}, expected {self.b.shape}.")

    @property
    def hidden_size(self) -> int:
        return self.W.shape[1]

    @property
    def input_size(self) -> int:
        return self.U.shape[1]

    @property
    def dtype(self):
        return self.W.dtype

    def arrays(self) -> tuple[np.ndarray, ...]:
        return (self.W, self.U, self.b) + ((self.b_rec,) if self.reset_after else ())

    def num_params(self) -> int:
        return sum(a.size for a in self.arrays())

    def astype(self, dtype) -> "GRUParams":
        a = [x.astype(dtype) for x in self.arrays()]
        return GRUParams(a[0], a[1], a[2], a[3] if self.reset_after else None, self.reset_after)

    def to_keras(self) -> list[np.ndarray]:
        """``[kernel (D,3H), recurrent_kernel (H,3H), bias]`` for ``keras.layers.GRUCell``:
        ``bias`` is ``(2, 3H)`` = rows ``[b, b_rec]`` when ``reset_after``, else ``(3H,)``."""
        bias = np.stack([self.b, self.b_rec]) if self.reset_after else self.b.copy()
        return [self.U.T.copy(), self.W.T.copy(), bias]

    @classmethod
    def from_keras(cls, weights) -> "GRUParams":
        """Inverse of :meth:`to_keras`; ``reset_after`` is read off the bias shape."""
        if len(weights) != 3:
            raise ValueError(f"expected [kernel, recurrent_kernel, bias], got {len(weights)} arrays.")
        kernel, recurrent_kernel, bias = (np.asarray(w) for w in weights)
        if bias.ndim == 2:  # (2, 3H): reset_after=True
            return cls(recurrent_kernel.T.copy(), kernel.T.copy(), bias[0].copy(), bias[1].copy(), True)
        return cls(recurrent_kernel.T.copy(), kernel.T.copy(), bias.copy(), None, False)

    @classmethod
    def random(cls, input_size: int, hidden_size: int, seed: int = 0, reset_after: bool = True,
               scale: float | None = None, dtype=np.float64) -> "GRUParams":
        """Random parameters, as :meth:`LSTMParams.random`."""
        if int(input_size) != input_size or input_size < 1 or int(hidden_size) != hidden_size or hidden_size < 1:
            raise ValueError(f"input_size and hidden_size must be positive integers, got {input_size}, {hidden_size}")
        rng = np.random.default_rng(seed)
        D, H = int(input_size), int(hidden_size)
        small = 0.1 if scale is None else scale
        W = rng.normal(0.0, scale or 1 / np.sqrt(H), (3 * H, H))
        U = rng.normal(0.0, scale or 1 / np.sqrt(D), (3 * H, D))
        b = rng.normal(0.0, small, 3 * H)
        b_rec = rng.normal(0.0, small, 3 * H) if reset_after else None
        return cls(W, U, b, b_rec, reset_after).astype(dtype)


def gru_step(params: GRUParams, h_prev, x_t, return_gates: bool = False):
    """One GRU step.  h_prev: (B, H); x_t: (B, D)  ->  h_t: (B, H).

    With ``return_gates=True`` also returns ``{"z", "r", "n"}``, each (B, H).
    """
    h_prev, x_t = np.asarray(h_prev), np.asarray(x_t)
    H = params.hidden_size
    _check_batch("h_prev", h_prev, 2, H, "H")
    _check_batch("x_t", x_t, 2, params.input_size, "D")
    ax = x_t @ params.U.T + params.b  # (batch, 3 * hidden): input side of z, r, n
    ax_z, ax_r, ax_n = ax[:, :H], ax[:, H:2 * H], ax[:, 2 * H:]
    W_zr, W_n = params.W[:2 * H], params.W[2 * H:]
    ah_zr = h_prev @ W_zr.T  # (batch, 2 * hidden): recurrent side of z and r
    if params.reset_after:
        ah_zr = ah_zr + params.b_rec[:2 * H]
    z = sigmoid(ax_z + ah_zr[:, :H])
    r = sigmoid(ax_r + ah_zr[:, H:])
    if params.reset_after:
        n = np.tanh(ax_n + r * (h_prev @ W_n.T + params.b_rec[2 * H:]))  # reset after the product
    else:
        n = np.tanh(ax_n + (r * h_prev) @ W_n.T)  # reset before the product (published v3 form)
    h = z * h_prev + (1.0 - z) * n  # (batch, hidden)
    if return_gates:
        return h, {"z": z, "r": r, "n": n}
    return h


def gru_forward(params: GRUParams, xs, h0=None):
    """Run a GRU over a batch of sequences.  xs: (B, T, D); h0: (B, H) or None -> hs: (B, T, H)."""
    xs = np.asarray(xs)
    _check_batch("xs", xs, 3, params.input_size, "D")
    B, T, _ = xs.shape
    H = params.hidden_size
    dtype = np.result_type(xs.dtype, params.dtype)
    h = _initial("h0", h0, B, H, dtype)
    hs = np.empty((B, T, H), dtype=dtype)  # (batch, time, hidden)
    for t in range(T):
        h = gru_step(params, h, xs[:, t])
        hs[:, t] = h
    return hs
