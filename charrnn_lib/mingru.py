"""minGRU: a GRU whose gates see only the input, computed for all time steps at once.

Feng, Tung, Ahmed, Bengio & Hajimirsadeghi, "Were RNNs All We Needed?" (2024,
arXiv:2410.01201) strip the GRU down until its recurrence becomes *linear* in the state.
Per step, row vectors, ``sigma`` the logistic sigmoid::

    k_t  = x_t U_z^T + b_z              gate pre-activation          (H,)
    z_t  = sigma(k_t)                   update gate                  (H,)
    p_t  = x_t U_h^T + b_h              candidate pre-activation     (H,)
    h~_t = g(p_t)                       candidate state, > 0         (H,)
    h_t  = (1 - z_t) * h_{t-1} + z_t * h~_t

Compared with a GRU (``charrnn_lib.numpy_gated``) three things are gone: the reset gate,
the ``tanh``, and -- the point -- every ``h_{t-1}`` inside a gate or a candidate.  So

    h_t = a_t * h_{t-1} + b_t,      a_t = 1 - z_t,   b_t = z_t * h~_t,

where ``a_t`` and ``b_t`` depend on ``x_t`` alone: all of them are known *before* the loop
starts.  Unrolling the recurrence gives, with ``A_t = a_1 a_2 ... a_t`` (``A_0 = 1``),

    h_t = A_t h_0 + sum_{k=1..t} (A_t / A_k) b_k = A_t (h_0 + sum_{k=1..t} b_k / A_k),

one cumulative product and one cumulative sum over time: a *scan*.  A parallel scan
computes it in O(log T) sequential depth instead of T steps, which is what makes
training as parallel over time as a Transformer's.

Log space.  ``A_t`` shrinks geometrically and ``1 / A_k`` grows: in float64 already
``0.05 ** 250`` underflows, and ``A_t * (b_k / A_k)`` turns into ``0 * inf = nan``.  So
the scan runs on logarithms (all elementwise)::

    a*_t    = sum_{k<=t} log a_k                                 (log A_t, a cumulative sum)
    h_t     = exp(a*_t) * h_0  +  exp(a*_t + logcumsumexp_{1<=k<=t}(log b_k - a*_k)),

with ``log a_t = log(1 - z_t) = -softplus(k_t)``, ``log z_t = -softplus(-k_t)`` and
``log b_t = log z_t + log g(p_t)``; nothing is ever exponentiated until the differences
``a*_t - a*_k <= 0`` are formed.  Logarithms need positive numbers, hence the paper's

    g(x) = x + 0.5   for x >= 0,        g(x) = sigma(x)   for x < 0,

continuous, increasing, always positive (in place of ``tanh``, which is not).  Both forms
here use ``g``, so that they compute the same function.

The initial state.  The paper puts ``h_0`` into the scan as a k = 0 term (``log h_0`` with
``a*_0 = 0``), which needs ``h_0 > 0``.  The first line above keeps it *outside* the
logarithm instead: ``exp(a*_t) * h_0`` is the same number (``A_t h_0``), and it never
overflows because ``a*_t <= 0``.  So any real ``h_0`` works, zeros included -- and zeros
are what this module uses by default (``MinGRUCell.get_initial_state``, the NumPy
functions' ``h0=None``), the same as every other cell of the book
(``charrnn_lib.model.zero_states``, the sampler's start).  For ``h_0 > 0`` the two
placements agree to rounding (``tests/test_mingru.py`` checks it).  Some implementations
feed ``log g(h_0)`` instead, which silently starts the parallel form from ``g(h_0)``, not
``h_0``: the two forms then disagree.

What is lost, and what is gained.  A gate that cannot see the state cannot *react* to it:
a GRU can decide to forget because of what it currently remembers, a minGRU decides from
the current input only, whatever is in memory.  Each layer is less expressive (its state
is a fixed-decay mixture of past candidates; only the next layer can make the decays
depend on earlier inputs), which one pays back with depth and width.  In return: training
runs over all T steps at once (O(log T) depth with a parallel scan, here TensorFlow's
cumulative sums), the layer has no recurrent matrices (``2 H (D + 1)`` parameters against
a GRU's ``3 H (D + H + 2)``), and generation still uses the constant-memory step
``h_t = (1 - z_t) h_{t-1} + z_t h~_t``, one character at a time.

Contents:

* NumPy float64 references: :class:`MinGRUParams`, :func:`init_params`,
  :func:`mingru_sequential` (a loop over t) and :func:`mingru_parallel` (the log-space scan);
* Keras 3: :class:`MinGRUCell` (one step, for ``keras.layers.RNN`` and for the sampler)
  and :class:`MinGRU` (a ``keras.layers.RNN`` whose whole-sequence call is the scan).

Shapes: inputs ``xs`` (B, T, D), states (B, H), outputs ``hs`` (B, T, H).  Keras stores
transposed matrices: ``kernel = [U_z^T | U_h^T]`` (D, 2H), ``bias = [b_z | b_h]`` (2H,).
"""
from __future__ import annotations

import dataclasses
import numbers

import keras
import numpy as np
import tensorflow as tf
from keras import ops

__all__ = ["MinGRU", "MinGRUCell", "MinGRUParams", "g", "init_params", "log_g", "mingru_parallel",
           "mingru_sequential"]


# ---------------------------------------------------------------------------
# NumPy references (float64)
# ---------------------------------------------------------------------------


def _softplus(x):
    return np.logaddexp(0.0, x)  # log(1 + e^x), without overflow


def _sigmoid(x):
    return np.exp(-_softplus(-x))


def g(x):
    """The paper's positive activation: ``x + 0.5`` for ``x >= 0``, ``sigma(x)`` below.  Elementwise."""
    x = np.asarray(x, dtype=np.float64)
    return np.where(x >= 0, x + 0.5, _sigmoid(x))


def log_g(x):
    """``log g(x)``, computed without forming ``g``: ``log(x + 0.5)`` or ``-softplus(-x)``."""
    x = np.asarray(x, dtype=np.float64)
    return np.where(x >= 0, np.log(np.maximum(x, 0.0) + 0.5), -_softplus(-x))


@dataclasses.dataclass
class MinGRUParams:
    """The weights of one minGRU layer, in the orientation of the equations."""

    U_z: np.ndarray  # (H, D) gate weights
    b_z: np.ndarray  # (H,)
    U_h: np.ndarray  # (H, D) candidate weights
    b_h: np.ndarray  # (H,)

    @property
    def input_size(self) -> int:
        return self.U_z.shape[1]

    @property
    def hidden_size(self) -> int:
        return self.U_z.shape[0]

    def to_keras(self) -> list[np.ndarray]:
        """``[kernel (D, 2H), bias (2H,)]``, the order of ``MinGRUCell.get_weights()``."""
        return [np.concatenate([self.U_z.T, self.U_h.T], axis=1), np.concatenate([self.b_z, self.b_h])]

    @classmethod
    def from_keras(cls, weights) -> "MinGRUParams":
        kernel, bias = (np.asarray(w, dtype=np.float64) for w in weights)
        H = kernel.shape[1] // 2
        return cls(U_z=kernel[:, :H].T.copy(), b_z=bias[:H].copy(), U_h=kernel[:, H:].T.copy(), b_h=bias[H:].copy())


def init_params(D: int, H: int, rng: np.random.Generator, scale: float = 1.0) -> MinGRUParams:
    """Random float64 weights: ``U ~ N(0, scale^2 / D)``, biases ``~ N(0, (scale / 2)^2)``."""
    return MinGRUParams(U_z=rng.normal(0.0, scale / np.sqrt(D), (H, D)), b_z=rng.normal(0.0, scale / 2, H),
                        U_h=rng.normal(0.0, scale / np.sqrt(D), (H, D)), b_h=rng.normal(0.0, scale / 2, H))


def _preactivations(params: MinGRUParams, xs):
    xs = np.asarray(xs, dtype=np.float64)  # (B, T, D)
    if xs.ndim != 3 or xs.shape[-1] != params.input_size:
        raise ValueError(f"xs must have shape (B, T, D={params.input_size}), got {xs.shape}")
    k = xs @ params.U_z.T + params.b_z  # (B, T, H) gate pre-activation
    p = xs @ params.U_h.T + params.b_h  # (B, T, H) candidate pre-activation
    return k, p


def _initial(h0, B: int, H: int) -> np.ndarray:
    if h0 is None:
        return np.zeros((B, H))  # (B, H)
    h0 = np.asarray(h0, dtype=np.float64)
    if h0.shape != (B, H):
        raise ValueError(f"h0 must have shape (B, H) = {(B, H)}, got {h0.shape}")
    return h0


def mingru_sequential(params: MinGRUParams, xs, h0=None) -> np.ndarray:
    """The recurrence, one step after the other.  xs (B, T, D), h0 (B, H) or None (zeros) -> hs (B, T, H)."""
    k, p = _preactivations(params, xs)  # (B, T, H) each
    z, one_minus_z = _sigmoid(k), _sigmoid(-k)  # sigma(-k) = 1 - sigma(k), without cancellation
    h_tilde = g(p)  # (B, T, H)
    h = _initial(h0, k.shape[0], k.shape[2])  # (B, H)
    hs = np.empty_like(k)
    for t in range(k.shape[1]):
        h = one_minus_z[:, t] * h + z[:, t] * h_tilde[:, t]  # (B, H)
        hs[:, t] = h
    return hs


def mingru_parallel(params: MinGRUParams, xs, h0=None) -> np.ndarray:
    """The same numbers from the log-space scan, with no loop over t.  Same shapes as the sequential form."""
    k, p = _preactivations(params, xs)  # (B, T, H) each
    h0 = _initial(h0, k.shape[0], k.shape[2])  # (B, H)
    log_a = -_softplus(k)  # log(1 - z_t)                      (B, T, H)
    log_b = -_softplus(-k) + log_g(p)  # log(z_t * g(p_t))      (B, T, H)
    a_star = np.cumsum(log_a, axis=1)  # a*_t = log A_t <= 0    (B, T, H)
    log_sum = np.logaddexp.accumulate(log_b - a_star, axis=1)  # log sum_{k<=t} b_k / A_k   (B, T, H)
    return np.exp(a_star) * h0[:, None, :] + np.exp(a_star + log_sum)  # (B, T, H)


# ---------------------------------------------------------------------------
# Keras 3: the cell (one step) and the layer (the whole sequence, by the scan)
# ---------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package="charrnn_lib")
class MinGRUCell(keras.layers.Layer):
    """One minGRU step.  inputs (B, D), states [h (B, H)] -> h, [h].

    ``kernel`` (D, 2H) holds ``[U_z^T | U_h^T]`` and ``bias`` (2H,) ``[b_z | b_h]``.  The cell
    runs alone (the sampler steps it one character at a time) or inside ``keras.layers.RNN``;
    :class:`MinGRU` computes the same numbers for a whole sequence at once.
    """

    def __init__(self, units: int, kernel_initializer="glorot_uniform", bias_initializer="zeros", **kwargs):
        if isinstance(units, bool) or not isinstance(units, numbers.Integral) or units < 1:
            raise ValueError(f"units must be a positive integer (the state size H), got {units!r}")
        super().__init__(**kwargs)
        self.units = int(units)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.state_size = self.units
        self.output_size = self.units

    def build(self, input_shape):
        D, H = input_shape[-1], self.units
        if D is None:
            raise ValueError("MinGRUCell needs the input feature size (the last input dimension) to be known.")
        self.kernel = self.add_weight(shape=(D, 2 * H), initializer=self.kernel_initializer, name="kernel")
        self.bias = self.add_weight(shape=(2 * H,), initializer=self.bias_initializer, name="bias")

    def preactivations(self, inputs):
        """inputs (..., D) -> gate pre-activation k (..., H), candidate pre-activation p (..., H)."""
        y = ops.matmul(inputs, self.kernel) + self.bias  # (..., 2H)
        return y[..., : self.units], y[..., self.units:]

    def call(self, inputs, states, training=None):
        h_prev = states[0] if isinstance(states, (list, tuple)) else states  # (B, H)
        k, p = self.preactivations(inputs)  # (B, H) each
        h_tilde = ops.where(p >= 0, p + 0.5, ops.sigmoid(p))  # g(p) > 0
        h = ops.sigmoid(-k) * h_prev + ops.sigmoid(k) * h_tilde  # (1 - z) h_{t-1} + z g(p)
        return h, [h]

    def get_initial_state(self, batch_size=None):
        return [ops.zeros((batch_size, self.units), dtype=self.compute_dtype)]  # zeros: see the module docstring

    def get_config(self):
        return {**super().get_config(), "units": self.units,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer)}


def _scan_log_space(k, p, h0):
    """The log-space scan in TensorFlow.  k, p (B, T, H), h0 (B, H) -> hs (B, T, H)."""
    log_a = -tf.nn.softplus(k)  # log(1 - z_t)
    log_g_p = tf.where(p >= 0, tf.math.log(tf.nn.relu(p) + 0.5), -tf.nn.softplus(-p))  # both branches finite
    log_b = -tf.nn.softplus(-k) + log_g_p  # log(z_t g(p_t))
    a_star = tf.math.cumsum(log_a, axis=1)  # (B, T, H)
    log_sum = tf.math.cumulative_logsumexp(log_b - a_star, axis=1)  # (B, T, H)
    return tf.exp(a_star) * h0[:, None, :] + tf.exp(a_star + log_sum)


@keras.saving.register_keras_serializable(package="charrnn_lib")
class MinGRU(keras.layers.RNN):
    """A minGRU layer: ``keras.layers.RNN(MinGRUCell(units))`` with the time loop replaced by the scan.

    Called like any Keras recurrent layer, e.g. ``outputs, h_T = MinGRU(H, return_sequences=True,
    return_state=True)(x, initial_state=[h0])`` with x (B, T, D), h0 (B, H) -> outputs (B, T, H),
    h_T (B, H).  No initial state means zeros.  ``layer.cell`` is the :class:`MinGRUCell` holding
    the weights, for step-by-step generation.

    The base class does the bookkeeping (default and cast initial state, ``return_sequences``,
    ``return_state``, ``stateful``); only :meth:`inner_loop`, the part that runs the cell over
    time, is replaced.  Not supported, with an error: masks, ``go_backwards``, ``unroll``.  A
    16-bit compute dtype (mixed precision) computes the scan in float32, where its logarithms
    keep their precision, and casts the result back.
    """

    def __init__(self, units: int, kernel_initializer="glorot_uniform", bias_initializer="zeros",
                 return_sequences=False, return_state=False, go_backwards=False, stateful=False, unroll=False,
                 **kwargs):
        if go_backwards or unroll:
            raise ValueError("MinGRU supports neither go_backwards nor unroll (the scan has no loop to unroll); "
                             "reverse the sequence yourself, or use keras.layers.RNN(MinGRUCell(units), ...).")
        kwargs.pop("zero_output_for_mask", None)  # in the base class's config; without masks it means nothing
        cell = MinGRUCell(units, kernel_initializer=kernel_initializer, bias_initializer=bias_initializer,
                          dtype=kwargs.get("dtype"), trainable=kwargs.get("trainable", True), name="mingru_cell")
        super().__init__(cell, return_sequences=return_sequences, return_state=return_state, stateful=stateful,
                         **kwargs)
        self.input_spec = keras.layers.InputSpec(ndim=3)
        self.supports_masking = False

    @property
    def units(self) -> int:
        return self.cell.units

    def inner_loop(self, sequences, initial_state, mask, training=False):
        """The whole sequence at once.  Returns (last_output (B, H), outputs (B, T, H), [h_T (B, H)])."""
        if mask is not None:
            raise NotImplementedError("MinGRU does not support masking (e.g. Embedding(mask_zero=True)).")
        h0 = initial_state[0] if isinstance(initial_state, (list, tuple)) else initial_state  # (B, H)
        k, p = self.cell.preactivations(sequences)  # (B, T, H) each, in the compute dtype
        dtype = "float64" if self.compute_dtype == "float64" else "float32"
        hs = _scan_log_space(*(tf.cast(v, dtype) for v in (k, p, h0)))  # (B, T, H)
        hs = ops.cast(hs, self.compute_dtype)
        last = hs[:, -1]  # (B, H)
        return last, hs, [last]

    def call(self, sequences, initial_state=None, mask=None, training=False):
        return super().call(sequences, initial_state=initial_state, mask=mask, training=training)

    def get_config(self):
        config = super().get_config()
        del config["cell"]
        for name in ("go_backwards", "unroll", "zero_output_for_mask"):
            config.pop(name, None)
        return {**config, "units": self.units,
                "kernel_initializer": keras.initializers.serialize(self.cell.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.cell.bias_initializer)}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
