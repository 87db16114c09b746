"""Long-lag toy tasks: how far back can a recurrent network remember?

Each task hides the information the answer needs at the *start* of a sequence and asks for
the answer only at its *end*, with distracting inputs in between.  Nothing but the
recurrent state can carry the information across the gap, so the length ``T`` of the
sequence is a dial for "how long a memory does this need".

* :func:`marked_bit` -- remember one bit.  Every step shows a random bit (+1 or -1) in
  channel 0; channel 1 marks step 1, whose bit is the answer.  A classification task with
  a 50 % chance level, so "did it learn?" reads off the accuracy at a glance.
* :func:`adding_problem` -- the adding problem in the form of Le et al. (2015) and Arjovsky
  et al. (2016), after Hochreiter & Schmidhuber (1997), who posed a variant: channel 0
  holds random numbers in [0, 1), channel 1 marks two of them, one in each half of the
  sequence; the answer is their sum.  Predicting the mean answer, 1, gives a mean squared
  error of 1/6 (:data:`ADDING_BASELINE_MSE`), the bar a model must clear.

Both return float32 inputs of shape (n, T, 2), batch-major like Keras, and draw from a
``numpy.random.Generator`` (or a seed), so a fixed seed gives the same data everywhere.
This module imports NumPy only.
"""
from __future__ import annotations

import numpy as np

ADDING_BASELINE_MSE = 1.0 / 6.0  # variance of the sum of two independent U(0, 1) numbers
MARKED_BIT_CHANCE = 0.5


class TaskError(ValueError):
    """A task was asked for with unusable sizes; the message says what is allowed."""


def _rng(rng) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or isinstance(rng, (int, np.integer)):
        return np.random.default_rng(rng)
    raise TaskError(f"rng must be a numpy.random.Generator or an integer seed, got {type(rng).__name__}")


def _check_sizes(n, length, minimum: int, task: str) -> tuple[int, int]:
    if int(n) != n or n < 1:
        raise TaskError(f"{task}: n (the number of sequences) must be a positive integer, got {n!r}")
    if int(length) != length or length < minimum:
        raise TaskError(f"{task}: length must be an integer of at least {minimum}, got {length!r}")
    return int(n), int(length)


def marked_bit(n: int, length: int, rng=None) -> tuple[np.ndarray, np.ndarray]:
    """``n`` sequences of ``length`` steps; the label is the bit shown at the marked first step.

    Returns ``x`` (n, length, 2) float32 -- channel 0: a random +1/-1 at every step,
    channel 1: 1 at step 1, else 0 -- and ``y`` (n,) int32, 1 where the first bit is +1.
    The bit must be carried over ``length - 1`` steps of random distractors.
    """
    n, length = _check_sizes(n, length, 1, "marked_bit")
    rng = _rng(rng)
    x = np.zeros((n, length, 2), dtype=np.float32)  # (batch, time, 2)
    x[:, :, 0] = rng.choice(np.array([-1.0, 1.0], dtype=np.float32), size=(n, length))
    x[:, 0, 1] = 1.0
    y = (x[:, 0, 0] > 0).astype(np.int32)  # (batch,)
    return x, y


def adding_problem(n: int, length: int, rng=None) -> tuple[np.ndarray, np.ndarray]:
    """The adding problem: add the two marked numbers.

    Returns ``x`` (n, length, 2) float32 -- channel 0: uniform numbers in [0, 1), channel 1:
    two 1s, one in each half of the sequence -- and ``y`` (n,) float32, the sum of the two
    marked numbers.  ``length`` must be at least 2.
    """
    n, length = _check_sizes(n, length, 2, "adding_problem")
    rng = _rng(rng)
    x = np.zeros((n, length, 2), dtype=np.float32)  # (batch, time, 2)
    x[:, :, 0] = rng.random((n, length), dtype=np.float32)
    half = length // 2
    first = rng.integers(0, half, size=n)  # one marker in the first half ...
    second = rng.integers(half, length, size=n)  # ... and one in the second
    rows = np.arange(n)
    x[rows, first, 1] = 1.0
    x[rows, second, 1] = 1.0
    y = (x[rows, first, 0] + x[rows, second, 0]).astype(np.float32)  # (batch,)
    return x, y
