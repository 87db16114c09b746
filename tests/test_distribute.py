"""Tests of charrnn_lib.distribute: strategies, per-replica state, cuDNN eligibility, and
training under them (mixed precision, the command line's --strategy).

Multi-device checks need the CPU split into logical devices *before* TensorFlow starts,
which this test session cannot undo, so they run in one subprocess (a script written to
``tmp_path``) that prints its measurements as JSON; the assertions are made here.
"""
from __future__ import annotations

import dataclasses
import importlib
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from charrnn_lib import distribute
from charrnn_lib.config import ModelConfig, TrainConfig
from charrnn_lib.distribute import cudnn_blockers, make_strategy, split_cpu

# The loss trajectories of 1 and 2 replicas agree to this relative tolerance: two replicas
# add the batch's gradient in another order than one device, so float32 rounding differs in
# the last bits (Adam, dividing by the root of tiny second moments, magnifies it slowly).
REL_TOL = 1e-5

# --------------------------------------------------------------------------- multi-device, in a subprocess

EQUIVALENCE_SCRIPT = r'''
import dataclasses, json, sys
from pathlib import Path
import numpy as np
from charrnn_lib.distribute import split_cpu, make_strategy, split_rows, gather_rows
devices = split_cpu(2)                        # first: before anything initialises TensorFlow
from charrnn_lib.checkpoint import latest_checkpoint
from charrnn_lib.config import ModelConfig, TrainConfig
from charrnn_lib.data import TextLoader
from charrnn_lib.train import evaluate, train

folder = Path(sys.argv[1])
loader = TextLoader(folder / "corpus.txt", batch_size=8, seq_length=16, val_fraction=0.1,
                    cache_dir=folder / "cache")
config = ModelConfig(vocab_size=loader.vocab_size, hidden_size=24, num_layers=2)
tc = TrainConfig(batch_size=8, seq_length=16, val_fraction=0.1, num_epochs=2, grad_clip=0.25,
                 learning_rate=0.01, lr_schedule="cosine", warmup_batches=3, checkpoint_every=0)
one, mirrored = make_strategy("default"), make_strategy("mirrored", devices)
assert make_strategy("mirrored", devices) is mirrored   # one strategy object per device set

def run(name, strategy, **kw):
    return train(loader, config, tc, out_dir=folder / name, progress=False, strategy=strategy, **kw)

def summary(result):
    h = result.history
    return {"loss": h.train_loss, "norm": h.grad_norm, "step": result.global_step, "resumed": result.resumed,
            "val": evaluate(result.model, loader.val_x, loader.val_y, config),
            "weights": [w.numpy().tolist() for w in result.model.weights]}

def state(name):
    return np.load(latest_checkpoint(folder / name) / "state.npy").tolist()

out = {"devices": devices, "replicas": mirrored.num_replicas_in_sync, "clip": tc.grad_clip}
# 1. the same 10 batches on one device and on two replicas: trajectory and carried state
out["one_10"] = summary(run("one-10", one, max_batches=10)); out["one_10_state"] = state("one-10")
out["two_10"] = summary(run("two-10", mirrored, max_batches=10)); out["two_10_state"] = state("two-10")
# 2. interrupted after 5 batches under one strategy, resumed for 5 more under the other
run("one-then-two", one, max_batches=5)
out["one_then_two"] = summary(run("one-then-two", mirrored, max_batches=5))
run("two-then-one", mirrored, max_batches=5)
out["two_then_one"] = summary(run("two-then-one", one, max_batches=5))
# 3. mixed precision on two replicas (loss scaling under a strategy)
mixed = dataclasses.replace(tc, mixed_precision=True)
for name, strategy in [("mixed_one", one), ("mixed_two", mirrored)]:
    out[name] = train(loader, config, mixed, progress=False, strategy=strategy, max_batches=6).history.train_loss
# 4. rows and replicas: replica i holds rows i*b:(i+1)*b, and gather_rows undoes split_rows
probe = np.arange(8 * 3, dtype=np.float32).reshape(8, 3)
parts = mirrored.experimental_local_results(split_rows(mirrored, probe))
out.update(parts=[p.numpy().tolist() for p in parts], part_devices=[p.device for p in parts],
           roundtrip=gather_rows(mirrored, split_rows(mirrored, probe)).numpy().tolist(),
           probe=probe.tolist())
print(json.dumps(out))
'''


def _run_script(tmp_path, source: str, *args: str, timeout: int = 240) -> dict:
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(source), encoding="utf-8")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONHASHSEED="0")
    done = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=tmp_path, env=env)
    assert done.returncode == 0, f"subprocess failed:\n{done.stderr[-4000:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def equivalence(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("equivalence")
    (tmp / "corpus.txt").write_text(distribute.__doc__ * 2, encoding="utf-8")  # ~5,000 characters
    return _run_script(tmp, EQUIVALENCE_SCRIPT, str(tmp), timeout=400)


def _weights_close(a, b, tol=REL_TOL):
    assert len(a) == len(b) > 0
    for x, y in zip(a, b):
        x, y = np.array(x), np.array(y)
        np.testing.assert_allclose(y, x, rtol=0, atol=tol * max(1.0, np.abs(x).max()))


@pytest.mark.slow
def test_two_logical_cpu_devices_make_two_replicas(equivalence):
    assert len(equivalence["devices"]) == 2 and equivalence["replicas"] == 2


@pytest.mark.slow
def test_two_replicas_follow_the_one_device_loss_trajectory(equivalence):
    one, two = np.array(equivalence["one_10"]["loss"]), np.array(equivalence["two_10"]["loss"])
    assert len(one) == 10 and np.all(np.isfinite(one))
    np.testing.assert_allclose(two, one, rtol=REL_TOL)
    assert one[-1] < one[0], "training should lower the loss on this text"
    _weights_close(equivalence["one_10"]["weights"], equivalence["two_10"]["weights"])


@pytest.mark.slow
def test_clipping_uses_the_norm_of_the_full_batch_gradient(equivalence):
    norms_1, norms_2 = np.array(equivalence["one_10"]["norm"]), np.array(equivalence["two_10"]["norm"])
    np.testing.assert_allclose(norms_2, norms_1, rtol=REL_TOL)
    assert (norms_1 > equivalence["clip"]).any(), "the test must exercise clipping"


@pytest.mark.slow
def test_each_replica_carries_the_state_of_its_own_rows(equivalence):
    # The carried states saved after 10 batches, gathered in row order, equal the one-device
    # states: every replica carried the state of the same rows from batch to batch.
    one, two = np.array(equivalence["one_10_state"]), np.array(equivalence["two_10_state"])
    assert one.shape == two.shape == (4, 8, 24) and np.abs(one).max() > 1e-2
    np.testing.assert_allclose(two, one, rtol=0, atol=REL_TOL * np.abs(one).max())


@pytest.mark.slow
def test_validation_after_ten_batches_agrees(equivalence):
    one, two = equivalence["one_10"]["val"], equivalence["two_10"]["val"]
    assert np.isfinite(one) and two == pytest.approx(one, rel=REL_TOL)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["one_then_two", "two_then_one"])
def test_a_checkpoint_resumes_under_another_strategy(equivalence, name):
    # Interrupted after 5 batches (state carried) under one strategy, resumed for 5 more under
    # the other: the uninterrupted 10 batches on one device, to the same tolerance.
    whole, resumed = equivalence["one_10"], equivalence[name]
    assert resumed["resumed"] and resumed["step"] == whole["step"] == 10
    np.testing.assert_allclose(resumed["loss"], whole["loss"], rtol=REL_TOL)
    assert resumed["val"] == pytest.approx(whole["val"], rel=REL_TOL)
    _weights_close(whole["weights"], resumed["weights"])


@pytest.mark.slow
def test_mixed_precision_on_two_replicas_follows_one_device(equivalence):
    one, two = np.array(equivalence["mixed_one"]), np.array(equivalence["mixed_two"])
    assert len(one) == 6 and np.isfinite(one).all()
    np.testing.assert_allclose(two, one, rtol=1e-3)  # float16 arithmetic: a looser tolerance
    np.testing.assert_allclose(one, equivalence["one_10"]["loss"][:6], rtol=1e-2)  # close to float32


@pytest.mark.slow
def test_rows_are_split_contiguously_and_gathered_back(equivalence):
    probe = np.array(equivalence["probe"])
    first, second = (np.array(p) for p in equivalence["parts"])
    np.testing.assert_array_equal(first, probe[:4])
    np.testing.assert_array_equal(second, probe[4:])
    assert [d.split("device:")[-1] for d in equivalence["part_devices"]] == ["CPU:0", "CPU:1"]
    np.testing.assert_array_equal(np.array(equivalence["roundtrip"]), probe)


def test_split_cpu_after_start_up_says_what_to_do():
    import tensorflow as tf

    tf.config.list_logical_devices()  # make sure TensorFlow's devices exist in this process
    n = len(tf.config.list_logical_devices("CPU"))
    assert split_cpu(n) == [d.name for d in tf.config.list_logical_devices("CPU")]  # no change: fine
    with pytest.raises(distribute.DevicesAlreadyInitializedError, match="before any other TensorFlow"):
        split_cpu(n + 1)


@pytest.mark.parametrize("bad", [0, -1, 2.0, True])
def test_split_cpu_rejects_bad_counts(bad):
    with pytest.raises(ValueError, match="positive integer"):
        split_cpu(bad)


def test_make_strategy_by_name():
    import tensorflow as tf

    assert make_strategy("default") is tf.distribute.get_strategy()
    assert make_strategy("default").num_replicas_in_sync == 1
    if len(tf.config.list_logical_devices("GPU")) < 2:
        assert make_strategy("auto") is tf.distribute.get_strategy()
    one = make_strategy("default", ["/cpu:0"])
    assert isinstance(one, tf.distribute.OneDeviceStrategy)
    with pytest.raises(ValueError, match="one of"):
        make_strategy("tpu-pod")
    with pytest.raises(ValueError, match="mirrored"):
        make_strategy("default", ["/cpu:0", "/cpu:1"])


def test_global_batch_must_split_evenly():
    class TwoReplicas:
        num_replicas_in_sync = 2

    assert distribute.per_replica_batch_size(TwoReplicas(), 50) == 25
    with pytest.raises(ValueError, match="multiple of 2"):
        distribute.per_replica_batch_size(TwoReplicas(), 51)


def test_split_rows_is_the_identity_on_one_device():
    import tensorflow as tf

    a = np.arange(6, dtype=np.float32).reshape(3, 2)
    x, y = distribute.split_rows(tf.distribute.get_strategy(), [a, -a])
    np.testing.assert_array_equal(x.numpy(), a)
    np.testing.assert_array_equal(distribute.gather_rows(tf.distribute.get_strategy(), y).numpy(), -a)


# --------------------------------------------------------------------------- the cuDNN fast path


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_default_recurrent_layers_are_cudnn_eligible(cell):
    keras_tf_rnn = importlib.import_module("keras.src.backend.tensorflow.rnn")  # private, may move

    from charrnn_lib.model import build_model

    model = build_model(ModelConfig(vocab_size=11, hidden_size=8, num_layers=2, cell=cell, dropout=0.2))
    report = cudnn_blockers(model)
    assert len(report) == 2 and all(reasons == [] for reasons in report.values()), report
    # Independent reference: the argument check Keras itself runs before choosing cuDNN.
    for layer in model.layers:
        if cell == "lstm" and hasattr(layer, "cell"):
            assert keras_tf_rnn._do_lstm_arguments_support_cudnn(
                layer.cell.activation, layer.cell.recurrent_activation, layer.unroll, layer.cell.use_bias)
            assert layer.cell.recurrent_dropout == 0 and layer.use_cudnn == "auto"
        if cell == "gru" and hasattr(layer, "cell"):
            assert keras_tf_rnn._do_gru_arguments_support_cudnn(
                layer.cell.activation, layer.cell.recurrent_activation, layer.unroll, layer.cell.use_bias,
                layer.cell.reset_after)


@pytest.mark.parametrize("cell", ["rnn", "peephole"])
def test_cells_without_a_cudnn_kernel_are_reported(cell):
    from charrnn_lib.model import build_model

    report = cudnn_blockers(build_model(ModelConfig(vocab_size=11, hidden_size=8, num_layers=1, cell=cell)))
    (reasons,) = report.values()
    assert reasons and "no cuDNN kernel" in reasons[0]


def test_settings_that_leave_the_fast_path_are_named():
    import keras

    ids = keras.Input((None,), dtype="int32")
    x = keras.layers.Embedding(5, 4)(ids)
    x = keras.layers.LSTM(4, return_sequences=True, recurrent_dropout=0.1, name="a")(x)
    x = keras.layers.GRU(4, return_sequences=True, reset_after=False, activation="relu", name="b")(x)
    x = keras.layers.LSTM(4, unroll=True, use_bias=False, recurrent_activation="hard_sigmoid", name="c")(x)
    report = cudnn_blockers(keras.Model(ids, x))
    assert report["a"] == ["recurrent_dropout=0.1"]
    assert set(report["b"]) == {"activation relu, not tanh", "reset_after=False"}
    assert set(report["c"]) == {"unroll=True", "use_bias=False", "recurrent_activation hard_sigmoid, not sigmoid"}


# --------------------------------------------------------------------------- mixed precision


def test_mixed_precision_training_runs_stays_finite_and_resumes(tmp_path):
    from charrnn_lib.checkpoint import CheckpointMismatchError
    from charrnn_lib.data import TextLoader
    from charrnn_lib.fast import uses_fused_step
    from charrnn_lib.model import recurrent_layers
    from charrnn_lib.train import train

    corpus = tmp_path / "corpus.txt"
    corpus.write_text(distribute.__doc__, encoding="utf-8")
    tc = TrainConfig(batch_size=4, seq_length=16, num_epochs=1, val_fraction=0.1, learning_rate=0.01,
                     mixed_precision=True)
    loader = TextLoader(corpus, batch_size=4, seq_length=16, val_fraction=0.1, cache_dir=tmp_path / "cache")
    mc = ModelConfig(vocab_size=loader.vocab_size, hidden_size=16)
    assert not uses_fused_step(mc, tc)  # the fused CPU path is float32 only
    part = train(loader, mc, tc, out_dir=tmp_path / "mp", progress=False, max_batches=8)
    model = part.model
    assert recurrent_layers(model)[0].compute_dtype == "float16"
    assert model.get_layer("logits").compute_dtype == "float32"
    assert all(v.dtype == "float32" for v in model.trainable_variables)  # float32 master weights
    whole = train(loader, mc, tc, out_dir=tmp_path / "mp", progress=False)
    losses = np.array(whole.history.train_loss)
    assert whole.resumed and whole.finished and len(losses) == loader.num_batches
    assert np.all(np.isfinite(losses)) and np.all(np.isfinite(whole.history.grad_norm))
    assert losses[-5:].mean() < losses[:5].mean() - 0.3, "float16 training should still learn"
    assert np.isfinite(whole.history.val_loss).all()
    # A checkpoint trained in mixed precision is refused by a float32 run, with the reason:
    # float16 arithmetic changes the numbers a run produces (unlike the speed knobs).
    with pytest.raises(CheckpointMismatchError, match="mixed_precision"):
        train(loader, mc, dataclasses.replace(tc, mixed_precision=False), out_dir=tmp_path / "mp",
              progress=False)


# --------------------------------------------------------------------------- the command line


@pytest.mark.slow
def test_cli_trains_on_two_replicas_and_resumes_on_one(tmp_path):
    corpus = tmp_path / "tiny.txt"
    corpus.write_text("to be or not to be, that is the question.\n" * 20, encoding="utf-8")
    out = tmp_path / "run"
    common = ["-m", "charrnn_lib", "train", "--corpus", str(corpus), "--out", str(out), "--hidden-size", "8",
              "--num-layers", "1", "--batch-size", "4", "--seq-length", "8", "--epochs", "1", "--quiet"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")

    def cli(*extra):
        return subprocess.run([sys.executable, *common, *extra], capture_output=True, text=True,
                              timeout=240, env=env, cwd=tmp_path)

    first = cli("--strategy", "mirrored", "--cpu-devices", "2", "--max-batches", "3")
    assert first.returncode == 0, first.stderr[-3000:]
    assert "MirroredStrategy: 2 replicas of 2 rows each" in first.stdout
    assert "stopped after 3 batches" in first.stdout
    second = cli("--strategy", "default")  # the same run, continued on one device
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resumed from the checkpoint" in second.stdout and "finished after" in second.stdout
    assert "validation loss" in second.stdout
    bad = cli("--strategy", "mirrored", "--cpu-devices", "2", "--batch-size", "3")
    assert bad.returncode == 2 and "multiple of 2" in bad.stderr
    sampled = subprocess.run([sys.executable, "-m", "charrnn_lib", "sample", "--checkpoint", str(out),
                              "--length", "20", "--prime", "to be"], capture_output=True, text=True,
                             timeout=120, env=env)
    assert sampled.returncode == 0 and sampled.stdout.startswith("to be")
