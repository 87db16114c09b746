"""Tests of charrnn_lib.distribute: strategies, per-replica state, cuDNN eligibility,
mixed precision and presets.

Multi-device checks need the CPU split into logical devices *before* TensorFlow starts,
which this test session cannot undo, so they run in one subprocess (a script written to
``tmp_path``) that prints its measurements as JSON; the assertions are made here.
"""
from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from charrnn_lib import distribute
from charrnn_lib.distribute import PRESETS, cudnn_blockers, make_strategy, preset_config, split_cpu

REL_TOL = 1e-5  # the loss trajectories of 1 and 2 replicas agree to this relative tolerance

# --------------------------------------------------------------------------- multi-device, in a subprocess

EQUIVALENCE_SCRIPT = r'''
import json, os, sys
from pathlib import Path
import numpy as np
from charrnn_lib.distribute import split_cpu, make_strategy, split_rows, gather_rows, make_train_step
devices = split_cpu(2)                        # first: before anything initialises TensorFlow
import keras, tensorflow as tf
from charrnn_lib.data import Vocab, make_batches
from charrnn_lib.model import ModelConfig, build_model, zero_states
from charrnn_lib.repro import seed_everything

text = Path(sys.argv[1]).read_text(encoding="utf-8")
vocab = Vocab.from_text(text)
B, T, STEPS, CLIP = 8, 16, 10, 0.25
x_all, y_all = make_batches(vocab.encode(text), B, T)
config = ModelConfig(vocab_size=len(vocab), hidden_size=24, num_layers=2)

seed_everything(0)
initial = build_model(config).get_weights()

def run(strategy):
    with strategy.scope():
        model = build_model(config)
        model.set_weights(initial)
        optimizer = keras.optimizers.Adam(0.01)
        optimizer.build(model.trainable_variables)
    step = make_train_step(model, optimizer, strategy, B, grad_clip=CLIP)
    states = split_rows(strategy, [s.numpy() for s in zero_states(config, B)])
    losses, norms = [], []
    for b in range(STEPS):
        x, y = split_rows(strategy, [x_all[b], y_all[b]])
        loss, norm, states = step(x, y, states)
        losses.append(float(loss)); norms.append(float(norm))
    final = [s.numpy() for s in gather_rows(strategy, states)]
    return losses, norms, final, [w for w in model.get_weights()]

one = run(make_strategy("default"))
mirrored = make_strategy("mirrored", devices)
two = run(mirrored)

# rows and replicas: replica i holds rows i*b:(i+1)*b, and gather_rows undoes split_rows
probe = np.arange(B * 3, dtype=np.float32).reshape(B, 3)
parts = mirrored.experimental_local_results(split_rows(mirrored, probe))
print(json.dumps({
    "devices": devices,
    "replicas": mirrored.num_replicas_in_sync,
    "loss_1": one[0], "loss_2": two[0], "norm_1": one[1], "norm_2": two[1], "clip": CLIP,
    "state_diff": max(float(np.abs(a - b).max()) for a, b in zip(one[2], two[2])),
    "state_scale": max(float(np.abs(a).max()) for a in one[2]),
    "weight_diff": max(float(np.abs(a - b).max()) for a, b in zip(one[3], two[3])),
    "parts": [p.numpy().tolist() for p in parts],
    "part_devices": [p.device for p in parts],
    "roundtrip": gather_rows(mirrored, split_rows(mirrored, probe)).numpy().tolist(),
    "probe": probe.tolist(),
}))
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
    corpus = tmp / "corpus.txt"
    corpus.write_text(distribute.__doc__ * 3, encoding="utf-8")  # ~6000 characters of English
    return _run_script(tmp, EQUIVALENCE_SCRIPT, str(corpus))


def test_two_logical_cpu_devices_make_two_replicas(equivalence):
    assert len(equivalence["devices"]) == 2 and equivalence["replicas"] == 2


def test_two_replicas_follow_the_one_device_loss_trajectory(equivalence):
    one, two = np.array(equivalence["loss_1"]), np.array(equivalence["loss_2"])
    assert len(one) == 10 and np.all(np.isfinite(one))
    np.testing.assert_allclose(two, one, rtol=REL_TOL)
    assert one[-1] < one[0], "training should lower the loss on this text"


def test_clipping_uses_the_norm_of_the_full_batch_gradient(equivalence):
    norms_1, norms_2 = np.array(equivalence["norm_1"]), np.array(equivalence["norm_2"])
    np.testing.assert_allclose(norms_2, norms_1, rtol=REL_TOL)
    assert (norms_1 > equivalence["clip"]).any(), "the test must exercise clipping"


def test_each_replica_carries_the_state_of_its_own_rows(equivalence):
    # The final states, gathered in row order, equal the one-device states: every replica
    # carried the state of the same rows from batch to batch.
    assert equivalence["state_scale"] > 1e-2
    assert equivalence["state_diff"] <= REL_TOL * equivalence["state_scale"]
    assert equivalence["weight_diff"] < 1e-5


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

    from charrnn_lib.model import ModelConfig, build_model

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
    if cell == "peephole":
        pytest.importorskip("charrnn_lib.peephole")  # chapter 3's cell
    from charrnn_lib.model import ModelConfig, build_model

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


# --------------------------------------------------------------------------- presets


def test_presets_give_the_documented_sizes():
    deck = preset_config("deck", vocab_size=65)
    assert (deck.hidden_size, deck.num_layers, deck.dropout) == (128, 2, 0.0)
    medium, large = preset_config("medium", 65), preset_config("large", 65, cell="gru")
    assert (medium.hidden_size, medium.num_layers) == (256, 2)
    assert (large.hidden_size, large.num_layers, large.dropout, large.cell) == (512, 3, 0.25, "gru")
    assert set(PRESETS) >= {"deck", "medium", "large"}
    with pytest.raises(ValueError, match="preset must be one of"):
        preset_config("huge", 65)
