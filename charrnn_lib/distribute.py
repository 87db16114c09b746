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

The step itself is ``charrnn_lib.train.make_train_step``: each replica's loss is the mean
over its ``B/R`` rows divided by ``R`` (what ``tf.nn.compute_average_loss`` does), so that
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

Also here: the cuDNN eligibility check of a built model (``cudnn_blockers``), mixed
precision (``mixed_precision_optimizer``), a throughput probe (``measure_throughput``) and
named model sizes (``PRESETS``).
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

__all__ = [
    "DevicesAlreadyInitializedError",
    "PRESETS",
    "Preset",
    "MEASURED_ON",
    "STRATEGIES",
    "cudnn_blockers",
    "gather_rows",
    "make_strategy",
    "measure_throughput",
    "mixed_precision_optimizer",
    "per_replica_batch_size",
    "preset_config",
    "split_cpu",
    "split_rows",
]

STRATEGIES = ("auto", "default", "mirrored")


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


# --------------------------------------------------------------------------- fast path and precision


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

    report = {}
    for layer in model.layers:
        if not isinstance(layer, keras.layers.RNN):
            continue
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


def mixed_precision_optimizer(optimizer):
    """Wrap an optimizer for ``mixed_float16`` training: dynamic loss scaling.

    float16 gradients of small losses underflow to zero; the wrapper multiplies the loss
    by a large scale before the backward pass, divides the gradient by it afterwards,
    halves the scale (and skips the step) when a gradient overflows and doubles it after
    a run of good steps.  bfloat16 has float32's exponent range and needs none of this.
    """
    import keras

    return keras.optimizers.LossScaleOptimizer(optimizer)


# --------------------------------------------------------------------------- speed

def measure_throughput(config, batch_size: int, seq_length: int, steps: int = 3, strategy=None,
                       mixed_precision: bool = False) -> float:
    """Training speed of ``config`` on this machine, in characters per second.

    Builds the model (under ``strategy``, default: the current one), compiles the step
    with one warm-up call, then times ``steps`` steps on random ids and returns
    ``steps * B * T / seconds``.  A rough figure: it includes neither data loading nor
    validation, and it varies with whatever else the machine is doing.
    """
    import time

    import numpy as np
    import tensorflow as tf

    from charrnn_lib.model import zero_states
    from charrnn_lib.train import TrainConfig, build_for_training, make_train_step

    strategy = strategy or tf.distribute.get_strategy()
    train_config = TrainConfig(batch_size=batch_size, seq_length=seq_length, mixed_precision=mixed_precision)
    model, optimizer = build_for_training(config, train_config, strategy)
    step = make_train_step(model, optimizer, config, train_config, strategy)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, config.vocab_size, (batch_size, seq_length + 1)).astype(np.int32)
    x, y = split_rows(strategy, [ids[:, :-1], ids[:, 1:]])
    states = split_rows(strategy, zero_states(config, batch_size))
    lr = tf.constant(train_config.learning_rate, tf.float32)
    loss, _, states = step(x, y, lr, states)  # trace and compile
    float(loss)
    start = time.perf_counter()
    for _ in range(steps):
        loss, _, states = step(x, y, lr, states)
    float(loss)  # wait for the last step
    return steps * batch_size * seq_length / (time.perf_counter() - start)


# --------------------------------------------------------------------------- presets


@dataclasses.dataclass(frozen=True)
class Preset:
    """A named model size, with the batch shape it was meant to train with, and what it
    reached when measured (``measured``: see ``MEASURED_ON``)."""

    hidden_size: int
    num_layers: int
    dropout: float = 0.0
    batch_size: int = 50
    seq_length: int = 50
    note: str = ""
    measured: str = ""


# Where the figures in ``Preset.measured`` come from: each preset trained with the command
# line's defaults (``python -m charrnn_lib train --corpus shakespeare --preset NAME``: init
# "unit_embedding", Adam 0.002 constant, clipping 5, 2 epochs, last 5 % held out), and its
# training speed from ``measure_throughput`` (with the fused step's two row groups and
# ``charrnn_lib.memory.keep_freed_memory``) -- on this one machine.
MEASURED_ON = ("a 2-core AMD EPYC virtual machine, no GPU, TensorFlow 2.21 / Keras 3.15 (December 2026), "
               "load average about 1.3 while the speeds were measured")

PRESETS = {
    "deck": Preset(128, 2, 0.0, 50, 50, "the deck's 2 x 128 LSTM",
                   "validation 1.750 nats (2.525 bits/char) after 2 epochs; 80,000 chars/s (fused CPU step)"),
    "medium": Preset(256, 2, 0.1, 64, 100, "2 x 256: a GPU-sized model that still trains on a CPU",
                     "validation 1.700 nats (2.453 bits/char) after 2 epochs; 9,700 chars/s (Keras layers: "
                     "dropout leaves the fused CPU step)"),
    "large": Preset(512, 3, 0.25, 128, 100, "3 x 512 with dropout 0.25: a GPU model",
                    "validation 1.860 nats (2.683 bits/char) after 2 epochs, only 158 updates: far from "
                    "trained at this budget; 2,300 chars/s on the CPU (about 7 min per epoch)"),
}


def preset_config(name: str, vocab_size: int, **overrides):
    """The ``ModelConfig`` of a preset (any field can be overridden, e.g. ``cell="gru"``)."""
    if name not in PRESETS:
        raise ValueError(f"preset must be one of {tuple(PRESETS)}, got {name!r}")
    from charrnn_lib.model import ModelConfig

    p = PRESETS[name]
    fields = dict(hidden_size=p.hidden_size, num_layers=p.num_layers, dropout=p.dropout)
    fields.update(overrides)
    return ModelConfig(vocab_size=vocab_size, **fields)
