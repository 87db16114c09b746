"""The simple (Elman) recurrent network, forward pass only, in plain NumPy.

One sequence, column vectors, as in the book's equations::

    a_t = W h_{t-1} + U x_t + b          pre-activation           (H,)
    h_t = tanh(a_t)                       hidden state             (H,)
    o_t = V h_t + c                       output logits            (K,)
    y_t = sigmoid(o_t) or softmax(o_t)    output                   (K,)

The same parameters ``W, U, b, V, c`` are used at every time step: that is *parameter
sharing*, and it is why the number of parameters does not depend on the length ``T``.

Code works on a batch of ``B`` sequences at once, one sequence per row (row vectors), so
the same equation reads ``h_t = tanh(h_prev @ W.T + x_t @ U.T + b)`` with ``h_prev`` of
shape ``(B, H)`` and ``x_t`` of shape ``(B, D)``.  Whole sequences are batch-major,
``(B, T, D)``, as in Keras.

Parameters are stored in the orientation of the equations (``W`` is ``(H, H)``, ``U`` is
``(H, D)``, ``V`` is ``(K, H)``).  Keras stores the transposes; :func:`to_keras` and
:func:`from_keras` convert.  The backward pass (BPTT) lives in ``charrnn_lib.bptt``.

This module imports NumPy only.
"""
from __future__ import annotations

import dataclasses

import numpy as np


class RNNShapeError(ValueError):
    """An array given to the RNN has the wrong shape; the message says which and why."""


# ---------------------------------------------------------------------------
# Activations
# ---------------------------------------------------------------------------


def sigmoid(z):
    """Logistic sigmoid ``1 / (1 + exp(-z))``, elementwise, without overflow warnings.

    Values lie in (0, 1): read each output unit as an independent yes/no probability.
    """
    z = np.asarray(z)
    dtype = z.dtype if np.issubdtype(z.dtype, np.floating) else np.float64
    z = z.astype(dtype, copy=False)
    # exp of a non-positive number never overflows: split on the sign of z.
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(dtype, copy=False)


def sigmoid_derivative(z):
    """d sigmoid(z) / dz = sigmoid(z) * (1 - sigmoid(z)); its maximum is 1/4, at z = 0."""
    s = sigmoid(z)
    return s * (1.0 - s)


def dtanh(a):
    """d tanh(a) / da = 1 - tanh(a)**2, elementwise (derivative w.r.t. the pre-activation).

    Its maximum is 1, at a = 0.  Note the argument is the pre-activation ``a``; if you
    already hold ``h = tanh(a)``, the same number is ``1 - h**2``.
    """
    t = np.tanh(a)
    return 1.0 - t * t


def softmax(z, axis: int = -1):
    """Softmax along ``axis``: ``exp(z) / sum(exp(z))``, numerically stable.

    Subtracting the maximum first changes nothing mathematically (softmax is invariant to
    adding a constant to every logit) but keeps ``exp`` from overflowing.  Values are
    positive and sum to 1 along ``axis``: one distribution over K mutually exclusive classes.
    """
    z = np.asarray(z)
    if not np.issubdtype(z.dtype, np.floating):
        z = z.astype(np.float64)
    shifted = z - np.max(z, axis=axis, keepdims=True)
    e = np.exp(shifted)
    return e / np.sum(e, axis=axis, keepdims=True)


# ---------------------------------------------------------------------------
# Parameters
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class RNNParams:
    """The five parameter arrays of a simple RNN with an output layer.

    Shapes (equation orientation, not Keras's)::

        W  (H, H)   hidden -> hidden (recurrent)
        U  (H, D)   input  -> hidden
        b  (H,)     hidden bias
        V  (K, H)   hidden -> output
        c  (K,)     output bias
    """

    W: np.ndarray
    U: np.ndarray
    b: np.ndarray
    V: np.ndarray
    c: np.ndarray

    def __post_init__(self):
        self.W, self.U, self.b, self.V, self.c = (np.asarray(a) for a in (self.W, self.U, self.b, self.V, self.c))
        # Expected shapes; None marks a free size (D from U, K from V).
        H = self.W.shape[0] if self.W.ndim >= 1 else None
        K = self.V.shape[0] if self.V.ndim == 2 else None
        expected = {"W": (H, H), "U": (H, None), "b": (H,), "V": (None, H), "c": (K,)}
        for name, shape in expected.items():
            got = getattr(self, name).shape
            ok = len(got) == len(shape) and all(e is None or e == g for e, g in zip(shape, got))
            if not ok or H is None:
                free = {"U": "D", "V": "K"}.get(name, "?")
                dims = [free if e is None else str(e) for e in shape]
                want = "(" + ", ".join(dims) + ("," if len(dims) == 1 else "") + ")"
                raise RNNShapeError(
                    f"RNNParams.{name} has shape {got}, expected {want} "
                    f"(W (H,H), U (H,D), b (H,), V (K,H), c (K,); got W {self.W.shape}, "
                    f"U {self.U.shape}, b {self.b.shape}, V {self.V.shape}, c {self.c.shape}). "
                    "If your weights come from Keras, convert them with from_keras()."
                )

    # sizes -----------------------------------------------------------------
    @property
    def input_size(self) -> int:
        """D, the size of one input vector."""
        return self.U.shape[1]

    @property
    def hidden_size(self) -> int:
        """H, the number of hidden units."""
        return self.W.shape[0]

    @property
    def output_size(self) -> int:
        """K, the size of one output vector."""
        return self.V.shape[0]

    @property
    def dtype(self):
        return self.W.dtype

    def num_params(self) -> int:
        """Total number of scalars: H*H + H*D + H + K*H + K.  No T anywhere."""
        return sum(a.size for a in self.arrays())

    def arrays(self) -> tuple[np.ndarray, ...]:
        """The arrays in a fixed order: (W, U, b, V, c)."""
        return (self.W, self.U, self.b, self.V, self.c)

    def copy(self) -> "RNNParams":
        return RNNParams(*(a.copy() for a in self.arrays()))

    def astype(self, dtype) -> "RNNParams":
        return RNNParams(*(a.astype(dtype) for a in self.arrays()))

    @classmethod
    def random(
        cls,
        input_size: int,
        hidden_size: int,
        output_size: int,
        seed: int = 0,
        scale: float | None = None,
        dtype=np.float64,
    ) -> "RNNParams":
        """Random parameters: normal entries with standard deviation ``1/sqrt(fan_in)``.

        ``fan_in`` is H for ``W`` and ``V``, D for ``U``; with ``scale`` given, every
        matrix uses that standard deviation instead.  Biases are small normals (std 0.1,
        or ``scale``) so that tests exercise them.  Deterministic for a given ``seed``.
        """
        for name, n in (("input_size", input_size), ("hidden_size", hidden_size), ("output_size", output_size)):
            if int(n) != n or n < 1:
                raise ValueError(f"{name} must be a positive integer, got {n!r}")
        rng = np.random.default_rng(seed)
        D, H, K = int(input_size), int(hidden_size), int(output_size)

        def normal(shape, fan_in):
            std = scale if scale is not None else 1.0 / np.sqrt(fan_in)
            return rng.normal(0.0, std, size=shape)

        bias_std = 0.1 if scale is None else scale
        return cls(
            W=normal((H, H), H),
            U=normal((H, D), D),
            b=rng.normal(0.0, bias_std, size=H),
            V=normal((K, H), H),
            c=rng.normal(0.0, bias_std, size=K),
        ).astype(dtype)


# ---------------------------------------------------------------------------
# Forward pass
# ---------------------------------------------------------------------------


def _check_batch(name: str, arr: np.ndarray, ndim: int, last: int, what: str) -> None:
    if arr.ndim != ndim:
        layout = "(B, T, D)" if ndim == 3 else "(B, H)" if what == "H" else "(B, D)"
        raise RNNShapeError(
            f"{name} must have {ndim} dimensions {layout}, got shape {arr.shape}. "
            "For a single sequence add a batch axis: x[None]."
        )
    if arr.shape[-1] != last:
        raise RNNShapeError(f"{name} has last dimension {arr.shape[-1]}, but the parameters expect {what} = {last}.")


def rnn_step(params: RNNParams, h_prev, x_t):
    """One time step: ``h_t = tanh(h_prev @ W.T + x_t @ U.T + b)``.

    h_prev: (B, H), x_t: (B, D)  ->  h_t: (B, H)
    """
    h_prev, x_t = np.asarray(h_prev), np.asarray(x_t)
    _check_batch("h_prev", h_prev, 2, params.hidden_size, "H")
    _check_batch("x_t", x_t, 2, params.input_size, "D")
    a_t = h_prev @ params.W.T + x_t @ params.U.T + params.b  # (B, H)
    return np.tanh(a_t)


def rnn_forward(params: RNNParams, xs, h0=None):
    """Run the recurrence over a whole batch of sequences.

    xs: (B, T, D); h0: (B, H) or None (zeros)  ->  hs: (B, T, H), the states h_1 .. h_T.
    ``hs[:, -1]`` is the last state h_T (what a Keras ``SimpleRNN`` returns without
    ``return_sequences``).
    """
    xs = np.asarray(xs)
    _check_batch("xs", xs, 3, params.input_size, "D")
    B, T, _ = xs.shape
    H = params.hidden_size
    dtype = np.result_type(xs.dtype, params.dtype)
    if h0 is None:
        h = np.zeros((B, H), dtype=dtype)  # (batch, hidden)
    else:
        h = np.asarray(h0)
        _check_batch("h0", h, 2, H, "H")
        if h.shape[0] != B:
            raise RNNShapeError(f"h0 has batch size {h.shape[0]} but xs has {B}; give one initial state per sequence.")
    hs = np.empty((B, T, H), dtype=dtype)  # (batch, time, hidden)
    for t in range(T):
        h = rnn_step(params, h, xs[:, t])  # (batch, hidden)
        hs[:, t] = h
    return hs


def birnn_forward(forward: RNNParams, backward: RNNParams, xs, merge_mode: str = "concat"):
    """A bidirectional recurrent layer: ``forward`` reads x_1 .. x_T, ``backward`` reads
    x_T .. x_1, and the two states of each step t are merged.

    xs: (B, T, D)  ->  (B, T, 2H) for ``merge_mode="concat"`` (forward state first, as
    ``keras.layers.Bidirectional``), (B, T, H) for ``"sum"``.  Both directions start from
    zeros.  Step t of the result depends on the whole sequence: the forward half on
    x_1 .. x_t, the backward half on x_t .. x_T.  Only W, U, b of the two parameter sets
    are used (the output layer, if any, comes after the merge).
    """
    if merge_mode not in ("concat", "sum"):
        raise ValueError(f'merge_mode must be "concat" or "sum", got {merge_mode!r}.')
    if forward.hidden_size != backward.hidden_size and merge_mode == "sum":
        raise RNNShapeError(
            f"merge_mode='sum' needs equal hidden sizes, got {forward.hidden_size} and {backward.hidden_size}."
        )
    xs = np.asarray(xs)
    h_fwd = rnn_forward(forward, xs)  # (B, T, H): h_t from x_1 .. x_t
    h_bwd = rnn_forward(backward, xs[:, ::-1])[:, ::-1]  # (B, T, H): step t from x_T .. x_t, re-aligned
    if merge_mode == "sum":
        return h_fwd + h_bwd
    return np.concatenate([h_fwd, h_bwd], axis=-1)


def rnn_logits(params: RNNParams, hs):
    """Output pre-activations ``o_t = V h_t + c`` for every step: hs (B, T, H) -> (B, T, K)."""
    hs = np.asarray(hs)
    if hs.shape[-1] != params.hidden_size:
        raise RNNShapeError(f"hs has last dimension {hs.shape[-1]}, expected H = {params.hidden_size}.")
    return hs @ params.V.T + params.c  # (batch, time, output)


def rnn_outputs(params: RNNParams, hs, activation: str = "sigmoid"):
    """Outputs ``y_t`` for every step: hs (B, T, H) -> (B, T, K).

    ``activation="sigmoid"``: K independent yes/no probabilities (the deck's output layer);
    ``activation="softmax"``: one distribution over K exclusive classes (char-rnn).
    """
    logits = rnn_logits(params, hs)
    if activation == "sigmoid":
        return sigmoid(logits)
    if activation == "softmax":
        return softmax(logits, axis=-1)
    raise ValueError(f"activation must be 'sigmoid' or 'softmax', got {activation!r}")


# ---------------------------------------------------------------------------
# Keras layout
# ---------------------------------------------------------------------------


def to_keras(params: RNNParams) -> dict:
    """Weights in Keras's layout, ready for ``layer.set_weights``.

    Returns ``{"simple_rnn": [kernel (D,H) = U.T, recurrent_kernel (H,H) = W.T, bias (H,)],
    "dense": [kernel (H,K) = V.T, bias (K,)]}``.
    """
    return {
        "simple_rnn": [params.U.T.copy(), params.W.T.copy(), params.b.copy()],
        "dense": [params.V.T.copy(), params.c.copy()],
    }


def from_keras(simple_rnn_weights, dense_weights) -> RNNParams:
    """Build :class:`RNNParams` from ``SimpleRNN.get_weights()`` and ``Dense.get_weights()``.

    simple_rnn_weights: [kernel (D,H), recurrent_kernel (H,H), bias (H,)]
    dense_weights:      [kernel (H,K), bias (K,)]
    """
    if len(simple_rnn_weights) != 3:
        raise ValueError(
            f"simple_rnn_weights must be [kernel, recurrent_kernel, bias], got {len(simple_rnn_weights)} arrays "
            "(was the SimpleRNN built with use_bias=False? Append a zero bias)."
        )
    if len(dense_weights) != 2:
        raise ValueError(f"dense_weights must be [kernel, bias], got {len(dense_weights)} arrays.")
    kernel, recurrent_kernel, bias = (np.asarray(a) for a in simple_rnn_weights)
    dense_kernel, dense_bias = (np.asarray(a) for a in dense_weights)
    return RNNParams(
        W=recurrent_kernel.T.copy(),  # (H, H)
        U=kernel.T.copy(),  # (H, D)
        b=bias.copy(),  # (H,)
        V=dense_kernel.T.copy(),  # (K, H)
        c=dense_bias.copy(),  # (K,)
    )
