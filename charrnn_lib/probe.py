"""Looking inside a char-rnn: what do individual cells respond to?

Karpathy, Johnson & Fei-Fei (2015) ran trained character models over text and coloured
each character by the activation of one cell; a few cells turned out to be readable --
one is on inside quotes, one counts along the line, one follows the indentation depth of
code.  This module does the same in three steps:

1. :func:`activations` runs a model over a text (one stream, ``B = 1``) and records,
   after every character, every layer's hidden state ``h`` (and, for an LSTM, its cell
   state ``s``): arrays (L, T, H).
2. Feature functions (:func:`inside_quotes`, :func:`position_in_line`,
   :func:`indentation`, :func:`bracket_depth`) turn the text into one number per
   character, (T,); :func:`correlations` and :func:`best_cells` find the cells whose
   activation goes up and down with a feature (Pearson correlation over the text).
3. :func:`plot_text_activation` draws the text with each character's background
   coloured by one cell's activation.

The feature functions and the correlation are NumPy only; TensorFlow is imported by
:func:`activations`, matplotlib by the plotting function.
"""
from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass
class Activations:
    """A model's internal values over a text, one row per character.

    ``h[l, t]`` is layer ``l``'s hidden state after reading ``text[t]``; ``s`` the same for
    the LSTM cell state (``None`` for GRU and simple RNN layers); ``probs[t]`` the
    distribution of the character after ``text[t]``.
    """

    text: str
    h: np.ndarray  # (L, T, H)
    s: np.ndarray | None  # (L, T, H) or None
    probs: np.ndarray  # (T, K)

    def cells(self):
        """Every recorded cell as ``(kind, layer, unit, values (T,))``; kind is "h" or "s"."""
        for kind, arr in (("h", self.h), ("s", self.s)):
            if arr is None:
                continue
            for layer in range(arr.shape[0]):
                for unit in range(arr.shape[2]):
                    yield kind, layer, unit, arr[layer, :, unit]


def activations(model, vocab, model_config, text: str) -> Activations:
    """Run ``model`` over ``text`` from a zero state and record every state after every character."""
    import tensorflow as tf

    from charrnn_lib.sample import Stepper, check_prime

    check_prime(text, vocab.chars)  # names unknown characters, if any
    index = {c: i for i, c in enumerate(vocab.chars)}
    ids = tf.constant([index[c] for c in text], tf.int32)  # (T,)
    step = Stepper(model, model_config)

    def scan_body(carry, x):
        _, states = carry
        logits, states = step(tf.reshape(x, [1]), states)  # (1, K)
        return tf.nn.softmax(logits), states

    def run(ids):
        init = (tf.zeros([1, model_config.vocab_size]), step.zero_states(1))
        probs, states = tf.scan(scan_body, ids, initializer=init)  # (T, 1, K), [(T, 1, H)]
        return probs[:, 0], [s[:, 0] for s in states]

    probs, states = tf.function(run, autograph=False)(ids)
    k = model_config.states_per_layer
    per_layer = [np.stack([s.numpy() for s in states[i * k:(i + 1) * k]]) for i in range(model_config.num_layers)]
    per_layer = np.stack(per_layer)  # (L, k, T, H)
    return Activations(text, per_layer[:, 0], per_layer[:, 1] if k == 2 else None, probs.numpy())


# ----------------------------------------------------------------------------------------
# Readable features of a text: one number per character, (T,).  Each is the value AFTER
# reading that character, to line up with the states above.
# ----------------------------------------------------------------------------------------

def inside_quotes(text: str, quotes: str = '"', comment: str | None = None) -> np.ndarray:
    """1.0 inside a quotation: from an opening quote up to, not including, the quote that closes it.

    ``quotes``: the characters that open and close a quotation; a quotation closes with the
    character that opened it (so ``'`` inside ``"..."`` does not count).  ``comment``: a
    character that, outside quotations, starts a comment running to the end of the line,
    in which quotes do not count (``"#"`` for Python, whose comments are full of
    apostrophes).
    """
    out = np.zeros(len(text))
    open_with, in_comment = None, False
    for t, c in enumerate(text):
        if in_comment:
            in_comment = c != "\n"
        elif open_with is None and c == comment:
            in_comment = True
        elif open_with is None and c in quotes:
            open_with = c
        elif c == open_with:
            open_with = None
        out[t] = open_with is not None
    return out


def position_in_line(text: str) -> np.ndarray:
    """Characters since the last newline: 0 on a newline, 1 after the first character of a line, ..."""
    out = np.zeros(len(text))
    pos = 0
    for t, c in enumerate(text):
        pos = 0 if c == "\n" else pos + 1
        out[t] = pos
    return out


def indentation(text: str) -> np.ndarray:
    """The number of leading spaces of the current line (code's block depth, in spaces)."""
    out = np.zeros(len(text))
    indent, at_start = 0, True
    for t, c in enumerate(text):
        if c == "\n":
            indent, at_start = 0, True
        elif at_start and c == " ":
            indent += 1
        else:
            at_start = False
        out[t] = indent
    return out


def bracket_depth(text: str, pairs: str = "()[]{}") -> np.ndarray:
    """How many brackets are open after each character (never below zero)."""
    opening, closing = set(pairs[0::2]), set(pairs[1::2])
    out = np.zeros(len(text))
    depth = 0
    for t, c in enumerate(text):
        depth += c in opening
        depth = max(depth - (c in closing), 0)
        out[t] = depth
    return out


FEATURES = {
    "inside quotes": inside_quotes,
    "position in line": position_in_line,
    "indentation": indentation,
    "bracket depth": bracket_depth,
}


def correlations(values: np.ndarray, feature: np.ndarray) -> np.ndarray:
    """Pearson correlation of each column of ``values`` (T, N) with ``feature`` (T,): (N,).

    A constant column (or feature) has no correlation; it gets 0.
    """
    v = np.asarray(values, np.float64)
    f = np.asarray(feature, np.float64)
    v = v - v.mean(axis=0)
    f = f - f.mean()
    denom = np.sqrt((v ** 2).sum(axis=0) * (f ** 2).sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (v * f[:, None]).sum(axis=0) / denom
    return np.where(denom > 0, r, 0.0)


@dataclasses.dataclass(frozen=True)
class Cell:
    """One unit of one layer: ``kind`` "h" (hidden state) or "s" (LSTM cell state), and its correlation ``r``."""

    kind: str
    layer: int
    unit: int
    r: float

    def values(self, acts: Activations) -> np.ndarray:
        """This cell's activation over the text, (T,)."""
        return (acts.h if self.kind == "h" else acts.s)[self.layer, :, self.unit]


def best_cells(acts: Activations, feature: np.ndarray, top: int = 3) -> list[Cell]:
    """The ``top`` cells (over all layers, ``h`` and ``s``) with the largest ``|r|`` with ``feature``."""
    found = []
    for kind, arr in (("h", acts.h), ("s", acts.s)):
        if arr is None:
            continue
        for layer in range(arr.shape[0]):
            r = correlations(arr[layer], feature)  # (H,)
            found += [Cell(kind, layer, int(u), float(r[u])) for u in range(len(r))]
    return sorted(found, key=lambda c: -abs(c.r))[:top]


def plot_text_activation(text: str, values: np.ndarray, ax=None, width: int = 80, cmap: str = "coolwarm",
                         vmin: float | None = None, vmax: float | None = None, title: str | None = None):
    """Draw ``text`` in a grid, each character on a background coloured by ``values`` (T,).

    Lines wrap at newlines (drawn as a faint ``↵``) and after ``width`` characters.  The
    colour scale is symmetric about zero unless ``vmin``/``vmax`` are given (blue low, red
    high with the default colormap).  Returns the matplotlib axes.
    """
    import matplotlib.pyplot as plt

    values = np.asarray(values, np.float64)
    if values.shape != (len(text),):
        raise ValueError(f"values must have one entry per character, shape ({len(text)},), got {values.shape}")
    if vmin is None or vmax is None:
        bound = float(np.abs(values).max()) or 1.0
        vmin, vmax = -bound, bound
    places, row, col = [], 0, 0  # (row, column) of every character
    for c in text:
        places.append((row, col))
        col += 1
        if c == "\n" or col >= width:
            row, col = row + 1, 0
    rows = max(row + (col > 0), 1)
    grid = np.full((rows, width), np.nan)  # background colours; NaN (no character) stays blank
    for (r, cl), v in zip(places, values):
        grid[r, cl] = v
    if ax is None:
        _, ax = plt.subplots(figsize=(min(width, 80) * 0.09 + 0.4, rows * 0.2 + 0.5))
    ax.pcolormesh(np.arange(width + 1), -np.arange(rows + 1), np.ma.masked_invalid(grid),
                  cmap=cmap, vmin=vmin, vmax=vmax)  # cell (r, c) spans x in [c, c+1], y in [-r-1, -r]
    for (r, cl), c in zip(places, text):
        shown, alpha = ("↵", 0.35) if c == "\n" else (c, 1.0)
        ax.text(cl + 0.5, -r - 0.5, shown, ha="center", va="center", family="monospace", fontsize=7, alpha=alpha)
    ax.set_xlim(0, width)
    ax.set_ylim(-rows, 0)
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=9, loc="left")
    return ax
