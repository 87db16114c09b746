"""Which network a configuration describes: build it, and run it forward over a batch.

The book trains two kinds of network through the same loop: chapter 5's char-rnn
(``charrnn_lib.model``, a ``ModelConfig``: embedding, recurrent layers, logits, with the
recurrent state as explicit inputs and outputs) and chapter 7's small Transformer
(``charrnn_lib.transformer``, a ``TransformerConfig``: ids in, logits out, no state carried
from one batch to the next).  Training, evaluation and checkpoints ask the same two
questions of either, and this module answers them in one place:

* :func:`build` -- the Keras model a configuration describes;
* :func:`forward` -- ``(logits, new_states)`` for a batch of ids and the carried states
  (for the Transformer the states are ``[]`` in and out).

Shapes: ids ``(batch, time)`` int32, logits ``(batch, time, vocab)``, each state ``(batch, hidden)``.
"""
from __future__ import annotations

from charrnn_lib.config import ModelConfig, TransformerConfig

__all__ = ["build", "carries_state", "forward"]


def carries_state(config: ModelConfig | TransformerConfig) -> bool:
    """Whether the network carries a recurrent state from one batch to the next."""
    return not isinstance(config, TransformerConfig)


def build(config: ModelConfig | TransformerConfig, batch_size: int | None = None,
          dtype_policy: str | None = None):
    """The Keras model for ``config``.

    ``batch_size`` fixes a char-rnn's batch dimension (``None``: free); ``dtype_policy``
    (e.g. ``"mixed_float16"``) is the char-rnn's compute policy.  The Transformer takes
    neither: its batch is always free and it computes in float32.
    """
    if isinstance(config, TransformerConfig):
        if dtype_policy is not None:
            raise ValueError(f"the Transformer computes in float32; got dtype_policy={dtype_policy!r}")
        from charrnn_lib.transformer import build_transformer

        return build_transformer(config)
    from charrnn_lib.model import build_model

    return build_model(config, batch_size=batch_size, dtype_policy=dtype_policy)


def forward(model, x, states, training: bool):
    """``(logits, new_states)``: ``model`` on ids ``x`` (b, T) from ``states`` (a list, ``[]``
    for a network without a carried state).  The logits are in the model's compute dtype."""
    if not states:                                 # the Transformer: ids -> logits
        return model(x, training=training), []    # (b, T, K)
    logits, *new_states = model([x, *states], training=training)  # (b, T, K), [(b, H)] * n
    return logits, new_states
