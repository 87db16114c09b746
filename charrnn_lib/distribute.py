"""Scaling up: the devices, strategies and row bookkeeping that let training run anywhere.

TensorFlow's ``tf.distribute`` engine runs the same Python training step under a
*strategy*.  The default strategy is one device.  ``MirroredStrategy`` keeps one copy
(a *replica*) of every variable on each of several devices -- the GPUs of a machine, or,
for testing, logical devices carved out of one CPU by ``split_cpu`` -- gives each replica
a slice of the global batch, and sums the gradients across replicas (an *all-reduce*)
so that every copy takes the same update.  ``TPUStrategy`` does the same on TPU cores.
This is data parallelism: the batch is split, the model is not.

char-rnn adds one twist: the recurrent state.  ``make_batches`` lays the corpus out so
that row ``r`` of batch ``b + 1`` continues row ``r`` of batch ``b``, and training carries
the state of each row from one batch to the next.  With ``R`` replicas and a global batch
of ``B`` rows, replica ``i`` always receives rows ``i * B/R`` to ``(i + 1) * B/R - 1``
(``split_rows``), so the state each replica returns belongs to exactly the rows it will
receive next; ``gather_rows`` puts the slices back together in row order, which is what a
checkpoint stores, so a run saved under one strategy resumes under another.

The step itself is ``charrnn_lib.train.make_train_step`` (this module does not import it):
each replica's loss is the mean over its ``B/R`` rows divided by ``R`` (what ``tf.nn.compute_average_loss`` does), so that
the replicas' gradients *sum* to the gradient of the mean over all ``B`` rows -- the number
one device computes.  Clipping by global norm needs the norm of that sum, so the step
all-reduces the gradients first, scales each replica's own by the common factor and lets
the optimizer sum them (clipping each replica's gradient by its own norm would be a
different rule, one that changes with the number of replicas).

Dropout under a multi-replica strategy: every replica holds a copy of each dropout layer's
random-number state, the copies start equal and advance together, so the replicas draw the
same mask pattern for their different rows.  Training is still correct, and since the
copies stay equal the one a checkpoint saves is every replica's; but it is not the
one-device run, which draws one mask for all ``B`` rows.  The equivalence tests therefore
use models without dropout.

Also here: the cuDNN eligibility check of a built model (``cudnn_blockers``).  The named
recipes are ``charrnn_lib.config.PRESETS``; throughput is measured by ``charrnn_lib.bench``.
"""
from __future__ import annotations

from typing import Sequence

from charrnn_lib.config import STRATEGIES

__all__ = [
    "DevicesAlreadyInitializedError",
    "cudnn_blockers",
    "gather_rows",
    "make_strategy",
    "per_replica_batch_size",
    "split_cpu",
    "split_rows",
]


class DevicesAlreadyInitializedError(RuntimeError):
    """TensorFlow's devices were set up before ``split_cpu`` could change them."""


# --------------------------------------------------------------------------- devices


def split_cpu(n: int) -> list[str]:
    """Split the first physical CPU into ``n`` logical devices; return their names.

    Must run before anything initialises TensorFlow's devices (creating a tensor, a
    model or a strategy does): call it first thing in a script, test or notebook.
    Calling it again with the same ``n`` is harmless.  The logical devices share the
    same cores, so this is for *testing* multi-device code, not for speed.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * n)
    except RuntimeError:
        current = tf.config.list_logical_devices("CPU")
        if len(current) == n:  # already split this way
            return [d.name for d in current]
        raise DevicesAlreadyInitializedError(
            f"TensorFlow's devices are already initialised ({len(current)} logical CPU "
            f"device(s)), so the CPU can no longer be split into {n}. Call split_cpu({n}) "
            "before any other TensorFlow work -- first thing in the script or notebook, "
            "or in a fresh subprocess."
        ) from None
    return [d.name for d in tf.config.list_logical_devices("CPU")]


def make_strategy(name: str = "auto", devices: Sequence[str] | None = None):
    """A ``tf.distribute.Strategy`` by name.

    ``"default"``: the default strategy (one device; ``devices``, if given, must name one
    device and gives a ``OneDeviceStrategy`` on it).  ``"mirrored"``: ``MirroredStrategy``
    on ``devices`` (default: every GPU; without GPUs, every logical CPU device -- one
    unless ``split_cpu`` made more).  ``"auto"``: mirrored when ``devices`` names several or
    the machine has more than one GPU, else default.  For TPUs build
    ``tf.distribute.TPUStrategy`` yourself and pass it to ``train``: the training code
    only uses the ``Strategy`` interface.

    Asked twice for the same mirrored devices, it returns the same strategy object: two
    ``MirroredStrategy`` objects over the same devices in one process number their
    collective operations independently, and their all-reduces can then be paired up
    wrongly ("Shape mismatch in the collective instance").
    """
    if name not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {name!r}")
    import tensorflow as tf

    devices = list(devices) if devices is not None else None
    if name == "auto":
        many = len(devices) > 1 if devices else len(tf.config.list_logical_devices("GPU")) > 1
        name = "mirrored" if many else "default"
    if name == "mirrored":
        if devices is None:
            gpus = tf.config.list_logical_devices("GPU")
            devices = [d.name for d in gpus or tf.config.list_logical_devices("CPU")]  # see split_cpu
        key = tuple(tf.DeviceSpec.from_string(d).to_string() for d in devices)
        if key not in _MIRRORED:
            _MIRRORED[key] = tf.distribute.MirroredStrategy(devices)
        return _MIRRORED[key]
    if devices:
        if len(devices) != 1:
            raise ValueError(f"the default strategy runs on one device; got {devices}. "
                             "Use strategy='mirrored' for several.")
        return tf.distribute.OneDeviceStrategy(devices[0])
    return tf.distribute.get_strategy()


_MIRRORED: dict = {}  # device names -> the MirroredStrategy over them (see make_strategy)


# --------------------------------------------------------------------------- rows and replicas


def per_replica_batch_size(strategy, global_batch_size: int) -> int:
    """Rows per replica, ``B / R``; a clear error when ``B`` does not divide evenly."""
    replicas = strategy.num_replicas_in_sync
    if global_batch_size % replicas:
        raise ValueError(
            f"batch_size={global_batch_size} does not split evenly over {replicas} replicas; "
            f"use a multiple of {replicas}, e.g. {replicas * max(1, global_batch_size // replicas)}."
        )
    return global_batch_size // replicas


def split_rows(strategy, values):
    """Distribute arrays (or a list of them) by rows: replica ``i`` gets rows
    ``i*b : (i+1)*b`` of each, ``b = B / R``.  Every array is ``(B, ...)``.

    The same rows go to the same replica every time, which is what carrying the
    recurrent state from batch to batch needs.  Under the default strategy the values
    come back unchanged (as tensors).
    """
    import tensorflow as tf

    single = not isinstance(values, (list, tuple))
    items = [values] if single else list(values)
    if not items:              # no states to carry (a model without a recurrent state)
        return []
    b = per_replica_batch_size(strategy, int(items[0].shape[0]))

    try:  # one device per replica (Mirrored, OneDevice, TPU); the default strategy has none
        devices = strategy.extended.worker_devices
    except RuntimeError:
        devices = ()
    if len(devices) != strategy.num_replicas_in_sync:
        devices = ()

    def rows_of_replica(context):  # called once per replica
        i = context.replica_id_in_sync_group
        with tf.device(devices[i] if devices else None):  # copy the slice to its replica's device
            return [tf.identity(v[i * b:(i + 1) * b]) for v in items]

    parts = strategy.experimental_distribute_values_from_function(rows_of_replica)  # [PerReplica]
    return parts[0] if single else parts


def gather_rows(strategy, values):
    """The inverse of ``split_rows``: concatenate the replicas' slices in row order.

    Takes one distributed value (or a list of them) and returns ``(B, ...)`` tensors.
    """
    import tensorflow as tf

    single = not isinstance(values, (list, tuple))
    items = [values] if single else list(values)
    out = [tf.concat([tf.convert_to_tensor(p) for p in strategy.experimental_local_results(v)], axis=0)
           for v in items]
    return out[0] if single else out


# --------------------------------------------------------------------------- cuDNN


def cudnn_blockers(model) -> dict[str, list[str]]:
    """For each recurrent layer of ``model``, what keeps it off the cuDNN kernel.

    An empty list means the layer meets Keras's conditions for the fused cuDNN kernel
    (used automatically when a GPU is visible): an ``LSTM`` or ``GRU`` layer with tanh
    activation, sigmoid recurrent activation, no recurrent dropout, not unrolled, with
    bias, ``use_cudnn`` not False, and for a GRU ``reset_after=True``.  A ``SimpleRNN``
    or a generic ``keras.layers.RNN`` around a custom cell (the peephole LSTM) has no
    cuDNN kernel at all.
    """
    import keras

    from charrnn_lib.model import recurrent_layers

    report = {}
    for layer in recurrent_layers(model):
        reasons = []
        if not isinstance(layer, (keras.layers.LSTM, keras.layers.GRU)):
            reasons.append(f"{type(layer).__name__} of {type(layer.cell).__name__}: no cuDNN kernel")
        else:
            cell = layer.cell
            if cell.activation is not keras.activations.tanh:
                reasons.append(f"activation {cell.activation.__name__}, not tanh")
            if cell.recurrent_activation is not keras.activations.sigmoid:
                reasons.append(f"recurrent_activation {cell.recurrent_activation.__name__}, not sigmoid")
            if cell.recurrent_dropout:
                reasons.append(f"recurrent_dropout={cell.recurrent_dropout}")
            if layer.unroll:
                reasons.append("unroll=True")
            if not cell.use_bias:
                reasons.append("use_bias=False")
            if layer.use_cudnn is False:
                reasons.append("use_cudnn=False")
            if isinstance(layer, keras.layers.GRU) and not cell.reset_after:
                reasons.append("reset_after=False")
        report[layer.name] = reasons
    return report
