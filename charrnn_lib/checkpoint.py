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
Folders and files are created with the process's umask (never narrower).  Weights or a
state that are not finite are never written, and never loaded.

Damage from outside (a truncated copy, an edited file, an emptied folder) is reported as a
:class:`CheckpointError` naming the file and what to do.  ``latest_checkpoint`` passes over
an incomplete newest folder -- with a :class:`CheckpointWarning` -- to the newest complete one.

Only one run may write into an ``out_dir`` at a time: ``charrnn_lib.train.train`` holds the
folder's lock (``charrnn_lib.outdir``) while it runs, and only the holder deletes the
leftovers of killed saves (``remove_leftovers``) and older checkpoints.
``charrnn_lib.train`` writes and reads these; ``load_checkpoint`` gives sampling a model.
Importing this module loads NumPy only (Keras is imported by the functions that build or
fill a model), so tools such as the command line find and inspect checkpoints cheaply.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import secrets
import shutil
import warnings
from pathlib import Path

import numpy as np

from charrnn_lib.config import SPEED_FIELDS, config_from_dict

__all__ = [
    "BOOKKEEPING_FIELDS",
    "CheckpointError",
    "CheckpointMismatchError",
    "CheckpointWarning",
    "check_same_run",
    "is_checkpoint_folder",
    "latest_checkpoint",
    "load_checkpoint",
    "run_identity",
    "save_checkpoint",
]

CHECKPOINT_FORMAT = 1
# Fields of TrainConfig that do not change what a run computes: a resumed run may differ in
# them.  How often to save, and the speed knobs (charrnn_lib.config.SPEED_FIELDS: the fast
# path and the reference give the same numbers up to float32 rounding, which
# tests/test_train.py checks).  Whether a GPU is present, which also switches the path, is
# not recorded for the same reason.  Mixed precision changes the numbers: it is identity.
BOOKKEEPING_FIELDS = ("checkpoint_every", *SPEED_FIELDS)
# Names an older version of the library wrote into config.json, and what they are called now.
_RENAMED_INITS = {"deck": "unit_normal"}
FILES = ("model.weights.h5", "optimizer.npz", "state.npy", "rng.npz", "vocab.json", "config.json",
         "progress.json")
_STEP_FOLDER = re.compile(r"ckpt-(\d+)")


class CheckpointError(ValueError):
    """A checkpoint is missing, incomplete or damaged."""


class CheckpointMismatchError(CheckpointError):
    """``out_dir`` holds a checkpoint of a different run (other data, vocabulary or config).

    ``differences`` lists the differing fields, one ``"field: checkpoint A, now B"`` each
    (empty when the vocabulary differs).
    """

    def __init__(self, message: str, differences: tuple[str, ...] = ()):
        super().__init__(message)
        self.differences = tuple(differences)


class CheckpointWarning(UserWarning):
    """An incomplete checkpoint folder was passed over for an older, complete one."""


def _damaged(ckpt: Path, name: str, reason: str) -> CheckpointError:
    reason = " ".join(str(reason).split())[:300]
    return CheckpointError(f"{ckpt / name} is damaged ({reason}); delete the folder {ckpt} and train "
                           f"again (training then resumes from an older checkpoint if one is left, "
                           f"else it starts over)")


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


def is_checkpoint_folder(path) -> bool:
    """Whether ``path`` is itself a checkpoint (named ``ckpt-<step>`` or holding ``progress.json``)."""
    path = Path(path)
    return bool(_STEP_FOLDER.fullmatch(path.name)) or (path / "progress.json").is_file()


def missing_files(ckpt: Path) -> list[str]:
    """The files of a complete checkpoint that ``ckpt`` lacks."""
    return [name for name in FILES if not (Path(ckpt) / name).is_file()]


def latest_checkpoint(out_dir) -> Path | None:
    """The newest complete ``ckpt-*`` folder in ``out_dir`` (or ``out_dir`` itself if it is one).

    Newer folders that lack files (emptied or cut short by hand: a save itself never leaves
    one) are passed over with a :class:`CheckpointWarning`.  If no folder is complete, the
    newest is returned, so that loading it names what is missing.
    """
    out_dir = Path(out_dir)
    if (out_dir / "progress.json").is_file():
        return out_dir
    if not out_dir.is_dir():
        return None
    found = sorted((p for p in out_dir.glob("ckpt-*") if _STEP_FOLDER.fullmatch(p.name) and p.is_dir()),
                   key=lambda p: int(p.name[5:]), reverse=True)
    for i, ckpt in enumerate(found):
        if not missing_files(ckpt):
            for skipped in found[:i]:
                warnings.warn(f"{skipped} is incomplete ({', '.join(missing_files(skipped))} missing); "
                              f"using the older complete checkpoint {ckpt.name}", CheckpointWarning,
                              stacklevel=2)
            return ckpt
    return found[0] if found else None


def _write_json(path: Path, obj, allow_nan: bool = True) -> None:
    path.write_text(json.dumps(obj, indent=1, ensure_ascii=False, allow_nan=allow_nan), encoding="utf-8")


def rng_variables(model) -> list:
    """The model's random-number generator states (dropout's seed generators)."""
    return [v for v in model.non_trainable_variables if "seed_generator" in v.path]


def _all_finite(arrays) -> bool:
    return all(np.isfinite(a).all() for a in arrays if np.issubdtype(a.dtype, np.floating))


def _values(variables) -> list:
    """NumPy copies of Keras variables (``.numpy()``: no NumPy-2 ``__array__`` warnings)."""
    return [v.numpy() if hasattr(v, "numpy") else np.asarray(v) for v in variables]


def _make_temporary_folder(out_dir: Path) -> Path:
    """A new ``.tmp-ckpt-*`` folder, created with the umask (``mkdtemp`` would force 0700)."""
    while True:
        tmp = out_dir / f".tmp-ckpt-{secrets.token_hex(6)}"
        try:
            tmp.mkdir()
            return tmp
        except FileExistsError:
            continue


def save_checkpoint(out_dir: Path, *, model, optimizer, states, vocab, identity: dict,
                     progress: dict, keep=()) -> Path:
    """Write a checkpoint into a temporary folder, then rename it into place; prune older ones
    (except those of the global steps in ``keep``: snapshots of the run's progress).

    Raises :class:`CheckpointError`, writing nothing, if the weights or the state are not
    finite (a diverged run).  Whoever calls this should hold the folder's lock
    (``charrnn_lib.outdir.lock_out_dir``): it deletes the other ``ckpt-*`` folders.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    final = out_dir / f"ckpt-{progress['global_step']:08d}"
    if not missing_files(final):
        return final  # this step is saved already, and a run's state is a function of its step
    state = (np.stack([np.asarray(s) for s in states]).astype(np.float32) if len(states)  # (n_states, B, H)
             else np.zeros((0, 0, 0), np.float32))            # a model without a carried state
    if not _all_finite([state] + _values(model.weights)):
        raise CheckpointError(f"not saving step {progress['global_step']} into {out_dir}: its weights or "
                              "state are not finite (NaN or infinity), i.e. training diverged")
    tmp = _make_temporary_folder(out_dir)
    try:
        with warnings.catch_warnings():  # Keras's saver calls np.array on TF variables, which
            warnings.filterwarnings(     # NumPy 2 flags (no copy= keyword); harmless here
                "ignore", message="__array__ implementation doesn't accept a copy keyword")
            model.save_weights(str(tmp / "model.weights.h5"))
        store = {}
        optimizer.save_own_variables(store)                 # {"0": iterations, "1": ..., ...}
        np.savez(tmp / "optimizer.npz", **store)
        np.save(tmp / "state.npy", state)
        # Keras keeps each dropout layer's random-number state in a non-trainable variable
        # that save_weights leaves out; without it a resumed run would draw other masks.
        np.savez(tmp / "rng.npz", **{str(i): v.numpy() for i, v in enumerate(rng_variables(model))})
        (tmp / "vocab.json").write_text(vocab.to_json(), encoding="utf-8")
        _write_json(tmp / "config.json", identity, allow_nan=False)  # never a bare NaN
        _write_json(tmp / "progress.json", {"format": CHECKPOINT_FORMAT, **progress})  # last
        shutil.rmtree(final, ignore_errors=True)            # an incomplete leftover, if any
        os.replace(tmp, final)                              # atomic: the folder appears complete
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    kept = {f"ckpt-{step:08d}" for step in keep}
    for old in out_dir.glob("ckpt-*"):
        if old != final and old.is_dir() and old.name not in kept:
            shutil.rmtree(old, ignore_errors=True)
    return final


def _check_model_fields(model) -> None:
    """A saved ``ModelConfig`` dict must build one (an older library's init names are renamed)."""
    if not isinstance(model, dict):
        raise ValueError("'model' is not a JSON object")
    if "init" in model:
        model["init"] = _RENAMED_INITS.get(model["init"], model["init"])
    config_from_dict(model)


def _check_progress_fields(progress) -> None:
    if not isinstance(progress, dict):
        raise ValueError("not a JSON object")
    if progress.get("format") != CHECKPOINT_FORMAT:
        return  # reported as another format, below
    for field in ("epoch", "batch", "global_step"):
        value = progress.get(field)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{field} is {value!r}, expected an integer >= 0")
    if not isinstance(progress.get("finished"), bool) or not isinstance(progress.get("history"), dict):
        raise ValueError("'finished' or 'history' is missing or of the wrong type")


def read_checkpoint_meta(ckpt: Path) -> tuple[dict, dict, object]:
    """``(identity, progress, vocab)`` of a checkpoint folder, with clear errors.  No Keras needed."""
    from charrnn_lib.data import Vocab

    ckpt = Path(ckpt)
    missing = missing_files(ckpt)
    if missing:
        raise CheckpointError(f"checkpoint {ckpt} is incomplete: {', '.join(missing)} missing. "
                              "Delete that folder and train again (from an older checkpoint "
                              "if there is one, else from the start).")
    parsed = {}
    for name in ("config.json", "progress.json", "vocab.json"):
        try:
            text = (ckpt / name).read_text(encoding="utf-8")
            parsed[name] = Vocab.from_json(text) if name == "vocab.json" else json.loads(text)
            if name == "config.json":
                _check_model_fields(parsed[name].get("model") if isinstance(parsed[name], dict) else None)
            elif name == "progress.json":
                _check_progress_fields(parsed[name])
        except OSError as exc:
            raise CheckpointError(f"cannot read {ckpt / name}: {exc.strerror or exc}") from None
        except (ValueError, KeyError, TypeError, AttributeError) as exc:  # UnicodeDecodeError is a ValueError
            raise CheckpointError(f"checkpoint {ckpt} is damaged ({ckpt / name}: {exc}); delete it and "
                                  "train again") from None
    identity, progress, vocab = parsed["config.json"], parsed["progress.json"], parsed["vocab.json"]
    if progress.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"checkpoint {ckpt} has format {progress.get('format')!r}, this "
                              f"library reads format {CHECKPOINT_FORMAT}; train again")
    return identity, progress, vocab


def model_config_of(identity: dict, ckpt: Path):
    """The ``ModelConfig`` saved in a checkpoint's identity."""

    try:
        return config_from_dict(identity["model"])
    except (ValueError, KeyError, TypeError) as exc:
        raise _damaged(Path(ckpt), "config.json", f"its model configuration: {exc}") from None


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
    """Fill ``model`` from ``ckpt/model.weights.h5``; refuse a damaged file or non-finite weights."""
    ckpt = Path(ckpt)
    try:
        model.load_weights(str(ckpt / "model.weights.h5"))
    except Exception as exc:  # h5py/keras raise many types for a damaged or foreign file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"cannot load the weights of {ckpt}: {ckpt / 'model.weights.h5'} is "
                              f"damaged or belongs to another model ({first[:300]}); delete the folder "
                              f"{ckpt} and train again") from None
    if not _all_finite(_values(model.weights)):
        raise CheckpointError(f"{ckpt / 'model.weights.h5'} holds weights that are not finite (NaN or "
                              "infinity): the run that wrote it diverged. Train a new run with a lower "
                              "learning rate or with gradient clipping")


def load_checkpoint(out_dir, batch_size: int | None = None):
    """``(model, vocab, model_config)`` from the newest checkpoint in ``out_dir`` (a ``ModelConfig``
    and its Keras model, or a ``TransformerConfig`` and a ``charrnn_lib.transformer`` model).

    ``batch_size`` fixes the model's batch dimension (``None``: free), e.g. 1 for sampling.
    """
    from charrnn_lib.architecture import build

    ckpt = latest_checkpoint(out_dir)
    if ckpt is None:
        raise CheckpointError(f"no checkpoint in {out_dir}: train first, e.g. "
                              f"train(loader, model_config, train_config, out_dir={str(out_dir)!r})")
    identity, _, vocab = read_checkpoint_meta(ckpt)
    model_config = model_config_of(identity, ckpt)
    if len(vocab) != model_config.vocab_size:
        raise CheckpointMismatchError(f"checkpoint {ckpt}: vocab.json has {len(vocab)} characters "
                                      f"but the model expects {model_config.vocab_size}")
    model = build(model_config, batch_size=batch_size)
    load_weights(model, ckpt)
    return model, vocab, model_config


def _load_failure(exc: Exception, kind: str) -> str:
    """Why ``np.load(..., allow_pickle=False)`` failed, without NumPy's advice to unpickle."""
    text = str(exc)
    if "Object arrays" in text:
        return "it holds Python objects, which a checkpoint never does and this library never loads"
    if "pickle" in text:  # what NumPy says of any file that is neither .npy nor .npz
        return f"not {kind}"
    return text or type(exc).__name__


def _read_npz(ckpt: Path, name: str) -> dict:
    """The arrays of ``ckpt/name`` (an ``.npz``), or a CheckpointError naming the damage."""
    try:
        data = np.load(ckpt / name, allow_pickle=False)  # never unpickle
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise ValueError("a single array, not an .npz archive")
        with data:
            arrays = {key: data[key] for key in data.files}
    except Exception as exc:  # noqa: BLE001 -- zipfile, zlib, EOF, format errors: all mean damaged
        raise _damaged(ckpt, name, _load_failure(exc, "a NumPy .npz archive")) from None
    for key, value in arrays.items():
        if not (np.issubdtype(value.dtype, np.number) or value.dtype == np.bool_):
            raise _damaged(ckpt, name, f"array {key!r} has dtype {value.dtype}")
    return arrays


def restore_rng(model, ckpt: Path) -> None:
    data = _read_npz(Path(ckpt), "rng.npz")
    variables = rng_variables(model)
    if len(data) != len(variables):
        raise CheckpointError(f"{ckpt}/rng.npz has {len(data)} generator states, the model "
                              f"{len(variables)}")
    for i, var in enumerate(variables):
        value = data.get(str(i))
        if value is None or tuple(value.shape) != tuple(var.shape):
            raise _damaged(Path(ckpt), "rng.npz", f"generator state {i} is missing or has the wrong shape")
        var.assign(value)


def restore_optimizer(optimizer, ckpt: Path) -> None:
    ckpt = Path(ckpt)
    store = _read_npz(ckpt, "optimizer.npz")
    if len(store) != len(optimizer.variables):
        raise CheckpointError(f"{ckpt}/optimizer.npz has {len(store)} arrays, the optimizer "
                              f"{len(optimizer.variables)} variables")
    for i, var in enumerate(optimizer.variables):
        if str(i) not in store:
            raise _damaged(ckpt, "optimizer.npz", f"array {i} is missing")
        if tuple(store[str(i)].shape) != tuple(var.shape):
            raise CheckpointError(f"{ckpt}/optimizer.npz: array {i} has shape "
                                  f"{store[str(i)].shape}, variable {var.path} {tuple(var.shape)}")
    if not _all_finite(store.values()):
        raise _damaged(ckpt, "optimizer.npz", "values that are not finite")
    optimizer.load_own_variables(store)


def restore_state(ckpt: Path, shape: tuple[int, int, int]) -> np.ndarray:
    """The carried state of ``ckpt/state.npy``, checked to be finite float32 of ``shape`` (n, B, H)."""
    ckpt = Path(ckpt)
    try:
        state = np.load(ckpt / "state.npy", allow_pickle=False)  # never unpickle
        if not isinstance(state, np.ndarray):
            state.close()
            raise ValueError("an .npz archive, not a single array")
    except Exception as exc:  # noqa: BLE001 -- any failure to parse means damaged
        raise _damaged(ckpt, "state.npy", _load_failure(exc, "a NumPy .npy array")) from None
    shape = shape if shape[0] else (0, 0, 0)          # a model without a carried state stores none
    if state.dtype != np.float32 or tuple(state.shape) != tuple(shape):
        raise _damaged(ckpt, "state.npy", f"{state.dtype} array of shape {state.shape}, expected float32 "
                                          f"{tuple(shape)}")
    if not np.isfinite(state).all():
        raise _damaged(ckpt, "state.npy", "values that are not finite")
    return state


def _without(identity: dict, fields) -> dict:
    trimmed = copy.deepcopy(identity)
    for field in fields:
        *path, last = field.split(".")
        node = trimmed
        for key in path:
            node = node.get(key, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(last, None)
    return trimmed


def check_same_run(ckpt: Path, vocab, identity: dict, may_differ=()) -> tuple[dict, dict]:
    """``(identity, progress)`` of ``ckpt`` if it belongs to the run described; else raise.

    ``CheckpointMismatchError`` names every difference and says what to do.  ``may_differ``:
    dotted fields (``"train.num_epochs"``) that are allowed to differ.
    """
    out_dir = ckpt.parent
    saved_identity, saved_progress, saved_vocab = read_checkpoint_meta(ckpt)
    if saved_vocab.chars != vocab.chars:
        raise CheckpointMismatchError(
            f"{out_dir} holds a checkpoint trained with a different vocabulary "
            f"({len(saved_vocab)} characters vs {len(vocab)} now): it is another "
            f"corpus. Use another out_dir, or delete {out_dir} to start over.")
    # Bookkeeping fields never count, also where an older version of the library recorded them.
    ignored = (*may_differ, *(f"train.{field}" for field in BOOKKEEPING_FIELDS))
    diffs = describe_mismatch(_without(saved_identity, ignored), _without(identity, ignored))
    if diffs:
        message = (f"{out_dir} holds a checkpoint of a different run:\n  " + "\n  ".join(diffs)
                   + f"\nUse another out_dir, delete {out_dir} to start over, or pass the "
                   "checkpoint's configuration to resume it.")
        if any(d.startswith("train.num_epochs:") for d in diffs):
            message += ("\nnum_epochs can grow only under the constant learning-rate schedule: the "
                        "cosine schedule decays over all num_epochs x num_batches batches, so a longer "
                        "run is another run from its first batch on.")
        raise CheckpointMismatchError(message, tuple(diffs))
    return saved_identity, saved_progress


def remove_leftovers(out_dir: Path) -> None:
    """Delete temporary folders of saves that were killed before they finished.

    Only the holder of the folder's lock may call this (``charrnn_lib.outdir``): another
    run's save in progress looks exactly like a leftover.
    """
    for junk in Path(out_dir).glob(".tmp-ckpt-*"):
        shutil.rmtree(junk, ignore_errors=True)
