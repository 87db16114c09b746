"""Checkpoints: complete, atomic, loadable, and refused when they belong to another run."""
import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from charrnn_lib import checkpoint
from charrnn_lib.checkpoint import (CheckpointError, CheckpointMismatchError, check_same_run,
                                    latest_checkpoint, load_checkpoint, save_checkpoint)
from charrnn_lib.data import Vocab
from charrnn_lib.model import ModelConfig, build_model
from charrnn_lib.repro import seed_everything

VOCAB = Vocab(tuple("abcdefg "))
CONFIG = ModelConfig(vocab_size=len(VOCAB), hidden_size=6, cell="gru", dropout=0.2)
IDENTITY = {"model": CONFIG.to_dict(), "train": {"learning_rate": 0.002}, "data": {"fingerprint": "x"}}


@pytest.fixture
def parts():
    """A model with non-default weights, a built Adam with non-zero moments, a state."""
    seed_everything(0)
    model = build_model(CONFIG)
    optimizer = keras.optimizers.Adam()
    optimizer.build(model.trainable_variables)
    rng = np.random.default_rng(0)
    for var in optimizer.variables:
        var.assign(rng.normal(size=var.shape).astype(var.dtype))
    states = [tf.constant(rng.normal(size=(3, 6)), tf.float32) for _ in range(2)]
    return model, optimizer, states


def save(out_dir, parts, step, **progress):
    model, optimizer, states = parts
    return save_checkpoint(out_dir, model=model, optimizer=optimizer, states=states, vocab=VOCAB,
                           identity=IDENTITY,
                           progress={"epoch": 0, "batch": step, "global_step": step,
                                     "finished": False, "history": {}, **progress})


def test_round_trip(parts, tmp_path):
    model, optimizer, states = parts
    ckpt = save(tmp_path, parts, 3)
    assert ckpt.name == "ckpt-00000003" and latest_checkpoint(tmp_path) == ckpt
    assert sorted(p.name for p in ckpt.iterdir()) == sorted(
        ["model.weights.h5", "optimizer.npz", "state.npy", "rng.npz", "vocab.json", "config.json",
         "progress.json"])
    loaded, vocab, config = load_checkpoint(tmp_path, batch_size=1)
    assert vocab == VOCAB and config == CONFIG and loaded.inputs[0].shape[0] == 1
    for a, b in zip(loaded.trainable_weights, model.trainable_weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    fresh = keras.optimizers.Adam()
    fresh.build(loaded.trainable_variables)
    checkpoint.restore_optimizer(fresh, ckpt)
    for a, b in zip(fresh.variables, optimizer.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    np.testing.assert_array_equal(np.load(ckpt / "state.npy"), np.stack(states))
    assert json.loads((ckpt / "progress.json").read_text())["global_step"] == 3


def test_dropout_generator_state_is_saved(parts, tmp_path):
    model = parts[0]
    generators = checkpoint.rng_variables(model)
    assert generators  # the model has dropout
    for var in generators:
        var.assign(var.numpy() + 7)
    ckpt = save(tmp_path, parts, 1)
    other = build_model(CONFIG)
    checkpoint.restore_rng(other, ckpt)
    for a, b in zip(checkpoint.rng_variables(other), generators):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_newer_replaces_older_and_a_saved_step_is_kept(parts, tmp_path):
    first = save(tmp_path, parts, 1)
    stamp = (first / "progress.json").stat().st_mtime_ns
    assert save(tmp_path, parts, 1) == first                    # same step: not rewritten
    assert (first / "progress.json").stat().st_mtime_ns == stamp
    second = save(tmp_path, parts, 5)
    assert [p.name for p in tmp_path.iterdir()] == [second.name]  # older one pruned


def test_write_is_atomic(parts, tmp_path, monkeypatch):
    """A save that fails half-way leaves no trace; the previous checkpoint stays intact."""
    good = save(tmp_path, parts, 1)
    files = sorted(p.name for p in good.iterdir())

    def failing_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.np, "save", failing_save)  # state.npy fails, mid-write
    with pytest.raises(OSError, match="disk full"):
        save(tmp_path, parts, 2)
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt-00000001"]  # nothing half-written
    assert sorted(p.name for p in good.iterdir()) == files
    assert latest_checkpoint(tmp_path) == good


def test_leftovers_of_a_killed_save_are_removed(parts, tmp_path):
    save(tmp_path, parts, 1)
    (tmp_path / ".tmp-ckpt-abc").mkdir()
    (tmp_path / ".tmp-ckpt-abc" / "model.weights.h5").write_bytes(b"half")
    assert latest_checkpoint(tmp_path).name == "ckpt-00000001"  # never picked
    checkpoint.remove_leftovers(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt-00000001"]


def test_load_errors(parts, tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "nothing")
    ckpt = save(tmp_path, parts, 1)
    (ckpt / "model.weights.h5").write_bytes(b"not an h5 file")
    with pytest.raises(CheckpointError, match="cannot load the weights"):
        load_checkpoint(tmp_path)
    (ckpt / "optimizer.npz").unlink()
    with pytest.raises(CheckpointError, match="incomplete.*optimizer.npz"):
        load_checkpoint(tmp_path)
    (ckpt / "optimizer.npz").write_bytes(b"")
    (ckpt / "progress.json").write_text("{ not json")
    with pytest.raises(CheckpointError, match="damaged"):
        load_checkpoint(tmp_path)


def test_optimizer_of_another_shape_is_refused(parts, tmp_path):
    ckpt = save(tmp_path, parts, 1)
    other = build_model(ModelConfig(vocab_size=len(VOCAB), hidden_size=7, cell="gru"))
    optimizer = keras.optimizers.Adam()
    optimizer.build(other.trainable_variables)
    with pytest.raises(CheckpointError, match="shape"):
        checkpoint.restore_optimizer(optimizer, ckpt)


def test_check_same_run(parts, tmp_path):
    ckpt = save(tmp_path, parts, 1)
    saved, progress = check_same_run(ckpt, VOCAB, IDENTITY)
    assert saved == IDENTITY and progress["global_step"] == 1
    with pytest.raises(CheckpointMismatchError, match="different vocabulary"):
        check_same_run(ckpt, Vocab(tuple("abcdefgh")), IDENTITY)
    changed = json.loads(json.dumps(IDENTITY))
    changed["train"]["learning_rate"] = 0.01
    changed["data"]["fingerprint"] = "y"
    with pytest.raises(CheckpointMismatchError) as error:
        check_same_run(ckpt, VOCAB, changed)
    message = str(error.value)
    assert "train.learning_rate: checkpoint 0.002, now 0.01" in message
    assert "data.fingerprint: checkpoint 'x', now 'y'" in message and "delete" in message


def test_mismatch_names_a_field_an_older_checkpoint_lacks():
    from charrnn_lib.checkpoint import describe_mismatch

    wanted = {"train": {"batch_size": 50, "row_groups": 2}}
    older = "checkpoint not recorded (an older version of the library)"
    assert describe_mismatch({"train": {"batch_size": 50}}, wanted) == [f"train.row_groups: {older}, now 2"]
    assert describe_mismatch({"train": {"row_groups": None}}, wanted) == [
        f"train.batch_size: {older}, now 50", "train.row_groups: checkpoint None, now 2"]
