"""The char-rnn model: embedding -> L stacked recurrent layers -> logits.

The recurrent state is explicit: the model takes the previous states as inputs and
returns the new ones as outputs.  That one design serves every use in the book:

* training with truncated BPTT carries the state from one batch to the next
  (chapter 2's "carry the state across chunks");
* sampling feeds one character and the state back in, step after step;
* under a ``tf.distribute`` strategy each replica carries its own slice of the state.

Shapes: ``ids`` (batch, time) int32 -> ``logits`` (batch, time, vocab); each state
(batch, hidden).  An LSTM layer has two states, ``h`` and ``s`` (Keras's ``c``); a GRU or
simple RNN layer has one.

Three initialisations (``ModelConfig.init``, defined in ``charrnn_lib.config``):
``"keras"``, Keras's defaults; ``"unit_normal"``, the deck's, which draws the embedding and
the softmax weights and bias from a unit normal (``tf.random_normal``), so that the
untrained model's loss is well above ``ln K``; and ``"unit_embedding"``, the unit-normal
embedding with Keras's output layer (chapter 5 explains why it trains best of the three).  ``parameter_count`` and ``flops_per_char`` (from
``charrnn_lib.resources``) give the model's size and cost in closed form.
"""
from __future__ import annotations

import keras

from charrnn_lib.config import CELLS, INITS, ModelConfig  # noqa: F401  (re-exported: chapter 5 imports them here)
from charrnn_lib.resources import flops_per_char, gates_per_cell, parameter_count  # noqa: F401  (closed forms)

__all__ = ["CELLS", "INITS", "ModelConfig", "build_model", "flops_per_char", "gates_per_cell",
           "parameter_count", "recurrent_layers", "zero_states"]


def _recurrent_layer(config: ModelConfig, index: int, dtype=None) -> keras.layers.Layer:
    common = dict(return_sequences=True, return_state=True, name=f"{config.cell}_{index}", dtype=dtype)
    H = config.hidden_size
    if config.cell == "lstm":
        return keras.layers.LSTM(H, **common)
    if config.cell == "gru":
        return keras.layers.GRU(H, **common)
    if config.cell == "rnn":
        return keras.layers.SimpleRNN(H, **common)
    if config.cell == "mingru":
        from charrnn_lib.mingru import MinGRU  # chapter 7: gates from the input alone, a parallel scan

        return MinGRU(H, **common)
    from charrnn_lib.peephole import PeepholeLSTMCell  # chapter 3

    return keras.layers.RNN(PeepholeLSTMCell(H, dtype=dtype), **common)


def build_model(config: ModelConfig, batch_size: int | None = None,
                dtype_policy: str | None = None) -> keras.Model:
    """Functional model ``[ids, *states] -> [logits, *new_states]``.

    ``ids``: (batch, time) int32.  ``states``: ``config.num_layers * config.states_per_layer``
    tensors of shape (batch, hidden), in layer order, ``h`` before ``s`` for an LSTM.
    ``batch_size`` fixes the batch dimension (``None`` leaves it free).
    ``dtype_policy``: a Keras dtype policy for the embedding and the recurrent layers,
    e.g. ``"mixed_float16"`` (float16 arithmetic, float32 weights); the logits layer always
    computes in float32, so that the softmax and the loss keep float32's range and precision.
    The weights are float32 under every policy: a checkpoint loads into either model.
    """
    emb_init, out_kernel, out_bias = "uniform", "glorot_uniform", "zeros"  # Keras's defaults
    if config.init in ("unit_normal", "unit_embedding"):
        emb_init = keras.initializers.RandomNormal(stddev=1.0)
    if config.init == "unit_normal":
        out_kernel = keras.initializers.RandomNormal(stddev=1.0)
        out_bias = keras.initializers.RandomNormal(stddev=1.0)
    ids = keras.Input(shape=(None,), batch_size=batch_size, dtype="int32", name="ids")
    x = keras.layers.Embedding(config.vocab_size, config.embed_size, embeddings_initializer=emb_init,
                               name="embedding", dtype=dtype_policy)(ids)  # (batch, time, embed)
    state_inputs, new_states = [], []
    for layer_index in range(config.num_layers):
        names = ("h", "s")[: config.states_per_layer]
        inputs = [keras.Input(shape=(config.hidden_size,), batch_size=batch_size, name=f"layer{layer_index}_{n}")
                  for n in names]
        state_inputs += inputs
        if layer_index > 0 and config.dropout > 0:
            x = keras.layers.Dropout(config.dropout, name=f"dropout_{layer_index}", dtype=dtype_policy)(x)
        layer = _recurrent_layer(config, layer_index, dtype_policy)
        x, *states = layer(x, initial_state=inputs)  # x: (batch, time, hidden)
        new_states += states
    if config.dropout > 0:
        x = keras.layers.Dropout(config.dropout, name="dropout_out", dtype=dtype_policy)(x)
    logits = keras.layers.Dense(config.vocab_size, kernel_initializer=out_kernel, bias_initializer=out_bias,
                                name="logits", dtype="float32" if dtype_policy else None)(x)  # (batch, time, vocab)
    return keras.Model([ids, *state_inputs], [logits, *new_states], name=f"charrnn_{config.cell}")


def zero_states(config: ModelConfig, batch_size: int) -> list:
    """The initial state: zeros, one (batch, hidden) tensor per state input of the model."""
    import tensorflow as tf

    return [tf.zeros((batch_size, config.hidden_size)) for _ in range(config.num_states)]


def recurrent_layers(model) -> list:
    """The model's recurrent layers (``keras.layers.RNN`` and its subclasses), first to last."""
    return [layer for layer in model.layers if isinstance(layer, keras.layers.RNN)]
