"""The command line: train, resume, sample end to end on a tiny corpus; bad options fail fast."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from charrnn_lib import cli

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
        text = sub.format_help()
        for action in sub._actions:
            if not action.option_strings or action.dest == "help":
                continue
            assert action.option_strings[-1] in text, (name, action.dest)
        for option, default in {"train": [("--hidden-size", "128"), ("--learning-rate", "0.002"),
                                          ("--grad-clip", "5.0"), ("--epochs", "2"), ("--init", "'unit_embedding'"),
                                          ("--cell", "'lstm'"), ("--batch-size", "50"), ("--seq-length", "50"),
                                          ("--strategy", "'auto'"), ("--dropout", "0.0")],
                                "sample": [("--length", "4000"), ("--mode", "'sample'"),
                                           ("--temperature", "1.0"), ("--prime", "' '"), ("--seed", "0")]}[name]:
            assert option in text and f"(default: {default}" in " ".join(text.split()), (option, default)
    result = subprocess.run([sys.executable, "-m", "charrnn_lib", "train", "--help"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "--corpus" in result.stdout and "--out" in result.stdout


def test_copied_choices_match_the_library():
    from charrnn_lib import model, sample

    assert cli.CELLS == model.CELLS and cli.INITS == model.INITS and cli.MODES == sample.MODES


def test_preset_fills_only_the_options_not_given():
    parser = cli.build_parser()
    args = parser.parse_args(["train", "--corpus", "x", "--out", "y", "--preset", "medium", "--hidden-size", "64"])
    cli._resolve_preset(args)
    assert (args.hidden_size, args.num_layers, args.dropout, args.batch_size, args.seq_length) == (64, 2, 0.1, 64, 100)
    args = parser.parse_args(["train", "--corpus", "x", "--out", "y"])
    cli._resolve_preset(args)
    assert (args.hidden_size, args.num_layers, args.dropout, args.batch_size, args.seq_length) == (128, 2, 0.0, 50, 50)


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
    (["train", "--corpus", "CORPUS", "--out", "OUT", "--batch-size", "50", "--seq-length", "50"],
     "needs 2500"),  # corpus too small for one batch: caught before any training
    (["sample", "--checkpoint", "MISSING"], "is not a folder"),
    (["sample", "--checkpoint", "EMPTY"], "holds no usable checkpoint"),
    (["sample", "--checkpoint", "EMPTY", "--temperature", "0"], "--temperature: must be > 0"),
    (["sample", "--checkpoint", "EMPTY", "--mode", "beam"], "invalid choice"),
    (["sample", "--checkpoint", "EMPTY", "--length", "-1"], "--length: must be >= 0"),
]


def test_bad_options_fail_fast_without_tensorflow(corpus, tmp_path):
    """All in one fresh interpreter: each bad command exits with status 2 and a message,
    and TensorFlow is never imported (so the errors are instant and nothing trained)."""
    (tmp_path / "empty").mkdir()
    cases = [([a.replace("CORPUS", str(corpus)).replace("OUT", str(tmp_path / "out"))
               .replace("MISSING", str(tmp_path / "missing")).replace("EMPTY", str(tmp_path / "empty"))
               for a in argv], message) for argv, message in BAD]
    script = textwrap.dedent(f"""
        import contextlib, io, sys
        from charrnn_lib import cli
        for argv, message in {cases!r}:
            err = io.StringIO()
            with contextlib.redirect_stderr(err):
                try:
                    cli.main(argv)
                    code = 0
                except SystemExit as exc:
                    code = exc.code
            assert code == 2, (argv, code)
            assert message in err.getvalue(), (message, err.getvalue())
        assert "tensorflow" not in sys.modules and "keras" not in sys.modules
        print("ok", len({cases!r}))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"ok {len(BAD)}"
    assert not (tmp_path / "out").exists()  # nothing was trained or written
