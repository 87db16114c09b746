"""A peephole LSTM cell for Keras 3.

TensorFlow 1 offered ``tf.contrib.rnn.LSTMCell(num_units, use_peepholes=True)``; Keras 2
had ``tf.keras.experimental.PeepholeLSTMCell``.  Keras 3 has neither, so here is one.  In a
peephole LSTM (Gers, Schraudolph & Schmidhuber 2002) the gates also see the cell state
``s`` through one weight per cell (a diagonal matrix), in TensorFlow 1's formulation::

    i_t = sigmoid(x_t U_i^T + h_{t-1} W_i^T + b_i + p_i * s_{t-1})
    f_t = sigmoid(x_t U_f^T + h_{t-1} W_f^T + b_f + p_f * s_{t-1})
    g_t = tanh   (x_t U_g^T + h_{t-1} W_g^T + b_g)
    s_t = f_t * s_{t-1} + i_t * g_t
    o_t = sigmoid(x_t U_o^T + h_{t-1} W_o^T + b_o + p_o * s_t)      # the *new* cell state
    h_t = o_t * tanh(s_t)

It is a *cell*: it computes one step, and ``keras.layers.RNN`` runs it over time::

    layer = keras.layers.RNN(PeepholeLSTMCell(128), return_sequences=True, return_state=True)
    hs, h_T, s_T = layer(x, initial_state=[h0, s0])   # x (batch, time, D) -> hs (batch, time, 128)

The weights follow ``keras.layers.LSTMCell`` -- ``kernel`` (D, 4H), ``recurrent_kernel``
(H, 4H), ``bias`` (4H,), gates in the order i, f, g (Keras's ``c``), o, forget-gate bias 1
at initialisation -- plus three peephole vectors (H,) that start at zero, so that a new
cell computes exactly what an ``LSTMCell`` with the same weights computes.  The state is
``[h, s]``, in that order, like the LSTM's ``[h, c]``.  Its NumPy twin is
``charrnn_lib.numpy_gated.lstm_step`` with peepholes.

The class is registered with Keras's serialisation, so models that use it save to and
load from the ``.keras`` format once this module has been imported.
"""
from __future__ import annotations

import numbers

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="charrnn_lib")
class PeepholeLSTMCell(keras.layers.Layer):
    """One step of a peephole LSTM.  inputs (B, D), states [h (B, H), s (B, H)] -> h, [h, s].

    Args:
        units: H, the number of cells.
        kernel_initializer, recurrent_initializer, bias_initializer, peephole_initializer:
            Keras initializers (defaults as ``LSTMCell``; peepholes start at zero).
        unit_forget_bias: add 1 to the forget-gate bias at initialisation (as ``LSTMCell``).
    """

    def __init__(self, units: int, kernel_initializer="glorot_uniform", recurrent_initializer="orthogonal",
                 bias_initializer="zeros", peephole_initializer="zeros", unit_forget_bias: bool = True, **kwargs):
        if isinstance(units, bool) or not isinstance(units, numbers.Integral) or units < 1:
            raise ValueError(f"units must be a positive integer (the number of cells H), got {units!r}")
        units = int(units)
        super().__init__(**kwargs)
        self.units = units
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.recurrent_initializer = keras.initializers.get(recurrent_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.peephole_initializer = keras.initializers.get(peephole_initializer)
        self.unit_forget_bias = unit_forget_bias
        self.state_size = [units, units]  # [h, s], like LSTMCell's [h, c]
        self.output_size = units

    def build(self, input_shape):
        D, H = input_shape[-1], self.units
        if D is None:
            raise ValueError("PeepholeLSTMCell needs the input feature size (the last input dimension) to be known.")
        self.kernel = self.add_weight(shape=(D, 4 * H), initializer=self.kernel_initializer, name="kernel")
        self.recurrent_kernel = self.add_weight(shape=(H, 4 * H), initializer=self.recurrent_initializer,
                                                name="recurrent_kernel")

        def bias_init(shape, dtype=None):
            b = self.bias_initializer(shape, dtype=dtype)
            if self.unit_forget_bias:  # b_f += 1: start out remembering (Gers et al. 2000)
                b = b + ops.concatenate([ops.zeros((H,), dtype), ops.ones((H,), dtype), ops.zeros((2 * H,), dtype)])
            return b

        self.bias = self.add_weight(shape=(4 * H,), initializer=bias_init, name="bias")
        self.p_i = self.add_weight(shape=(H,), initializer=self.peephole_initializer, name="input_peephole")
        self.p_f = self.add_weight(shape=(H,), initializer=self.peephole_initializer, name="forget_peephole")
        self.p_o = self.add_weight(shape=(H,), initializer=self.peephole_initializer, name="output_peephole")

    def call(self, inputs, states, training=None):
        h_prev, s_prev = states[0], states[1]  # (batch, hidden) each
        a = ops.matmul(inputs, self.kernel) + ops.matmul(h_prev, self.recurrent_kernel) + self.bias  # (batch, 4H)
        a_i, a_f, a_g, a_o = ops.split(a, 4, axis=-1)  # (batch, hidden) each
        i = ops.sigmoid(a_i + self.p_i * s_prev)
        f = ops.sigmoid(a_f + self.p_f * s_prev)
        s = f * s_prev + i * ops.tanh(a_g)  # (batch, hidden)
        o = ops.sigmoid(a_o + self.p_o * s)
        h = o * ops.tanh(s)  # (batch, hidden)
        return h, [h, s]

    def get_initial_state(self, batch_size=None):
        """Zeros ``[h, s]``, each (batch_size, H) -- Keras 3's signature (no ``inputs``)."""
        return [ops.zeros((batch_size, d), dtype=self.compute_dtype) for d in self.state_size]

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "recurrent_initializer": keras.initializers.serialize(self.recurrent_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            "peephole_initializer": keras.initializers.serialize(self.peephole_initializer),
            "unit_forget_bias": self.unit_forget_bias,
        }
