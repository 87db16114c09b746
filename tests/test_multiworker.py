"""Tests of multi-worker training: ``make_strategy("multi-worker")`` (TensorFlow's
``MultiWorkerMirroredStrategy``), the cluster from ``TF_CONFIG`` or the command line's flags,
and ``train`` with one process per worker.

A process joins a cluster only before TensorFlow has started in it, and only once, so every
multi-worker run here is a set of fresh subprocesses on 127.0.0.1 (ports found free by
binding port 0): a worker script written to ``tmp_path`` that prints nothing and leaves its
results in a JSON file; the assertions are made here.  The parsing tests need no subprocess.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from charrnn_lib import cli, distribute
from charrnn_lib.config import STRATEGIES
from charrnn_lib.distribute import Cluster, ClusterConfigError, any_worker, exchange, gather_rows, make_strategy

# Two replicas against one device: the tolerance tests/test_distribute.py measured for two
# replicas in one process (REL_TOL there; the appendix asserts the same).  Two workers sum
# the same halves of the batch, only over a socket, so the same tolerance holds.
REL_TOL = 1e-5
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONHASHSEED="0")


# --------------------------------------------------------------------------- the cluster, no TensorFlow


def test_workers_flags_build_tf_config():
    cluster = Cluster.from_workers("127.0.0.1:2001, 127.0.0.1:2002", 1)
    assert cluster.tf_config == {"cluster": {"worker": ["127.0.0.1:2001", "127.0.0.1:2002"]},
                                 "task": {"type": "worker", "index": 1}}
    assert (cluster.num_workers, cluster.address, cluster.is_chief, cluster.position) == (2, "127.0.0.1:2002", False, 1)
    assert Cluster.from_workers("node-1.example.org:2222,[::1]:2223", 0).is_chief
    assert Cluster.from_tf_config(json.dumps(cluster.tf_config)) == cluster      # the same cluster, as JSON
    with_chief = Cluster.from_tf_config({"cluster": {"worker": ["b:2"], "chief": ["a:1"]},
                                         "task": {"type": "worker", "index": 0}})
    assert [job for job, _ in with_chief.jobs] == ["chief", "worker"] and not with_chief.is_chief
    assert (with_chief.num_workers, with_chief.address, with_chief.position) == (2, "b:2", 1)


@pytest.mark.parametrize("workers, index, message", [
    ("127.0.0.1:2001,127.0.0.1:2002", 2, "not one of the 2 workers: use 0 to 1"),
    ("127.0.0.1:2001,127.0.0.1:2002", -1, "not one of the 2 workers"),
    ("127.0.0.1", 0, "'127.0.0.1' is not a worker address"),
    ("127.0.0.1:0", 0, "port from 1 to 65535"),
    ("127.0.0.1:70000", 0, "port from 1 to 65535"),
    ("host:port", 0, "'host:port' is not a worker address"),
    ("127.0.0.1:2001,,127.0.0.1:2002", 0, "'' is not a worker address"),
    ("my host:2001", 0, "is not a worker address"),
    ("127.0.0.1:2001,127.0.0.1:2001", 0, "127.0.0.1:2001 is given to more than one worker"),
])
def test_bad_workers_flags_are_refused(workers, index, message):
    with pytest.raises(ClusterConfigError) as info:
        Cluster.from_workers(workers, index)
    assert message in str(info.value)


@pytest.mark.parametrize("tf_config, message", [
    ("{'cluster': {}}", "TF_CONFIG is not JSON"),
    ("", "TF_CONFIG is not JSON"),
    ('["worker"]', "needs a 'cluster' and a 'task' object"),
    ('{"cluster": {"worker": ["a:1"]}}', "needs a 'cluster' and a 'task' object"),
    ('{"cluster": {"worker": ["a:1"], "ps": ["b:2"]}, "task": {"type": "worker", "index": 0}}', "'ps' tasks"),
    ('{"cluster": {"worker": "a:1"}, "task": {"type": "worker", "index": 0}}', "non-empty list of host:port"),
    ('{"cluster": {"worker": ["a:1", "b"]}, "task": {"type": "worker", "index": 0}}', "'b' is not a worker address"),
    ('{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 2}}', "index 2 is out of range"),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": "0"}}', "index '0' is out of range"),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "chief", "index": 0}}', "task type 'chief' is not in"),
    ('{"cluster": {"worker": ["a:1"], "chief": ["b:2", "c:3"]}, "task": {"type": "worker", "index": 0}}',
     "more than one 'chief'"),
])
def test_bad_tf_config_is_refused(tf_config, message):
    with pytest.raises(ClusterConfigError) as info:
        Cluster.from_tf_config(tf_config)
    assert message in str(info.value)


def test_make_strategy_multi_worker_needs_a_cluster(monkeypatch):
    """Checked before TensorFlow is touched: joining a cluster would fix this process's devices."""
    assert "multi-worker" in STRATEGIES
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ClusterConfigError, match="set TF_CONFIG"):
        make_strategy("multi-worker")
    monkeypatch.setenv("TF_CONFIG", "not json")
    with pytest.raises(ClusterConfigError, match="TF_CONFIG is not JSON"):
        make_strategy("multi-worker")
    with pytest.raises(ValueError, match="takes no devices"):
        make_strategy("multi-worker", ["/cpu:0"])
    with pytest.raises(ValueError, match="cluster= is for strategy='multi-worker'"):
        make_strategy("default", cluster=Cluster.from_workers("a:1", 0))


def test_agreement_helpers_need_no_collective_in_one_process():
    import tensorflow as tf

    one = tf.distribute.get_strategy()
    assert not distribute.spans_processes(one) and distribute.is_chief(one)
    assert exchange(one, [1, 2.5]) == [[1.0, 2.5]]
    assert any_worker(one, True, False) == (True, False)
    a = np.arange(6, dtype=np.float32).reshape(3, 2)
    np.testing.assert_array_equal(gather_rows(one, [tf.constant(a)])[0].numpy(), a)


CLI_ERRORS = [
    (["--workers", "127.0.0.1:2001,127.0.0.1:2002", "--worker-index", "0"], {},
     "--workers and --worker-index are for --strategy multi-worker"),
    (["--strategy", "multi-worker"], {}, "--strategy multi-worker needs the workers"),
    (["--strategy", "multi-worker", "--workers", "127.0.0.1:2001,127.0.0.1:2002"], {}, "go together"),
    (["--strategy", "multi-worker", "--worker-index", "0"], {}, "go together"),
    (["--strategy", "multi-worker", "--workers", "127.0.0.1:2001,127.0.0.1:2002", "--worker-index", "2"], {},
     "--workers/--worker-index: worker index 2 is not one of the 2 workers: use 0 to 1"),
    (["--strategy", "multi-worker", "--workers", "127.0.0.1:2001,localhost", "--worker-index", "0"], {},
     "'localhost' is not a worker address"),
    (["--strategy", "multi-worker", "--workers", "127.0.0.1:2001", "--worker-index", "-1"], {},
     "--worker-index: must be >= 0"),
    (["--strategy", "multi-worker"], {"TF_CONFIG": "{cluster: worker}"}, "TF_CONFIG is not JSON"),
    (["--strategy", "multi-worker"],
     {"TF_CONFIG": '{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 3}}'},
     "TF_CONFIG's task index 3 is out of range"),
    (["--strategy", "multi-worker", "--cpu-devices", "2", "--workers", "127.0.0.1:2001", "--worker-index", "0"],
     {}, "--cpu-devices is for --strategy mirrored"),
]


@pytest.mark.parametrize("options, env, message", CLI_ERRORS)
def test_command_line_refuses_a_bad_cluster_in_one_line(options, env, message, tmp_path, monkeypatch, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("to be or not to be\n" * 50, encoding="utf-8")
    monkeypatch.delenv("TF_CONFIG", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as info:
        cli.main(["train", "--corpus", str(corpus), "--out", str(out), *options])
    assert info.value.code == 2
    err = capsys.readouterr().err
    ours = [line for line in err.splitlines() if line and not line.startswith(("usage:", " "))]
    assert len(ours) == 1 and message in ours[0] and "Traceback" not in err, err
    assert not out.exists()


# --------------------------------------------------------------------------- two workers, in subprocesses

WORKER = r'''
import json, sys, time
from pathlib import Path
role, ports, folder, out, delay = sys.argv[1:6]
from charrnn_lib.distribute import Cluster, make_strategy
if role == "one":
    strategy = make_strategy("default")
else:  # joining the cluster is this process's first TensorFlow work
    workers = ",".join(f"127.0.0.1:{port}" for port in ports.split(","))
    strategy = make_strategy("multi-worker", cluster=Cluster.from_workers(workers, int(role)))
    assert make_strategy("multi-worker", cluster=Cluster.from_workers(workers, int(role))) is strategy
from charrnn_lib.config import ModelConfig, TrainConfig
from charrnn_lib.data import TextLoader
from charrnn_lib.repro import seed_everything
from charrnn_lib.train import evaluate, train
seed_everything(0)
folder = Path(folder)
loader = TextLoader(folder / "corpus.txt", batch_size=8, seq_length=16, val_fraction=0.1,
                    cache_dir=folder / f"cache-{role}")
config = ModelConfig(vocab_size=loader.vocab_size, hidden_size=16, num_layers=2)
tc = TrainConfig(batch_size=8, seq_length=16, val_fraction=0.1, num_epochs=2, grad_clip=0.25, learning_rate=0.01,
                 lr_schedule="cosine", warmup_batches=3, checkpoint_every=3)

def slowly():  # checked between batches: a run slow enough to be killed in the middle
    time.sleep(float(delay))
    return False

result = train(loader, config, tc, out_dir=folder / out, progress=False, strategy=strategy, stop=slowly)
h = result.history
summary = {"loss": h.train_loss, "norm": h.grad_norm, "val": h.val_loss, "step": result.global_step,
           "resumed": result.resumed, "finished": result.finished, "replicas": strategy.num_replicas_in_sync,
           "weights": [w.numpy().tolist() for w in result.model.weights]}
(folder / f"{out}-{role}.json").write_text(json.dumps(summary))
'''


def free_ports(n: int) -> str:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return ",".join(str(s.getsockname()[1]) for s in sockets)
    finally:
        for s in sockets:
            s.close()


def start(folder: Path, role: str, ports: str, out: str, delay: float = 0.0) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(folder / "worker.py"), role, ports, str(folder), out, str(delay)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, cwd=folder)


def finish(procs, timeout=240) -> None:
    for proc in procs:
        try:
            _, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            raise
        assert proc.returncode == 0, f"a worker failed:\n{err[-4000:]}"


def two_workers(folder: Path, out: str, delay: float = 0.0) -> list:
    ports = free_ports(2)
    return [start(folder, str(i), ports, out, delay) for i in range(2)]


def result(folder: Path, out: str, role: str) -> dict:
    return json.loads((folder / f"{out}-{role}.json").read_text())


def saved_steps(out_dir: Path) -> list[int]:
    """Steps of the complete checkpoints in out_dir (a save appears complete: os.replace)."""
    return sorted(int(p.name[5:]) for p in out_dir.glob("ckpt-*") if (p / "progress.json").is_file())


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("multiworker")
    (folder / "corpus.txt").write_text((distribute.__doc__ * 2)[:2000], encoding="utf-8")  # 2 x 14 batches
    (folder / "worker.py").write_text(textwrap.dedent(WORKER), encoding="utf-8")
    found = {}
    start_time = time.perf_counter()
    # One process with the whole batch, and two workers with half each, uninterrupted (at the
    # same time: the workers spend much of theirs waiting for each other).
    finish([start(folder, "one", "", "one"), *two_workers(folder, "two")])
    # Two workers, the chief killed (SIGKILL) in the middle of the run, after a checkpoint exists.
    chief, other = two_workers(folder, "cut", delay=0.2)
    deadline = time.monotonic() + 180
    while not saved_steps(folder / "cut") and chief.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    chief.send_signal(signal.SIGKILL)
    chief.wait()
    found["killed_at"] = saved_steps(folder / "cut")
    found["lock_left"] = (folder / "cut" / ".lock").exists()
    # The other worker now waits for the chief in a collective operation, or fails there.
    try:
        other.wait(timeout=5)
        found["other_exited_alone"] = True
    except subprocess.TimeoutExpired:
        other.kill()
        other.wait()
        found["other_exited_alone"] = False
    # What a save killed half-way leaves behind (the chief may or may not have been in one):
    (folder / "cut" / ".tmp-ckpt-0123456789ab").mkdir()
    (folder / "cut" / ".tmp-ckpt-0123456789ab" / "model.weights.h5").write_bytes(b"half")
    finish(two_workers(folder, "cut"))                           # both started again: they resume
    found["left_in_out_dir"] = sorted(p.name for p in (folder / "cut").iterdir())
    found["seconds"] = time.perf_counter() - start_time
    for out, roles in [("one", ["one"]), ("two", ["0", "1"]), ("cut", ["0", "1"])]:
        for role in roles:
            found[f"{out}-{role}"] = result(folder, out, role)
    found["total"] = found["one-one"]["step"]
    return found


def _max_abs(a, b) -> float:
    return max(float(np.abs(np.array(x, np.float32) - np.array(y, np.float32)).max()) for x, y in zip(a, b))


@pytest.mark.slow
def test_two_workers_follow_one_process(runs):
    one, two = runs["one-one"], runs["two-0"]
    assert (one["replicas"], two["replicas"]) == (1, 2)
    assert one["step"] == two["step"] == runs["total"] > 20 and len(one["loss"]) == runs["total"]
    np.testing.assert_allclose(two["loss"], one["loss"], rtol=REL_TOL)
    np.testing.assert_allclose(two["norm"], one["norm"], rtol=REL_TOL)
    assert (np.array(one["norm"]) > 0.25).any(), "the test must exercise clipping (grad_clip=0.25)"
    np.testing.assert_allclose(two["val"], one["val"], rtol=REL_TOL)
    assert len(one["val"]) == 2 and one["loss"][-1] < one["loss"][0]
    for x, y in zip(one["weights"], two["weights"]):
        x, y = np.array(x), np.array(y)
        np.testing.assert_allclose(y, x, rtol=0, atol=REL_TOL * max(1.0, np.abs(x).max()))


@pytest.mark.slow
def test_every_worker_ends_with_the_same_model(runs):
    for out in ("two", "cut"):
        chief, other = runs[f"{out}-0"], runs[f"{out}-1"]
        assert chief["loss"] == other["loss"] and chief["val"] == other["val"]
        assert _max_abs(chief["weights"], other["weights"]) == 0.0


@pytest.mark.slow
def test_killed_workers_resume_from_the_chiefs_checkpoint_exactly(runs):
    killed_at = runs["killed_at"]
    assert killed_at and killed_at[-1] < runs["total"], f"the kill must fall mid-run: {killed_at}"
    assert runs["lock_left"], "the killed chief held out_dir's lock"
    resumed, whole = runs["cut-0"], runs["two-0"]
    assert resumed["resumed"] and resumed["finished"] and resumed["step"] == runs["total"]
    # Bit for bit: the same arithmetic in the same order, only interrupted and resumed.
    assert resumed["loss"] == whole["loss"] and resumed["norm"] == whole["norm"]
    assert resumed["val"] == whole["val"]
    assert _max_abs(resumed["weights"], whole["weights"]) == 0.0
    # Nothing left behind: no lock, no temporary folder, only the last checkpoint.
    assert runs["left_in_out_dir"] == [f"ckpt-{runs['total']:08d}"]


# --------------------------------------------------------------------------- the command line


@pytest.mark.slow
def test_command_line_two_workers_the_chief_alone_writes(tmp_path):
    """Worker 0 from --workers/--worker-index, worker 1 from TF_CONFIG.  Worker 1 is given a
    folder of its own that does not exist: it writes nothing, so it never appears.  Run again
    for more epochs, the chief finds its checkpoint and worker 1 finds none: both refuse, with
    one line that says the folder must be shared."""
    corpus = tmp_path / "tiny.txt"
    corpus.write_text("to be or not to be, that is the question.\n" * 20, encoding="utf-8")
    run, elsewhere = tmp_path / "run", tmp_path / "elsewhere"
    addresses = ",".join(f"127.0.0.1:{port}" for port in free_ports(2).split(","))

    def both(epochs):
        common = ["-m", "charrnn_lib", "train", "--corpus", str(corpus), "--hidden-size", "8", "--num-layers", "1",
                  "--batch-size", "4", "--seq-length", "8", "--epochs", str(epochs), "--lr-schedule", "constant",
                  "--warmup-batches", "0", "--quiet", "--strategy", "multi-worker"]
        tf_config = Cluster.from_workers(addresses, 1).tf_config
        procs = [subprocess.Popen([sys.executable, *common, "--out", str(run), "--workers", addresses,
                                   "--worker-index", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True, env=ENV),
                 subprocess.Popen([sys.executable, *common, "--out", str(elsewhere)], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, env=dict(ENV, TF_CONFIG=json.dumps(tf_config)))]
        try:
            return [(p.wait(timeout=240), *p.communicate()) for p in procs]
        finally:
            for p in procs:
                p.kill()

    (code0, out0, err0), (code1, out1, err1) = both(1)
    assert code0 == code1 == 0, err0 + err1
    assert err0 == err1 == ""
    assert "worker 0 of 2" in out0 and "the chief" in out0 and "worker 1 of 2" in out1
    assert "MultiWorkerMirroredStrategy: 2 replicas of 2 rows each" in out0
    finished = [line for line in out0.splitlines() if line.startswith("epoch 1:")]
    assert finished and finished == [line for line in out1.splitlines() if line.startswith("epoch 1:")]
    assert not elsewhere.exists()                      # worker 1 wrote nothing, not even the folder
    written = sorted(p.name for p in run.iterdir())
    assert len(written) == 1 and written[0].startswith("ckpt-")

    (code0, _, err0), (code1, _, err1) = both(2)       # the chief would resume; worker 1 sees nothing
    for code, err in [(code0, err0), (code1, err1)]:
        ours = [line for line in err.splitlines() if line.startswith("python -m charrnn_lib")]
        assert code == 2 and len(ours) == 1 and "Traceback" not in err, err
        assert "worker 1 finds no checkpoint" in ours[0] and "a folder they all share" in ours[0]
    assert sorted(p.name for p in run.iterdir()) == written and not elsewhere.exists()
