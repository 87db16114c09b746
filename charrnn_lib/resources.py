"""What a run will need -- memory, disk -- estimated before it starts, and what the machine has.

The command line checks these before it loads TensorFlow, so that a model that cannot fit
is refused in a fraction of a second with a size that does fit, instead of running out of
memory minutes later.  The estimates are deliberately simple upper-end figures, in bytes:

* ``training_bytes``: the weights, their gradient (and its clipped copy) and Adam's two
  moments, ``5 x 4 P`` for ``P`` parameters; the activations that backpropagation through
  time keeps for a batch, about ``2 (G + 3) H`` floats per layer, row and time step (the
  ``G`` gate pre-activations, the cell and hidden states, and their gradients), plus the
  logits, their softmax and gradient (``~4 K``); plus ``RUNTIME_BYTES`` for TensorFlow
  itself.
* ``checkpoint_bytes``: weights, Adam's moments, the carried state, and the loss history
  (``progress.json`` keeps three numbers per batch).
* ``sampling_bytes``: per stream, one chunk's random numbers, inputs and outputs, the
  logits and the state; streams after the first are held until they are printed.

``parameter_count`` and ``flops_per_char`` are the model's size and cost in closed form
(``charrnn_lib.model`` re-exports them; a test compares them with the built Keras model).
The estimates take a ``ModelConfig`` as a plain dictionary of its fields (what a checkpoint
stores).  ``available_memory`` reads ``MemAvailable`` and the cgroup's limit (containers).
Plain Python only.
"""
from __future__ import annotations

import os
from pathlib import Path

from charrnn_lib.config import ModelConfig

__all__ = [
    "RUNTIME_BYTES",
    "available_memory",
    "checkpoint_bytes",
    "flops_per_char",
    "gates_per_cell",
    "largest_fitting",
    "parameter_count",
    "sampling_bytes",
    "training_bytes",
]

RUNTIME_BYTES = 1_000_000_000   # TensorFlow's own libraries, kernels and allocator pools
FLOAT = 4                       # bytes of a float32


def gates_per_cell(cell: str) -> int:
    """How many H-wide affine maps of the input a cell computes per step: 4 for an LSTM, 3 for a
    GRU, 2 for a minGRU (its gate and candidate), 1 for a simple RNN."""
    return {"lstm": 4, "peephole": 4, "gru": 3, "mingru": 2, "rnn": 1}[cell]


def parameter_count(config: ModelConfig) -> int:
    """Closed-form number of trainable parameters of ``build_model(config)``.

    Embedding ``K E``; per recurrent layer with input size ``D`` (``E`` for the first, ``H``
    after): ``G H (D + H)`` weights plus the biases (``G H``; a Keras GRU with
    ``reset_after=True`` has two bias vectors, ``2 * 3H``; a peephole LSTM adds ``3H``
    peephole weights; a minGRU has no recurrent matrix: ``2 H (D + 1)``); output layer
    ``K H + K``.
    """
    K, E, H, G = config.vocab_size, config.embed_size, config.hidden_size, gates_per_cell(config.cell)
    total = K * E + H * K + K
    for layer in range(config.num_layers):
        D = E if layer == 0 else H
        if config.cell == "mingru":
            total += G * H * (D + 1)
            continue
        biases = 2 * G * H if config.cell == "gru" else G * H
        peepholes = 3 * H if config.cell == "peephole" else 0
        total += G * H * (D + H) + biases + peepholes
    return total


def flops_per_char(config: ModelConfig, training: bool = True) -> int:
    """Floating-point operations per character: the matrix products, 2 per multiply-add.

    Forward: ``2 G H (D + H)`` per layer (``2 G H D`` for a minGRU, which has no recurrent
    matrix) plus ``2 H K`` for the logits (the embedding is a lookup; the elementwise gate
    arithmetic, O(H), is left out).  Training adds the backward pass, which costs about
    twice the forward (a gradient for the inputs and one for the weights of every
    product): ``3 x`` forward.
    """
    K, E, H, G = config.vocab_size, config.embed_size, config.hidden_size, gates_per_cell(config.cell)
    forward = 2 * H * K
    for layer in range(config.num_layers):
        D = E if layer == 0 else H
        forward += 2 * G * H * (D if config.cell == "mingru" else D + H)
    return 3 * forward if training else forward


def training_bytes(model: dict, batch_size: int, seq_length: int) -> int:
    """Memory to train ``model`` (a ``ModelConfig`` as a dict) on batches of ``batch_size x seq_length``."""
    config = ModelConfig(**model)
    H, L, K, E = config.hidden_size, config.num_layers, config.vocab_size, config.embed_size
    per_position = FLOAT * (L * 2 * (gates_per_cell(config.cell) + 3) * H + 2 * E + 4 * K)
    return 5 * FLOAT * parameter_count(config) + batch_size * seq_length * per_position + RUNTIME_BYTES


def checkpoint_bytes(model: dict, batch_size: int, total_batches: int) -> int:
    """Disk for one checkpoint of ``model`` after ``total_batches`` batches of ``batch_size`` rows."""
    states = ModelConfig(**model).num_states * batch_size * model["hidden_size"]
    history = 3 * 25 * total_batches  # three floats of up to ~25 characters of JSON per batch
    return 3 * FLOAT * parameter_count(ModelConfig(**model)) + FLOAT * states + history + 100_000


def sampling_bytes(model: dict, num_streams: int, length: int, chunk: int = 256) -> int:
    """Memory to generate ``length`` characters in each of ``num_streams`` streams."""
    config = ModelConfig(**model)
    n_states = config.num_states
    # one chunk: forced ids and random numbers (NumPy and tensor copies), the loop's output,
    # its transpose, the ids and their text; a step's logits, softmax, cumulative sum; the state
    per_stream = (10 * FLOAT * chunk + 6 * FLOAT * model["vocab_size"]
                  + 3 * FLOAT * n_states * model["hidden_size"])
    held = (num_streams - 1) * length * 4  # later streams wait as text (up to 4 bytes a character)
    return 2 * FLOAT * parameter_count(config) + num_streams * per_stream + held + RUNTIME_BYTES


def largest_fitting(estimate, budget: int, low: int, high: int) -> int | None:
    """The largest ``n`` in ``[low, high]`` with ``estimate(n) <= budget`` (``estimate``
    non-decreasing), or ``None`` if not even ``low`` fits."""
    if estimate(low) > budget:
        return None
    while low < high:
        mid = (low + high + 1) // 2
        if estimate(mid) <= budget:
            low = mid
        else:
            high = mid - 1
    return low


def _cgroup_room() -> int | None:
    """Bytes the cgroup (v2) still lets this process allocate, or None if unlimited/unknown."""
    try:
        base = Path("/sys/fs/cgroup")
        limit = (base / "memory.max").read_text().strip()
        if limit == "max":
            return None
        return max(0, int(limit) - int((base / "memory.current").read_text().strip()))
    except (OSError, ValueError):
        return None


def available_memory() -> int | None:
    """Memory this process can still use, in bytes: ``MemAvailable`` (Linux), bounded by the
    cgroup's limit; the free physical memory elsewhere; ``None`` if it cannot be told."""
    room = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                room = int(line.split()[1]) * 1024
                break
    except (OSError, ValueError, IndexError):
        pass
    if room is None:
        try:
            room = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
    cgroup = _cgroup_room()
    return room if cgroup is None else min(room, cgroup)
