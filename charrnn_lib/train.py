"""Training char-rnn: the compiled step, truncated BPTT across batches, exact checkpoints.

One training step (``_replica_step``) is the deck's loop body, in TensorFlow 2:

1. run the model on a batch ``x`` (B, T) from the carried state -> logits (B, T, K) and the
   new state;
2. the loss is the mean cross-entropy of the next characters ``y`` (B, T), computed from
   the logits with *sparse* labels (integer ids; no one-hot tensor is ever built);
3. gradients by ``tf.GradientTape``; clipped together by their global norm
   (``tf.clip_by_global_norm``, the deck's ``grad_clip = 5``); one Adam update;
4. the new state is returned and fed to the next batch (row ``r`` of batch ``b + 1``
   continues row ``r`` of batch ``b``): truncated BPTT with a carried state.

The step is a ``tf.function`` with a fixed input signature, so it is traced once.  For an
LSTM without dropout it runs the fused stacked LSTM of ``charrnn_lib.fused_lstm`` (same
weights, same function, faster on a CPU) and is compiled by XLA; otherwise it runs the
Keras model itself (``TrainConfig(fused=False)`` forces that).

``train`` loops over epochs and batches, evaluates the validation loss after each epoch
(nats and bits per character), and writes checkpoints into ``out_dir`` atomically.  A
checkpoint holds everything the run's future depends on -- weights, Adam's moments and
step count, the carried state, the data position, the history -- so a resumed run
produces exactly the weights an uninterrupted one does.

Checkpoint layout: ``out_dir/ckpt-<global step>/`` with ``model.weights.h5``,
``optimizer.npz`` (Adam's step count and moments), ``state.npy`` (n_states, B, H),
``rng.npz`` (dropout's random-number states), ``vocab.json``, ``config.json`` (model and
training configuration, data fingerprint) and ``progress.json`` (epoch, batch pointer,
global step, history).  No pickles: every file is JSON, NumPy or HDF5 data.  Each is written into a temporary folder first and renamed into place
when complete, so a crash never leaves a half-written checkpoint behind.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from charrnn_lib.model import ModelConfig, build_model

__all__ = [
    "CheckpointError",
    "CheckpointMismatchError",
    "History",
    "TrainConfig",
    "TrainResult",
    "clip_gradients",
    "evaluate",
    "latest_checkpoint",
    "learning_rate_at",
    "load_checkpoint",
    "train",
]

LN2 = math.log(2.0)
CHECKPOINT_FORMAT = 1
SCHEDULES = ("constant", "cosine")
# Fields of TrainConfig that do not change what a run computes: a resumed run may differ in them.
_BOOKKEEPING_FIELDS = ("checkpoint_every",)


class CheckpointError(ValueError):
    """A checkpoint is missing, incomplete or damaged."""


class CheckpointMismatchError(CheckpointError):
    """``out_dir`` holds a checkpoint of a different run (other data, vocabulary or config)."""


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
    fused: bool = True                # LSTM without dropout: fused step compiled by XLA

    def __post_init__(self):
        for name in ("batch_size", "seq_length", "num_epochs"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}")
        if self.grad_clip < 0:
            raise ValueError(f"grad_clip must be >= 0 (0 turns clipping off), got {self.grad_clip}")
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


# --------------------------------------------------------------------------- the step


def _state_spec(model_config: ModelConfig, batch_size: int) -> list:
    import tensorflow as tf

    n = model_config.num_layers * model_config.states_per_layer
    return [tf.TensorSpec((batch_size, model_config.hidden_size), tf.float32)] * n


def clip_gradients(grads, clip_norm: float):
    """Scale all gradients by one factor so that their global norm is at most ``clip_norm``.

    Returns ``(clipped, norm)`` with ``norm`` the global norm before clipping,
    ``sqrt(sum of all squared entries)``.  ``clip_norm == 0`` leaves them unchanged.  One
    common factor keeps the direction of the whole update, unlike clipping each tensor
    on its own (Keras's ``clipnorm``) or each entry (``clipvalue``).
    """
    import tensorflow as tf

    if clip_norm > 0:
        return tf.clip_by_global_norm(grads, clip_norm)   # factor min(1, clip_norm / norm)
    return grads, tf.linalg.global_norm(grads)


def _make_train_step(model, optimizer, model_config: ModelConfig, train_config: TrainConfig,
                     strategy):
    """The compiled training step ``(x, y, lr, *states) -> (loss, grad_norm, *new_states)``."""
    import tensorflow as tf

    from charrnn_lib import fused_lstm

    use_fused = train_config.fused and fused_lstm.supports(model_config)
    variables = model.trainable_variables
    clip = float(train_config.grad_clip)

    def forward(x, states):
        if use_fused:
            return fused_lstm.stacked_lstm_logits(model, model_config, x, states)
        logits, *new_states = model([x, *states], training=True)
        return logits, new_states

    def replica_step(x, y, lr, *states):
        with tf.GradientTape() as tape:
            logits, new_states = forward(x, list(states))       # (B, T, K)
            losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)
            loss = tf.reduce_mean(losses)                       # mean over B*T characters, nats
        grads = tape.gradient(loss, variables)
        # The embedding's gradient arrives as tf.IndexedSlices, one row per occurrence of a
        # character, repeats included.  Made dense (repeats summed) before clipping and Adam:
        # both square the rows, and the square of a sum is not the sum of the squares.
        grads = [tf.convert_to_tensor(g) for g in grads]
        grads, norm = clip_gradients(grads, clip)           # global norm <= clip
        optimizer.learning_rate.assign(lr)
        optimizer.apply_gradients(zip(grads, variables))
        return (loss, norm, *new_states)

    signature = [tf.TensorSpec((train_config.batch_size, train_config.seq_length), tf.int32),
                 tf.TensorSpec((train_config.batch_size, train_config.seq_length), tf.int32),
                 tf.TensorSpec((), tf.float32),
                 *_state_spec(model_config, train_config.batch_size)]

    # The fused step is also compiled by XLA, which fuses its elementwise operations and
    # removes most per-operation overhead (about 20 % faster on a CPU; deterministic).
    per_replica = tf.function(replica_step, jit_compile=True) if use_fused else replica_step

    @tf.function(input_signature=signature)
    def train_step(x, y, lr, *states):
        # Under the default strategy strategy.run just calls the step.
        return strategy.run(per_replica, args=(x, y, lr, *states))

    return train_step


_EVAL_STEPS: dict = {}


def _eval_step(model, model_config: ModelConfig, batch_size: int, seq_length: int):
    """A compiled ``(x, y, *states) -> (loss, *new_states)`` for ``model``, cached."""
    import tensorflow as tf

    key = (id(model), batch_size, seq_length)
    cached = _EVAL_STEPS.get(key)
    if cached is not None and cached[0] is model:
        return cached[1]
    signature = [tf.TensorSpec((batch_size, seq_length), tf.int32),
                 tf.TensorSpec((batch_size, seq_length), tf.int32),
                 *_state_spec(model_config, batch_size)]

    @tf.function(input_signature=signature)
    def eval_step(x, y, *states):
        logits, *new_states = model([x, *states], training=False)
        losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)
        return (tf.reduce_mean(losses), *new_states)

    _EVAL_STEPS[key] = (model, eval_step)
    return eval_step


def evaluate(model, x_batches, y_batches, model_config: ModelConfig) -> float:
    """Mean cross-entropy (nats per character) over ``(num_batches, B, T)`` batches.

    The state starts at zero and is carried from batch to batch, as in training.
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
    states = zero_states(model_config, batch_size)
    total = 0.0
    for x, y in zip(x_batches, y_batches):
        loss, *states = step(tf.constant(x, tf.int32), tf.constant(y, tf.int32), *states)
        total += float(loss)
    return total / x_batches.shape[0]


# --------------------------------------------------------------------------- checkpoints


def _data_fingerprint(loader) -> str:
    digest = hashlib.sha256()
    for arr in (loader.x_batches, loader.val_x):
        if arr is not None:
            digest.update(np.ascontiguousarray(arr, dtype=np.int32).tobytes())
    return digest.hexdigest()


def _run_identity(loader, model_config: ModelConfig, train_config: TrainConfig) -> dict:
    """What must match for a checkpoint to belong to this run."""
    train = {k: v for k, v in train_config.to_dict().items() if k not in _BOOKKEEPING_FIELDS}
    return {"model": model_config.to_dict(), "train": train,
            "data": {"fingerprint": _data_fingerprint(loader),
                     "num_batches": int(loader.num_batches),
                     "num_val_batches": int(getattr(loader, "num_val_batches", 0) or 0)}}


def latest_checkpoint(out_dir) -> Path | None:
    """The newest complete ``ckpt-*`` folder in ``out_dir`` (or ``out_dir`` itself if it is one)."""
    out_dir = Path(out_dir)
    if (out_dir / "progress.json").is_file():
        return out_dir
    if not out_dir.is_dir():
        return None
    found = [p for p in out_dir.glob("ckpt-*") if p.is_dir() and p.name[5:].isdigit()]
    return max(found, key=lambda p: int(p.name[5:])) if found else None


def _write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=1, ensure_ascii=False), encoding="utf-8")


def _rng_variables(model) -> list:
    """The model's random-number generator states (dropout's seed generators)."""
    return [v for v in model.non_trainable_variables if "seed_generator" in v.path]


def _save_checkpoint(out_dir: Path, *, model, optimizer, states, vocab, identity: dict,
                     progress: dict) -> Path:
    """Write a checkpoint into a temporary folder, then rename it into place; prune older ones."""
    out_dir.mkdir(parents=True, exist_ok=True)
    final = out_dir / f"ckpt-{progress['global_step']:08d}"
    if (final / "progress.json").is_file():
        return final  # this step is saved already, and a run's state is a function of its step
    tmp = Path(tempfile.mkdtemp(dir=out_dir, prefix=".tmp-ckpt-"))
    try:
        with warnings.catch_warnings():  # Keras's saver calls np.array on TF variables, which
            warnings.filterwarnings(     # NumPy 2 flags (no copy= keyword); harmless here
                "ignore", message="__array__ implementation doesn't accept a copy keyword")
            model.save_weights(str(tmp / "model.weights.h5"))
        store = {}
        optimizer.save_own_variables(store)                 # {"0": iterations, "1": ..., ...}
        np.savez(tmp / "optimizer.npz", **store)
        np.save(tmp / "state.npy", np.stack([np.asarray(s) for s in states]).astype(np.float32))
        # Keras keeps each dropout layer's random-number state in a non-trainable variable
        # that save_weights leaves out; without it a resumed run would draw other masks.
        np.savez(tmp / "rng.npz", **{str(i): v.numpy() for i, v in enumerate(_rng_variables(model))})
        (tmp / "vocab.json").write_text(vocab.to_json(), encoding="utf-8")
        _write_json(tmp / "config.json", identity)
        _write_json(tmp / "progress.json", {"format": CHECKPOINT_FORMAT, **progress})  # last
        shutil.rmtree(final, ignore_errors=True)            # an incomplete leftover, if any
        os.replace(tmp, final)                              # atomic: the folder appears complete
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in out_dir.glob("ckpt-*"):
        if old != final and old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
    return final


def _read_checkpoint_meta(ckpt: Path) -> tuple[dict, dict, object]:
    """``(identity, progress, vocab)`` of a checkpoint folder, with clear errors."""
    from charrnn_lib.data import Vocab

    needed = ("model.weights.h5", "optimizer.npz", "state.npy", "rng.npz", "vocab.json",
              "config.json", "progress.json")
    missing = [name for name in needed if not (ckpt / name).is_file()]
    if missing:
        raise CheckpointError(f"checkpoint {ckpt} is incomplete: {', '.join(missing)} missing. "
                              "Delete the folder (an older checkpoint or a fresh start is used).")
    try:
        identity = json.loads((ckpt / "config.json").read_text(encoding="utf-8"))
        progress = json.loads((ckpt / "progress.json").read_text(encoding="utf-8"))
        vocab = Vocab.from_json((ckpt / "vocab.json").read_text(encoding="utf-8"))
        ModelConfig.from_dict(identity["model"])
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"checkpoint {ckpt} is damaged ({exc}); delete it and train again") from None
    if progress.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"checkpoint {ckpt} has format {progress.get('format')!r}, this "
                              f"library reads format {CHECKPOINT_FORMAT}; train again")
    return identity, progress, vocab


def _describe_mismatch(saved: dict, wanted: dict, prefix: str = "") -> list[str]:
    lines = []
    for key in sorted(set(saved) | set(wanted)):
        a, b = saved.get(key), wanted.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            lines += _describe_mismatch(a, b, f"{prefix}{key}.")
        elif a != b:
            lines.append(f"{prefix}{key}: checkpoint {a!r}, now {b!r}")
    return lines


def _load_weights(model, ckpt: Path) -> None:
    try:
        model.load_weights(str(ckpt / "model.weights.h5"))
    except Exception as exc:  # h5py/keras raise many types for a damaged or foreign file
        raise CheckpointError(f"cannot load the weights of {ckpt}: {exc}") from None


def load_checkpoint(out_dir, batch_size: int | None = None):
    """``(model, vocab, model_config)`` from the newest checkpoint in ``out_dir``.

    ``batch_size`` fixes the model's batch dimension (``None``: free), e.g. 1 for sampling.
    """
    ckpt = latest_checkpoint(out_dir)
    if ckpt is None:
        raise CheckpointError(f"no checkpoint in {out_dir}: train first, e.g. "
                              f"train(loader, model_config, train_config, out_dir={str(out_dir)!r})")
    identity, _, vocab = _read_checkpoint_meta(ckpt)
    model_config = ModelConfig.from_dict(identity["model"])
    if len(vocab) != model_config.vocab_size:
        raise CheckpointMismatchError(f"checkpoint {ckpt}: vocab.json has {len(vocab)} characters "
                                      f"but the model expects {model_config.vocab_size}")
    model = build_model(model_config, batch_size=batch_size)
    _load_weights(model, ckpt)
    return model, vocab, model_config


def _restore_rng(model, ckpt: Path) -> None:
    with np.load(ckpt / "rng.npz", allow_pickle=False) as data:
        arrays = [data[str(i)] for i in range(len(data.files))]
    variables = _rng_variables(model)
    if len(arrays) != len(variables):
        raise CheckpointError(f"{ckpt}/rng.npz has {len(arrays)} generator states, the model "
                              f"{len(variables)}")
    for var, value in zip(variables, arrays):
        var.assign(value)


def _restore_optimizer(optimizer, ckpt: Path) -> None:
    with np.load(ckpt / "optimizer.npz", allow_pickle=False) as data:  # never unpickle
        store = {k: data[k] for k in data.files}
    if len(store) != len(optimizer.variables):
        raise CheckpointError(f"{ckpt}/optimizer.npz has {len(store)} arrays, the optimizer "
                              f"{len(optimizer.variables)} variables")
    for i, var in enumerate(optimizer.variables):
        if tuple(store[str(i)].shape) != tuple(var.shape):
            raise CheckpointError(f"{ckpt}/optimizer.npz: array {i} has shape "
                                  f"{store[str(i)].shape}, variable {var.path} {tuple(var.shape)}")
    optimizer.load_own_variables(store)


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


def train(loader, model_config: ModelConfig, train_config: TrainConfig = TrainConfig(),
          out_dir=None, progress: bool = True, strategy=None,
          max_batches: int | None = None) -> TrainResult:
    """Train a char-rnn on ``loader``'s batches; resume from ``out_dir`` if it holds this run.

    ``loader``: a ``charrnn_lib.data.TextLoader`` built with ``train_config``'s batch shape
    and ``val_fraction``.  ``model_config.vocab_size`` must equal ``loader.vocab_size``.
    ``out_dir``: where checkpoints go (``None``: no checkpoints).  If it holds a checkpoint
    of the same run, training continues from it, and a finished run returns at once.
    ``progress``: show a progress bar (tqdm, on stderr).  ``max_batches``: stop after this
    many training batches in this call, writing a checkpoint (an interruption on purpose).
    """
    import keras
    import tensorflow as tf

    from charrnn_lib.model import zero_states
    from charrnn_lib.repro import seed_everything

    _check_loader(loader, train_config)
    if model_config.vocab_size != loader.vocab_size:
        raise ValueError(f"model_config.vocab_size={model_config.vocab_size} but the corpus has "
                         f"{loader.vocab_size} characters; use ModelConfig(vocab_size=loader.vocab_size)")
    strategy = strategy or tf.distribute.get_strategy()
    out_dir = Path(out_dir) if out_dir is not None else None
    identity = _run_identity(loader, model_config, train_config)
    B, nb = train_config.batch_size, loader.num_batches
    total_steps = train_config.num_epochs * nb

    if out_dir is not None:                                 # leftovers of a killed save
        for junk in out_dir.glob(".tmp-ckpt-*"):
            shutil.rmtree(junk, ignore_errors=True)
    ckpt = latest_checkpoint(out_dir) if out_dir is not None else None
    if ckpt is not None:
        saved_identity, saved_progress, saved_vocab = _read_checkpoint_meta(ckpt)
        if saved_vocab.chars != loader.vocab.chars:
            raise CheckpointMismatchError(
                f"{out_dir} holds a checkpoint trained with a different vocabulary "
                f"({len(saved_vocab)} characters vs {loader.vocab_size} now): it is another "
                f"corpus. Use another out_dir, or delete {out_dir} to start over.")
        diffs = _describe_mismatch(saved_identity, identity)
        if diffs:
            raise CheckpointMismatchError(
                f"{out_dir} holds a checkpoint of a different run:\n  " + "\n  ".join(diffs)
                + f"\nUse another out_dir, delete {out_dir} to start over, or pass the "
                "checkpoint's configuration to resume it.")

    seed_everything(train_config.seed)
    with strategy.scope():
        model = build_model(model_config, batch_size=B)
        optimizer = keras.optimizers.Adam(learning_rate=train_config.learning_rate)
        optimizer.build(model.trainable_variables)
    history = History()
    epoch = pointer = global_step = 0
    states = zero_states(model_config, B)
    finished = False
    if ckpt is not None:
        _load_weights(model, ckpt)
        _restore_rng(model, ckpt)
        _restore_optimizer(optimizer, ckpt)
        history = History.from_dict(saved_progress["history"])
        epoch, pointer = saved_progress["epoch"], saved_progress["batch"]
        global_step, finished = saved_progress["global_step"], saved_progress["finished"]
        saved_states = np.load(ckpt / "state.npy", allow_pickle=False)
        states = [tf.constant(s) for s in saved_states]
    result = TrainResult(model, history, loader.vocab, model_config, train_config, out_dir,
                         finished=finished, resumed=ckpt is not None, global_step=global_step)
    if finished:
        return result

    def save():
        if out_dir is None:
            return
        _save_checkpoint(out_dir, model=model, optimizer=optimizer, states=states,
                         vocab=loader.vocab, identity=identity,
                         progress={"epoch": epoch, "batch": pointer, "global_step": global_step,
                                   "finished": finished, "history": history.to_dict()})

    train_step = _make_train_step(model, optimizer, model_config, train_config, strategy)
    bar = _progress_bar(progress, total_steps, global_step)
    done_here, timed_chars, timed_seconds = 0, 0, 0.0
    consistent = True                                       # bookkeeping matches the weights
    try:
        while epoch < train_config.num_epochs:
            while pointer < nb:
                if max_batches is not None and done_here >= max_batches:
                    save()
                    result.global_step = global_step
                    return result
                lr = learning_rate_at(global_step, total_steps, train_config)
                x = tf.constant(loader.x_batches[pointer], tf.int32)
                y = tf.constant(loader.y_batches[pointer], tf.int32)
                t0 = time.perf_counter()
                consistent = False
                loss, norm, *states = train_step(x, y, tf.constant(lr, tf.float32), *states)
                history.train_loss.append(float(loss))              # waits for the step
                if done_here > 0:                                   # the first call also traces
                    timed_chars += B * train_config.seq_length
                    timed_seconds += time.perf_counter() - t0
                history.grad_norm.append(float(norm))
                history.learning_rate.append(lr)
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
            states = zero_states(model_config, B)           # each epoch starts from zeros
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
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, file=sys.stderr,
                unit="batch", mininterval=1.0, dynamic_ncols=False, ncols=100, ascii=True)
