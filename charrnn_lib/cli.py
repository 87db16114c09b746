"""The command line: the whole char-rnn pipeline without the book.

::

    python -m charrnn_lib train  --corpus shakespeare --out runs/shakespeare
    python -m charrnn_lib sample --checkpoint runs/shakespeare --length 4000 --mode sample

``train`` reads a corpus (a built-in name or a text file), trains with the deck's settings
unless told otherwise, shows a progress bar, prints the validation loss after every epoch
and saves a checkpoint in ``--out``; run the same command again and it resumes from that
checkpoint (a finished run returns at once).  ``sample`` loads a checkpoint and prints
generated text.

Every option is checked *before* TensorFlow is imported and before any training starts, so
a typo fails in a fraction of a second with a message and exit status 2.
"""
from __future__ import annotations

import argparse
import codecs
import os
from pathlib import Path

from charrnn_lib.corpora import CORPORA
from charrnn_lib.distribute import PRESETS, STRATEGIES  # plain Python: no TensorFlow at import

# As charrnn_lib.model.CELLS / INITS and charrnn_lib.sample.MODES, which cannot be imported
# here without loading Keras; tests/test_cli.py checks that the copies agree.
CELLS = ("lstm", "gru", "rnn", "peephole")
INITS = ("keras", "deck", "unit_embedding")
MODES = ("argmax", "sample", "space")
# Options a --preset sets (unless given explicitly), with the deck's values as defaults.
PRESET_FIELDS = {"hidden_size": 128, "num_layers": 2, "dropout": 0.0, "batch_size": 50, "seq_length": 50}


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Show each optional option's default (strings quoted, so a space prime is visible)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.required or action.default is argparse.SUPPRESS or not action.option_strings \
                or action.nargs == 0 or "(default" in text:
            return text
        default = action.default
        shown = repr(default) if isinstance(default, str) else ("none" if default is None else str(default))
        return f"{text} (default: {shown})"


def _number(kind, minimum, inclusive=True, what="a number"):
    """An argparse ``type`` that parses ``kind`` and rejects values below ``minimum``."""

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value < minimum or (not inclusive and value == minimum):
            bound = f">= {minimum}" if inclusive else f"> {minimum}"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {text}")
        return value

    return parse


positive_int = _number(int, 1, what="a positive integer")
non_negative_int = _number(int, 0, what="a non-negative integer")
positive_float = _number(float, 0.0, inclusive=False, what="a positive number")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m charrnn_lib", formatter_class=_Formatter,
        description="Train a character-level recurrent language model (char-rnn) and sample from it.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{train,sample}")

    train = commands.add_parser(
        "train", formatter_class=_Formatter, help="train a model (resumes when --out has a checkpoint)",
        description="Train char-rnn on a corpus; defaults are the deck's (2 x 128 LSTM, batch 50 x 50, "
                    "Adam 0.002, clipping 5, 2 epochs).  Running it again with the same --out resumes.")
    train.add_argument("--corpus", required=True,
                       help=f"a built-in corpus ({', '.join(CORPORA)}) or the path of a text file")
    train.add_argument("--encoding", default="utf-8", help="text encoding of a corpus file")
    train.add_argument("--out", required=True, type=Path, help="folder for the checkpoint and history")
    train.add_argument("--cell", choices=CELLS, default="lstm", help="recurrent cell")
    presets = "; ".join(f"{name}: {p.num_layers} x {p.hidden_size}, dropout {p.dropout}, batch "
                        f"{p.batch_size} x {p.seq_length}" for name, p in PRESETS.items())
    train.add_argument("--preset", choices=tuple(PRESETS), default=None,
                       help=f"a named model size that sets the five options below unless they are given "
                            f"({presets}) (default: none, i.e. the deck's values)")
    train.add_argument("--hidden-size", type=positive_int, default=None,
                       help="units per layer, H (default: 128, or the preset's)")
    train.add_argument("--num-layers", type=positive_int, default=None,
                       help="stacked recurrent layers, L (default: 2, or the preset's)")
    train.add_argument("--dropout", type=_number(float, 0.0, what="a fraction"), default=None,
                       help="dropout between layers, in [0, 1) (default: 0.0, or the preset's)")
    train.add_argument("--batch-size", type=positive_int, default=None,
                       help="sequences per batch, B (default: 50, or the preset's)")
    train.add_argument("--seq-length", type=positive_int, default=None,
                       help="time steps per batch, the truncation length (default: 50, or the preset's)")
    train.add_argument("--learning-rate", type=positive_float, default=0.002, help="Adam learning rate")
    train.add_argument("--grad-clip", type=_number(float, 0.0, what="a number >= 0"), default=5.0,
                       help="clip gradients to this global norm (0: no clipping)")
    train.add_argument("--epochs", type=positive_int, default=2, help="passes over the training text")
    train.add_argument("--val-fraction", type=_number(float, 0.0, what="a fraction"), default=0.05,
                       help="last part of the corpus held out for validation, in [0, 1)")
    train.add_argument("--seed", type=non_negative_int, default=0, help="random seed (initial weights)")
    train.add_argument("--init", choices=INITS, default="unit_embedding",
                       help="weight initialisation: 'unit_embedding': unit-normal embedding, Keras's output layer "
                            "(trains best, chapter 5); 'deck': unit-normal embedding and output layer as in the "
                            "deck's TF1 code; 'keras': Keras's defaults (small embedding: learns slowest)")
    train.add_argument("--strategy", choices=STRATEGIES, default="auto",
                       help="tf.distribute strategy: 'auto' mirrors over all GPUs when there are several; "
                            "'mirrored': one replica per GPU (per logical CPU device without GPUs)")
    train.add_argument("--cpu-devices", type=positive_int, default=1,
                       help="split the CPU into this many logical devices, so that --strategy mirrored can "
                            "be tried without GPUs (they share the same cores: for testing, not speed)")
    train.add_argument("--mixed-precision", action="store_true",
                       help="compute in float16 with float32 weights and loss scaling (mixed_float16): "
                            "meant for GPUs with tensor cores, no speed-up on a CPU (default: off)")
    train.add_argument("--max-batches", type=positive_int, default=None,
                       help="stop after this many training batches in this call and save; run the "
                            "same command again to continue")
    train.add_argument("--quiet", action="store_true", help="no progress bar (default: off)")

    sample = commands.add_parser(
        "sample", formatter_class=_Formatter, help="generate text from a trained checkpoint",
        description="Generate text from a checkpoint written by 'train'.")
    sample.add_argument("--checkpoint", required=True, type=Path, help="folder given as --out to 'train'")
    sample.add_argument("--length", type=non_negative_int, default=4000, help="characters to generate")
    sample.add_argument("--mode", choices=MODES, default="sample",
                        help="argmax: always the likeliest; sample: weighted random; "
                             "space: random after a space, argmax elsewhere")
    sample.add_argument("--temperature", type=positive_float, default=1.0,
                        help="T_s > 0: sample from softmax(logits / T_s); below 1 is more conservative")
    sample.add_argument("--prime", default=" ", help="text that warms up the state; printed first")
    sample.add_argument("--seed", type=non_negative_int, default=0, help="random seed: same seed, same text")
    sample.add_argument("--streams", type=positive_int, default=1, help="independent samples generated at once")
    parser.commands = {"train": train, "sample": sample}
    return parser


# ----------------------------------------------------------------------------------------
# Checks that need no TensorFlow.
# ----------------------------------------------------------------------------------------

def _resolve_preset(args) -> None:
    """Fill the size options from --preset (or the deck's values) where not given explicitly."""
    preset = PRESETS[args.preset] if args.preset else None
    for field, deck_value in PRESET_FIELDS.items():
        if getattr(args, field) is None:
            setattr(args, field, getattr(preset, field) if preset else deck_value)


def _check_train(args, parser):
    _resolve_preset(args)
    if not args.dropout < 1:
        parser.error(f"--dropout must be below 1, got {args.dropout}")
    if args.corpus not in CORPORA:
        path = Path(args.corpus).expanduser()
        if not path.is_file():
            parser.error(f"--corpus {args.corpus!r} is neither a built-in corpus ({', '.join(CORPORA)}) "
                         f"nor an existing file")
    try:
        codecs.lookup(args.encoding)
    except LookupError:
        parser.error(f"--encoding {args.encoding!r} is not a known text encoding (e.g. utf-8, cp949)")
    if not args.val_fraction < 1:
        parser.error(f"--val-fraction must be below 1, got {args.val_fraction}")
    if args.out.exists() and not args.out.is_dir():
        parser.error(f"--out {str(args.out)!r} exists and is not a folder")


def _checkpoint_vocab(folder: Path):
    """The vocabulary saved with the newest checkpoint in ``folder``, read without TensorFlow.

    Mirrors ``charrnn_lib.train.latest_checkpoint`` (which cannot be imported here without
    loading Keras): ``folder`` itself if it is a checkpoint, else its newest ``ckpt-<step>``.
    """
    from charrnn_lib.data import Vocab

    if (folder / "progress.json").is_file():
        ckpt = folder
    else:
        found = [p for p in folder.glob("ckpt-*") if p.is_dir() and p.name[5:].isdigit()]
        if not found:
            raise FileNotFoundError("no ckpt-<step> folder in it; train first with --out pointing there")
        ckpt = max(found, key=lambda p: int(p.name[5:]))
    return Vocab.from_json((ckpt / "vocab.json").read_text(encoding="utf-8"))


def _check_sample(args, parser):
    if not args.checkpoint.is_dir():
        parser.error(f"--checkpoint {str(args.checkpoint)!r} is not a folder; give the --out folder of a "
                     f"'train' run")
    try:
        vocab = _checkpoint_vocab(args.checkpoint)
    except (OSError, ValueError) as exc:
        parser.error(f"--checkpoint {str(args.checkpoint)!r} holds no usable checkpoint: {exc}")
    if not args.prime:
        parser.error("--prime must not be empty (the deck primes with a single space)")
    unknown = sorted(set(args.prime) - set(vocab.chars))
    if unknown:
        parser.error(f"--prime has characters the model never saw: {', '.join(repr(c) for c in unknown)}")
    if args.mode == "space" and " " not in vocab.chars:
        parser.error("--mode space needs a space character in the model's vocabulary")
    return vocab


# ----------------------------------------------------------------------------------------
# Commands.
# ----------------------------------------------------------------------------------------

def _load_corpus(args, parser):
    """The TextLoader (NumPy only); a corpus that cannot be read or batched is a usage error."""
    from charrnn_lib.data import TextLoader

    try:
        return TextLoader(args.corpus, batch_size=args.batch_size, seq_length=args.seq_length,
                          encoding=args.encoding, val_fraction=args.val_fraction)
    except (ValueError, OSError) as exc:  # too small for the batch shape, undecodable, empty, ...
        parser.error(f"--corpus {args.corpus!r}: {exc}")


def run_train(args, loader, parser=None) -> int:
    print(f"corpus {loader.path}: {len(loader.train_ids):,} training characters, "
          f"{len(loader.val_ids):,} validation, vocabulary of {loader.vocab_size}")

    from charrnn_lib.distribute import make_strategy, per_replica_batch_size, split_cpu

    if args.cpu_devices > 1:
        split_cpu(args.cpu_devices)  # before anything starts TensorFlow's devices
    from charrnn_lib.model import ModelConfig  # TensorFlow is loaded from here on
    from charrnn_lib.repro import seed_everything
    from charrnn_lib.train import TrainConfig, train

    seed_everything(args.seed)
    strategy = make_strategy(args.strategy)
    try:
        per_replica_batch_size(strategy, args.batch_size)
    except ValueError as exc:
        (parser or build_parser().commands["train"]).error(f"--batch-size: {exc}")
    if strategy.num_replicas_in_sync > 1:
        print(f"{type(strategy).__name__}: {strategy.num_replicas_in_sync} replicas of "
              f"{args.batch_size // strategy.num_replicas_in_sync} rows each")
    model_config = ModelConfig(loader.vocab_size, hidden_size=args.hidden_size, num_layers=args.num_layers,
                               cell=args.cell, dropout=args.dropout, init=args.init)
    train_config = TrainConfig(batch_size=args.batch_size, seq_length=args.seq_length,
                               learning_rate=args.learning_rate, grad_clip=args.grad_clip,
                               num_epochs=args.epochs, val_fraction=args.val_fraction, seed=args.seed,
                               mixed_precision=args.mixed_precision)
    result = train(loader, model_config, train_config, out_dir=args.out, progress=not args.quiet,
                   strategy=strategy, max_batches=args.max_batches)
    if result.resumed:
        print(f"resumed from the checkpoint in {args.out}")
    for line in _epoch_lines(result.history):
        print(line)
    if result.finished:
        print(f"finished after {result.global_step} batches; checkpoint in {args.out}")
    else:
        print(f"stopped after {result.global_step} batches; checkpoint in {args.out} "
              f"(run the same command again to continue)")
    return 0


def _epoch_lines(history):
    """One line per finished epoch: mean training loss and validation loss (nats, bits per character)."""
    import math

    lines = []
    for i, train_loss in enumerate(history.epoch_train_loss):
        line = f"epoch {i + 1}: training loss {train_loss:.4f} nats"
        if i < len(history.val_loss):
            val = history.val_loss[i]
            line += f", validation loss {val:.4f} nats ({val / math.log(2):.4f} bits/char)"
        lines.append(line)
    return lines


def run_sample(args, vocab) -> int:
    from charrnn_lib.sample import Sampler
    from charrnn_lib.train import load_checkpoint

    model, vocab, model_config = load_checkpoint(args.checkpoint)
    texts = Sampler(model, vocab, model_config).generate(args.length, prime=args.prime, mode=args.mode,
                                                         temperature=args.temperature, seed=args.seed,
                                                         num_streams=args.streams)
    for i, text in enumerate([texts] if args.streams == 1 else texts):
        if args.streams > 1:
            print(f"----- stream {i} -----")
        print(text)
    return 0


def main(argv=None) -> int:
    # Quiet TensorFlow's C++ start-up notices unless the user asked for them.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "train":
        sub = parser.commands["train"]
        _check_train(args, sub)
        return run_train(args, _load_corpus(args, sub), sub)
    vocab = _check_sample(args, parser.commands["sample"])
    return run_sample(args, vocab)
