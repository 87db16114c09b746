"""Training char-rnn: the compiled step, truncated BPTT across batches, exact checkpoints.

One training step (``replica_step`` in ``make_train_step``) is the deck's loop body, in
TensorFlow 2:

1. run the model on a batch ``x`` (B, T) from the carried state -> logits (B, T, K) and the
   new state;
2. the loss is the mean cross-entropy of the next characters ``y`` (B, T), computed from
   the logits with *sparse* labels (integer ids; no one-hot tensor is ever built);
3. gradients by ``tf.GradientTape``; the embedding's sparse gradient made dense (repeated
   characters summed); all clipped together by their global norm
   (``tf.clip_by_global_norm``, the deck's ``grad_clip = 5``); one Adam update;
4. the new state is returned and fed to the next batch (row ``r`` of batch ``b + 1``
   continues row ``r`` of batch ``b``): truncated BPTT with a carried state.

The step is a ``tf.function``, traced once.  It runs under any ``tf.distribute`` strategy:
on one device (the default) every replica-specific line reduces to the plain step above;
under ``MirroredStrategy`` each replica takes a fixed slice of the batch's rows and
carries that slice's state (``charrnn_lib.distribute``), and the gradients are summed
across replicas before clipping.  For an LSTM without dropout on a CPU it runs the fused
stacked LSTM of ``charrnn_lib.fused_lstm`` (same weights, same function, faster), compiled
by XLA, its rows split into groups that run side by side (``TrainConfig.row_groups``);
otherwise it runs the Keras model itself (``TrainConfig(fused=False)`` forces that;
on a GPU Keras's cuDNN kernel is used).  ``TrainConfig(mixed_precision=True)`` computes in
float16 with float32 weights and a dynamically scaled loss.

``train`` loops over epochs and batches, evaluates the validation loss after each epoch
(nats and bits per character), and writes checkpoints into ``out_dir`` atomically.  A
checkpoint holds everything the run's future depends on -- weights, Adam's moments and
step count, the carried state, the data position, the history -- so a resumed run
produces exactly the weights an uninterrupted one does.

Stops and failures.  ``train(..., stop=event)`` checks ``event`` between batches and, when
it is set, saves and returns (the command line sets it from a Ctrl-C handler; ``train``
itself never touches signal handling); a ``KeyboardInterrupt`` that arrives between batches
also saves first.  A loss or gradient norm that is not finite raises
``TrainingDivergedError`` before anything is saved, so the last checkpoint stays the last
good one.  ``out_dir`` is locked for the duration (``charrnn_lib.outdir``): a second run
into the same folder fails at once instead of overwriting the first one's checkpoints.

The checkpoints and their format are ``charrnn_lib.checkpoint``'s; ``load_checkpoint`` and
the checkpoint errors are re-exported here.
"""
from __future__ import annotations

import dataclasses
import math
import sys
import time
import weakref
from pathlib import Path

import numpy as np

from charrnn_lib import checkpoint, outdir
from charrnn_lib.checkpoint import (CheckpointError, CheckpointMismatchError,  # noqa: F401
                                    latest_checkpoint, load_checkpoint)
from charrnn_lib.distribute import gather_rows, mixed_precision_optimizer, per_replica_batch_size, split_rows
from charrnn_lib.model import ModelConfig, build_model

__all__ = [
    "CheckpointError",
    "CheckpointMismatchError",
    "History",
    "TrainConfig",
    "TrainResult",
    "TrainingDivergedError",
    "clip_gradients",
    "evaluate",
    "latest_checkpoint",
    "learning_rate_at",
    "load_checkpoint",
    "build_for_training",
    "make_train_step",
    "row_groups",
    "train",
    "uses_fused_step",
]

LN2 = math.log(2.0)
SCHEDULES = ("constant", "cosine")


# --------------------------------------------------------------------------- configuration


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How to train.  Defaults are the deck's: batch 50 x 50 steps, Adam 0.002, clip 5, 2 epochs."""

    batch_size: int = 50
    seq_length: int = 50
    learning_rate: float = 0.002      # peak learning rate (eta)
    grad_clip: float = 5.0            # theta: clip the global gradient norm to this; 0 = no clipping
    num_epochs: int = 2
    val_fraction: float = 0.05
    seed: int = 0
    lr_schedule: str = "constant"     # "constant" or "cosine" (decay to min_lr_fraction * eta)
    warmup_batches: int = 0           # linear warm-up from 0 over this many steps
    min_lr_fraction: float = 0.0      # cosine: final learning rate as a fraction of the peak
    checkpoint_every: int = 200       # batches between checkpoints (0: only at epoch ends)
    fused: bool = True                # LSTM without dropout, on a CPU: fused step compiled by XLA
    row_groups: int = 2               # fused step: the rows, as this many groups computed side by side
    mixed_precision: bool = False     # mixed_float16: float16 arithmetic, float32 weights and loss

    def __post_init__(self):
        for name in ("batch_size", "seq_length", "num_epochs", "row_groups"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            raise ValueError(f"learning_rate must be a positive finite number, got {self.learning_rate}")
        if not (self.grad_clip >= 0 and math.isfinite(self.grad_clip)):
            raise ValueError(f"grad_clip must be a finite number >= 0 (0 turns clipping off), got "
                             f"{self.grad_clip}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or not 0 <= self.seed < 2**32:
            raise ValueError(f"seed must be an integer in [0, 2**32 - 1], got {self.seed!r}")
        if self.lr_schedule not in SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {SCHEDULES}, got {self.lr_schedule!r}")
        if self.warmup_batches < 0 or self.checkpoint_every < 0:
            raise ValueError("warmup_batches and checkpoint_every must be >= 0")
        if not 0.0 <= self.min_lr_fraction <= 1.0:
            raise ValueError(f"min_lr_fraction must lie in [0, 1], got {self.min_lr_fraction}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must lie in [0, 1), got {self.val_fraction}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown TrainConfig fields: {sorted(unknown)}")
        return cls(**d)


def learning_rate_at(step: int, total_steps: int, config: TrainConfig) -> float:
    """The learning rate of (0-based) update ``step`` out of ``total_steps``."""
    eta = config.learning_rate
    if config.warmup_batches and step < config.warmup_batches:
        return eta * (step + 1) / config.warmup_batches
    if config.lr_schedule == "constant":
        return eta
    decay_steps = max(1, total_steps - config.warmup_batches)
    progress = min(1.0, (step - config.warmup_batches) / decay_steps)
    floor = config.min_lr_fraction
    return eta * (floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress)))


# --------------------------------------------------------------------------- history and result


@dataclasses.dataclass
class History:
    """Losses in nats (natural log); the ``*_bpc`` properties give bits per character."""

    train_loss: list = dataclasses.field(default_factory=list)        # per batch
    grad_norm: list = dataclasses.field(default_factory=list)         # per batch, before clipping
    learning_rate: list = dataclasses.field(default_factory=list)     # per batch
    val_loss: list = dataclasses.field(default_factory=list)          # per epoch
    epoch_train_loss: list = dataclasses.field(default_factory=list)  # per epoch, mean of its batches

    @property
    def train_bpc(self) -> list:
        return [v / LN2 for v in self.train_loss]

    @property
    def val_bpc(self) -> list:
        return [v / LN2 for v in self.val_loss]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "History":
        return cls(**{f.name: list(d.get(f.name, [])) for f in dataclasses.fields(cls)})


@dataclasses.dataclass
class TrainResult:
    model: object                      # the keras.Model, [ids, *states] -> [logits, *states]
    history: History
    vocab: object                      # charrnn_lib.data.Vocab
    model_config: ModelConfig
    train_config: TrainConfig
    out_dir: Path | None = None
    finished: bool = False             # all epochs done (False after max_batches stopped it)
    resumed: bool = False              # started from a checkpoint found in out_dir
    global_step: int = 0               # training batches done so far, over all calls
    chars_per_second: float | None = None  # training throughput of this call (after tracing)
    stopped: bool = False              # train's stop= asked to stop; the work is saved


# --------------------------------------------------------------------------- the step


def _state_spec(model_config: ModelConfig, batch_size: int) -> list:
    import tensorflow as tf

    n = model_config.num_layers * model_config.states_per_layer
    return [tf.TensorSpec((batch_size, model_config.hidden_size), tf.float32)] * n


def clip_gradients(grads, clip_norm: float, norm=None):
    """Scale all gradients by one factor so that their global norm is at most ``clip_norm``.

    Returns ``(clipped, norm)`` with ``norm`` the global norm before clipping,
    ``sqrt(sum of all squared entries)``.  ``clip_norm == 0`` leaves them unchanged.  One
    common factor keeps the direction of the whole update, unlike clipping each tensor
    on its own (Keras's ``clipnorm``) or each entry (``clipvalue``).  ``norm``, if given,
    is used instead of the norm of ``grads`` (under a strategy: the norm of the summed
    gradient of all replicas, so that every replica scales by the same factor).
    """
    import tensorflow as tf

    norm = tf.linalg.global_norm(grads) if norm is None else norm
    if clip_norm > 0:   # factor min(1, clip_norm / norm); NaN when norm is not finite
        return tf.clip_by_global_norm(grads, clip_norm, use_norm=norm)[0], norm
    return grads, norm


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


def uses_fused_step(model_config: ModelConfig, train_config: TrainConfig) -> bool:
    """Whether training runs ``charrnn_lib.fused_lstm``: allowed by ``train_config.fused``, an
    LSTM without dropout, float32, and no GPU (where Keras's cuDNN kernel is faster)."""
    import tensorflow as tf

    from charrnn_lib import fused_lstm

    return (train_config.fused and fused_lstm.supports(model_config)
            and not train_config.mixed_precision and not tf.config.list_logical_devices("GPU"))


def build_for_training(model_config: ModelConfig, train_config: TrainConfig, strategy=None,
                       batch_size: int | None = None):
    """``(model, optimizer)`` for ``make_train_step``, created inside ``strategy.scope()``.

    Adam at ``train_config.learning_rate``, built now (its moments exist before tracing);
    under ``train_config.mixed_precision`` the model computes in ``mixed_float16`` and the
    optimizer scales the loss (``charrnn_lib.distribute.mixed_precision_optimizer``).
    ``batch_size`` fixes the model's batch dimension: the rows *one replica* sees.
    """
    import keras
    import tensorflow as tf

    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():  # variables: one copy per replica under a multi-device strategy
        model = build_model(model_config, batch_size=batch_size,
                            dtype_policy="mixed_float16" if train_config.mixed_precision else None)
        optimizer = keras.optimizers.Adam(learning_rate=train_config.learning_rate)
        if train_config.mixed_precision:
            optimizer = mixed_precision_optimizer(optimizer)
        optimizer.build(model.trainable_variables)
    return model, optimizer


def make_train_step(model, optimizer, model_config: ModelConfig, train_config: TrainConfig,
                    strategy=None):
    """The compiled step ``train_step(x, y, lr, states) -> (loss, grad_norm, new_states)``.

    ``x``, ``y`` (B, T) int32 and ``states`` (a list of (B, H) float32) are distributed by
    rows with ``charrnn_lib.distribute.split_rows`` (under the default strategy: plain
    tensors); ``new_states`` come back distributed the same way, ready for the next call.
    ``loss`` is the mean cross-entropy over the global batch (nats per character),
    ``grad_norm`` the global norm of the whole batch's gradient before clipping, ``lr`` a
    float32 scalar tensor: this step's learning rate.  The model and the optimizer must
    have been created, and the optimizer built, inside ``strategy.scope()``.

    With ``R`` replicas each replica gets ``B / R`` rows, and its loss is the mean over its
    rows divided by ``R``, so that the replicas' losses -- and gradients -- *sum* to those
    of the mean over all ``B`` rows: what one device computes.  Clipping needs the norm of
    that sum, so the gradients are all-reduced first and every replica scales its own by
    the common factor; the optimizer then sums the clipped gradients across replicas.
    (Clipping each replica's gradient by its own norm would be a different rule, one that
    changes with the number of replicas.)  Under ``train_config.mixed_precision`` the
    optimizer is a ``keras.optimizers.LossScaleOptimizer``: the loss is scaled up for the
    backward pass and the norm is measured after unscaling.

    The fused CPU step splits a replica's rows once more, into ``train_config.row_groups``
    groups (``row_groups``), each computed by its own compiled function with the share of
    the loss its rows make up.  The rows never interact, so the groups are independent and
    run at the same time: a recurrence is a chain of small products, each waiting for the
    one before, and one chain leaves a core idle much of the time; two chains fill it.
    The result is the same up to the order of float32 additions.

    It also calls ``charrnn_lib.memory.keep_freed_memory()``: the process keeps the step's
    freed temporaries for the next step instead of returning them to the operating system.
    """
    import keras
    import tensorflow as tf

    from charrnn_lib import fused_lstm
    from charrnn_lib.memory import keep_freed_memory

    keep_freed_memory()                                         # no page faults between steps
    strategy = strategy or tf.distribute.get_strategy()
    replicas = strategy.num_replicas_in_sync
    use_fused = uses_fused_step(model_config, train_config)
    scaled = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
    variables = model.trainable_variables
    clip = float(train_config.grad_clip)

    rows = per_replica_batch_size(strategy, train_config.batch_size)  # one replica's rows
    groups = row_groups(rows, train_config.row_groups if use_fused else 1)

    def forward(x, states):
        if use_fused:
            return fused_lstm.stacked_lstm_logits(model, model_config, x, states)
        logits, *new_states = model([x, *states], training=True)
        return logits, new_states

    def loss_and_grads(x, y, states, share):
        """Loss and gradients of rows ``x`` (b, T), a fraction ``share`` of this replica's."""
        with tf.GradientTape() as tape:
            logits, new_states = forward(x, list(states))       # (b, T, K)
            losses = tf.nn.sparse_softmax_cross_entropy_with_logits(
                labels=y, logits=tf.cast(logits, tf.float32))   # (b, T)
            loss = tf.reduce_mean(losses) * share / replicas    # these rows' share of the mean, nats
            backward = optimizer.scale_loss(loss) if scaled else loss
        # The embedding's gradient arrives as tf.IndexedSlices, one row per occurrence of a
        # character, repeats included.  Made dense (repeats summed) before clipping and Adam:
        # both square the rows, and the square of a sum is not the sum of the squares.
        grads = [tf.convert_to_tensor(g) for g in tape.gradient(backward, variables)]
        # float32 states whatever the compute dtype (mixed_float16 returns float16 ones),
        # so that the next call sees the same input types
        return loss, grads, [tf.cast(s, tf.float32) for s in new_states]

    def for_group(start, stop):
        def group(x, y, *states):
            return loss_and_grads(x, y, states, share=(stop - start) / rows)
        if use_fused:
            # XLA fuses the fused step's elementwise operations and removes most per-operation
            # overhead (faster on a CPU; deterministic).  It compiles one group's work; the
            # all-reduce and the update stay outside it.  Each group gets a compiled function
            # of its own: two calls of one compiled function do not overlap, two functions do.
            return tf.function(group, jit_compile=True)
        return group

    parts = [for_group(start, stop) for start, stop in groups]

    def replica_step(x, y, *states):
        # The rows of a batch never interact, so the groups are independent computations,
        # and the graph runs them at the same time: while one waits for its previous time
        # step, the other computes.  Their shares and gradients add up to the replica's.
        results = [part(x[a:b], y[a:b], *[s[a:b] for s in states])
                   for part, (a, b) in zip(parts, groups)]
        losses, group_grads, group_states = zip(*results)
        loss = tf.add_n(losses)
        grads = [tf.add_n(list(g)) for g in zip(*group_grads)]
        new_states = [tf.concat(list(s), axis=0) for s in zip(*group_states)]  # rows in order
        total = tf.distribute.get_replica_context().all_reduce("SUM", grads)  # the whole batch's
        norm = tf.linalg.global_norm(total)
        if scaled:
            norm = norm / tf.cast(optimizer.dynamic_scale, norm.dtype)
        grads, norm = clip_gradients(grads, clip, norm)         # global norm <= clip
        optimizer.apply_gradients(zip(grads, variables))        # sums the replicas' gradients
        return loss, norm, new_states

    @tf.function
    def train_step(x, y, lr, states):
        optimizer.learning_rate.assign(lr)                      # every replica's copy
        loss, norm, new_states = strategy.run(replica_step, args=(x, y, *states))
        loss = strategy.reduce("SUM", loss, axis=None)          # the shares add up to the mean
        norm = strategy.experimental_local_results(norm)[0]     # the same on every replica
        return loss, norm, list(new_states)

    return train_step


# Compiled evaluation steps, per model and batch shape.  Weak keys, and steps that hold
# their model weakly: a cached step never keeps a model alive.
_EVAL_STEPS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _eval_step(model, model_config: ModelConfig, batch_size: int, seq_length: int):
    """A compiled ``(x, y, *states) -> (loss, *new_states)`` for ``model``, cached."""
    import tensorflow as tf

    steps = _EVAL_STEPS.setdefault(model, {})
    if (batch_size, seq_length) in steps:
        return steps[batch_size, seq_length]
    model_ref = weakref.ref(model)
    signature = [tf.TensorSpec((batch_size, seq_length), tf.int32),
                 tf.TensorSpec((batch_size, seq_length), tf.int32),
                 *_state_spec(model_config, batch_size)]

    @tf.function(input_signature=signature)
    def eval_step(x, y, *states):
        logits, *new_states = model_ref()([x, *states], training=False)  # (B, T, K)
        losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=tf.cast(logits, tf.float32))
        return (tf.reduce_mean(losses), *[tf.cast(s, tf.float32) for s in new_states])

    steps[batch_size, seq_length] = eval_step
    return eval_step


def evaluate(model, x_batches, y_batches, model_config: ModelConfig,
             carry_state: bool = True) -> float:
    """Mean cross-entropy (nats per character) over ``(num_batches, B, T)`` batches.

    The state starts at zero and is carried from batch to batch, as in training
    (``carry_state=False``: every batch starts from zeros).
    """
    import tensorflow as tf

    from charrnn_lib.model import zero_states

    x_batches, y_batches = np.asarray(x_batches), np.asarray(y_batches)
    if x_batches.ndim != 3 or x_batches.shape != y_batches.shape:
        raise ValueError(f"x_batches and y_batches must both be (num_batches, B, T); got "
                         f"{x_batches.shape} and {y_batches.shape}")
    if x_batches.shape[0] == 0:
        raise ValueError("no batches to evaluate")
    _, batch_size, seq_length = x_batches.shape
    step = _eval_step(model, model_config, batch_size, seq_length)
    zeros = zero_states(model_config, batch_size)
    states, total = zeros, 0.0
    for x, y in zip(x_batches, y_batches):
        loss, *states = step(tf.constant(x, tf.int32), tf.constant(y, tf.int32), *states)
        total += float(loss)
        if not carry_state:
            states = zeros
    return total / x_batches.shape[0]


# --------------------------------------------------------------------------- the loop


def _check_loader(loader, train_config: TrainConfig) -> None:
    for name in ("batch_size", "seq_length"):
        have, want = getattr(loader, name), getattr(train_config, name)
        if have != want:
            raise ValueError(f"the loader was built with {name}={have} but train_config has "
                             f"{name}={want}; build it with TextLoader(path, batch_size="
                             f"{train_config.batch_size}, seq_length={train_config.seq_length}, "
                             f"val_fraction={train_config.val_fraction})")
    have = getattr(loader, "val_fraction", train_config.val_fraction)
    if abs(have - train_config.val_fraction) > 1e-12:
        raise ValueError(f"the loader holds out val_fraction={have} but train_config has "
                         f"val_fraction={train_config.val_fraction}; make them equal")


class TrainingDivergedError(RuntimeError):
    """A training step gave a loss or gradient norm that is not finite (NaN or infinity).

    Raised by ``train`` before anything non-finite is saved; ``checkpoint`` is the last good
    checkpoint (``None`` if none was written), ``step`` the 1-based batch that diverged.
    """

    def __init__(self, message: str, *, step: int, epoch: int, loss: float, grad_norm: float,
                 checkpoint: Path | None = None):
        super().__init__(message)
        self.step, self.epoch, self.loss, self.grad_norm = step, epoch, loss, grad_norm
        self.checkpoint = checkpoint


def _stop_requested(stop) -> bool:
    """``stop``: None, a ``threading.Event`` (anything with ``is_set``), or a callable."""
    if stop is None:
        return False
    is_set = getattr(stop, "is_set", None)
    return bool(is_set() if is_set is not None else stop())


def _diverged(loss: float, norm: float, global_step: int, epoch: int, out_dir: Path | None,
              train_config: TrainConfig) -> TrainingDivergedError:
    last = checkpoint.latest_checkpoint(out_dir) if out_dir is not None else None
    if out_dir is None:
        kept = "no checkpoints were being written"
    elif last is None:
        kept = f"no checkpoint had been written into {out_dir} yet"
    else:
        kept = f"the last good checkpoint, {last.name}, is kept in {out_dir}"
    clipping = "clip the gradients (grad_clip, e.g. 5)" if train_config.grad_clip == 0 else "a lower grad_clip"
    return TrainingDivergedError(
        f"training diverged at batch {global_step + 1} (epoch {epoch + 1}): loss {loss}, gradient norm "
        f"{norm}; nothing non-finite was saved, and {kept}. Resuming would diverge at the same batch: "
        f"start a new run with a lower learning rate or {clipping}",
        step=global_step + 1, epoch=epoch + 1, loss=loss, grad_norm=norm, checkpoint=last)


def train(loader, model_config: ModelConfig, train_config: TrainConfig = TrainConfig(),
          out_dir=None, progress: bool = True, strategy=None,
          max_batches: int | None = None, stop=None) -> TrainResult:
    """Train a char-rnn on ``loader``'s batches; resume from ``out_dir`` if it holds this run.

    ``loader``: a ``charrnn_lib.data.TextLoader`` built with ``train_config``'s batch shape
    and ``val_fraction``.  ``model_config.vocab_size`` must equal ``loader.vocab_size``.
    ``out_dir``: where checkpoints go (``None``: no checkpoints).  If it holds a checkpoint
    of the same run, training continues from it, and a finished run returns at once.  Under
    the constant learning-rate schedule ``num_epochs`` may grow between calls: a finished
    run then continues to the new total, exactly as a run started with it (the cosine
    schedule depends on the total, so there it must stay).  ``out_dir`` is locked while
    ``train`` runs (``charrnn_lib.outdir``): a second run into it fails at once.
    ``progress``: show a progress bar (tqdm, on stderr).  ``max_batches``: stop after this
    many training batches in this call, writing a checkpoint (an interruption on purpose).
    ``stop``: a ``threading.Event`` or a callable returning ``True`` to ask for a stop; it
    is checked between batches, and when set ``train`` writes a checkpoint and returns
    with ``result.stopped`` (a signal handler can set it: see ``charrnn_lib.cli``).
    Ctrl-C (``KeyboardInterrupt``) still saves when it arrives between batches and is
    re-raised.  A loss or gradient norm that is not finite raises
    :class:`TrainingDivergedError`; the last good checkpoint stays, no worse one is written.
    """
    import tensorflow as tf

    _check_loader(loader, train_config)
    if model_config.vocab_size != loader.vocab_size:
        raise ValueError(f"model_config.vocab_size={model_config.vocab_size} but the corpus has "
                         f"{loader.vocab_size} characters; use ModelConfig(vocab_size=loader.vocab_size)")
    strategy = strategy or tf.distribute.get_strategy()
    per_replica_batch_size(strategy, train_config.batch_size)  # or a clear error
    if out_dir is None:
        return _train(loader, model_config, train_config, None, progress, strategy, max_batches, stop)
    out_dir = Path(out_dir)
    if checkpoint.is_checkpoint_folder(out_dir):
        raise CheckpointError(f"out_dir {out_dir} is a checkpoint folder, not the folder of a run: pass "
                              f"the folder that holds it, {out_dir.parent}, to resume that run")
    out_dir.mkdir(parents=True, exist_ok=True)
    with outdir.lock_out_dir(out_dir):        # one run at a time; OutDirBusyError otherwise
        checkpoint.remove_leftovers(out_dir)  # only the lock's holder may: they look like saves
        return _train(loader, model_config, train_config, out_dir, progress, strategy, max_batches, stop)


def _train(loader, model_config: ModelConfig, train_config: TrainConfig, out_dir: Path | None,
           progress: bool, strategy, max_batches: int | None, stop) -> TrainResult:
    """``train`` after its checks, with ``out_dir`` locked."""
    import tensorflow as tf

    from charrnn_lib.model import zero_states
    from charrnn_lib.repro import seed_everything

    rows_per_replica = per_replica_batch_size(strategy, train_config.batch_size)
    identity = checkpoint.run_identity(loader, model_config, train_config)
    B, nb = train_config.batch_size, loader.num_batches
    total_steps = train_config.num_epochs * nb

    ckpt = checkpoint.latest_checkpoint(out_dir) if out_dir is not None else None
    if ckpt is not None:
        growable = ("train.num_epochs",) if train_config.lr_schedule == "constant" else ()
        _, saved_progress = checkpoint.check_same_run(ckpt, loader.vocab, identity, may_differ=growable)
        if saved_progress["global_step"] > total_steps:
            raise CheckpointMismatchError(
                f"{out_dir} holds a run trained for {saved_progress['global_step']} batches, more than "
                f"num_epochs={train_config.num_epochs} x {nb} batches: ask for at least "
                f"{-(-saved_progress['global_step'] // nb)} epochs, or use another out_dir",
                (f"train.num_epochs: checkpoint further than {train_config.num_epochs}",))

    seed_everything(train_config.seed)
    model, optimizer = build_for_training(model_config, train_config, strategy, rows_per_replica)
    history = History()
    epoch = pointer = global_step = 0
    states = split_rows(strategy, zero_states(model_config, B))  # replica i: its rows' state
    finished = False
    if ckpt is not None:
        checkpoint.load_weights(model, ckpt)
        checkpoint.restore_rng(model, ckpt)
        checkpoint.restore_optimizer(optimizer, ckpt)
        history = History.from_dict(saved_progress["history"])
        epoch, pointer = saved_progress["epoch"], saved_progress["batch"]
        global_step = saved_progress["global_step"]
        finished = epoch >= train_config.num_epochs  # the saved flag, unless num_epochs grew
        shape = (model_config.num_layers * model_config.states_per_layer, B, model_config.hidden_size)
        saved_states = checkpoint.restore_state(ckpt, shape)     # (n, B, H), rows in order
        states = split_rows(strategy, list(saved_states))
    result = TrainResult(model, history, loader.vocab, model_config, train_config, out_dir,
                         finished=finished, resumed=ckpt is not None, global_step=global_step)
    if finished:
        return result

    def save():
        if out_dir is None:
            return
        checkpoint.save_checkpoint(out_dir, model=model, optimizer=optimizer,
                         states=gather_rows(strategy, states),  # (B, H) each, any strategy
                         vocab=loader.vocab, identity=identity,
                         progress={"epoch": epoch, "batch": pointer, "global_step": global_step,
                                   "finished": finished, "history": history.to_dict()})

    train_step = make_train_step(model, optimizer, model_config, train_config, strategy)
    bar = _progress_bar(progress, total_steps, global_step)
    done_here, timed_chars, timed_seconds = 0, 0, 0.0
    consistent = True                                       # bookkeeping matches the weights
    # Under mixed precision a non-finite gradient is routine: the loss scale was too large,
    # and the optimizer skips that update and lowers the scale.  Only the loss counts there.
    check_norm = not train_config.mixed_precision
    try:
        while epoch < train_config.num_epochs:
            while pointer < nb:
                stopping = _stop_requested(stop)
                if stopping or (max_batches is not None and done_here >= max_batches):
                    save()
                    result.global_step, result.stopped = global_step, stopping
                    return result
                lr = learning_rate_at(global_step, total_steps, train_config)
                t0 = time.perf_counter()
                x, y = split_rows(strategy, [loader.x_batches[pointer], loader.y_batches[pointer]])
                consistent = False
                loss, norm, states = train_step(x, y, tf.constant(lr, tf.float32), states)
                history.train_loss.append(float(loss))              # waits for the step
                if done_here > 0:                                   # the first call also traces
                    timed_chars += B * train_config.seq_length
                    timed_seconds += time.perf_counter() - t0
                history.grad_norm.append(float(norm))
                history.learning_rate.append(lr)
                if not math.isfinite(history.train_loss[-1]) or (
                        check_norm and not math.isfinite(history.grad_norm[-1])):
                    raise _diverged(history.train_loss[-1], history.grad_norm[-1], global_step, epoch,
                                    out_dir, train_config)
                pointer, global_step, done_here = pointer + 1, global_step + 1, done_here + 1
                consistent = True
                bar.update(1)
                if done_here % 10 == 0 or pointer == nb:
                    bar.set_postfix(epoch=epoch + 1, loss=f"{history.train_loss[-1]:.3f}", refresh=False)
                if (train_config.checkpoint_every and global_step % train_config.checkpoint_every == 0
                        and pointer < nb):
                    save()
            consistent = False
            epoch_losses = history.train_loss[len(history.train_loss) - nb:]
            history.epoch_train_loss.append(float(np.mean(epoch_losses)))
            if loader.val_x is not None:
                history.val_loss.append(evaluate(model, loader.val_x, loader.val_y, model_config))
                if progress:
                    bar.write(f"epoch {epoch + 1}: train {history.epoch_train_loss[-1]:.4f} nats, "
                              f"validation {history.val_loss[-1]:.4f} nats = "
                              f"{history.val_loss[-1] / LN2:.4f} bits/char", file=sys.stderr)
            epoch, pointer = epoch + 1, 0
            states = split_rows(strategy, zero_states(model_config, B))  # each epoch from zeros
            finished = epoch >= train_config.num_epochs
            consistent = True
            save()
    except KeyboardInterrupt:
        if consistent:                                      # keep the work done so far; else
            save()                                          # the last checkpoint stands
        raise
    finally:
        bar.close()
        if timed_chars:
            result.chars_per_second = timed_chars / timed_seconds
    result.finished, result.global_step = True, global_step
    return result


def _progress_bar(enabled: bool, total: int, initial: int):
    """A tqdm bar on stderr: redrawn every second on a terminal, every 10 s elsewhere
    (a notebook or a log file keeps every redraw)."""
    from tqdm import tqdm

    interactive = getattr(sys.stderr, "isatty", lambda: False)()
    return tqdm(total=total, initial=initial, disable=not enabled, file=sys.stderr,
                unit="batch", mininterval=1.0 if interactive else 10.0, dynamic_ncols=False,
                ncols=100, ascii=True)
