"""The fused CPU step: loss and gradients of a batch by the fused LSTM, in row groups, under XLA.

It plugs into ``charrnn_lib.train.make_train_step`` as its ``loss_and_grads``: a function
``(x, y, states) -> (loss, grads, new_states)`` of one replica's rows, exactly what the
reference (``charrnn_lib.train.keras_loss_and_grads``) returns.
"""
from __future__ import annotations

import numpy as np

__all__ = ["fused_loss_and_grads", "row_groups", "uses_fused_step"]


def row_groups(rows: int, groups: int) -> list[tuple[int, int]]:
    """``(start, stop)`` of ``min(groups, rows)`` consecutive groups of rows that cover
    ``range(rows)``, of nearly equal sizes (the first ones a row larger when ``groups``
    does not divide ``rows``)."""
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ValueError(f"groups must be a positive integer, got {groups!r}")
    n = min(groups, rows)
    sizes = [rows // n + (i < rows % n) for i in range(n)]
    bounds = np.cumsum([0] + sizes).tolist()
    return list(zip(bounds[:-1], bounds[1:]))


def uses_fused_step(model_config, train_config) -> bool:
    """Whether training takes this path: allowed by ``train_config.fused``, an LSTM without
    dropout, float32, and no GPU (where Keras's cuDNN kernel is faster)."""
    import tensorflow as tf

    from charrnn_lib.fast.fused_lstm import supports

    return (train_config.fused and supports(model_config)
            and not train_config.mixed_precision and not tf.config.list_logical_devices("GPU"))


def fused_loss_and_grads(model, model_config, rows: int, groups: int = 2):
    """``loss_and_grads(x, y, states) -> (loss, grads, new_states)`` for ``rows`` rows.

    ``x``, ``y``: (rows, T) int32; ``states``: list of (rows, H).  ``loss`` is the mean
    cross-entropy of the rows (nats), ``grads`` its gradients for
    ``model.trainable_variables`` (dense tensors), ``new_states`` the states after the
    batch.  The rows are split into ``groups`` groups (``row_groups``), each computed by
    its own XLA-compiled function with the share of the mean its rows make up; the
    shares and their gradients add up to the whole.  The rows never interact, so the
    groups are independent and run at the same time: a recurrence is a chain of small
    products, each waiting for the one before, and one chain leaves a core idle much of
    the time; two chains fill it.  The result is the same up to the order of float32
    additions.
    """
    import tensorflow as tf

    from charrnn_lib.fast.fused_lstm import stacked_lstm_logits

    variables = model.trainable_variables
    bounds = row_groups(rows, groups)

    def group_loss_and_grads(x, y, *states, share):
        with tf.GradientTape() as tape:
            logits, new_states = stacked_lstm_logits(model, model_config, x, list(states))  # (b, T, K)
            losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)  # (b, T)
            loss = tf.reduce_mean(losses) * share               # these rows' share of the mean
        grads = [tf.convert_to_tensor(g) for g in tape.gradient(loss, variables)]  # dense
        return loss, grads, new_states

    # XLA fuses each iteration's elementwise work and removes most per-operation overhead.
    # Each group gets a compiled function of its own: two calls of one compiled function do
    # not overlap, two functions do.
    parts = [tf.function(lambda x, y, *s, share=(b - a) / rows: group_loss_and_grads(x, y, *s, share=share),
                         jit_compile=True)
             for a, b in bounds]

    def loss_and_grads(x, y, states):
        results = [part(x[a:b], y[a:b], *[s[a:b] for s in states])
                   for part, (a, b) in zip(parts, bounds)]
        losses, group_grads, group_states = zip(*results)
        loss = tf.add_n(list(losses))
        grads = [tf.add_n(list(g)) for g in zip(*group_grads)]
        new_states = [tf.concat(list(s), axis=0) for s in zip(*group_states)]  # rows in order
        return loss, grads, new_states

    return loss_and_grads
