"""The command line: train, resume, sample end to end on a tiny corpus; bad options fail fast;
and under hostile use -- busy or unusable folders, Ctrl-C, divergence, damaged checkpoints,
endless samples into a closed pipe -- one line and the right exit status, never lost work."""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from charrnn_lib import cli

from cli_helpers import ENV, command, fake_checkpoint, our_lines, run_cli  # tests/cli_helpers.py

TINY = "to be or not to be, that is the question.\nwhether 'tis nobler in the mind to suffer\n" * 8


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "tiny.txt"
    path.write_text(TINY, encoding="utf-8")
    return path


def small_train_args(corpus, out):
    # A GRU: the command line's plumbing is the same for every cell, and a GRU traces fastest.
    return ["train", "--corpus", str(corpus), "--out", str(out), "--hidden-size", "8", "--num-layers", "1",
            "--batch-size", "2", "--seq-length", "8", "--epochs", "1", "--cell", "gru", "--quiet"]


def test_train_resume_sample_end_to_end(corpus, tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(small_train_args(corpus, out) + ["--max-batches", "2"]) == 0
    first = capsys.readouterr().out
    assert "stopped after 2 batches" in first and "resumed" not in first
    assert any(p.name == "ckpt-00000002" for p in out.iterdir())

    assert cli.main(small_train_args(corpus, out)) == 0  # same command again: resumes and finishes
    second = capsys.readouterr().out
    assert "resumed from the checkpoint" in second and "finished after" in second
    assert "epoch 1: training loss" in second and "validation loss" in second and "bits/char" in second

    assert cli.main(small_train_args(corpus, out)) == 0  # a finished run returns at once
    assert "finished after" in capsys.readouterr().out

    args = ["sample", "--checkpoint", str(out), "--length", "40", "--prime", "to be", "--seed", "3"]
    assert cli.main(args) == 0
    text = capsys.readouterr().out
    assert text.startswith("to be") and len(text.rstrip("\n")) >= 45 - text.count("\n")
    assert cli.main(args) == 0 and capsys.readouterr().out == text  # same seed, same text
    assert cli.main(args + ["--mode", "argmax", "--streams", "2"]) == 0
    streams = capsys.readouterr().out
    assert streams.count("----- stream") == 2

    with pytest.raises(SystemExit) as info:  # checked from the saved vocabulary, before loading the model
        cli.main(["sample", "--checkpoint", str(out), "--prime", "Zebra"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "'Z'" in err and "never saw" in err


def test_help_lists_every_option_with_its_default():
    parser = cli.build_parser()
    for name, sub in parser.commands.items():
        text = " ".join(sub.format_help().split())
        for action in sub._actions:
            if not action.option_strings or action.dest == "help":
                continue
            assert action.option_strings[-1] in text, (name, action.dest)
        for option, default in {"train": [("--hidden-size", "128"), ("--learning-rate", "0.005"),
                                          ("--lr-schedule", "'cosine'"), ("--warmup-batches", "50"),
                                          ("--grad-clip", "5.0"), ("--epochs", "2"), ("--init", "'unit_embedding'"),
                                          ("--cell", "'lstm'"), ("--batch-size", "50"), ("--seq-length", "20"),
                                          ("--strategy", "'auto'"), ("--dropout", "0.0"), ("--preset", "'recipe'")],
                                "sample": [("--length", "4000"), ("--mode", "'sample'"),
                                           ("--temperature", "1.0"), ("--prime", "' '"), ("--seed", "0")],
                                "export": []}[name]:  # --checkpoint and --out are required: no defaults
            assert option in text and f"(default: {default}" in text, (option, default)
    result = subprocess.run([sys.executable, "-m", "charrnn_lib", "train", "--help"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "--corpus" in result.stdout and "--out" in result.stdout


def configs_of(*options, vocab_size=30):
    """The ModelConfig and TrainConfig the command line builds from ``options``."""
    parser = cli.build_parser()
    args = parser.parse_args(["train", "--corpus", "x", "--out", "y", *options])
    cli._resolve_preset(args)
    return cli._configs(args, vocab_size, parser.commands["train"])


def test_the_default_is_the_books_recipe_and_preset_deck_is_the_deck():
    from charrnn_lib.config import PRESETS, ModelConfig, TrainConfig

    model_config, train_config = configs_of()
    assert model_config == PRESETS["recipe"].model_config(30)
    assert train_config == PRESETS["recipe"].train_config()   # chapter 5's better run, schedule included
    model_config, train_config = configs_of("--preset", "deck")
    assert train_config == TrainConfig()                       # the deck: the dataclasses' defaults
    assert model_config == ModelConfig(30, init="unit_normal")


def test_preset_fills_only_the_options_not_given():
    model_config, train_config = configs_of("--preset", "medium", "--hidden-size", "64", "--learning-rate", "0.01")
    assert (model_config.hidden_size, model_config.num_layers, model_config.dropout) == (64, 2, 0.1)
    assert (train_config.batch_size, train_config.seq_length, train_config.learning_rate) == (64, 100, 0.01)
    _, train_config = configs_of("--lr-schedule", "constant", "--warmup-batches", "0", "--min-lr-fraction", "0.2",
                                 "--epochs", "3", "--seed", "7")
    assert (train_config.lr_schedule, train_config.warmup_batches, train_config.min_lr_fraction) == ("constant", 0, 0.2)
    assert (train_config.num_epochs, train_config.seed, train_config.seq_length) == (3, 7, 20)


SMALL = ["--batch-size", "2", "--seq-length", "8"]
BAD = [
    (["train", "--corpus", "no-such-corpus", "--out", "OUT"], "neither a built-in corpus"),
    (["train", "--corpus", "CORPUS", "--out", "OUT", "--hidden-size", "0"], "--hidden-size: must be >= 1"),
    (["train", "--corpus", "CORPUS", "--out", "OUT", "--batch-size", "-3"], "--batch-size: must be >= 1"),
    (["train", "--corpus", "CORPUS", "--out", "OUT", "--learning-rate", "0"], "--learning-rate: must be > 0"),
    (["train", "--corpus", "CORPUS", "--out", "OUT", "--epochs", "two"], "expected a positive integer"),
    (["train", "--corpus", "CORPUS", "--out", "OUT", "--cell", "transformer"], "invalid choice"),
    (["train", "--corpus", "CORPUS", "--out", "OUT", "--dropout", "1.5"], "--dropout must be below 1"),
    (["train", "--corpus", "CORPUS", "--out", "OUT", "--strategy", "tpu"], "invalid choice"),
    (["train", "--corpus", "CORPUS", "--out", "OUT", "--encoding", "klingon"], "not a known text encoding"),
    (["train", "--corpus", "SHORT", "--out", "OUT", "--batch-size", "50", "--seq-length", "50"],
     "needs 2500"),  # corpus too small for one batch: caught before any training
    # Not finite, out of range: refused by the parser, with a word on how to turn clipping off.
    (["train", "--corpus", "CORPUS", "--out", "OUT", "--learning-rate", "nan"],
     "--learning-rate: expected a finite number, got 'nan'"),
    (["train", "--corpus", "CORPUS", "--out", "OUT", "--learning-rate", "inf"], "expected a finite number"),
    (["train", "--corpus", "CORPUS", "--out", "OUT", "--grad-clip", "inf"],
     "--grad-clip: expected a finite number, got 'inf' (0 turns clipping off)"),
    (["train", "--corpus", "CORPUS", "--out", "OUT", "--grad-clip", "nan"], "(0 turns clipping off)"),
    (["train", "--corpus", "CORPUS", "--out", "OUT", "--dropout", "nan"], "--dropout: expected a finite number"),
    (["train", "--corpus", "CORPUS", "--out", "OUT", "--val-fraction", "inf"], "expected a finite number"),
    (["train", "--corpus", "CORPUS", "--out", "OUT", "--seed", str(2**32)], "--seed: must be <= 4294967295"),
    (["train", "--corpus", "CORPUS", "--out", "OUT", "--num-layers", "100000"], "--num-layers: must be <= 64"),
    # Checked with the corpus loaded: distinct characters, memory, the --out folder.
    (["train", "--corpus", "ONE", "--out", "OUT", *SMALL], "only one distinct character ('a')"),
    (["train", "--corpus", "CORPUS", "--out", "OUT", *SMALL, "--hidden-size", "100000"],
     "of memory to train"),
    (["train", "--corpus", "CORPUS", "--out", "OUT/ckpt-00000003", *SMALL], "is one checkpoint (ckpt-<step>)"),
    (["train", "--corpus", "CORPUS", "--out", "FILE/run", *SMALL], "cannot create"),
    (["sample", "--checkpoint", "MISSING"], "is not a folder"),
    (["sample", "--checkpoint", "EMPTY"], "holds no usable checkpoint"),
    (["sample", "--checkpoint", "EMPTY", "--temperature", "0"], "--temperature: must be >= 1e-30"),
    (["sample", "--checkpoint", "EMPTY", "--temperature", "1e-45"], "--mode argmax is the limit"),
    (["sample", "--checkpoint", "EMPTY", "--temperature", "nan"], "--temperature: expected a finite number"),
    (["sample", "--checkpoint", "EMPTY", "--seed", str(2**32)], "--seed: must be <= 4294967295"),
    (["sample", "--checkpoint", "EMPTY", "--mode", "beam"], "invalid choice"),
    (["sample", "--checkpoint", "EMPTY", "--length", "-1"], "--length: must be >= 0"),
    (["sample", "--checkpoint", "FAKE", "--streams", "100000000"], "--streams: must be <= 10000"),
    (["sample", "--checkpoint", "FAKE", "--streams", "10000", "--length", "100000000"], "--streams up to"),
    (["sample", "--checkpoint", "DAMAGED"], "progress.json: Expecting"),
    (["sample", "--checkpoint", "PARTIAL"], "incomplete: state.npy missing"),
]


def test_bad_options_fail_fast_without_tensorflow(corpus, tmp_path):
    """All in one fresh interpreter: each bad command exits with status 2 and a one-line message,
    TensorFlow is never imported (so the errors are instant and nothing trained), and nothing
    is left behind: no --out folder, no cache of a rejected corpus."""
    (tmp_path / "empty").mkdir()
    (tmp_path / "one.txt").write_text("a" * 500, encoding="utf-8")
    (tmp_path / "short.txt").write_text(TINY[:1000], encoding="utf-8")
    (tmp_path / "file").write_text("not a folder", encoding="utf-8")
    fake_checkpoint(tmp_path / "fake")
    (fake_checkpoint(tmp_path / "damaged") / "progress.json").write_text("{ not json")
    (fake_checkpoint(tmp_path / "partial") / "state.npy").unlink()
    names = {"CORPUS": corpus, "OUT": tmp_path / "out", "MISSING": tmp_path / "missing", "EMPTY": tmp_path / "empty",
             "ONE": tmp_path / "one.txt", "SHORT": tmp_path / "short.txt", "FILE": tmp_path / "file",
             "FAKE": tmp_path / "fake", "DAMAGED": tmp_path / "damaged", "PARTIAL": tmp_path / "partial"}

    def fill(arg):
        for key, value in names.items():
            arg = arg.replace(key, str(value)) if arg.split("/")[0] == key else arg
        return arg

    cases = [([fill(a) for a in argv], message) for argv, message in BAD]
    script = textwrap.dedent(f"""
        import contextlib, io, sys
        from charrnn_lib import cli
        for argv, message in {cases!r}:
            err = io.StringIO()
            with contextlib.redirect_stderr(err):
                try:
                    code = cli.main(argv)
                except SystemExit as exc:
                    code = exc.code
            assert code == 2, (argv, code, err.getvalue())
            assert message in err.getvalue(), (message, err.getvalue())
            ours = [line for line in err.getvalue().splitlines() if line and not line.startswith(("usage:", " "))]
            assert len(ours) == 1 and "Traceback" not in err.getvalue(), err.getvalue()
        assert "tensorflow" not in sys.modules and "keras" not in sys.modules
        print("ok", len({cases!r}))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"ok {len(BAD)}"
    assert not (tmp_path / "out").exists()  # nothing was trained or written
    assert not (tmp_path / "one_cache").exists() and not (tmp_path / "short_cache").exists()
    assert (tmp_path / "file").read_text(encoding="utf-8") == "not a folder"


# ----------------------------------------------------------------------------------------
# The real command in subprocesses: unusable folders, the lock, Ctrl-C, divergence, damage.
# ----------------------------------------------------------------------------------------

def assert_one_line_error(result, code, message):
    assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr and "allow_pickle" not in result.stderr, result.stderr
    ours = our_lines(result.stderr)
    assert len(ours) == 1 and message in ours[0], result.stderr


@pytest.mark.slow
def test_tensorflow_start_up_lines_stay_off_the_terminal(corpus, tmp_path):
    """TensorFlow writes CUDA/oneDNN/absl notices while it is imported, whatever
    TF_CPP_MIN_LOG_LEVEL says; the command line keeps them off unless --verbose."""
    env = {k: v for k, v in ENV.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    out = tmp_path / "run"
    trained = subprocess.run(command(*small_train_args(corpus, out), "--max-batches", "1"),
                             capture_output=True, text=True, timeout=300, env=env)
    assert trained.returncode == 0 and trained.stderr == "", trained.stderr
    assert "stopped after 1 batches" in trained.stdout
    sampled = subprocess.run(command("sample", "--checkpoint", out, "--length", "10"),
                             capture_output=True, text=True, timeout=300, env=env)
    assert sampled.returncode == 0 and sampled.stderr == "", sampled.stderr
    assert len(sampled.stdout) >= 11


def words(n_words, seed=0):
    rng = random.Random(seed)
    vocabulary = "to be or not that is the question whether tis nobler in the mind to suffer".split()
    return " ".join(rng.choice(vocabulary) for _ in range(n_words))


def tiny_train(corpus, out, *extra):
    return ["train", "--corpus", corpus, "--out", out, "--hidden-size", "8", "--num-layers", "1",
            "--batch-size", "2", "--seq-length", "8", "--epochs", "1", "--cell", "gru", "--quiet",
            "--lr-schedule", "constant", "--warmup-batches", "0", *extra]  # a finished run may grow --epochs


def test_unusable_out_is_found_before_training(corpus, tmp_path):
    """A parent that is a file, a path under /proc, a read-only folder, a full disk: each is
    refused in seconds -- before TensorFlow is even loaded -- with one line, and nothing is left."""
    (tmp_path / "file").write_text("x", encoding="utf-8")
    outs = [(tmp_path / "file" / "run", "cannot create"), (Path("/proc/charrnn-test/run"), "cannot create")]
    if os.geteuid() != 0:  # root may write anywhere
        (tmp_path / "readonly").mkdir(mode=0o555)
        outs.append((tmp_path / "readonly" / "run", "cannot create"))
    for out, message in outs:
        start = time.perf_counter()
        result = run_cli(*tiny_train(corpus, out), timeout=60)
        assert time.perf_counter() - start < 10
        assert_one_line_error(result, 2, message)
        assert not out.exists()
    # A full disk: the free space (patched to 1 MB) is far below three checkpoints of this model.
    out = tmp_path / "new" / "run"
    script = ("import shutil, sys; from charrnn_lib import cli\n"
              "shutil.disk_usage = lambda path: shutil._ntuple_diskusage(10**9, 10**9 - 10**6, 10**6)\n"
              f"sys.exit(cli.main({[str(a) for a in tiny_train(corpus, out, '--hidden-size', '512')]!r}))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=ENV)
    assert_one_line_error(result, 2, "has 1 MB free, but 3 checkpoints of this run need about")
    assert not (tmp_path / "new").exists()  # the folders it created are removed again


def test_a_refused_run_leaves_the_holders_temporaries_alone(corpus, tmp_path):
    """While another process holds --out, a second run fails at once, names the holder, and
    deletes nothing -- not even what looks like a killed save."""
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from charrnn_lib.outdir import lock_out_dir\n"
                               f"with lock_out_dir({str(out)!r}):\n    print('locked', flush=True)\n"
                               "    sys.stdin.readline()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=ENV)
    try:
        assert holder.stdout.readline().strip() == "locked"
        saving = out / ".tmp-ckpt-inprogress"
        saving.mkdir()
        (saving / "model.weights.h5").write_bytes(b"half")
        start = time.perf_counter()
        result = run_cli(*tiny_train(corpus, out), timeout=60)
        assert time.perf_counter() - start < 10
        assert_one_line_error(result, 2, f"is in use by another training run (pid {holder.pid} on ")
        assert (saving / "model.weights.h5").read_bytes() == b"half"
    finally:
        holder.communicate("\n", timeout=30)
    assert not (out / ".lock").exists()  # the holder deletes the lock file when it lets go


def checkpoint_contents(ckpt):
    """Every number a checkpoint holds: weights (all HDF5 datasets), Adam, state, generators, history."""
    import h5py
    import numpy as np

    arrays = {}
    with h5py.File(ckpt / "model.weights.h5", "r") as f:
        f.visititems(lambda name, obj: arrays.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    for name in ("optimizer.npz", "rng.npz"):
        with np.load(ckpt / name) as data:
            arrays.update({f"{name}/{k}": data[k] for k in data.files})
    arrays["state"] = np.load(ckpt / "state.npy")
    progress = json.loads((ckpt / "progress.json").read_text())
    return arrays, progress


def assert_same_checkpoint(a, b):
    import numpy as np

    (arrays_a, progress_a), (arrays_b, progress_b) = checkpoint_contents(a), checkpoint_contents(b)
    assert a.name == b.name and progress_a == progress_b and sorted(arrays_a) == sorted(arrays_b)
    for key in arrays_a:
        np.testing.assert_array_equal(arrays_a[key], arrays_b[key], err_msg=key)


@pytest.mark.slow
def test_a_second_run_into_a_busy_out_fails_at_once(tmp_path):
    """Two real training processes, one --out: the second (other learning rate) fails at once
    naming the first; the first is unharmed and finishes; the folders follow the umask.  (Once
    the first has finished, the second is refused as another run: test_damaged_checkpoints...)"""
    corpus = tmp_path / "words.txt"
    corpus.write_text(words(1200), encoding="utf-8")
    out = tmp_path / "run"
    first = subprocess.Popen(command(*tiny_train(corpus, out)), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env=ENV)
    try:
        deadline = time.time() + 60
        while not (out / ".lock").is_file() or not (out / ".lock").read_text():
            assert first.poll() is None and time.time() < deadline
            time.sleep(0.02)
        start = time.perf_counter()
        second = run_cli(*tiny_train(corpus, out, "--learning-rate", "0.01"), timeout=60)
        assert time.perf_counter() - start < 10
        assert_one_line_error(second, 2, f"is in use by another training run (pid {first.pid} on ")
        stdout, stderr = first.communicate(timeout=300)
    finally:
        first.kill()
    assert first.returncode == 0, stderr
    assert "finished after" in stdout
    assert sorted(p.name for p in out.iterdir()) == [f"ckpt-{stdout.split('finished after ')[1].split()[0]:0>8}"]
    umask = os.umask(0)
    os.umask(umask)
    ckpt = next(out.iterdir())
    assert ckpt.stat().st_mode & 0o777 == 0o777 & ~umask
    assert all(f.stat().st_mode & 0o777 == 0o666 & ~umask for f in ckpt.iterdir())


@pytest.mark.slow
def test_ctrl_c_saves_and_resumes_to_the_uninterrupted_run(tmp_path):
    """SIGINT to a real training process: it stops between batches, saves, says how to resume,
    exits 130 without a traceback; the same command (once more after a SIGKILL at a random
    moment) finishes the epoch; a larger --epochs then extends the finished run -- and all of it
    ends bit-identical to one uninterrupted 2-epoch run."""
    corpus = tmp_path / "words.txt"
    corpus.write_text(words(1500), encoding="utf-8")  # about 400 batches of 2 x 8
    whole, split = tmp_path / "whole", tmp_path / "split"
    uninterrupted = subprocess.Popen(command(*tiny_train(corpus, whole, "--epochs", "2")),
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    interrupted = subprocess.Popen(command(*tiny_train(corpus, split)), stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        deadline = time.time() + 120
        while not (split / "ckpt-00000200").is_dir():  # the first periodic save: training is under way
            assert interrupted.poll() is None and time.time() < deadline, interrupted.communicate()
            time.sleep(0.01)
        interrupted.send_signal(signal.SIGINT)
        stdout, stderr = interrupted.communicate(timeout=120)
        assert uninterrupted.wait(timeout=300) == 0
    finally:
        interrupted.kill()
        uninterrupted.kill()
    assert interrupted.returncode == 130, stderr
    assert "Traceback" not in stderr
    step = int(stderr.split("interrupted after ")[1].split()[0])
    assert 200 <= step and "run the same command again to resume" in stderr and "finished" not in stdout
    assert sorted(p.name for p in split.iterdir()) == [f"ckpt-{step:08d}"]

    # SIGKILL at a random moment (start-up, a batch, a save) leaves a lock file but no lock, and
    # a loadable checkpoint: the same command still finishes the epoch.
    delay = random.uniform(0.5, 8.0)
    killed = subprocess.Popen(command(*tiny_train(corpus, split)), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, env=ENV)
    try:
        killed.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        killed.kill()
        killed.wait()
    resumed = run_cli(*tiny_train(corpus, split))
    assert resumed.returncode == 0 and "finished after" in resumed.stdout, (delay, resumed.stderr)
    extended = run_cli(*tiny_train(corpus, split, "--epochs", "2"))
    assert extended.returncode == 0 and "epoch 2: training loss" in extended.stdout, extended.stderr
    assert_same_checkpoint(next(split.iterdir()), next(whole.iterdir()))


@pytest.mark.slow
def test_diverged_training_stops_and_keeps_the_last_checkpoint(tmp_path):
    """A learning rate of 1e38 without clipping diverges at the second batch: exit 1, one line,
    the checkpoint of batch 1 kept and still finite, nothing non-finite written; and the
    checkpoint still samples."""
    corpus = tmp_path / "tiny.txt"
    corpus.write_text(TINY, encoding="utf-8")
    out = tmp_path / "run"
    args = tiny_train(corpus, out, "--learning-rate", "1e38", "--grad-clip", "0")
    first = run_cli(*args, "--max-batches", "1")
    assert first.returncode == 0 and "stopped after 1 batches" in first.stdout, first.stderr
    before = checkpoint_contents(out / "ckpt-00000001")
    result = run_cli(*args)
    assert_one_line_error(result, 1, "training diverged at batch 2 (epoch 1): loss nan")
    assert "the last good checkpoint, ckpt-00000001, is kept" in result.stderr
    assert "smaller --learning-rate or --grad-clip 5" in result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["ckpt-00000001"]
    assert_same_checkpoint(out / "ckpt-00000001", out / "ckpt-00000001")
    after = checkpoint_contents(out / "ckpt-00000001")
    assert before[1] == after[1] and all((before[0][k] == after[0][k]).all() for k in before[0])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One finished tiny run, trained by the real command (a GRU of 8 units, 39 batches)."""
    folder = tmp_path_factory.mktemp("trained")
    corpus = folder / "tiny.txt"
    corpus.write_text(TINY, encoding="utf-8")
    result = run_cli(*tiny_train(corpus, folder / "run"))
    assert result.returncode == 0, result.stderr
    return corpus, folder / "run"


@pytest.mark.slow
def test_damaged_checkpoints_fail_in_one_line(trained, tmp_path):
    """Each damage to a checkpoint, for sample and for a resumed train, in one interpreter:
    exit 2, one line naming the file and what to do, never a traceback, never a hint to
    unpickle; an emptied newer folder falls back to the older one with a warning."""
    import numpy as np

    corpus, run = trained
    ckpt_name = next(run.iterdir()).name

    def damaged(name, damage):
        folder = tmp_path / name
        shutil.copytree(run, folder)
        damage(folder / ckpt_name)
        return str(folder)

    def truncate(path, keep=1000):
        path.write_bytes(path.read_bytes()[:keep])

    def nan_weights(ckpt):
        import h5py

        with h5py.File(ckpt / "model.weights.h5", "r+") as f:
            f.visititems(lambda name, obj: obj.__setitem__(..., np.nan) if isinstance(obj, h5py.Dataset)
                         and obj.dtype.kind == "f" and obj.size else None)

    weights = damaged("weights", lambda c: truncate(c / "model.weights.h5"))
    nan = damaged("nan", nan_weights)
    mismatch = damaged("mismatch", lambda c: None)
    cases = [  # (folder, command, expected exit status, text of the one line)
        (weights, "sample", 2, "model.weights.h5 is damaged or belongs to another model"),
        (weights, "train", 2, "model.weights.h5 is damaged or belongs to another model"),
        (damaged("config", lambda c: (c / "config.json").write_text("{")), "sample", 2, "config.json: Expecting"),
        (damaged("progress", lambda c: truncate(c / "progress.json", 40)), "train", 2, "is damaged"),
        (damaged("state", lambda c: (c / "state.npy").unlink()), "train", 2, "incomplete: state.npy missing"),
        (damaged("state_bytes", lambda c: (c / "state.npy").write_bytes(os.urandom(300))), "train", 2,
         "state.npy is damaged"),
        (damaged("optimizer", lambda c: (c / "optimizer.npz").write_bytes(os.urandom(5000))), "train", 2,
         "optimizer.npz is damaged"),
        (damaged("optimizer_pickle", lambda c: (c / "optimizer.npz").write_bytes(b"\x80\x04" + os.urandom(500))),
         "train", 2, "optimizer.npz is damaged"),
        (nan, "sample", 2, "holds weights that are not finite"),
        (nan, "train", 2, "holds weights that are not finite"),
        (mismatch, "train --learning-rate 0.05", 2,
         "holds a checkpoint of another run (train.learning_rate: checkpoint 0.005, now 0.05); use another --out"),
        (damaged("fallback", lambda c: (c.parent / "ckpt-99999999").mkdir()), "sample", 0, "warning: "),
    ]
    runs = []
    for folder, what, code, message in cases:
        if what.startswith("sample"):
            argv = ["sample", "--checkpoint", folder, "--length", "20"]
        else:
            argv = [str(a) for a in tiny_train(corpus, folder, *what.split()[1:])]
        runs.append((argv, code, message))
    script = textwrap.dedent(f"""
        import contextlib, io, json, sys
        from charrnn_lib import cli
        results = []
        for argv, code, message in {runs!r}:
            err, out = io.StringIO(), io.StringIO()
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
                try:
                    got = cli.main(argv)
                except SystemExit as exc:
                    got = exc.code
            results.append((argv, got, err.getvalue(), out.getvalue()))
        print(json.dumps(results))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600, env=ENV)
    assert result.returncode == 0, result.stderr
    for (argv, got, err, out), (_, code, message) in zip(json.loads(result.stdout), runs):
        assert got == code, (argv, got, err)
        assert "Traceback" not in err and "allow_pickle" not in err and "pickle.load" not in err, err
        ours = our_lines(err)
        assert len(ours) == 1 and message in ours[0], (argv, err)
    fallback_err = json.loads(result.stdout)[-1][2]
    assert "ckpt-99999999 is incomplete" in fallback_err and f"using the older complete checkpoint {ckpt_name}" \
        in fallback_err
    assert_same_checkpoint(Path(mismatch) / ckpt_name, run / ckpt_name)  # refused: untouched


@pytest.mark.slow
def test_sample_streams_with_bounded_memory_and_survives_a_closed_pipe(trained, tmp_path):
    """``--length 1000000000 | head -c 2000``: the text starts at once (it is streamed, not built
    first), the process stays small, and the closed pipe ends it quietly with status 0."""
    _, run = trained
    script = textwrap.dedent(f"""
        import resource, subprocess, sys
        process = subprocess.Popen({command("sample", "--checkpoint", run, "--length", 10**9)!r},
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        head = process.stdout.read(2000)
        process.stdout.close()  # what `head` does when it has enough
        err = process.stderr.read().decode()
        code = process.wait(timeout=60)
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
        print(len(head), code, peak, repr(err))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=ENV)
    assert result.returncode == 0, result.stderr
    length, code, peak, err = result.stdout.split(" ", 3)
    assert int(length) == 2000 and int(code) == 0
    assert "Traceback" not in err and "BrokenPipe" not in err and "Exception ignored" not in err, err
    assert int(peak) < 2_000_000_000  # 13.7 GB before, for the whole text at once


def test_every_failure_maps_to_one_line_and_a_status(corpus, tmp_path, monkeypatch, capsys):
    """The mapping itself: expected failures get one line and 2 (bad input) or 1 (failure during
    the run); a closed pipe is quiet; Ctrl-C outside training is 130; anything else is a bug,
    reported with its traceback and a request to report it."""
    from charrnn_lib.checkpoint import CheckpointError
    from charrnn_lib.outdir import OutDirBusyError

    args = cli.build_parser().parse_args(["train", "--corpus", str(corpus), "--out", str(tmp_path / "run")])
    assert cli._expected(CheckpointError("x is damaged"), args) == (2, "x is damaged")
    assert cli._expected(OutDirBusyError("run is in use"), args)[0] == 2
    code, message = cli._expected(OSError(28, "No space left on device", str(tmp_path / "run" / "f")), args)
    assert code == 1 and message.startswith(f"{tmp_path}/run/f: No space left on device; the newest complete")
    assert cli._expected(MemoryError(), args) == (1, "out of memory (MemoryError); try a smaller --hidden-size, "
                                                     "--num-layers, --batch-size or --seq-length")
    assert cli._expected(RuntimeError("a bug"), args) is None
    assert cli._one_line("a:\n  b\n  c\nd") == "a: b; c; d"

    sample = ["sample", "--checkpoint", str(fake_checkpoint(tmp_path / "fake").parent), "--prime", "a"]
    silenced = []
    monkeypatch.setattr(cli, "_silence_stdout", lambda: silenced.append(1))  # not this process's stdout
    for raised, code, text in [(BrokenPipeError(), 0, ""), (KeyboardInterrupt(), 130, "interrupted"),
                               (KeyError("oops"), 1, "this is a bug in charrnn_lib; please report it")]:
        def fail(*a, raised=raised):
            raise raised
        monkeypatch.setattr(cli, "run_sample", fail)
        assert cli.main(sample) == code
        err = capsys.readouterr().err
        assert text in err and ("Traceback" in err) == (code == 1)
    assert silenced == [1]
