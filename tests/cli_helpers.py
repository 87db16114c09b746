"""The command line as the tests of `test_cli.py` and `test_export.py` drive it.

Two kinds of help.  The real command in a subprocess (``run_cli``), the way a reader types
``python -m charrnn_lib ...``, with TensorFlow's C++ log lines off and a fixed hash seed; and
``fake_checkpoint``, a checkpoint folder that passes every check the command line makes before
it loads TensorFlow, so that refusals (bad options, wrong model, used folders) are tested in
milliseconds instead of after a training run.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

from charrnn_lib.data import Vocab

ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONHASHSEED="0")
PROG = "python -m charrnn_lib"  # how the command line names itself at the start of its messages


def command(*args) -> list[str]:
    """The argv of ``python -m charrnn_lib ARGS`` in this interpreter (paths and numbers made strings)."""
    return [sys.executable, "-m", "charrnn_lib", *map(str, args)]


def run_cli(*args, timeout=300) -> subprocess.CompletedProcess:
    """Run the command line to the end in a fresh process: returncode, stdout and stderr as text."""
    return subprocess.run(command(*args), capture_output=True, text=True, timeout=timeout, env=ENV)


def our_lines(stderr: str) -> list[str]:
    """The lines of stderr the command line wrote (it writes nothing else there but the notice
    of a signal, and TensorFlow's start-up lines stay off unless --verbose)."""
    return [line for line in stderr.splitlines() if line.startswith(PROG)]


# The model section of a fake checkpoint's config.json when the test gives none (its vocab_size
# comes from the characters): a one-layer GRU, the small model `test_cli.py` trains.
GRU = dict(hidden_size=8, num_layers=1, cell="gru", embedding_dim=None, dropout=0.0, init="keras")


def fake_checkpoint(folder, model: dict | None = None, chars="abc ", step=5):
    """A checkpoint folder ``folder/ckpt-STEP`` whose JSON files are real and whose arrays are
    empty files: enough for every check the command line makes before it loads TensorFlow.

    ``model`` is the model section of config.json (a ``ModelConfig`` or ``TransformerConfig``
    as a dict); by default the small GRU above, sized for the vocabulary ``chars``.
    """
    if model is None:
        model = dict(vocab_size=len(chars), **GRU)
    ckpt = folder / f"ckpt-{step:08d}"
    ckpt.mkdir(parents=True)
    (ckpt / "vocab.json").write_text(Vocab(tuple(chars)).to_json(), encoding="utf-8")
    (ckpt / "config.json").write_text(json.dumps({"model": model, "train": {}, "data": {}}))
    (ckpt / "progress.json").write_text(json.dumps({"format": 1, "epoch": 0, "batch": step, "global_step": step,
                                                    "finished": False, "history": {}}))
    for name in ("model.weights.h5", "optimizer.npz", "state.npy", "rng.npz"):
        (ckpt / name).write_bytes(b"")
    return ckpt
