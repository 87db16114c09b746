"""The command line: the whole char-rnn pipeline without the book.

::

    python -m charrnn_lib train  --corpus shakespeare --out runs/shakespeare
    python -m charrnn_lib sample --checkpoint runs/shakespeare --length 4000 --mode sample
    python -m charrnn_lib export --checkpoint runs/shakespeare --out exported/shakespeare

``train`` reads a corpus (a built-in name or a text file), trains with the book's best
recipe at the deck's cost (``--preset recipe``: chapter 5's run; ``--preset deck`` is the
deck's) unless told otherwise, shows a progress bar, prints the validation loss after every epoch
and saves a checkpoint in ``--out``; run the same command again and it resumes from that
checkpoint (a finished run returns at once; with a larger ``--epochs`` it continues).
``sample`` loads a checkpoint and prints generated text as it is generated.  ``export`` writes
a checkpoint as a TensorFlow SavedModel that TensorFlow alone can load (``charrnn_lib.export``).

Everything that can be checked is checked *before* TensorFlow is imported and before the
first batch, so a mistake fails in a fraction of a second with a message and exit status 2:
every option (finite numbers, seeds in range; then the real ``ModelConfig`` and
``TrainConfig`` of ``charrnn_lib.config`` are built, which check the rest), the corpus (it must batch, and have at least
two distinct characters; a rejected corpus leaves no cache behind), the model's memory
estimate against the machine's (naming a size that fits), and ``--out``: created, locked
against a second run (``charrnn_lib.outdir``), written to, and with room for a few
checkpoints.

Exit status: 0 done; 1 a failure during the run (training diverged, a disk filled up, out of
memory); 2 bad input (options, corpus, a damaged or mismatched checkpoint, a busy or
unusable ``--out``); 128 + the signal's number after Ctrl-C (130) or ``kill`` (143), which
stop training *between* batches and save a checkpoint first (a second Ctrl-C stops at once).
Every expected failure is one line on stderr; a traceback means a bug, and says so.
TensorFlow's own start-up lines stay off the terminal unless ``--verbose`` is given.
"""
from __future__ import annotations

import argparse
import codecs
import contextlib
import math
import os
import shutil
import signal
import sys
import threading
import traceback
import warnings
from pathlib import Path

from charrnn_lib.config import (CELLS, DEFAULT_PRESET, INITS, MIN_TEMPERATURE, MODES, PRESETS, SCHEDULES,
                                STRATEGIES, ModelConfig, TrainConfig, default)  # plain Python: no TensorFlow
from charrnn_lib.corpora import CORPORA

# Options a --preset sets unless they are given: ModelConfig's and TrainConfig's fields.
PRESET_OPTIONS = ("hidden_size", "num_layers", "dropout", "init", "batch_size", "seq_length",
                  "learning_rate", "lr_schedule", "warmup_batches", "min_lr_fraction")
MAX_LAYERS = 64          # deeper stacks are refused: each layer is one more sequential pass
MAX_SEED = 2**32 - 1     # NumPy's legacy seeding, which Keras uses, takes 32 bits
MAX_STREAMS = 10_000     # more is bulk generation, for the library's Sampler, not for a terminal
FREE_CHECKPOINTS = 3     # free disk asked for: the previous checkpoint, the new one, a margin


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


def _number(kind, minimum, inclusive=True, what="a number", maximum=None, hint="", finite_hint=None):
    """An argparse ``type`` that parses ``kind``: finite, at least ``minimum`` (above it if not
    ``inclusive``), at most ``maximum``; ``hint`` is added to the out-of-range messages,
    ``finite_hint`` (default: ``hint``) to the one for ``nan`` and ``inf``."""

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if kind is float and not math.isfinite(value):
            extra = hint if finite_hint is None else finite_hint
            raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}{extra}")
        if value < minimum or (not inclusive and value == minimum):
            bound = f">= {minimum}" if inclusive else f"> {minimum}"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {text}{hint}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"must be <= {maximum}, got {text}{hint}")
        return value

    return parse


positive_int = _number(int, 1, what="a positive integer")
non_negative_int = _number(int, 0, what="a non-negative integer")
positive_float = _number(float, 0.0, inclusive=False, what="a positive number")
seed_int = _number(int, 0, what="a non-negative integer", maximum=MAX_SEED)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m charrnn_lib", formatter_class=_Formatter,
        description="Train a character-level recurrent language model (char-rnn) and sample from it.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{train,sample,export}")

    recipe = PRESETS[DEFAULT_PRESET]
    train = commands.add_parser(
        "train", formatter_class=_Formatter, help="train a model (resumes when --out has a checkpoint)",
        description=f"Train char-rnn on a corpus.  The default recipe, --preset {DEFAULT_PRESET}, is "
                    f"{recipe.note}; --preset deck reproduces the deck.  Running it again with the same "
                    f"--out resumes.")
    train.add_argument("--corpus", required=True,
                       help=f"a built-in corpus ({', '.join(CORPORA)}) or the path of a text file")
    train.add_argument("--encoding", default="utf-8", help="text encoding of a corpus file")
    train.add_argument("--out", required=True, type=Path, help="folder for the checkpoint and history")
    presets = "; ".join(f"{name}: {p.note}" for name, p in PRESETS.items())
    train.add_argument("--preset", choices=tuple(PRESETS), default=DEFAULT_PRESET,
                       help=f"a named recipe that sets the options marked (preset) below unless they are "
                            f"given ({presets})")

    def from_preset(what: str, field: str) -> str:
        return f"{what} (default: {recipe.value(field)!r} from --preset {DEFAULT_PRESET}, or the preset's)"

    train.add_argument("--cell", choices=CELLS, default=default(ModelConfig, "cell"), help="recurrent cell")
    train.add_argument("--hidden-size", type=positive_int, default=None,
                       help=from_preset("units per layer, H", "hidden_size"))
    train.add_argument("--num-layers", type=_number(int, 1, what="a positive integer", maximum=MAX_LAYERS),
                       default=None, help=from_preset(f"stacked recurrent layers, L, at most {MAX_LAYERS}",
                                                      "num_layers"))
    train.add_argument("--dropout", type=_number(float, 0.0, what="a fraction"), default=None,
                       help=from_preset("dropout between layers, in [0, 1)", "dropout"))
    train.add_argument("--init", choices=INITS, default=None,
                       help=from_preset("weight initialisation: 'unit_embedding': unit-normal embedding, Keras's "
                                        "output layer (trains best, chapter 5); 'unit_normal': unit-normal "
                                        "embedding, output weights and bias, as in the deck's TF1 code; "
                                        "'keras': Keras's defaults (small embedding: learns slowest)", "init"))
    train.add_argument("--batch-size", type=positive_int, default=None,
                       help=from_preset("sequences per batch, B", "batch_size"))
    train.add_argument("--seq-length", type=positive_int, default=None,
                       help=from_preset("time steps per batch, the truncation length", "seq_length"))
    train.add_argument("--learning-rate", type=positive_float, default=None,
                       help=from_preset("Adam's (peak) learning rate", "learning_rate"))
    train.add_argument("--lr-schedule", choices=SCHEDULES, default=None,
                       help=from_preset("'constant', or 'cosine': decay to --min-lr-fraction of the peak over "
                                        "the whole run", "lr_schedule"))
    train.add_argument("--warmup-batches", type=non_negative_int, default=None,
                       help=from_preset("raise the learning rate linearly from 0 over this many batches",
                                        "warmup_batches"))
    train.add_argument("--min-lr-fraction", type=_number(float, 0.0, what="a fraction", maximum=1.0),
                       default=None, help=from_preset("cosine: the last learning rate, as a fraction of the "
                                                      "peak, in [0, 1]", "min_lr_fraction"))
    train.add_argument("--grad-clip", type=_number(float, 0.0, what="a number >= 0",
                                                   hint=" (0 turns clipping off)"),
                       default=default(TrainConfig, "grad_clip"),
                       help="clip gradients to this global norm (0: no clipping)")
    train.add_argument("--epochs", type=positive_int, default=default(TrainConfig, "num_epochs"),
                       help="passes over the training text; under --lr-schedule constant a finished run "
                            "continues when run again with a larger --epochs, and the result is the run "
                            "that was started with that many (the cosine schedule spans the whole run, so "
                            "there a longer run is a new run)")
    train.add_argument("--val-fraction", type=_number(float, 0.0, what="a fraction"),
                       default=default(TrainConfig, "val_fraction"),
                       help="last part of the corpus held out for validation, in [0, 1)")
    train.add_argument("--seed", type=seed_int, default=default(TrainConfig, "seed"),
                       help=f"random seed (initial weights), 0 to {MAX_SEED}")
    train.add_argument("--strategy", choices=STRATEGIES, default="auto",
                       help="tf.distribute strategy: 'auto' mirrors over all GPUs when there are several; "
                            "'mirrored': one replica per GPU (per logical CPU device without GPUs); "
                            "'multi-worker': one process per worker, on one machine or several "
                            "(MultiWorkerMirroredStrategy; the workers from --workers and --worker-index, else "
                            "from TF_CONFIG; worker 0, the chief, writes the checkpoints)")
    train.add_argument("--workers", default=None,
                       help="--strategy multi-worker: every worker's host:port, comma-separated, the chief "
                            "first; the same list for every worker (default: TF_CONFIG's)")
    train.add_argument("--worker-index", type=non_negative_int, default=None,
                       help="--strategy multi-worker: this process's place in --workers, 0 for the chief "
                            "(default: TF_CONFIG's)")
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
    train.add_argument("--verbose", action="store_true",
                       help="show TensorFlow's own start-up and log lines (default: off)")

    sample = commands.add_parser(
        "sample", formatter_class=_Formatter, help="generate text from a trained checkpoint",
        description="Generate text from a checkpoint written by 'train'.")
    sample.add_argument("--checkpoint", required=True, type=Path, help="folder given as --out to 'train'")
    sample.add_argument("--length", type=non_negative_int, default=4000,
                        help="characters to generate (printed as they are generated)")
    sample.add_argument("--mode", choices=MODES, default="sample",
                        help="argmax: always the likeliest; sample: weighted random; "
                             "space: random after a space, argmax elsewhere")
    sample.add_argument("--temperature", default=1.0,
                        type=_number(float, MIN_TEMPERATURE, what="a number", finite_hint="",
                                     hint=" (smaller temperatures overflow float32 in logits / T_s; "
                                          "--mode argmax is the limit T_s -> 0)"),
                        help=f"T_s >= {MIN_TEMPERATURE:g}: sample from softmax(logits / T_s); below 1 is more "
                             f"conservative")
    sample.add_argument("--prime", default=" ", help="text that warms up the state; printed first")
    sample.add_argument("--seed", type=seed_int, default=0, help="random seed: same seed, same text")
    sample.add_argument("--verbose", action="store_true",
                        help="show TensorFlow's own start-up and log lines (default: off)")
    sample.add_argument("--streams", default=1,
                        type=_number(int, 1, what="a positive integer", maximum=MAX_STREAMS,
                                     hint=" (for bulk generation use charrnn_lib.sample.Sampler.stream)"),
                        help=f"independent samples generated at once, at most {MAX_STREAMS:,} (printed one after "
                             f"another: the first as it is generated, the others held in memory until then)")
    export = commands.add_parser(
        "export", formatter_class=_Formatter, help="write a checkpoint as a TensorFlow SavedModel",
        description="Export a checkpoint written by 'train' as a TensorFlow SavedModel with the signatures "
                    "'step' (ids, state -> logits, state) and 'generate' (prime, length, temperature, seed, "
                    "mode -> text, as 'sample' writes it), loadable with TensorFlow alone.")
    export.add_argument("--checkpoint", required=True, type=Path,
                        help="folder given as --out to 'train' (its newest checkpoint), or one ckpt-<step> folder")
    export.add_argument("--out", required=True, type=Path, help="new (or empty) folder for the SavedModel")
    export.add_argument("--verbose", action="store_true",
                        help="show TensorFlow's own start-up and log lines (default: off)")
    parser.commands = {"train": train, "sample": sample, "export": export}
    return parser


# ----------------------------------------------------------------------------------------
# Checks that need no TensorFlow.
# ----------------------------------------------------------------------------------------

def _resolve_preset(args) -> None:
    """Fill the options a preset sets from --preset where they were not given."""
    chosen = PRESETS[args.preset]
    for field in PRESET_OPTIONS:
        if getattr(args, field) is None:
            setattr(args, field, chosen.value(field))


def _configs(args, vocab_size: int, parser) -> tuple[ModelConfig, TrainConfig]:
    """The run's real configurations, built (and so checked) before TensorFlow is imported."""
    try:
        model_config = ModelConfig(vocab_size, hidden_size=args.hidden_size, num_layers=args.num_layers,
                                   cell=args.cell, dropout=args.dropout, init=args.init)
        train_config = TrainConfig(batch_size=args.batch_size, seq_length=args.seq_length,
                                   learning_rate=args.learning_rate, grad_clip=args.grad_clip,
                                   num_epochs=args.epochs, val_fraction=args.val_fraction, seed=args.seed,
                                   lr_schedule=args.lr_schedule, warmup_batches=args.warmup_batches,
                                   min_lr_fraction=args.min_lr_fraction, mixed_precision=args.mixed_precision)
    except ValueError as exc:
        parser.error(str(exc))
    return model_config, train_config


@contextlib.contextmanager
def quiet_tensorflow(verbose: bool):
    """Import TensorFlow with its C++ start-up lines (CUDA, oneDNN, absl) kept off the terminal.

    ``TF_CPP_MIN_LOG_LEVEL`` does not silence them: they are written before TensorFlow's
    logging is set up.  So the process's standard error is pointed at ``/dev/null`` for the
    import itself, and restored before anything else runs (a failing import still shows
    its traceback).  ``verbose``: import it plainly, and show TensorFlow's log lines.
    """
    if verbose:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
        import tensorflow  # noqa: F401
        yield
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
        import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)
    yield


def _check_train(args, parser):
    from charrnn_lib.checkpoint import is_checkpoint_folder

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
    if is_checkpoint_folder(args.out):
        parser.error(f"--out {str(args.out)!r} is one checkpoint (ckpt-<step>) of a run, not the folder of a "
                     f"run: give the folder that holds it, {str(args.out.parent)!r}, to resume that run")
    args.cluster = _check_cluster(args, parser)


def _check_cluster(args, parser):
    """``--strategy multi-worker``: the ``Cluster`` from --workers and --worker-index, else from
    TF_CONFIG (plain Python, no TensorFlow); ``None`` under the other strategies."""
    from charrnn_lib.distribute import Cluster, ClusterConfigError

    flags = args.workers is not None or args.worker_index is not None
    if args.strategy != "multi-worker":
        if flags:
            parser.error("--workers and --worker-index are for --strategy multi-worker")
        return None
    if args.cpu_devices > 1:
        parser.error("--cpu-devices is for --strategy mirrored; under --strategy multi-worker every worker is a "
                     "process of its own, with its own devices")
    if flags and (args.workers is None or args.worker_index is None):
        parser.error("--workers and --worker-index go together: every worker's host:port, and this worker's "
                     "place in that list (0 for the chief)")
    if not flags and not os.environ.get("TF_CONFIG"):
        parser.error("--strategy multi-worker needs the workers: --workers host:port,host:port --worker-index N "
                     "(N = 0 for the chief), or the TF_CONFIG environment variable")
    try:
        if flags:
            return Cluster.from_workers(args.workers, args.worker_index)
        return Cluster.from_tf_config(os.environ["TF_CONFIG"])
    except ClusterConfigError as exc:
        parser.error(f"--workers/--worker-index: {exc}" if flags else str(exc))


def _human(n: float) -> str:
    from charrnn_lib.outdir import human_bytes

    return human_bytes(n)


def _check_training_memory(args, loader, parser) -> int:
    """Refuse a model whose training would not fit in memory, naming sizes that fit; return
    the free disk the run's checkpoints need."""
    from charrnn_lib import resources

    model = dict(vocab_size=loader.vocab_size, hidden_size=args.hidden_size, num_layers=args.num_layers,
                 cell=args.cell)

    def need(**change):
        return resources.training_bytes({**model, **change}, args.batch_size, args.seq_length)

    available = resources.available_memory()
    if available is not None and need() > available:
        fits = []
        hidden = resources.largest_fitting(lambda h: need(hidden_size=h), available, 1, args.hidden_size)
        if hidden:
            fits.append(f"--hidden-size up to {hidden:,} (with --num-layers {args.num_layers})")
        layers = resources.largest_fitting(lambda n: need(num_layers=n), available, 1, args.num_layers)
        if layers:
            fits.append(f"--num-layers up to {layers} (with --hidden-size {args.hidden_size:,})")
        advice = (" or ".join(fits) + " fits" if fits
                  else "not even one layer of hidden size 1 fits: use a smaller --batch-size or --seq-length")
        parser.error(f"a {args.num_layers} x {args.hidden_size:,} {args.cell} on batches of {args.batch_size} x "
                     f"{args.seq_length} needs about {_human(need())} of memory to train (weights, gradients, "
                     f"Adam's moments, the batch's activations, TensorFlow), and this machine has "
                     f"{_human(available)} available: {advice}")
    batches = args.epochs * loader.num_batches
    return FREE_CHECKPOINTS * resources.checkpoint_bytes(model, args.batch_size, batches)


def _find_checkpoint(args, parser):
    """``(ckpt, identity, vocab)`` of the newest complete checkpoint under ``--checkpoint``, or one usage line."""
    from charrnn_lib import checkpoint

    if not args.checkpoint.is_dir():
        parser.error(f"--checkpoint {str(args.checkpoint)!r} is not a folder; give the --out folder of a "
                     f"'train' run")
    ckpt = checkpoint.latest_checkpoint(args.checkpoint)
    if ckpt is None:
        parser.error(f"--checkpoint {str(args.checkpoint)!r} holds no usable checkpoint: no ckpt-<step> folder "
                     f"in it; train first with --out pointing there")
    try:
        identity, _, vocab = checkpoint.read_checkpoint_meta(ckpt)
    except checkpoint.CheckpointError as exc:
        parser.error(f"--checkpoint {str(args.checkpoint)!r} holds no usable checkpoint: {exc}")
    return ckpt, identity, vocab


def _check_export(args, parser):
    """The checkpoint to export (as ``sample`` finds it), a recurrent model, and a new or empty --out."""
    ckpt, identity, _ = _find_checkpoint(args, parser)
    if identity["model"].get("architecture") == "transformer":
        parser.error(f"--checkpoint {str(args.checkpoint)!r} holds a Transformer (chapter 7): the command line "
                     f"exports the recurrent models (a Transformer has a key/value cache, not a state)")
    out = args.out
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        parser.error(f"--out {str(out)!r} exists and is not a folder; give the path of a new folder")
    if out.is_dir() and any(out.iterdir()):
        parser.error(f"--out {str(out)!r} exists and is not empty; give a new folder (an export never "
                     f"overwrites: delete it first to replace it)")
    existing = next(p for p in out.absolute().parents if p.exists())  # where the new folders will go
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        parser.error(f"--out {str(out)!r} cannot be created: {str(existing)!r} is not a writable folder")
    return ckpt


def run_export(args, ckpt) -> int:
    with quiet_tensorflow(args.verbose):
        from charrnn_lib.checkpoint import load_checkpoint
        from charrnn_lib.export import export_model
        from charrnn_lib.outdir import human_bytes

    model, vocab, model_config = load_checkpoint(ckpt)
    out = export_model(model, vocab, model_config, args.out)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"exported {ckpt} as a SavedModel in {out} ({human_bytes(size)}; signatures 'step' and 'generate')")
    return 0


def _check_sample(args, parser):
    """The checkpoint to load (newest complete one) and its vocabulary; every check without Keras."""
    from charrnn_lib import resources

    ckpt, identity, vocab = _find_checkpoint(args, parser)
    if not args.prime:
        parser.error("--prime must not be empty (the deck primes with a single space)")
    unknown = sorted(set(args.prime) - set(vocab.chars))
    if unknown:
        parser.error(f"--prime has characters the model never saw: {', '.join(repr(c) for c in unknown)}")
    if args.mode == "space" and " " not in vocab.chars:
        parser.error("--mode space needs a space character in the model's vocabulary")
    model = identity["model"]
    if model.get("architecture") == "transformer":
        parser.error(f"--checkpoint {str(args.checkpoint)!r} holds a Transformer (chapter 7): the command line "
                     f"samples the recurrent models; use charrnn_lib.transformer.TransformerSampler")
    available = resources.available_memory()
    need = resources.sampling_bytes(model, args.streams, args.length)
    if available is not None and need > available:
        most = resources.largest_fitting(lambda n: resources.sampling_bytes(model, n, args.length),
                                         available, 1, args.streams)
        advice = f"--streams up to {most:,} fits" if most else "the model itself does not fit"
        parser.error(f"--streams {args.streams:,} with --length {args.length:,} needs about {_human(need)} of "
                     f"memory (each stream's share of the generation loop, and the text of every stream after "
                     f"the first, held until it is printed), and this machine has {_human(available)} "
                     f"available: {advice} (one stream is printed as it is generated, so its --length has "
                     f"no limit)")
    return ckpt, vocab


# ----------------------------------------------------------------------------------------
# Commands.
# ----------------------------------------------------------------------------------------

def _load_corpus(args, parser):
    """The TextLoader (NumPy only); a corpus that cannot be read or batched, or that has fewer
    than two distinct characters, is a usage error -- and leaves no cache folder behind."""
    from charrnn_lib.corpora import CorpusBuildError, corpus_path
    from charrnn_lib.data import TextLoader, default_cache_dir

    try:
        cache = default_cache_dir(corpus_path(args.corpus))
    except (ValueError, OSError, CorpusBuildError) as exc:
        parser.error(f"--corpus {args.corpus!r}: {exc}")
    fresh = not os.path.lexists(cache)
    try:
        loader = TextLoader(args.corpus, batch_size=args.batch_size, seq_length=args.seq_length,
                            encoding=args.encoding, val_fraction=args.val_fraction)
        if loader.vocab_size < 2:
            raise ValueError(f"it has only one distinct character ({loader.vocab.chars[0]!r}); a language "
                             f"model needs at least two")
        return loader
    except (ValueError, OSError) as exc:  # too small for the batch shape, undecodable, empty, ...
        if fresh:
            shutil.rmtree(cache, ignore_errors=True)
        parser.error(f"--corpus {args.corpus!r}: {exc}")


class _StopOnSignal:
    """While active, SIGINT (Ctrl-C) and SIGTERM set ``event``, which ``train`` checks between
    batches (it then saves and returns); a second signal raises ``KeyboardInterrupt`` at once.
    Installed by the command line only: a library call never changes signal handling."""

    def __init__(self):
        self.event = threading.Event()
        self.signum = None
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():  # signal.signal's rule
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum, frame):
        if self.event.is_set():
            raise KeyboardInterrupt
        self.signum = signum
        self.event.set()
        # os.write, not print: a handler may run while the main thread is inside print.
        os.write(2, b"\nstopping after this batch and saving a checkpoint "
                    b"(press Ctrl-C again to stop at once)\n")

    @property
    def exit_code(self) -> int:
        return 128 + int(self.signum or signal.SIGINT)


@contextlib.contextmanager
def _signals_end_the_process(active: bool):
    """While a worker waits for the others to start, Ctrl-C and ``kill`` end the process at once:
    TensorFlow's wait holds the interpreter, so no Python handler would run before it returns."""
    if not active or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, signal.SIG_DFL) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def run_train(args, loader, model_config: ModelConfig, train_config: TrainConfig, parser=None,
              claim=None) -> int:
    """Train; ``claim``: a context manager held around ``train`` (the multi-worker chief's claim
    of --out, taken once every worker has started)."""
    print(f"corpus {loader.path}: {len(loader.train_ids):,} training characters, "
          f"{len(loader.val_ids):,} validation, vocabulary of {loader.vocab_size}")
    with _StopOnSignal() as stopper:
        with quiet_tensorflow(args.verbose):    # TensorFlow is loaded from here on
            from charrnn_lib.distribute import make_strategy, per_replica_batch_size, split_cpu
            from charrnn_lib.fast.memory import keep_freed_memory
            from charrnn_lib.repro import seed_everything
            from charrnn_lib.train import train

        if args.cpu_devices > 1:
            split_cpu(args.cpu_devices)  # before anything starts TensorFlow's devices
        cluster = getattr(args, "cluster", None)
        if cluster is not None:          # joining the cluster, too, comes before anything else
            role = "the chief: it writes the checkpoints" if cluster.is_chief else "it reads the chief's checkpoints"
            print(f"worker {cluster.position} of {cluster.num_workers} at {cluster.address} ({role}); "
                  f"waiting for every worker to start", flush=True)
        with _signals_end_the_process(cluster is not None):  # nothing to save yet
            strategy = make_strategy(args.strategy, cluster=cluster)
        keep_freed_memory()              # a training process: keep freed temporaries (no page faults)
        seed_everything(args.seed)
        try:
            per_replica_batch_size(strategy, args.batch_size)
        except ValueError as exc:
            (parser or build_parser().commands["train"]).error(f"--batch-size: {exc}")
        if strategy.num_replicas_in_sync > 1:
            name = "MultiWorkerMirroredStrategy" if cluster is not None else type(strategy).__name__
            print(f"{name}: {strategy.num_replicas_in_sync} replicas of "
                  f"{args.batch_size // strategy.num_replicas_in_sync} rows each")
        if stopper.event.is_set():
            print("interrupted before training started; nothing was saved", file=sys.stderr)
            return stopper.exit_code
        with claim if claim is not None else contextlib.nullcontext():
            result = train(loader, model_config, train_config, out_dir=args.out,
                           progress=not args.quiet and (cluster is None or cluster.is_chief),  # one bar
                           strategy=strategy, max_batches=args.max_batches, stop=stopper.event)
    if result.resumed:
        print(f"resumed from the checkpoint in {args.out}")
    for line in _epoch_lines(result.history):
        print(line)
    if result.stopped:
        print(f"interrupted after {result.global_step} batches; checkpoint in {args.out} "
              f"(run the same command again to resume)", file=sys.stderr)
        return stopper.exit_code
    if result.finished:
        print(f"finished after {result.global_step} batches; checkpoint in {args.out}")
    else:
        print(f"stopped after {result.global_step} batches; checkpoint in {args.out} "
              f"(run the same command again to continue)")
    return 0


def _epoch_lines(history):
    """One line per finished epoch: mean training loss and validation loss (nats, bits per character)."""
    lines = []
    for i, train_loss in enumerate(history.epoch_train_loss):
        line = f"epoch {i + 1}: training loss {train_loss:.4f} nats"
        if i < len(history.val_loss):
            val = history.val_loss[i]
            line += f", validation loss {val:.4f} nats ({val / math.log(2):.4f} bits/char)"
        lines.append(line)
    return lines


def run_sample(args, checkpoint) -> int:
    """Print the generated text as it comes: one stream live; with several, the first live and
    the others (held as text) after it, each under a ``----- stream i -----`` line."""
    with quiet_tensorflow(args.verbose):
        from charrnn_lib.checkpoint import load_checkpoint
        from charrnn_lib.sample import Sampler

    model, vocab, model_config = load_checkpoint(checkpoint)
    pieces = Sampler(model, vocab, model_config).stream(args.length, prime=args.prime, mode=args.mode,
                                                        temperature=args.temperature, seed=args.seed,
                                                        num_streams=args.streams)
    out = sys.stdout
    if args.streams == 1:
        for (piece,) in pieces:
            out.write(piece)
        out.write("\n")
    else:
        held = [[] for _ in range(args.streams - 1)]
        out.write("----- stream 0 -----\n")
        for first, *others in pieces:
            out.write(first)
            for text, piece in zip(held, others):
                text.append(piece)
        out.write("\n")
        for i, text in enumerate(held, start=1):
            out.write(f"----- stream {i} -----\n")
            out.writelines(text)
            out.write("\n")
            text.clear()
    out.flush()
    return 0


# ----------------------------------------------------------------------------------------
# Errors: one line each, with the exit status of its kind.
# ----------------------------------------------------------------------------------------

def _one_line(text: str) -> str:
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    joined = ""
    for line in lines:
        joined += line if not joined else (" " if joined.endswith(":") else "; ") + line
    return joined


def _expected(exc: BaseException, args) -> tuple[int, str] | None:
    """``(exit status, message)`` for a failure the command line expects, ``None`` for a bug."""
    from charrnn_lib.checkpoint import CheckpointError, CheckpointMismatchError
    from charrnn_lib.outdir import OutDirError

    where = getattr(args, "out", None) or getattr(args, "checkpoint", None)
    if isinstance(exc, CheckpointMismatchError) and exc.differences and args.command == "train":
        grow = (" (--epochs can grow only under --lr-schedule constant: the cosine schedule spans the whole "
                "run)" if any(d.startswith("train.num_epochs:") for d in exc.differences) else "")
        return 2, (f"--out {str(args.out)!r} holds a checkpoint of another run ({'; '.join(exc.differences)}); "
                   f"use another --out, delete {str(args.out)!r} to start over, or repeat that run's options "
                   f"to resume it{grow}")
    if isinstance(exc, (CheckpointError, OutDirError)):
        return 2, _one_line(exc)
    sample = sys.modules.get("charrnn_lib.sample")
    if sample is not None and isinstance(exc, sample.SamplingError):
        return 2, _one_line(exc)
    export = sys.modules.get("charrnn_lib.export")
    if export is not None and isinstance(exc, export.ExportError):
        return 2, _one_line(exc)
    distribute = sys.modules.get("charrnn_lib.distribute")
    if distribute is not None and isinstance(exc, (distribute.WorkersDisagreeError, distribute.WorkerFailedError)):
        return (2 if isinstance(exc, distribute.WorkersDisagreeError) else 1), _one_line(exc)
    if type(exc).__name__ in ("UnavailableError", "DeadlineExceededError") and getattr(args, "cluster", None):
        return 1, (f"another worker stopped or cannot be reached ({type(exc).__name__}); start every worker "
                   f"again with the same command: they resume from the chief's last checkpoint in "
                   f"{str(args.out)!r}")
    train = sys.modules.get("charrnn_lib.train")
    if train is not None and isinstance(exc, train.TrainingDivergedError):
        kept = (f"the last good checkpoint, {exc.checkpoint.name}, is kept" if exc.checkpoint is not None
                else "no checkpoint had been written yet")
        clip = "a smaller --grad-clip" if args.grad_clip > 0 else "--grad-clip 5 (0 turns clipping off)"
        return 1, (f"training diverged at batch {exc.step} (epoch {exc.epoch}): loss {exc.loss}, gradient norm "
                   f"{exc.grad_norm}; nothing non-finite was saved, and {kept}. Resuming would diverge at the "
                   f"same batch: start a new run (another --out, or delete {str(args.out)!r}) with a smaller "
                   f"--learning-rate or {clip}")
    if isinstance(exc, MemoryError) or type(exc).__name__ == "ResourceExhaustedError":
        smaller = ("--hidden-size, --num-layers, --batch-size or --seq-length" if args.command == "train"
                   else "--streams")
        reason = _one_line(exc)[:200] or type(exc).__name__
        return 1, f"out of memory ({reason}); try a smaller {smaller}"
    if isinstance(exc, OSError):
        reason = f"{exc.filename}: {exc.strerror}" if exc.filename and exc.strerror else _one_line(exc)
        kept = (f"; the newest complete checkpoint in {str(where)!r} is kept: run the same command again "
                f"to resume" if args.command == "train" else "")
        return 1, reason + kept
    return None


def _silence_stdout() -> None:
    """After a broken pipe: point stdout at /dev/null, so that the exit's flush stays quiet."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


@contextlib.contextmanager
def _plain_warnings(prog: str):
    """The library's checkpoint warnings as one ``prog: warning: ...`` line each."""
    from charrnn_lib.checkpoint import CheckpointWarning

    with warnings.catch_warnings():
        show = warnings.showwarning

        def one_line(message, category, filename, lineno, file=None, line=None):
            if issubclass(category, CheckpointWarning):
                print(f"{prog}: warning: {message}", file=sys.stderr)
            else:
                show(message, category, filename, lineno, file, line)

        warnings.showwarning = one_line
        yield


def _train(args, parser) -> int:
    from charrnn_lib.outdir import claim_out_dir

    _check_train(args, parser)
    loader = _load_corpus(args, parser)
    model_config, train_config = _configs(args, loader.vocab_size, parser)
    needed = _check_training_memory(args, loader, parser)
    claim = claim_out_dir(args.out, needed, what=f"{FREE_CHECKPOINTS} checkpoints of this run")
    if args.cluster is None:
        with claim:
            return run_train(args, loader, model_config, train_config, parser)
    # Several workers: each joins the cluster first (a wait that only ending the process can cut
    # short, so nothing of the run may exist yet); then the chief claims --out, the others only read it.
    return run_train(args, loader, model_config, train_config, parser,
                     claim=claim if args.cluster.is_chief else contextlib.nullcontext())


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    sub = parser.commands[args.command]
    with _plain_warnings(sub.prog):
        try:
            if args.command == "train":
                return _train(args, sub)
            if args.command == "export":
                return run_export(args, _check_export(args, sub))
            checkpoint, _ = _check_sample(args, sub)
            return run_sample(args, checkpoint)
        except KeyboardInterrupt:
            what = ("the newest checkpoint in {!r} stands (run the same command again to resume)"
                    .format(str(args.out)) if args.command == "train" else
                    "nothing was written" if args.command == "export" else "the output is incomplete")
            print(f"\n{sub.prog}: interrupted; {what}", file=sys.stderr)
            return 128 + signal.SIGINT
        except BrokenPipeError:  # e.g. `sample | head`: the reader has all it wanted
            _silence_stdout()
            return 0
        except Exception as exc:  # noqa: BLE001 -- every failure ends in one line or a bug report
            known = _expected(exc, args)
            if known is None:
                traceback.print_exc()
                print(f"{sub.prog}: internal error ({type(exc).__name__}): this is a bug in charrnn_lib; please "
                      f"report it with the command line and the traceback above", file=sys.stderr)
                return 1
            code, message = known
            print(f"{sub.prog}: error: {message}", file=sys.stderr)
            return code
