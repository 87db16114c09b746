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
across replicas before clipping.  Steps 1-3 for one replica's rows are a function
``loss_and_grads(x, y, states)``: the reference is ``keras_loss_and_grads`` (the Keras
model under a tape); for an LSTM without dropout on a CPU, ``charrnn_lib.fast`` plugs in a
fused, XLA-compiled one that gives the same numbers faster (``TrainConfig(fused=False)``
keeps the reference; on a GPU Keras's cuDNN kernel is used).
``TrainConfig(mixed_precision=True)`` computes in float16 with float32 weights and a
dynamically scaled loss.

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

Several workers (``make_strategy("multi-worker")``: one process per worker, each calling
``train`` with the same arguments).  Only the chief writes: it alone creates and locks
``out_dir``, clears leftovers and saves; the other workers only read ``out_dir``, to resume
from the checkpoint the chief resumes from (on one machine, the same folder; on several, a
folder they all share at the same path).  Collective operations pair up by the order in
which each worker calls them, so every worker makes the same ones, in the same order: at the
start one ``exchange`` in which every worker reports whether it could start, with which
settings and from which checkpoint (all of them raise if any differ or failed); then per
batch a vote on stopping (``stop=`` or ``max_batches`` on any worker stops every worker at
the same batch), the step's all-reduces, and at every save an all-gather of the carried
state and a vote on whether the chief's write succeeded.  Evaluation needs no collective:
every worker evaluates its own copy of the same weights.  A worker that dies makes the others
fail in their next collective (at once when its connection closes; when it is cut off
silently, once TensorFlow's health check, every 30 s, finds it gone); start every worker
again and they resume from the chief's last checkpoint.

Seeds.  ``train`` seeds Keras's random generators with ``train_config.seed`` before it
builds the model (``keras.utils.set_random_seed``: Python's, NumPy's and TensorFlow's global
generators), because the run's initial weights are part of what the seed names.  It does not
switch on TensorFlow's op determinism; a caller who wants it calls
``charrnn_lib.repro.seed_everything`` first (the chapters and the command line do).

The checkpoints and their format are ``charrnn_lib.checkpoint``'s.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import sys
import time
import weakref
from pathlib import Path

import numpy as np

from charrnn_lib import checkpoint, outdir
from charrnn_lib.architecture import build, forward
from charrnn_lib.checkpoint import CheckpointError, CheckpointMismatchError
from charrnn_lib.config import ModelConfig, TrainConfig, TransformerConfig
from charrnn_lib.distribute import (WorkerFailedError, WorkersDisagreeError, any_worker, exchange, gather_rows,
                                    is_chief, per_replica_batch_size, spans_processes, split_rows)
from charrnn_lib.model import zero_states

__all__ = [
    "History",
    "TrainResult",
    "TrainingDivergedError",
    "build_for_training",
    "clip_gradients",
    "evaluate",
    "keras_loss_and_grads",
    "learning_rate_at",
    "make_train_step",
    "train",
]

LN2 = math.log(2.0)


# --------------------------------------------------------------------------- the schedule


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

    return [tf.TensorSpec((batch_size, model_config.hidden_size), tf.float32)] * model_config.num_states


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


def build_for_training(model_config: ModelConfig, train_config: TrainConfig, strategy=None,
                       batch_size: int | None = None):
    """``(model, optimizer)`` for ``make_train_step``, created inside ``strategy.scope()``.

    Adam at ``train_config.learning_rate``, built now (its moments exist before tracing);
    under ``train_config.mixed_precision`` the model computes in ``mixed_float16`` and the
    optimizer scales the loss: float16 gradients of small losses underflow to zero, so
    ``keras.optimizers.LossScaleOptimizer`` multiplies the loss by a large factor before the
    backward pass, divides the gradients by it afterwards, halves it (skipping the update)
    when a gradient overflows and doubles it after a run of good steps.
    ``batch_size`` fixes the model's batch dimension: the rows *one replica* sees.
    """
    import keras
    import tensorflow as tf

    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():  # variables: one copy per replica under a multi-device strategy
        model = build(model_config, batch_size=batch_size,
                      dtype_policy="mixed_float16" if train_config.mixed_precision else None)
        optimizer = keras.optimizers.Adam(learning_rate=train_config.learning_rate)
        if train_config.mixed_precision:
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)  # dynamic loss scaling
        optimizer.build(model.trainable_variables)
    return model, optimizer


def keras_loss_and_grads(model, scale_loss=None):
    """The reference ``loss_and_grads(x, y, states) -> (loss, grads, new_states)``: chapter 5's step.

    Runs ``model`` on rows ``x`` (b, T) from ``states`` (``[]`` for chapter 7's Transformer,
    which carries none; ``charrnn_lib.architecture.forward``) under a ``tf.GradientTape``; ``loss``
    is the mean cross-entropy of the next characters ``y`` (b, T) in nats, ``grads`` its
    gradients for ``model.trainable_variables``, ``new_states`` the states after the batch
    (float32).  ``scale_loss``: under mixed precision, the optimizer's ``scale_loss``; the
    gradients are then those of the scaled loss, as the optimizer expects.
    """
    import tensorflow as tf

    variables = model.trainable_variables

    def loss_and_grads(x, y, states):
        with tf.GradientTape() as tape:
            logits, new_states = forward(model, x, states, training=True)      # (b, T, K)
            losses = tf.nn.sparse_softmax_cross_entropy_with_logits(
                labels=y, logits=tf.cast(logits, tf.float32))                   # (b, T)
            loss = tf.reduce_mean(losses)                                       # nats per character
            backward = scale_loss(loss) if scale_loss is not None else loss
        # The embedding's gradient arrives as tf.IndexedSlices, one row per occurrence of a
        # character, repeats included.  Made dense (repeats summed) before clipping and Adam:
        # both square the rows, and the square of a sum is not the sum of the squares.
        grads = [tf.convert_to_tensor(g) for g in tape.gradient(backward, variables)]
        # float32 states whatever the compute dtype (mixed_float16 returns float16 ones),
        # so that the next call sees the same input types
        return loss, grads, [tf.cast(s, tf.float32) for s in new_states]

    return loss_and_grads


def _loss_and_grads_for(model, optimizer, model_config: ModelConfig, train_config: TrainConfig, strategy):
    """The fast path where it applies (``charrnn_lib.fast``), else the reference."""
    import keras

    from charrnn_lib import fast

    if isinstance(model_config, ModelConfig) and fast.uses_fused_step(model_config, train_config):
        rows = per_replica_batch_size(strategy, train_config.batch_size)
        return fast.fused_loss_and_grads(model, model_config, rows, train_config.row_groups)
    scaled = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
    return keras_loss_and_grads(model, optimizer.scale_loss if scaled else None)


def make_train_step(model, optimizer, model_config: ModelConfig, train_config: TrainConfig,
                    strategy=None, loss_and_grads=None):
    """The compiled step ``train_step(x, y, lr, states) -> (loss, grad_norm, new_states)``.

    ``x``, ``y`` (B, T) int32 and ``states`` (a list of (B, H) float32) are distributed by
    rows with ``charrnn_lib.distribute.split_rows`` (under the default strategy: plain
    tensors); ``new_states`` come back distributed the same way, ready for the next call.
    ``loss`` is the mean cross-entropy over the global batch (nats per character),
    ``grad_norm`` the global norm of the whole batch's gradient before clipping, ``lr`` a
    float32 scalar tensor: this step's learning rate.  The model and the optimizer must
    have been created, and the optimizer built, inside ``strategy.scope()``.

    ``loss_and_grads(x, y, states) -> (loss, grads, new_states)`` computes one replica's
    part; by default ``keras_loss_and_grads`` (the reference), or ``charrnn_lib.fast``'s
    fused step where ``fast.uses_fused_step`` says it applies.  Both give the same numbers
    up to float32 rounding.

    With ``R`` replicas each replica gets ``B / R`` rows, and its loss and gradients are
    divided by ``R``, so that the replicas' *sum* is the mean over all ``B`` rows: what one
    device computes.  Clipping needs the norm of that sum, so the gradients are all-reduced
    first and every replica scales its own by the common factor; the optimizer then sums
    the clipped gradients across replicas.  (Clipping each replica's gradient by its own
    norm would be a different rule, one that changes with the number of replicas.)  Under
    ``train_config.mixed_precision`` the optimizer is a ``keras.optimizers.LossScaleOptimizer``:
    the loss is scaled up for the backward pass and the norm is measured after unscaling.
    """
    import keras
    import tensorflow as tf

    strategy = strategy or tf.distribute.get_strategy()
    replicas = strategy.num_replicas_in_sync
    if loss_and_grads is None:
        loss_and_grads = _loss_and_grads_for(model, optimizer, model_config, train_config, strategy)
    scaled = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
    variables = model.trainable_variables
    clip = float(train_config.grad_clip)

    def replica_step(x, y, *states):
        loss, grads, new_states = loss_and_grads(x, y, list(states))   # this replica's rows
        if replicas > 1:                 # the replicas' shares add up to the global mean
            loss, grads = loss / replicas, [g / replicas for g in grads]
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
        logits, new_states = forward(model_ref(), x, list(states), training=False)  # (B, T, K)
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


def train(loader, model_config: ModelConfig | TransformerConfig, train_config: TrainConfig = TrainConfig(),
          out_dir=None, progress: bool = True, strategy=None,
          max_batches: int | None = None, stop=None, keep_steps=()) -> TrainResult:
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
    ``keep_steps``: global steps (1-based batch counts) whose checkpoints are written and kept
    instead of pruned: snapshots of the run at several points of training (chapter 5 samples
    from them).  A finished run found in ``out_dir`` is returned as it is, with the snapshots
    it has.

    Under a multi-worker strategy every worker calls ``train`` with the same arguments; only
    the chief writes into ``out_dir`` (the others read it, to resume from the same
    checkpoint), a stop asked of any worker stops all of them, and a Ctrl-C
    (``KeyboardInterrupt``) saves nothing (see the module's docstring).
    """
    import tensorflow as tf

    _check_loader(loader, train_config)
    if model_config.vocab_size != loader.vocab_size:
        raise ValueError(f"model_config.vocab_size={model_config.vocab_size} but the corpus has "
                         f"{loader.vocab_size} characters; use ModelConfig(vocab_size=loader.vocab_size)")
    if isinstance(model_config, TransformerConfig):
        if train_config.seq_length > model_config.context:
            raise ValueError(f"seq_length={train_config.seq_length} is longer than the Transformer's context="
                             f"{model_config.context}: use seq_length <= context")
        if train_config.mixed_precision:
            raise ValueError("mixed precision is implemented for the recurrent models only")
    strategy = strategy or tf.distribute.get_strategy()
    per_replica_batch_size(strategy, train_config.batch_size)  # or a clear error
    out_dir = Path(out_dir) if out_dir is not None else None
    keep_steps = tuple(int(step) for step in keep_steps) if out_dir is not None else ()
    identity = checkpoint.run_identity(loader, model_config, train_config)
    writer = out_dir is not None and is_chief(strategy)   # a multi-worker run: the chief only
    with contextlib.ExitStack() as held:                  # the out_dir lock, for the writer
        try:
            ckpt, saved_progress = _resume_point(loader, train_config, identity, out_dir, writer, held)
            failure = None
        except Exception as exc:  # noqa: BLE001 -- re-raised below, after the other workers heard of it
            if not spans_processes(strategy):
                raise
            ckpt, saved_progress, failure = None, None, exc
        _agree_on_start(strategy, failure, ckpt, saved_progress, out_dir,
                        _settings_digest(identity, train_config, keep_steps))
        return _train(loader, model_config, train_config, out_dir, progress, strategy, max_batches, stop,
                      keep_steps, identity, ckpt, saved_progress, writer)


def _resume_point(loader, train_config: TrainConfig, identity: dict, out_dir: Path | None, writer: bool,
                  held: contextlib.ExitStack):
    """``(checkpoint folder, its progress)`` to resume from, or ``(None, None)``.  The writer
    creates and locks ``out_dir`` (the lock stays with ``held``) and clears killed saves."""
    if out_dir is None:
        return None, None
    if checkpoint.is_checkpoint_folder(out_dir):
        raise CheckpointError(f"out_dir {out_dir} is a checkpoint folder, not the folder of a run: pass "
                              f"the folder that holds it, {out_dir.parent}, to resume that run")
    if writer:
        out_dir.mkdir(parents=True, exist_ok=True)
        held.enter_context(outdir.lock_out_dir(out_dir))  # one run at a time; OutDirBusyError otherwise
        checkpoint.remove_leftovers(out_dir)  # only the lock's holder may: they look like saves
    ckpt = checkpoint.latest_checkpoint(out_dir)      # a reader's missing out_dir: None
    if ckpt is None:
        return None, None
    growable = ("train.num_epochs",) if train_config.lr_schedule == "constant" else ()
    _, saved_progress = checkpoint.check_same_run(ckpt, loader.vocab, identity, may_differ=growable)
    nb = loader.num_batches
    if saved_progress["global_step"] > train_config.num_epochs * nb:
        raise CheckpointMismatchError(
            f"{out_dir} holds a run trained for {saved_progress['global_step']} batches, more than "
            f"num_epochs={train_config.num_epochs} x {nb} batches: ask for at least "
            f"{-(-saved_progress['global_step'] // nb)} epochs, or use another out_dir",
            (f"train.num_epochs: checkpoint further than {train_config.num_epochs}",))
    return ckpt, saved_progress


def _settings_digest(identity: dict, train_config: TrainConfig, keep_steps: tuple) -> int:
    """48 bits of a hash of what every worker of a run must share: the run's identity and
    when it saves (which decides when the workers gather the state)."""
    text = json.dumps([identity, train_config.checkpoint_every, sorted(keep_steps)], sort_keys=True)
    return int(hashlib.sha256(text.encode("utf-8")).hexdigest()[:12], 16)


def _agree_on_start(strategy, failure, ckpt, saved_progress, out_dir, digest: int) -> None:
    """Multi-worker: every worker checks that all started well, with the same settings and the
    same checkpoint as the chief, and raises if not -- all of them, so that none waits forever
    for the others in a collective operation.  One ``exchange``; nothing elsewhere."""
    if not spans_processes(strategy):
        return
    step = saved_progress["global_step"] if ckpt is not None else -1
    table = exchange(strategy, [failure is None, step, digest])      # one row per worker, chief first
    if failure is not None:
        raise failure
    failed = [k for k, (ok, _, _) in enumerate(table) if not ok]
    if failed:
        raise WorkerFailedError(f"worker {failed[0]} of this run could not start (its own output says why); "
                                f"fix that and start every worker again")
    for k, (_, seen, other) in enumerate(table):
        if other != table[0][2]:
            raise WorkersDisagreeError(
                f"worker {k} was started with other settings than the chief, worker 0 (model, training "
                f"options, corpus or checkpoint interval differ): start every worker with the same ones")
        if seen != table[0][1]:
            def what(s):
                return "no checkpoint" if s < 0 else f"the checkpoint of step {int(s)}"

            raise WorkersDisagreeError(
                f"worker {k} finds {what(seen)} in its out_dir but the chief, worker 0, finds "
                f"{what(table[0][1])}: every worker must read the chief's out_dir -- on several machines, a "
                f"folder they all share (e.g. over NFS) at the same path")


def _train(loader, model_config: ModelConfig, train_config: TrainConfig, out_dir: Path | None,
           progress: bool, strategy, max_batches: int | None, stop, keep_steps: tuple, identity: dict,
           ckpt, saved_progress, writer: bool) -> TrainResult:
    """``train`` after its checks, from ``ckpt`` (or from the start); ``writer``: this process
    writes the checkpoints (and holds ``out_dir``'s lock)."""
    import tensorflow as tf

    import keras

    rows_per_replica = per_replica_batch_size(strategy, train_config.batch_size)
    B, nb = train_config.batch_size, loader.num_batches
    total_steps = train_config.num_epochs * nb
    multi = spans_processes(strategy)   # collectives: every worker must make the same calls

    # The run's seed decides its initial weights (and dropout's masks): Keras draws them from
    # its global generators, so they are seeded here -- the one process-wide effect of train.
    keras.utils.set_random_seed(train_config.seed)
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
        shape = (model_config.num_states, B, model_config.hidden_size)
        saved_states = checkpoint.restore_state(ckpt, shape)     # (n, B, H), rows in order
        states = split_rows(strategy, list(saved_states))
    result = TrainResult(model, history, loader.vocab, model_config, train_config, out_dir,
                         finished=finished, resumed=ckpt is not None, global_step=global_step)
    if finished:
        return result

    def save():
        if out_dir is None:
            return
        rows = gather_rows(strategy, states)   # (B, H) each; multi-worker: every worker takes part
        failure = None
        if writer:
            try:
                checkpoint.save_checkpoint(out_dir, model=model, optimizer=optimizer, states=rows,
                                           vocab=loader.vocab, identity=identity,
                                           progress={"epoch": epoch, "batch": pointer, "global_step": global_step,
                                                     "finished": finished, "history": history.to_dict()},
                                           keep=keep_steps)
            except Exception as exc:  # noqa: BLE001 -- re-raised below
                if not multi:
                    raise
                failure = exc
        if multi:  # the others hear whether the chief saved, rather than wait for it at the next step
            (failed,) = any_worker(strategy, failure is not None)
            if failure is not None:
                raise failure
            if failed:
                raise WorkerFailedError(f"the chief could not write the checkpoint of step {global_step} (its "
                                        f"own output says why); {out_dir} keeps the last one written: fix "
                                        f"that and start every worker again")

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
                # Multi-worker: a stop asked of any worker stops them all, at the same batch.
                stopping, at_limit = any_worker(strategy, _stop_requested(stop),
                                                max_batches is not None and done_here >= max_batches)
                if stopping or at_limit:
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
                every = train_config.checkpoint_every
                if pointer < nb and ((every and global_step % every == 0) or global_step in keep_steps):
                    save()                                  # (the end of an epoch saves below)
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
        # Keep the work done so far; else the last checkpoint stands.  Not under several
        # workers: the others are not saving now, and the save's all-gather would wait for them.
        if consistent and not multi:
            save()
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
