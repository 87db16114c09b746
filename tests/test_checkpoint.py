"""Checkpoints: complete, atomic, loadable, and refused when they belong to another run;
damage named without tracebacks or pickles, incomplete ones passed over, nothing non-finite."""
import json
import os
import shutil
import stat
import warnings

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


# --------------------------------------------------------------------------- hostile use


def test_folders_and_files_follow_the_umask(parts, tmp_path):
    old = os.umask(0o027)
    try:
        ckpt = save(tmp_path, parts, 1)
    finally:
        os.umask(old)
    assert stat.S_IMODE(ckpt.stat().st_mode) == 0o750  # not mkdtemp's 0700
    assert {stat.S_IMODE(f.stat().st_mode) for f in ckpt.iterdir()} == {0o640}


def test_an_incomplete_newest_checkpoint_falls_back_with_a_warning(parts, tmp_path):
    good = save(tmp_path, parts, 3)
    (tmp_path / "ckpt-00000009").mkdir()                      # emptied by hand
    (tmp_path / "ckpt-notastep").mkdir()                      # not a checkpoint name: ignored
    with pytest.warns(checkpoint.CheckpointWarning, match=r"ckpt-00000009 is incomplete .*using the older "
                                                          r"complete checkpoint ckpt-00000003"):
        assert latest_checkpoint(tmp_path) == good
    for name in checkpoint.FILES[:-1]:                        # a copy cut short: progress.json missing
        shutil.copy(good / name, tmp_path / "ckpt-00000009" / name)
    with pytest.warns(checkpoint.CheckpointWarning, match="progress.json missing"):
        assert load_checkpoint(tmp_path)[2] == CONFIG
    shutil.rmtree(good)                                       # no complete one left: the error names it
    with pytest.raises(CheckpointError, match="incomplete: progress.json missing"):
        load_checkpoint(tmp_path)


def test_damaged_arrays_are_named_and_never_unpickled(parts, tmp_path):
    model, optimizer, _ = parts
    ckpt = save(tmp_path, parts, 1)
    damages = {"random bytes": os.urandom(3000), "pickle": b"\x80\x04\x95" + os.urandom(100), "empty": b"",
               "npy": None, "objects": None}
    for what, data in damages.items():
        if what == "npy":
            np.save(ckpt / "optimizer.npz.npy", np.zeros(3))
            (ckpt / "optimizer.npz.npy").replace(ckpt / "optimizer.npz")
        elif what == "objects":
            with open(ckpt / "optimizer.npz", "wb") as f:
                np.savez(f, **{"0": np.array([1, None], dtype=object)}, allow_pickle=True)
        else:
            (ckpt / "optimizer.npz").write_bytes(data)
        with pytest.raises(CheckpointError, match="optimizer.npz is damaged") as error:
            checkpoint.restore_optimizer(optimizer, ckpt)
        assert "allow_pickle" not in str(error.value) and "pickle.load" not in str(error.value), what
        assert "delete the folder" in str(error.value)
    (ckpt / "rng.npz").write_bytes(os.urandom(100))
    with pytest.raises(CheckpointError, match="rng.npz is damaged"):
        checkpoint.restore_rng(model, ckpt)
    np.save(ckpt / "state.npy", np.zeros((2, 3, 5), np.float32))
    with pytest.raises(CheckpointError, match=r"state.npy is damaged \(float32 array of shape \(2, 3, 5\)"):
        checkpoint.restore_state(ckpt, (2, 3, 6))
    np.save(ckpt / "state.npy", np.full((2, 3, 6), np.nan, np.float32))
    with pytest.raises(CheckpointError, match="not finite"):
        checkpoint.restore_state(ckpt, (2, 3, 6))
    (ckpt / "state.npy").write_bytes(b"\x80\x04junk")
    with pytest.raises(CheckpointError, match="state.npy is damaged") as error:
        checkpoint.restore_state(ckpt, (2, 3, 6))
    assert "allow_pickle" not in str(error.value)


def test_damaged_json_is_named(parts, tmp_path):
    ckpt = save(tmp_path, parts, 1)
    good = (ckpt / "progress.json").read_text()
    for bad, match in [('{"format": 1, "epoch": "x"}', "epoch is 'x'"), ("[]", "not a JSON object"),
                       ('{"format": 1, "epoch": 0, "batch": 0, "global_step": 0}', "'finished' or 'history'")]:
        (ckpt / "progress.json").write_text(bad)
        with pytest.raises(CheckpointError, match=match):
            checkpoint.read_checkpoint_meta(ckpt)
    (ckpt / "progress.json").write_text(good)
    (ckpt / "config.json").write_text(json.dumps({"model": {"vocab_size": 1}}))
    with pytest.raises(CheckpointError, match="vocab_size must be an integer >= 2, got 1"):
        checkpoint.read_checkpoint_meta(ckpt)
    (ckpt / "config.json").write_bytes(b"\xff\xfe")
    with pytest.raises(CheckpointError, match="damaged"):
        checkpoint.read_checkpoint_meta(ckpt)


def test_non_finite_weights_are_never_saved_nor_loaded(parts, tmp_path):
    model, optimizer, states = parts
    good = save(tmp_path, parts, 1)
    weight = model.trainable_variables[0]
    weight.assign(np.full(weight.shape, np.nan, np.float32))
    with pytest.raises(CheckpointError, match="not finite"):
        save(tmp_path, parts, 2)
    assert [p.name for p in tmp_path.iterdir()] == [good.name]  # nothing written, the good one kept
    bad = tmp_path / "bad"
    shutil.copytree(good, bad / good.name)
    with warnings.catch_warnings():  # Keras's saver vs NumPy 2, as in save_checkpoint
        warnings.simplefilter("ignore", DeprecationWarning)
        model.save_weights(str(bad / good.name / "model.weights.h5"))
    with pytest.raises(CheckpointError, match="not finite .* diverged"):
        load_checkpoint(bad)
    with pytest.raises(ValueError, match="Out of range float values are not JSON compliant"):
        checkpoint._write_json(tmp_path / "config.json", {"grad_clip": float("nan")}, allow_nan=False)


def test_check_same_run_may_let_a_field_differ(parts, tmp_path):
    identity = json.loads(json.dumps(IDENTITY))
    identity["train"]["num_epochs"] = 2
    model, optimizer, states = parts
    ckpt = save_checkpoint(tmp_path, model=model, optimizer=optimizer, states=states, vocab=VOCAB,
                           identity=identity, progress={"epoch": 2, "batch": 0, "global_step": 8,
                                                        "finished": True, "history": {}})
    longer = json.loads(json.dumps(identity))
    longer["train"]["num_epochs"] = 5
    assert check_same_run(ckpt, VOCAB, longer, may_differ=("train.num_epochs",))[1]["global_step"] == 8
    with pytest.raises(CheckpointMismatchError, match="(?s)num_epochs: checkpoint 2, now 5.*cosine") as error:
        check_same_run(ckpt, VOCAB, longer)
    assert error.value.differences == ("train.num_epochs: checkpoint 2, now 5",)


def test_a_checkpoint_that_recorded_speed_knobs_or_an_old_init_name_still_matches(parts, tmp_path):
    """Older versions wrote ``fused``/``row_groups`` into the identity and called the deck's
    initialisation ``"deck"``: such a checkpoint belongs to the same run today."""
    old = json.loads(json.dumps(IDENTITY))
    old["train"].update(fused=True, row_groups=2, checkpoint_every=200)
    old["model"]["init"] = "deck"
    model, optimizer, states = parts
    ckpt = save_checkpoint(tmp_path, model=model, optimizer=optimizer, states=states, vocab=VOCAB,
                           identity=old, progress={"epoch": 0, "batch": 3, "global_step": 3,
                                                   "finished": False, "history": {}})
    now = json.loads(json.dumps(IDENTITY))
    now["model"]["init"] = "unit_normal"
    saved, _ = check_same_run(ckpt, VOCAB, now)
    assert saved["model"]["init"] == "unit_normal"
    other = json.loads(json.dumps(now))
    other["train"]["learning_rate"] = 0.1
    with pytest.raises(CheckpointMismatchError) as error:     # a real difference is still one
        check_same_run(ckpt, VOCAB, other)
    assert error.value.differences == ("train.learning_rate: checkpoint 0.002, now 0.1",)


def test_is_checkpoint_folder(parts, tmp_path):
    ckpt = save(tmp_path, parts, 1)
    assert checkpoint.is_checkpoint_folder(ckpt) and checkpoint.is_checkpoint_folder(tmp_path / "ckpt-00000007")
    assert not checkpoint.is_checkpoint_folder(tmp_path) and not checkpoint.is_checkpoint_folder(tmp_path / "run")
