"""The exported SavedModel: TensorFlow alone reproduces the library's text and step.

A tiny LSTM is trained for a few batches and exported by the real command line; a fresh
Python process in which neither ``charrnn_lib`` nor Keras can be imported loads it and
must give ``Sampler.generate``'s text character for character (all three modes, primes
across chunk boundaries, long and empty generations) and the model's one-step logits.
Bad inputs fail inside the graph with the message that says what to do; bad command lines
fail in one line with status 2 and leave nothing behind; a failed export leaves nothing.
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from charrnn_lib import cli
from charrnn_lib.config import MIN_TEMPERATURE, TransformerConfig
from charrnn_lib.data import Vocab

from cli_helpers import ENV, fake_checkpoint, our_lines, run_cli  # tests/cli_helpers.py

TINY = "ROMEO:\nto be or not to be, that is the question.\nwhether 'tis nobler in the mind to suffer\n\n" * 8
README = Path(__file__).resolve().parent.parent / "README.md"

# (prime, length, temperature, seed, mode): every mode; a prime longer than one chunk of the
# loop (256 steps), so that forced and chosen steps share a chunk; several chunks and Philox
# blocks; nothing generated; the smallest temperature; a seed beyond 32 bits.
CASES = [("to be", 300, 1.0, 0, "sample"), ("to be", 300, 0.8, 1, "argmax"), ("to be", 300, 1.2, 2, "space"),
         ("whether 'tis nobler " * 15, 700, 0.9, 3, "sample"), ("t", 0, 1.0, 0, "sample"),
         ("the ", 60, MIN_TEMPERATURE, 4, "sample"), ("o", 520, 1.5, 2**40, "space")]

# (the signature's inputs that differ from a good call, a piece of the message)
BAD = [(dict(prime="to bZ\u00e9"), "2 character(s) not in the vocabulary of the model: Z U+005A, \u00e9 U+00E9"),
       (dict(prime=""), "prime must be a non-empty string"),
       (dict(length=-1), "length must be a non-negative integer, got -1"),
       (dict(temperature=MIN_TEMPERATURE / 10), f"temperature must be a finite number >= {MIN_TEMPERATURE:g}"),
       (dict(temperature=float("nan")), "mode argmax is the limit T_s -> 0), got nan"),
       (dict(mode="beam"), "mode must be argmax, sample or space, got beam"),
       (dict(seed=-5), "seed must be an integer from 0 to 2**63 - 1, got -5")]
BAD_STEP = [(dict(ids=[0, 99]), "ids must be character ids in [0, "),
            (dict(state_batch=3), "with B = the number of ids, got [4 3 16] for [2] ids")]


def one_error_line(stderr: str) -> str:
    ours = our_lines(stderr)
    assert len(ours) == 1 and "Traceback" not in stderr, stderr
    return ours[0]


# The process that loads the SavedModel.  TensorFlow 2.21 imports Keras by itself when it is
# installed (its tf.keras loader), so "TensorFlow only" is made strict: keras and charrnn_lib
# are made unimportable before TensorFlow is imported, and must still be absent at the end.
TF_ONLY = textwrap.dedent("""
    import json, sys
    sys.modules["keras"] = None        # `import keras` now raises ImportError
    sys.modules["charrnn_lib"] = None  # and so does anything of the library
    import numpy as np
    import tensorflow as tf

    request = json.load(open(sys.argv[1]))
    loaded = tf.saved_model.load(request["model"])
    generate, step = loaded.signatures["generate"], loaded.signatures["step"]

    def call(prime, length, temperature, seed, mode):
        return generate(prime=tf.constant(prime), length=tf.constant(length, tf.int32),
                        temperature=tf.constant(temperature, tf.float32), seed=tf.constant(seed, tf.int64),
                        mode=tf.constant(mode))["text"].numpy().decode("utf-8")

    result = {"texts": [call(*case) for case in request["cases"]], "errors": [], "step_errors": []}
    state = np.load(request["state"])
    out = step(ids=tf.constant(state["ids"]), state=tf.constant(state["state"]))
    np.savez(request["step_out"], logits=out["logits"].numpy(), state=out["state"].numpy())
    result["initial_state"] = list(loaded.initial_state(tf.constant(3)).shape)
    for change, _ in request["bad"]:
        args = {**dict(prime="to be", length=5, temperature=1.0, seed=0, mode="sample"), **change}
        try:
            call(**args)
            result["errors"].append(None)
        except tf.errors.InvalidArgumentError as exc:
            result["errors"].append(exc.message)
    for change, _ in request["bad_step"]:
        ids = change.get("ids", [0, 1])
        zeros = tf.zeros([state["state"].shape[0], change.get("state_batch", len(ids)), state["state"].shape[2]])
        try:
            step(ids=tf.constant(ids, tf.int32), state=zeros)
            result["step_errors"].append(None)
        except tf.errors.InvalidArgumentError as exc:
            result["step_errors"].append(exc.message)
    result["vocabulary"] = [c.decode("utf-8") for c in loaded.vocabulary.numpy()]
    result["model_config"] = json.loads(loaded.model_config.numpy().decode("utf-8"))
    result["leaked"] = sorted(m for m in sys.modules if m.split(".")[0] in ("keras", "charrnn_lib")
                              and sys.modules[m] is not None)
    print(json.dumps(result))
""")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny 2 x 16 LSTM trained for 6 batches by the real command, then exported by it."""
    folder = tmp_path_factory.mktemp("export")
    corpus = folder / "tiny.txt"
    corpus.write_text(TINY, encoding="utf-8")
    trained = run_cli("train", "--corpus", corpus, "--out", folder / "run", "--hidden-size", "16", "--num-layers", "2",
                      "--batch-size", "2", "--seq-length", "8", "--epochs", "1", "--max-batches", "6", "--quiet")
    assert trained.returncode == 0, trained.stderr
    saved = folder / "exported" / "shakespeare"  # the README's path (its parent is created too)
    result = run_cli("export", "--checkpoint", folder / "run", "--out", saved)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert "as a SavedModel in" in result.stdout and (saved / "saved_model.pb").is_file()
    assert [p.name for p in saved.parent.iterdir()] == ["shakespeare"]  # no temporary left beside it
    return folder


@pytest.fixture(scope="module")
def library(exported):
    """What the library itself says: Sampler.generate's texts, and the Keras model's one step."""
    import tensorflow as tf

    from charrnn_lib.checkpoint import load_checkpoint
    from charrnn_lib.sample import Sampler

    model, vocab, config = load_checkpoint(exported / "run")
    sampler = Sampler(model, vocab, config)
    texts = [sampler.generate(n, prime=p, mode=m, temperature=t, seed=s) for p, n, t, s, m in CASES]
    rng = np.random.default_rng(0)
    ids = rng.integers(0, len(vocab), 5).astype(np.int32)                                   # (B,)
    state = rng.normal(size=(config.num_states, 5, config.hidden_size)).astype(np.float32)  # (n_states, B, H)
    logits, *new_states = model([tf.constant(ids[:, None]), *tf.unstack(state)], training=False)
    np.savez(exported / "state.npz", ids=ids, state=state)
    return dict(texts=texts, vocab=vocab, config=config, logits=logits.numpy()[:, 0],
                state=np.stack([s.numpy() for s in new_states]))


@pytest.fixture(scope="module")
def tensorflow_only(exported, library):
    request = exported / "request.json"
    request.write_text(json.dumps({"model": str(exported / "exported" / "shakespeare"), "cases": CASES, "bad": BAD,
                                   "bad_step": BAD_STEP, "state": str(exported / "state.npz"),
                                   "step_out": str(exported / "step.npz")}))
    result = subprocess.run([sys.executable, "-c", TF_ONLY, str(request)], capture_output=True, text=True,
                            timeout=300, env=ENV, cwd=exported)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1]), dict(np.load(exported / "step.npz"))


@pytest.mark.slow
def test_tensorflow_alone_generates_the_librarys_text(tensorflow_only, library):
    result, _ = tensorflow_only
    assert result["leaked"] == []  # neither Keras nor the library was imported
    assert result["texts"] == library["texts"]  # character for character, every case
    texts = library["texts"]
    assert texts[4] == "t" and all(t.startswith(p) and len(t) == len(p) + n for t, (p, n, *_) in zip(texts, CASES))
    # The comparison means something: random draws, not one greedy loop in every case.
    assert texts[0] != texts[1] and len(set(texts[0][5:])) > 5 and len(set(texts[3][-700:])) > 5
    assert result["vocabulary"] == list(library["vocab"].chars)
    assert result["model_config"] == library["config"].to_dict()


@pytest.mark.slow
def test_step_gives_the_models_logits_and_state(tensorflow_only, library):
    result, step = tensorflow_only
    config = library["config"]
    assert result["initial_state"] == [config.num_states, 3, config.hidden_size]
    # Measured: 0.0 (bit-identical: the same kernels on the same machine); the bound leaves
    # room for another summation order, far below the logits' scale (about 1).
    np.testing.assert_allclose(step["logits"], library["logits"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(step["state"], library["state"], rtol=0, atol=1e-5)


@pytest.mark.slow
def test_bad_inputs_through_the_signatures_say_what_to_do(tensorflow_only):
    result, _ = tensorflow_only
    for message, (change, expected) in zip(result["errors"], BAD):
        assert message is not None and expected in message, (change, message)
    for message, (change, expected) in zip(result["step_errors"], BAD_STEP):
        assert message is not None and expected in message, (change, message)


@pytest.mark.slow
def test_export_into_a_used_folder_is_refused_and_changes_nothing(exported):
    before = sorted((p.relative_to(exported), p.stat().st_mtime_ns) for p in exported.rglob("*"))
    result = run_cli("export", "--checkpoint", exported / "run", "--out", exported / "exported" / "shakespeare")
    assert result.returncode == 2
    assert "exists and is not empty" in one_error_line(result.stderr)
    ckpt = next((exported / "run").glob("ckpt-*"))  # a ckpt-<step> folder works as well ...
    result = run_cli("export", "--checkpoint", ckpt, "--out", exported / "exported")  # ... and is refused alike
    assert result.returncode == 2 and "exists and is not empty" in one_error_line(result.stderr)
    assert sorted((p.relative_to(exported), p.stat().st_mtime_ns) for p in exported.rglob("*")) == before


@pytest.mark.slow
def test_the_readme_snippet_prints_what_sample_prints(exported, tensorflow_only):
    """The README's loading snippet, run as printed with TensorFlow alone, against the tiny run."""
    section = README.read_text(encoding="utf-8").split("### Exporting a model", 1)[1]
    snippet = section.split("```py\n", 1)[1].split("```", 1)[0]
    assert "tf.saved_model.load(\"exported/shakespeare\")" in snippet
    sampled = run_cli("sample", "--checkpoint", exported / "run", "--length", 400, "--prime", "ROMEO:",
                      "--temperature", 0.8, "--seed", 1)  # the README's sample command
    assert sampled.returncode == 0, sampled.stderr
    blocked = 'import sys\nsys.modules["keras"] = sys.modules["charrnn_lib"] = None\n'
    result = subprocess.run([sys.executable, "-c", blocked + snippet], capture_output=True, text=True, timeout=300,
                            env=ENV, cwd=exported)
    assert result.returncode == 0, result.stderr
    assert result.stdout == sampled.stdout and len(result.stdout) > 400


@pytest.mark.slow
@pytest.mark.parametrize("cell", ["gru", "rnn", "peephole", "mingru"])
def test_every_recurrent_cell_exports(tmp_path, cell):
    """The other cells, in this process: the loaded SavedModel gives the Sampler's text."""
    import tensorflow as tf

    from charrnn_lib.export import export_model
    from charrnn_lib.model import ModelConfig, build_model
    from charrnn_lib.repro import seed_everything
    from charrnn_lib.sample import Sampler

    vocab = Vocab.from_text(TINY)
    seed_everything(1)
    config = ModelConfig(len(vocab), hidden_size=8, num_layers=2, cell=cell, init="unit_normal")
    model = build_model(config)
    export_model(model, vocab, config, tmp_path / "saved")
    generate = tf.saved_model.load(str(tmp_path / "saved")).signatures["generate"]
    for mode in ("sample", "space"):
        text = generate(prime=tf.constant("to be"), length=tf.constant(80), temperature=tf.constant(1.0),
                        seed=tf.constant(3, tf.int64), mode=tf.constant(mode))["text"].numpy().decode()
        assert text == Sampler(model, vocab, config).generate(80, prime="to be", mode=mode, seed=3), (cell, mode)


# ----------------------------------------------------------------------------------------
# Quick: the command line's refusals (before TensorFlow), and a failed export leaves nothing.
# ----------------------------------------------------------------------------------------

def test_bad_export_commands_fail_in_one_line_and_leave_nothing(tmp_path, capsys):
    lstm = dict(vocab_size=4, hidden_size=8, num_layers=1, cell="lstm", embedding_dim=None, dropout=0.0,
                init="keras")
    fake_checkpoint(tmp_path / "lstm", lstm)
    fake_checkpoint(tmp_path / "transformer", TransformerConfig(4, d_model=8, num_heads=2, context=16).to_dict())
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "keep.txt").write_text("mine")
    (tmp_path / "file").write_text("not a folder")
    (tmp_path / "empty").mkdir()
    cases = [
        (["--checkpoint", tmp_path / "missing", "--out", tmp_path / "new"], "is not a folder; give the --out folder"),
        (["--checkpoint", tmp_path / "empty", "--out", tmp_path / "new"], "holds no usable checkpoint"),
        (["--checkpoint", tmp_path / "transformer", "--out", tmp_path / "new"], "holds a Transformer (chapter 7)"),
        (["--checkpoint", tmp_path / "transformer" / "ckpt-00000005", "--out", tmp_path / "new"],
         "holds a Transformer"),
        (["--checkpoint", tmp_path / "lstm", "--out", tmp_path / "used"], "exists and is not empty"),
        (["--checkpoint", tmp_path / "lstm", "--out", tmp_path / "file"], "exists and is not a folder"),
        (["--checkpoint", tmp_path / "lstm", "--out", tmp_path / "file" / "new"], "is not a writable folder"),
    ]
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    for argv, message in cases:
        with pytest.raises(SystemExit) as info:
            cli.main(["export", *map(str, argv)])
        assert info.value.code == 2, argv
        err = capsys.readouterr().err
        ours = [line for line in err.splitlines() if line and not line.startswith(("usage:", " "))]
        assert len(ours) == 1 and message in ours[0] and "Traceback" not in err, (argv, err)
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before  # nothing created, nothing removed
    assert (tmp_path / "used" / "keep.txt").read_text() == "mine"


@pytest.fixture(scope="module")
def tiny_model():
    from charrnn_lib.model import ModelConfig, build_model
    from charrnn_lib.repro import seed_everything

    vocab = Vocab.from_text(TINY)
    seed_everything(0)
    config = ModelConfig(len(vocab), hidden_size=8, num_layers=1, cell="lstm")
    return build_model(config), vocab, config


def test_a_failed_export_leaves_nothing_behind(tmp_path, tiny_model, monkeypatch):
    import tensorflow as tf

    from charrnn_lib import export

    def save_half_then_fail(obj, path, signatures=None):
        Path(path, "variables").mkdir(parents=True)
        Path(path, "saved_model.pb").write_bytes(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tf.saved_model, "save", save_half_then_fail)
    out = tmp_path / "new" / "deeper" / "saved"  # two parent folders to create, and remove again
    with pytest.raises(OSError, match="No space left"):
        export.export_model(*tiny_model, out)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "empty").mkdir()  # an existing empty --out is kept as it was
    with pytest.raises(OSError, match="No space left"):
        export.export_model(*tiny_model, tmp_path / "empty")
    assert [p.name for p in tmp_path.iterdir()] == ["empty"] and list((tmp_path / "empty").iterdir()) == []


def test_the_library_refuses_what_it_cannot_export(tmp_path, tiny_model):
    from charrnn_lib import export

    model, vocab, _ = tiny_model
    with pytest.raises(export.ExportError, match="Transformer"):
        export.export_model(model, vocab, TransformerConfig(len(vocab), d_model=8, num_heads=2), tmp_path / "t")
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "x").write_text("x")
    with pytest.raises(export.ExportError, match="not empty"):
        export.export_model(*tiny_model, tmp_path / "used")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["used"]


def test_an_empty_out_folder_receives_the_export(tmp_path, tiny_model):
    import tensorflow as tf

    from charrnn_lib import export

    (tmp_path / "saved").mkdir()
    export.export_model(*tiny_model, tmp_path / "saved")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["saved"]  # renamed into place, no temporary left
    loaded = tf.saved_model.load(str(tmp_path / "saved"))
    assert set(loaded.signatures) == {"step", "generate"}
    _, vocab, config = tiny_model
    out = loaded.signatures["step"](ids=tf.constant([0, 1, 2]), state=loaded.initial_state(tf.constant(3)))
    assert out["logits"].shape == (3, len(vocab)) and out["state"].shape == (config.num_states, 3, config.hidden_size)
