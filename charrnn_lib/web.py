"""The live sampler's weights: a trained LSTM char-rnn as a script that a web page loads from disk.

The book's page "Live sampler" (``book/live_sampler.md``, code in ``book/_static/live_sampler.js``)
runs chapter 5's model in the reader's browser, with no server and no network.  A page
opened from disk (a ``file://`` address) may not ``fetch()`` another local file, but it may
run a ``<script src=...>``; so the weights travel as a script that defines one global
object, ``globalThis.CHARRNN_WEIGHTS`` (:data:`GLOBAL_NAME`)::

    {"format": "charrnn-live-sampler-weights", "version": 1,
     "source": "shakespeare-recipe",             # where the weights came from (a run's name)
     "model": {...ModelConfig.to_dict()...},     # cell "lstm", vocab_size K, hidden_size H, ...
     "chars": ["\\n", " ", "e", ...],            # the vocabulary: id k is chars[k]
     "gate_order": ["i", "f", "g", "o"],         # Keras's order of the four blocks of 4H columns
     "dtype": "<f4",                             # float32, little-endian
     "tensors": [{"name": "embedding", "shape": [K, E], "offset": 0}, ...],
     "data": "<base64 of all tensors, one after the other>"}

``offset`` counts float32 numbers from the start of ``data``.  The tensors, in this order
(Keras's own orientation: ``x @ kernel``, row vectors, see the notation page):

* ``embedding``                 (K, E)   the rows of E;
* ``lstm_<l>/kernel``           (D, 4H)  U^T for layer l (D = E for the first layer, H above);
* ``lstm_<l>/recurrent_kernel`` (H, 4H)  W^T;
* ``lstm_<l>/bias``             (4H,)    b;
* ``logits/kernel``             (H, K)   V^T, and ``logits/bias`` (K,).

Base64 of float32 is the smallest text form that keeps every weight exactly (decimal text
of the same numbers takes about three times the bytes): 4/3 x 4 bytes per weight, about
1.5 MB for the deck's 2 x 128 model.  :func:`read_weights_script` decodes a script back
into NumPy arrays; the tests check that the round trip is exact.

Only models of :func:`charrnn_lib.model.build_model` with ``cell="lstm"`` are written (with
Keras's default activations, which ``build_model`` always uses): the page implements that
one step.  Other cells and the Transformer are refused with :class:`WebExportError`.

The command line writes the book's script::

    python -m charrnn_lib.web OUT.js                 # chapter 5's recipe run, trained first if missing
    python -m charrnn_lib.web OUT.js --run DIR       # the newest checkpoint of another LSTM run

Without ``--run`` it uses chapter 5's recipe run in ``$CHARRNN_DATA/runs/shakespeare-recipe``
(``data/runs/...`` in a checkout: :func:`charrnn_lib.corpora.default_data_dir`) and first
calls ``train`` on it exactly as chapter 6 does, which returns at once for a finished run,
resumes an interrupted one and trains a missing one (a minute or two on two cores), so the
page always shows the model the chapters use.  ``make book`` runs it before the build.
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import re
import sys
from pathlib import Path

import numpy as np

from charrnn_lib.config import ModelConfig, TrainConfig

__all__ = ["FORMAT", "GLOBAL_NAME", "VERSION", "WebExportError", "lstm_tensors", "read_weights_script",
           "recipe_run_dir", "train_recipe", "weights_document", "weights_script", "write_weights_script"]

FORMAT = "charrnn-live-sampler-weights"
VERSION = 1
GLOBAL_NAME = "CHARRNN_WEIGHTS"
RECIPE_RUN = "shakespeare-recipe"   # chapter 5's recipe run, under <data>/runs
_ASSIGNMENT = f"globalThis.{GLOBAL_NAME} = "


class WebExportError(ValueError):
    """The model cannot be written for the page (not an LSTM of ``build_model``), or a script is not ours."""


def _check_exportable(model, model_config) -> None:
    if not isinstance(model_config, ModelConfig):
        raise WebExportError(f"the live sampler runs the LSTM char-rnn of charrnn_lib.model.build_model only; "
                             f"this is a {type(model_config).__name__} (a Transformer has no page implementation)")
    if model_config.cell != "lstm":
        raise WebExportError(f"the live sampler runs LSTM models only (cell='lstm'); this model's cell is "
                             f"{model_config.cell!r}: train one with ModelConfig(..., cell='lstm')")
    from charrnn_lib.model import recurrent_layers

    layers = recurrent_layers(model)
    if len(layers) != model_config.num_layers:
        raise WebExportError(f"the model has {len(layers)} recurrent layers but its config says "
                             f"{model_config.num_layers}: pass the model that build_model made for this config")
    for layer in layers:
        cell = layer.cell
        activations = (getattr(cell.activation, "__name__", ""), getattr(cell.recurrent_activation, "__name__", ""))
        if activations != ("tanh", "sigmoid") or not cell.use_bias:
            raise WebExportError(f"layer {layer.name}: the page implements Keras's default LSTM (tanh, sigmoid "
                                 f"gates, with bias); this one has activations {activations}, "
                                 f"use_bias={cell.use_bias}")


def lstm_tensors(model, model_config) -> list[tuple[str, np.ndarray]]:
    """The weights the page needs, in the script's order: ``[(name, float32 array), ...]``.

    Shapes in the module's docstring; Keras's LSTM ``kernel`` (D, 4H) and ``recurrent_kernel``
    (H, 4H) hold the blocks of the input gate, forget gate, candidate and output gate side by
    side, in that order (i, f, g, o).
    """
    _check_exportable(model, model_config)
    from charrnn_lib.model import recurrent_layers

    tensors = [("embedding", model.get_layer("embedding").embeddings)]
    for index, layer in enumerate(recurrent_layers(model)):
        cell = layer.cell
        tensors += [(f"lstm_{index}/kernel", cell.kernel), (f"lstm_{index}/recurrent_kernel", cell.recurrent_kernel),
                    (f"lstm_{index}/bias", cell.bias)]
    logits = model.get_layer("logits")
    tensors += [("logits/kernel", logits.kernel), ("logits/bias", logits.bias)]
    return [(name, np.asarray(variable.numpy(), dtype=np.float32)) for name, variable in tensors]


def weights_document(model, vocab, model_config, source: str = "") -> dict:
    """The object the script assigns (see the module's docstring); ``source`` names the run."""
    tensors = lstm_tensors(model, model_config)
    if len(vocab.chars) != model_config.vocab_size:
        raise WebExportError(f"the vocabulary has {len(vocab.chars)} characters but the model expects "
                             f"{model_config.vocab_size}")
    entries, blobs, offset = [], [], 0
    for name, array in tensors:
        entries.append({"name": name, "shape": list(array.shape), "offset": offset})
        blobs.append(array.astype("<f4").tobytes())   # float32, little-endian, row-major
        offset += array.size
    return {"format": FORMAT, "version": VERSION, "source": source, "model": model_config.to_dict(),
            "chars": list(vocab.chars), "gate_order": ["i", "f", "g", "o"], "dtype": "<f4",
            "tensors": entries, "data": base64.b64encode(b"".join(blobs)).decode("ascii")}


def weights_script(model, vocab, model_config, source: str = "") -> str:
    """The text of the weights script: a comment, then ``globalThis.CHARRNN_WEIGHTS = {...};``.

    JSON is valid JavaScript; ``ensure_ascii`` writes every non-ASCII character as ``\\uXXXX``,
    so the file reads the same whatever character set the browser assumes for it.
    """
    doc = weights_document(model, vocab, model_config, source)
    c = model_config
    count = sum(int(np.prod(t["shape"])) for t in doc["tensors"])
    header = (f"// The live sampler's model, written by `python -m charrnn_lib.web` (charrnn_lib/web.py); "
              f"do not edit.\n// {c.num_layers} x {c.hidden_size} LSTM, vocabulary of {c.vocab_size}, "
              f"{count:,} float32 weights{f', from {source}' if source else ''}.\n")
    return header + _ASSIGNMENT + json.dumps(doc, ensure_ascii=True, separators=(",", ":")) + ";\n"


def write_weights_script(path, model, vocab, model_config, source: str = "") -> Path:
    """Write :func:`weights_script` to ``path`` atomically (never half a file); returns ``path``."""
    from charrnn_lib.files import write_atomically

    text = weights_script(model, vocab, model_config, source)
    write_atomically(path, lambda f: f.write(text.encode("ascii")))
    os.chmod(path, 0o644)  # a page asset: readable by a web server, not only by its writer
    return Path(path)


def read_weights_script(text: str) -> tuple[dict, dict[str, np.ndarray]]:
    """Decode a weights script: ``(document without "data", {name: float32 array})``.

    Parses the JSON after the assignment (no JavaScript is run); raises
    :class:`WebExportError` if the text is not a script of this format and version.
    """
    match = re.search(r"^" + re.escape(_ASSIGNMENT) + r"(\{.*\});\s*\Z", text, flags=re.M | re.S)
    if match is None:
        raise WebExportError(f"not a live-sampler weights script (no line starting {_ASSIGNMENT!r})")
    doc = json.loads(match.group(1))
    if doc.get("format") != FORMAT or doc.get("version") != VERSION:
        raise WebExportError(f"a weights script of format {doc.get('format')!r} version {doc.get('version')!r}; "
                             f"this reader reads {FORMAT!r} version {VERSION}")
    flat = np.frombuffer(base64.b64decode(doc.pop("data"), validate=True), dtype="<f4")
    arrays = {}
    for entry in doc["tensors"]:
        size = int(np.prod(entry["shape"]))
        arrays[entry["name"]] = flat[entry["offset"]:entry["offset"] + size].reshape(entry["shape"]).astype(np.float32)
    return doc, arrays


# --------------------------------------------------------------------------- chapter 5's run


def recipe_run_dir() -> Path:
    """Where chapters 5 to 7 keep the recipe run: ``<data>/runs/shakespeare-recipe``."""
    from charrnn_lib.corpora import default_data_dir

    return default_data_dir() / "runs" / RECIPE_RUN


def train_recipe(run_dir=None, progress: bool = True):
    """Train, finish or just open chapter 5's recipe run, with chapter 6's very call.

    A finished run returns at once; an interrupted one resumes; a missing one is trained
    (two epochs of Shakespeare).  Returns the ``TrainResult``.
    """
    from charrnn_lib.data import TextLoader
    from charrnn_lib.train import train

    loader = TextLoader("shakespeare", batch_size=50, seq_length=20)  # chapter 5's recipe run
    return train(loader, ModelConfig(loader.vocab_size, init="unit_embedding"),
                 TrainConfig(seq_length=20, learning_rate=0.005, lr_schedule="cosine", warmup_batches=50),
                 out_dir=run_dir or recipe_run_dir(), progress=progress)


# --------------------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m charrnn_lib.web",
        description="Write the live sampler's weights script (the book's page 'Live sampler') from a "
                    "trained LSTM run.")
    parser.add_argument("out", metavar="OUT.js", help="the script to write, e.g. "
                        "_build/live_sampler/live_sampler_weights.js")
    parser.add_argument("--run", metavar="DIR", default=None,
                        help="a run folder (train --out) whose newest checkpoint to write, as it is; default: "
                             "chapter 5's recipe run in <data>/runs/shakespeare-recipe, trained or finished "
                             "first exactly as chapter 6 does")
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    prog = parser.prog
    out = Path(args.out)
    if out.suffix != ".js" or out.is_dir():
        parser.error(f"OUT.js must name a .js file to write, got {args.out!r}")
    if args.run is not None and not Path(args.run).is_dir():
        parser.error(f"--run {args.run!r} is not a folder: pass the folder a training run wrote (train --out)")
    from charrnn_lib.cli import quiet_tensorflow   # plain Python; TensorFlow is imported by the next line
    with quiet_tensorflow(verbose=False):          # ...with its start-up lines off the terminal, as the CLI does
        from charrnn_lib.checkpoint import CheckpointError, load_checkpoint
    from charrnn_lib.outdir import OutDirError

    try:
        if args.run is None:
            run = recipe_run_dir()
            print(f"{prog}: chapter 5's recipe run in {run} (trained first if missing: a minute or two)",
                  file=sys.stderr)
            train_recipe(run, progress=sys.stderr.isatty())
        else:
            run = Path(args.run)
        model, vocab, config = load_checkpoint(run)
        write_weights_script(out, model, vocab, config, source=run.name)
    except (WebExportError, CheckpointError, OutDirError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; training saved a checkpoint: run the same command again to resume",
              file=sys.stderr)
        return 130
    except OSError as exc:
        print(f"{prog}: error: {exc.filename}: {exc.strerror}" if exc.filename else f"{prog}: error: {exc}",
              file=sys.stderr)
        return 1
    print(f"{prog}: wrote {out} ({out.stat().st_size / 1e6:.2f} MB): {config.num_layers} x {config.hidden_size} "
          f"LSTM from {run.name}, vocabulary of {config.vocab_size}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
