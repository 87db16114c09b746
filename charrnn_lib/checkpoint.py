"""Checkpoints: everything a training run's future depends on, saved so that it resumes exactly.

A checkpoint is a folder ``out_dir/ckpt-<global step>/`` holding

* ``model.weights.h5``: the weights (Keras's own format);
* ``optimizer.npz``: Adam's step count and its first- and second-moment estimates;
* ``state.npy``: the recurrent state carried into the next batch, (n_states, B, H);
* ``rng.npz``: the random-number states of dropout layers (Keras keeps them outside the
  weights);
* ``vocab.json``: the vocabulary;
* ``config.json``: the run's identity -- model and training configuration, and a
  fingerprint of the batches -- so that a checkpoint of a *different* run is refused;
* ``progress.json``: epoch, batch pointer, global step, finished flag, loss history.

No pickles: every file is JSON, NumPy (``allow_pickle=False``) or HDF5 data, so loading a
checkpoint cannot run code.  A checkpoint is written into a temporary folder and renamed
into place when complete (``os.replace``: atomic), so a crash while saving never leaves a
half-written checkpoint, and the previous one is deleted only after the new one is in place.
``charrnn_lib.train`` writes and reads these; ``load_checkpoint`` gives sampling a model.
Importing this module loads NumPy only (Keras is imported by the functions that build or
fill a model), so tools can find and inspect checkpoints cheaply.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np

__all__ = [
    "BOOKKEEPING_FIELDS",
    "CheckpointError",
    "CheckpointMismatchError",
    "check_same_run",
    "latest_checkpoint",
    "load_checkpoint",
    "run_identity",
    "save_checkpoint",
]

CHECKPOINT_FORMAT = 1
# Fields of TrainConfig that do not change what a run computes: a resumed run may differ in them.
BOOKKEEPING_FIELDS = ("checkpoint_every",)


class CheckpointError(ValueError):
    """A checkpoint is missing, incomplete or damaged."""


class CheckpointMismatchError(CheckpointError):
    """``out_dir`` holds a checkpoint of a different run (other data, vocabulary or config)."""




def data_fingerprint(loader) -> str:
    digest = hashlib.sha256()
    for arr in (loader.x_batches, loader.val_x):
        if arr is not None:
            digest.update(np.ascontiguousarray(arr, dtype=np.int32).tobytes())
    return digest.hexdigest()


def run_identity(loader, model_config, train_config) -> dict:
    """What must match for a checkpoint to belong to this run."""
    train = {k: v for k, v in train_config.to_dict().items() if k not in BOOKKEEPING_FIELDS}
    return {"model": model_config.to_dict(), "train": train,
            "data": {"fingerprint": data_fingerprint(loader),
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


def rng_variables(model) -> list:
    """The model's random-number generator states (dropout's seed generators)."""
    return [v for v in model.non_trainable_variables if "seed_generator" in v.path]


def save_checkpoint(out_dir: Path, *, model, optimizer, states, vocab, identity: dict,
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
        np.savez(tmp / "rng.npz", **{str(i): v.numpy() for i, v in enumerate(rng_variables(model))})
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


def read_checkpoint_meta(ckpt: Path) -> tuple[dict, dict, object]:
    """``(identity, progress, vocab)`` of a checkpoint folder, with clear errors."""
    from charrnn_lib.data import Vocab
    from charrnn_lib.model import ModelConfig

    needed = ("model.weights.h5", "optimizer.npz", "state.npy", "rng.npz", "vocab.json",
              "config.json", "progress.json")
    missing = [name for name in needed if not (ckpt / name).is_file()]
    if missing:
        raise CheckpointError(f"checkpoint {ckpt} is incomplete: {', '.join(missing)} missing. "
                              "Delete that folder and train again (from an older checkpoint "
                              "if there is one, else from the start).")
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


def describe_mismatch(saved: dict, wanted: dict, prefix: str = "") -> list[str]:
    lines = []
    for key in sorted(set(saved) | set(wanted)):
        a, b = saved.get(key), wanted.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            lines += describe_mismatch(a, b, f"{prefix}{key}.")
        elif a != b:
            have = "not recorded (an older version of the library)" if key not in saved else repr(a)
            lines.append(f"{prefix}{key}: checkpoint {have}, now {b!r}")
    return lines


def load_weights(model, ckpt: Path) -> None:
    try:
        model.load_weights(str(ckpt / "model.weights.h5"))
    except Exception as exc:  # h5py/keras raise many types for a damaged or foreign file
        raise CheckpointError(f"cannot load the weights of {ckpt}: {exc}") from None


def load_checkpoint(out_dir, batch_size: int | None = None):
    """``(model, vocab, model_config)`` from the newest checkpoint in ``out_dir``.

    ``batch_size`` fixes the model's batch dimension (``None``: free), e.g. 1 for sampling.
    """
    from charrnn_lib.model import ModelConfig, build_model

    ckpt = latest_checkpoint(out_dir)
    if ckpt is None:
        raise CheckpointError(f"no checkpoint in {out_dir}: train first, e.g. "
                              f"train(loader, model_config, train_config, out_dir={str(out_dir)!r})")
    identity, _, vocab = read_checkpoint_meta(ckpt)
    model_config = ModelConfig.from_dict(identity["model"])
    if len(vocab) != model_config.vocab_size:
        raise CheckpointMismatchError(f"checkpoint {ckpt}: vocab.json has {len(vocab)} characters "
                                      f"but the model expects {model_config.vocab_size}")
    model = build_model(model_config, batch_size=batch_size)
    load_weights(model, ckpt)
    return model, vocab, model_config


def restore_rng(model, ckpt: Path) -> None:
    with np.load(ckpt / "rng.npz", allow_pickle=False) as data:
        arrays = [data[str(i)] for i in range(len(data.files))]
    variables = rng_variables(model)
    if len(arrays) != len(variables):
        raise CheckpointError(f"{ckpt}/rng.npz has {len(arrays)} generator states, the model "
                              f"{len(variables)}")
    for var, value in zip(variables, arrays):
        var.assign(value)


def restore_optimizer(optimizer, ckpt: Path) -> None:
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


def check_same_run(ckpt: Path, vocab, identity: dict) -> tuple[dict, dict]:
    """``(identity, progress)`` of ``ckpt`` if it belongs to the run described; else raise.

    ``CheckpointMismatchError`` names every difference and says what to do.
    """
    out_dir = ckpt.parent
    saved_identity, saved_progress, saved_vocab = read_checkpoint_meta(ckpt)
    if saved_vocab.chars != vocab.chars:
        raise CheckpointMismatchError(
            f"{out_dir} holds a checkpoint trained with a different vocabulary "
            f"({len(saved_vocab)} characters vs {len(vocab)} now): it is another "
            f"corpus. Use another out_dir, or delete {out_dir} to start over.")
    diffs = describe_mismatch(saved_identity, identity)
    if diffs:
        raise CheckpointMismatchError(
            f"{out_dir} holds a checkpoint of a different run:\n  " + "\n  ".join(diffs)
            + f"\nUse another out_dir, delete {out_dir} to start over, or pass the "
            "checkpoint's configuration to resume it.")
    return saved_identity, saved_progress


def remove_leftovers(out_dir: Path) -> None:
    """Delete temporary folders of saves that were killed before they finished."""
    for junk in Path(out_dir).glob(".tmp-ckpt-*"):
        shutil.rmtree(junk, ignore_errors=True)
