"""A fused stacked LSTM for training: the same model, computed faster on a CPU.

``keras.layers.LSTM`` runs a generic loop: at every time step it multiplies the input by
the input kernel, the state by the recurrent kernel, applies the gate nonlinearities one
by one, and lets automatic differentiation record all of it.  On a GPU cuDNN replaces the
whole thing with one fused kernel; on a CPU we pay for every small operation, forward and
backward.  This module computes exactly the same function *with the model's own weights*
and rearranges the work the way chapter 2 did it by hand:

1. **Input projections leave the loop.**  The part of every gate that depends on the
   input, ``x_t @ U.T + b`` for all ``t``, is one large matrix product over the whole
   batch, done before the loop.  For the first layer it is cheaper still: an embedding
   followed by a linear map is a lookup in the table ``E @ U.T + b`` of shape (K, 4H).
2. **Only the recurrence stays in the loop**: ``z_t = zx_t + h_{t-1} @ W.T``, the gates,
   the new cell state and output.  The loop is a ``tf.while_loop``: a small graph that
   traces in a second, whatever the sequence length.
3. **The backward pass is written out** (BPTT, chapter 2) instead of being recorded: the
   loop carries only the error signals ``dh`` and ``ds``; everything that does not need
   the recurrence (the local gate derivatives) is computed for all steps at once before
   it, and the weight gradients ``dW = sum_t dz_t.T @ h_{t-1}`` become one large product
   after it.

``stacked_lstm_logits(model, config, ids, states)`` returns what ``model([ids, *states])``
returns (up to float rounding) and its gradients equal the ones automatic
differentiation computes through the Keras layers; ``tests/test_fast.py`` checks
both.  Keras orders an LSTM's four gate blocks ``i, f, g, o`` (it calls ``g`` ``c``) and
stores ``U.T``, ``W.T`` as ``kernel`` (D, 4H) and ``recurrent_kernel`` (H, 4H).

Shapes inside the loop are time-major, (time, batch, ·): ``zx[t]`` is one step.
"""
from __future__ import annotations

import tensorflow as tf


def supports(config) -> bool:
    """Whether the fused path computes this model: LSTM cells without dropout."""
    return config.cell == "lstm" and config.dropout == 0.0


@tf.custom_gradient
def lstm_recurrence(zx, h0, s0, w_t):
    """The LSTM recurrence over a whole sequence, with a hand-written backward pass.

    ``zx``: (T, B, 4H) input projections ``x_t @ U.T + b``, gate blocks i, f, g, o.
    ``h0``, ``s0``: (B, H) initial output and cell state.  ``w_t``: (H, 4H), ``W.T``
    (Keras's ``recurrent_kernel``).  Returns ``hs`` (T, B, H), the last ``h`` and ``s``.
    """
    steps = tf.shape(zx)[0]
    batch, four_h = zx.shape[1], zx.shape[2]
    hidden = four_h // 4 if four_h is not None else None
    gates_ta = tf.TensorArray(zx.dtype, size=steps, element_shape=(batch, four_h))
    cells_ta = tf.TensorArray(zx.dtype, size=steps, element_shape=(batch, hidden))
    outs_ta = tf.TensorArray(zx.dtype, size=steps, element_shape=(batch, hidden))

    def forward_step(t, h, s, gates_ta, cells_ta, outs_ta):
        z = zx[t] + tf.matmul(h, w_t)                    # (B, 4H)
        zi, zf, zg, zo = tf.split(z, 4, axis=1)
        i, f, o = tf.sigmoid(zi), tf.sigmoid(zf), tf.sigmoid(zo)
        g = tf.tanh(zg)
        s = f * s + i * g                                # (B, H) new cell state
        h = o * tf.tanh(s)                               # (B, H) new output
        gates_ta = gates_ta.write(t, tf.concat([i, f, g, o], axis=1))
        return t + 1, h, s, gates_ta, cells_ta.write(t, s), outs_ta.write(t, h)

    def not_done(t, *_):
        return t < steps

    _, h_last, s_last, gates_ta, cells_ta, outs_ta = tf.while_loop(
        not_done, forward_step, (0, h0, s0, gates_ta, cells_ta, outs_ta))
    gates, cells, outs = gates_ta.stack(), cells_ta.stack(), outs_ta.stack()  # (T, B, .)

    def backward(d_outs, d_h_last, d_s_last):
        """Gradients of (zx, h0, s0, w_t) from those of (hs, h_last, s_last)."""
        i, f, g, o = tf.split(gates, 4, axis=2)                 # each (T, B, H)
        tanh_s = tf.tanh(cells)
        s_prev = tf.concat([s0[None], cells[:-1]], axis=0)      # s_{t-1}
        # Everything that needs no recurrence, for all steps at once:
        ds_from_dh = o * (1.0 - tanh_s * tanh_s)                # ds_t/dh_t (through h = o tanh s)
        local = tf.concat([g * i * (1.0 - i),                   # dz_i / ds_t
                           s_prev * f * (1.0 - f),              # dz_f / ds_t
                           i * (1.0 - g * g),                   # dz_g / ds_t
                           tanh_s * o * (1.0 - o)], axis=2)     # dz_o / dh_t   (T, B, 4H)
        w = tf.transpose(w_t)                                   # (4H, H)
        dz_ta = tf.TensorArray(zx.dtype, size=steps, element_shape=(batch, four_h))

        def backward_step(t, dh_next, ds_next, dz_ta):
            dh = d_outs[t] + dh_next                            # (B, H) all that reaches h_t
            ds = ds_next + dh * ds_from_dh[t]                   # (B, H) all that reaches s_t
            dz = tf.concat([ds, ds, ds, dh], axis=1) * local[t]  # (B, 4H) = dL/dz_t
            return t - 1, tf.matmul(dz, w), ds * f[t], dz_ta.write(t, dz)

        def not_first(t, *_):
            return t >= 0

        _, dh0, ds0, dz_ta = tf.while_loop(
            not_first, backward_step, (steps - 1, d_h_last, d_s_last, dz_ta))
        dz = dz_ta.stack()                                      # (T, B, 4H)
        h_prev = tf.concat([h0[None], outs[:-1]], axis=0)       # (T, B, H)
        d_w_t = tf.matmul(tf.reshape(h_prev, (-1, hidden)),     # one large product:
                          tf.reshape(dz, (-1, four_h)), transpose_a=True)  # (H, 4H)
        return dz, dh0, ds0, d_w_t

    return (outs, h_last, s_last), backward


def _weights(model):
    from charrnn_lib.model import recurrent_layers

    emb = model.get_layer("embedding").embeddings
    cells = [layer.cell for layer in recurrent_layers(model)]
    dense = model.get_layer("logits")
    return emb, cells, dense


def stacked_lstm_logits(model, config, ids, states):
    """``model([ids, *states])`` computed by the fused path.

    ``ids``: (B, T) int32; ``states``: list of (B, H), ``h`` then ``s`` per layer.
    Returns ``logits`` (B, T, K) and the list of new states.
    """
    if not supports(config):
        raise ValueError(f"the fused path computes LSTM models without dropout; got cell="
                         f"{config.cell!r}, dropout={config.dropout}. Use the Keras model.")
    emb, cells, dense = _weights(model)
    hidden = config.hidden_size
    ids_tm = tf.transpose(ids)                                  # (T, B)
    steps, batch = tf.shape(ids_tm)[0], tf.shape(ids_tm)[1]
    new_states = []
    x = None
    for layer, cell in enumerate(cells):
        w_t = tf.convert_to_tensor(cell.recurrent_kernel)       # (H, 4H) = W.T
        if layer == 0:  # embedding then U: one table lookup
            table = tf.matmul(emb, cell.kernel) + cell.bias     # (K, 4H)
            zx = tf.gather(table, ids_tm)                       # (T, B, 4H)
        else:
            zx = tf.matmul(tf.reshape(x, (-1, hidden)), cell.kernel) + cell.bias
            zx = tf.reshape(zx, (steps, batch, 4 * hidden))     # (T, B, 4H)
        h0, s0 = states[2 * layer], states[2 * layer + 1]
        x, h, s = lstm_recurrence(zx, h0, s0, w_t)              # x: (T, B, H)
        new_states += [h, s]
    logits = tf.matmul(tf.reshape(x, (-1, hidden)), dense.kernel) + dense.bias
    logits = tf.reshape(logits, (steps, batch, config.vocab_size))
    return tf.transpose(logits, (1, 0, 2)), new_states          # (B, T, K)
