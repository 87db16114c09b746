"""Configuration in one place: what a char-rnn is, how it trains, and the named recipes.

Plain Python -- importing this module loads neither TensorFlow nor Keras (nor NumPy), so
the command line can check every option by building these objects before it starts
TensorFlow, and every default lives here once:

* ``ModelConfig``: the architecture (chapter 5's embedding -> L recurrent layers -> logits);
* ``TrainConfig``: the batch shape, the optimiser's schedule, clipping, epochs, seed, and
  two *speed knobs* (``SPEED_FIELDS``) that choose how a step is computed, not what;
* the choice lists: ``CELLS``, ``INITS``, ``SCHEDULES``, ``MODES`` (sampling),
  ``STRATEGIES`` (``tf.distribute``), and ``MIN_TEMPERATURE``;
* ``PRESETS``: named recipes, each a model *and* its training settings.  ``"recipe"`` is
  chapter 5's better run at the deck's cost (the command line's default), ``"deck"`` the
  deck's own settings, ``"medium"`` and ``"large"`` bigger models.

A config is a frozen dataclass that checks itself when built (a ``ValueError`` that says
which field and what is allowed) and round-trips through ``to_dict``/``from_dict``, which
is how a checkpoint stores it.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Literal

__all__ = [
    "CELLS",
    "DEFAULT_PRESET",
    "INITS",
    "MEASURED_ON",
    "MIN_TEMPERATURE",
    "MODES",
    "ModelConfig",
    "PRESETS",
    "Preset",
    "SCHEDULES",
    "SPEED_FIELDS",
    "STRATEGIES",
    "TrainConfig",
    "TransformerConfig",
    "config_from_dict",
    "preset",
]

CELLS = ("lstm", "gru", "rnn", "peephole", "mingru")
# "keras": Keras's defaults (embedding uniform(-0.05, 0.05), logits Glorot-uniform, bias 0);
# "unit_normal": embedding, logits weights and logits bias all N(0, 1) (the deck's tf.random_normal);
# "unit_embedding": embedding N(0, 1), logits layer as Keras's (chapter 5: trains best of the three).
INITS = ("keras", "unit_normal", "unit_embedding")
SCHEDULES = ("constant", "cosine")
MODES = ("argmax", "sample", "space")          # sampling: chapter 6
STRATEGIES = ("auto", "default", "mirrored", "multi-worker")   # tf.distribute: the appendix on scaling up
# The smallest sampling temperature.  Below it logits / T_s can overflow float32 (already for
# |logits| > 3.4e8 at 1e-30; for any logit at 1e-45, which float32 rounds to 0), the softmax
# becomes NaN and the loop picks character 0 at every step.  Above it, small temperatures
# approach the argmax (mode "argmax" is the limit T_s -> 0).
MIN_TEMPERATURE = 1e-30
# TrainConfig fields that change how a step is computed, not the numbers it gives (beyond
# float32 rounding: tests/test_train.py checks the paths agree): a run may resume with others.
SPEED_FIELDS = ("fused", "row_groups")


def _positive_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 1


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Architecture of a char-rnn.  Defaults are the deck's: a 2 x 128 LSTM, E = H."""

    vocab_size: int                        # K
    hidden_size: int = 128                 # H
    num_layers: int = 2                    # L
    cell: Literal["lstm", "gru", "rnn", "peephole", "mingru"] = "lstm"
    embedding_dim: int | None = None       # E; None: same as hidden_size, as in the deck
    dropout: float = 0.0                   # between layers only (no recurrent dropout: keeps cuDNN eligible)
    init: Literal["keras", "unit_normal", "unit_embedding"] = "keras"   # see INITS

    def __post_init__(self):
        if not _positive_int(self.vocab_size) or self.vocab_size < 2:
            raise ValueError(f"vocab_size must be an integer >= 2, got {self.vocab_size!r}")
        if not _positive_int(self.hidden_size) or not _positive_int(self.num_layers):
            raise ValueError(f"hidden_size and num_layers must be positive integers, got "
                             f"{self.hidden_size!r} and {self.num_layers!r}")
        if self.embedding_dim is not None and not _positive_int(self.embedding_dim):
            raise ValueError(f"embedding_dim must be a positive integer or None, got {self.embedding_dim!r}")
        if self.cell not in CELLS:
            raise ValueError(f"cell must be one of {CELLS}, got {self.cell!r}")
        if self.init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {self.init!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {self.dropout}")

    @property
    def embed_size(self) -> int:
        """E: the embedding's width (``embedding_dim``, or ``hidden_size`` when that is None)."""
        return self.embedding_dim or self.hidden_size

    @property
    def states_per_layer(self) -> int:
        """2 for an LSTM (``h`` and ``s``), 1 for a GRU or a simple RNN (``h``)."""
        return 2 if self.cell in ("lstm", "peephole") else 1

    @property
    def num_states(self) -> int:
        """How many (batch, hidden) state tensors the model takes and returns: L x states per layer."""
        return self.num_layers * self.states_per_layer

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        return cls(**d)


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    """Architecture of a small decoder-only character Transformer (chapter 7, ``charrnn_lib.transformer``).

    It trains with the same ``train`` as a ``ModelConfig``; it carries no state from batch to
    batch (``num_states == 0``), and it reads at most ``context`` characters at once, so
    ``TrainConfig.seq_length`` must not exceed ``context``.
    """

    vocab_size: int          # K
    d_model: int = 128       # d: the width of every position's vector
    num_layers: int = 2      # L: blocks
    num_heads: int = 4       # heads per attention layer; d_head = d_model / num_heads
    context: int = 128       # the most positions the model reads (rows of the position embedding)
    mlp_ratio: int = 4       # the MLP's hidden width is mlp_ratio * d_model
    dropout: float = 0.0     # on the embeddings, the attention weights and both residual branches

    def __post_init__(self):
        if not _positive_int(self.vocab_size) or self.vocab_size < 2:
            raise ValueError(f"vocab_size must be an integer >= 2, got {self.vocab_size!r}")
        for name in ("d_model", "num_layers", "num_heads", "context", "mlp_ratio"):
            value = getattr(self, name)
            if not _positive_int(value):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.d_model % self.num_heads:
            raise ValueError(f"d_model must be a multiple of num_heads, got d_model={self.d_model} and "
                             f"num_heads={self.num_heads}")
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, numbers.Real) \
                or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {self.dropout!r}")

    @property
    def d_head(self) -> int:
        """The width of one head: d_model / num_heads."""
        return self.d_model // self.num_heads

    @property
    def num_states(self) -> int:
        """No state is carried from one batch to the next: every window starts afresh."""
        return 0

    @property
    def hidden_size(self) -> int:
        """The width of every position's vector (the name the training loop uses for it)."""
        return self.d_model

    def to_dict(self) -> dict:
        return {"architecture": "transformer", **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, d: dict) -> "TransformerConfig":
        d = {k: v for k, v in d.items() if k != "architecture"}
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown TransformerConfig fields: {sorted(unknown)}")
        return cls(**d)


def config_from_dict(d: dict):
    """A ``ModelConfig`` or a ``TransformerConfig`` from its ``to_dict()`` (what a checkpoint stores)."""
    if d.get("architecture") == "transformer":
        return TransformerConfig.from_dict(d)
    return ModelConfig.from_dict(d)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How to train.  Defaults are the deck's: batch 50 x 50, Adam 0.002 constant, clip 5, 2 epochs
    (``PRESETS["recipe"].train_config()`` is chapter 5's better run)."""

    batch_size: int = 50              # B: rows per batch
    seq_length: int = 50              # T: time steps per batch, the truncation length
    learning_rate: float = 0.002      # peak learning rate (eta)
    grad_clip: float = 5.0            # theta: clip the global gradient norm to this; 0 = no clipping
    num_epochs: int = 2
    val_fraction: float = 0.05        # the last part of the corpus, held out
    seed: int = 0                     # the initial weights (and dropout's masks)
    lr_schedule: str = "constant"     # "constant" or "cosine" (decay to min_lr_fraction * eta)
    warmup_batches: int = 0           # linear warm-up from 0 over this many steps
    min_lr_fraction: float = 0.0      # cosine: final learning rate as a fraction of the peak
    checkpoint_every: int = 200       # batches between checkpoints (0: only at epoch ends)
    mixed_precision: bool = False     # mixed_float16: float16 arithmetic, float32 weights and loss
    # Speed knobs (SPEED_FIELDS): how the step is computed on a CPU, not what it computes.
    fused: bool = True                # LSTM without dropout, on a CPU: charrnn_lib.fast's fused step
    row_groups: int = 2               # fused step: the rows, as this many groups computed side by side

    def __post_init__(self):
        for name in ("batch_size", "seq_length", "num_epochs", "row_groups"):
            value = getattr(self, name)
            if not _positive_int(value):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            raise ValueError(f"learning_rate must be a positive finite number, got {self.learning_rate}")
        if not (self.grad_clip >= 0 and math.isfinite(self.grad_clip)):
            raise ValueError(f"grad_clip must be a finite number >= 0 (0 turns clipping off), got "
                             f"{self.grad_clip}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, numbers.Integral) or not 0 <= self.seed < 2**32:
            raise ValueError(f"seed must be an integer in [0, 2**32 - 1], got {self.seed!r}")
        if self.lr_schedule not in SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {SCHEDULES}, got {self.lr_schedule!r}")
        for name in ("warmup_batches", "checkpoint_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
        if not 0.0 <= self.min_lr_fraction <= 1.0:
            raise ValueError(f"min_lr_fraction must lie in [0, 1], got {self.min_lr_fraction}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must lie in [0, 1), got {self.val_fraction}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown TrainConfig fields: {sorted(unknown)}")
        return cls(**d)


def default(cls, field: str):
    """The default of ``cls``'s dataclass field ``field`` (the command line shows these)."""
    return {f.name: f.default for f in dataclasses.fields(cls)}[field]


# --------------------------------------------------------------------------- presets


@dataclasses.dataclass(frozen=True)
class Preset:
    """A named recipe: the model's size and initialisation, and how it trains.

    ``model`` and ``train`` hold the fields that differ from ``ModelConfig``'s and
    ``TrainConfig``'s defaults; ``measured`` says what the recipe reached when it was run
    (see ``MEASURED_ON``), or where the book measures it.
    """

    note: str
    model: dict = dataclasses.field(default_factory=dict)
    train: dict = dataclasses.field(default_factory=dict)
    measured: str = ""

    def model_config(self, vocab_size: int, **overrides) -> ModelConfig:
        """This recipe's ``ModelConfig`` (any field can be overridden, e.g. ``cell="gru"``)."""
        return ModelConfig(vocab_size=vocab_size, **{**self.model, **overrides})

    def train_config(self, **overrides) -> TrainConfig:
        """This recipe's ``TrainConfig`` (any field can be overridden, e.g. ``num_epochs=4``)."""
        return TrainConfig(**{**self.train, **overrides})

    def value(self, field: str):
        """The recipe's value of a ``ModelConfig`` or ``TrainConfig`` field (else that class's default)."""
        for fields, cls in ((self.model, ModelConfig), (self.train, TrainConfig)):
            if field in fields:
                return fields[field]
        for cls in (ModelConfig, TrainConfig):
            if field in {f.name for f in dataclasses.fields(cls)}:
                return default(cls, field)
        raise KeyError(field)


# Where the figures in ``Preset.measured`` come from: each recipe trained for 2 epochs on
# Shakespeare with the last 5 % held out (``python -m charrnn_lib train --corpus shakespeare
# --preset NAME``; "recipe" and "deck" are chapter 5's runs), training speeds from
# ``charrnn_lib.bench.measure_throughput`` -- on this one machine.
MEASURED_ON = ("a 2-core AMD EPYC virtual machine, no GPU, TensorFlow 2.21 / Keras 3.15 (December 2026), "
               "load average about 1.3 while the speeds were measured")

PRESETS = {
    "recipe": Preset(
        "chapter 5's better run at the deck's cost: the deck's 2 x 128 LSTM, unit-normal embedding, "
        "sequences of 20, Adam 0.005 with 50 warm-up batches and a cosine decay",
        model=dict(init="unit_embedding"),
        train=dict(seq_length=20, learning_rate=0.005, lr_schedule="cosine", warmup_batches=50),
        measured="validation 1.646 to 1.651 nats (2.37 to 2.38 bits/char) after 2 epochs, by the CPU's "
                 "instruction set: chapter 5, 'Beating the deck at the same cost'"),
    "deck": Preset(
        "the deck's settings: 2 x 128 LSTM, unit-normal embedding and output layer, batch 50 x 50, "
        "Adam 0.002 constant",
        model=dict(init="unit_normal"),
        measured="validation 1.735 nats (2.503 bits/char) after 2 epochs: chapter 5, 'The deck's run, "
                 "reproduced'"),
    "medium": Preset(
        "2 x 256 with dropout 0.1, batch 64 x 100: a GPU-sized model that still trains on a CPU",
        model=dict(hidden_size=256, dropout=0.1, init="unit_embedding"),
        train=dict(batch_size=64, seq_length=100),
        measured="validation 1.700 nats (2.453 bits/char) after 2 epochs; 9,700 chars/s (Keras layers: "
                 "dropout leaves the fused CPU step)"),
    "large": Preset(
        "3 x 512 with dropout 0.25, batch 128 x 100: a GPU model",
        model=dict(hidden_size=512, num_layers=3, dropout=0.25, init="unit_embedding"),
        train=dict(batch_size=128, seq_length=100),
        measured="validation 1.860 nats (2.683 bits/char) after 2 epochs, only 158 updates: far from "
                 "trained at this budget; 2,300 chars/s on the CPU (about 7 min per epoch)"),
}
DEFAULT_PRESET = "recipe"


def preset(name: str) -> Preset:
    """The preset called ``name``; a ``ValueError`` naming the choices otherwise."""
    if name not in PRESETS:
        raise ValueError(f"preset must be one of {tuple(PRESETS)}, got {name!r}")
    return PRESETS[name]
