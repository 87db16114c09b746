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

``parameter_count`` repeats ``charrnn_lib.model.parameter_count`` (which needs Keras) for
a plain dictionary of the model's fields; a test keeps the two equal.  ``available_memory``
reads ``MemAvailable`` and the cgroup's limit (containers).  Plain Python only.
"""
from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "RUNTIME_BYTES",
    "available_memory",
    "checkpoint_bytes",
    "largest_fitting",
    "parameter_count",
    "sampling_bytes",
    "training_bytes",
]

RUNTIME_BYTES = 1_000_000_000   # TensorFlow's own libraries, kernels and allocator pools
GATES = {"lstm": 4, "peephole": 4, "gru": 3, "rnn": 1}
STATES = {"lstm": 2, "peephole": 2, "gru": 1, "rnn": 1}
FLOAT = 4                       # bytes of a float32


def parameter_count(vocab_size: int, hidden_size: int = 128, num_layers: int = 2, cell: str = "lstm",
                    embedding_dim: int | None = None, **_ignored) -> int:
    """Trainable parameters of ``build_model(ModelConfig(...))`` (see ``model.parameter_count``).

    Takes the fields of a ``ModelConfig`` as keywords, e.g. ``parameter_count(**config.to_dict())``.
    """
    K, H, E, G = vocab_size, hidden_size, embedding_dim or hidden_size, GATES[cell]
    total = K * E + H * K + K
    for layer in range(num_layers):
        D = E if layer == 0 else H
        biases = 2 * G * H if cell == "gru" else G * H
        peepholes = 3 * H if cell == "peephole" else 0
        total += G * H * (D + H) + biases + peepholes
    return total


def training_bytes(model: dict, batch_size: int, seq_length: int) -> int:
    """Memory to train ``model`` (a ``ModelConfig`` as a dict) on batches of ``batch_size x seq_length``."""
    H, L, K = model["hidden_size"], model["num_layers"], model["vocab_size"]
    E = model.get("embedding_dim") or H
    per_position = FLOAT * (L * 2 * (GATES[model["cell"]] + 3) * H + 2 * E + 4 * K)
    return 5 * FLOAT * parameter_count(**model) + batch_size * seq_length * per_position + RUNTIME_BYTES


def checkpoint_bytes(model: dict, batch_size: int, total_batches: int) -> int:
    """Disk for one checkpoint of ``model`` after ``total_batches`` batches of ``batch_size`` rows."""
    states = model["num_layers"] * STATES[model["cell"]] * batch_size * model["hidden_size"]
    history = 3 * 25 * total_batches  # three floats of up to ~25 characters of JSON per batch
    return 3 * FLOAT * parameter_count(**model) + FLOAT * states + history + 100_000


def sampling_bytes(model: dict, num_streams: int, length: int, chunk: int = 256) -> int:
    """Memory to generate ``length`` characters in each of ``num_streams`` streams."""
    n_states = model["num_layers"] * STATES[model["cell"]]
    # one chunk: forced ids and random numbers (NumPy and tensor copies), the loop's output,
    # its transpose, the ids and their text; a step's logits, softmax, cumulative sum; the state
    per_stream = (10 * FLOAT * chunk + 6 * FLOAT * model["vocab_size"]
                  + 3 * FLOAT * n_states * model["hidden_size"])
    held = (num_streams - 1) * length * 4  # later streams wait as text (up to 4 bytes a character)
    return 2 * FLOAT * parameter_count(**model) + num_streams * per_stream + held + RUNTIME_BYTES


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
