"""Character n-gram language models with interpolated Kneser-Ney smoothing.

The baselines of chapter 4 (section "Baselines"): a model of order ``n`` predicts a
character from the ``n - 1`` characters before it. Probabilities follow the recursive,
interpolated form of Kneser-Ney smoothing (Kneser and Ney, 1995; Chen and Goodman, 1999),
with one absolute discount ``D_m`` per order ``m``::

    P_0(w)            = 1 / K
    P_m(w | h)        = max(a(h w) - D_m, 0) / d(h)  +  D_m * t(h) / d(h) * P_{m-1}(w | h')
                        (or P_{m-1}(w | h') when d(h) = 0)

where ``h`` has ``m - 1`` characters and ``h'`` is ``h`` without its first character. At
the highest order, ``a(h w)`` is the count of the n-gram ``h w`` in the training text; at
every lower order it is the *continuation count* ``N1+(. h w)``, the number of distinct
characters that precede ``h w`` in the text. ``d(h)`` is the sum of ``a(h x)`` over all
characters ``x`` and ``t(h)`` the number of ``x`` with ``a(h x) > 0``. With all discounts
in ``[0, 1]`` and above 0 where it matters, each ``P_m(. | h)`` sums to one over the ``K``
characters.

Counting is done with NumPy: an m-gram of ids below ``K`` is the integer
``sum(ids[j] * K**(m-1-j))``, counted with ``np.unique`` and looked up with
``np.searchsorted``, so 5-grams of a megabyte are counted in about a second.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["KneserNey", "ngram_codes"]


def ngram_codes(ids, m: int, vocab_size: int) -> np.ndarray:
    """The integer code of every m-gram of ``ids`` (overlapping), in text order."""
    ids = np.asarray(ids, dtype=np.int64)
    count = len(ids) - m + 1
    if count <= 0:                      # a text shorter than m has no m-grams
        return np.zeros(0, dtype=np.int64)
    codes = np.zeros(count, dtype=np.int64)
    for j in range(m):
        codes = codes * vocab_size + ids[j:j + count]
    return codes


class _Table:
    """Sorted m-gram codes with a count each, and per-context totals d(h) and types t(h)."""

    def __init__(self, keys: np.ndarray, counts: np.ndarray, vocab_size: int):
        self.keys, self.counts = keys, counts.astype(np.float64)
        if len(keys):
            self.ctx_keys, start = np.unique(keys // vocab_size, return_index=True)
            self.ctx_total = np.add.reduceat(self.counts, start)
            self.ctx_types = np.diff(np.append(start, len(keys))).astype(np.float64)
        else:
            self.ctx_keys = np.zeros(0, np.int64)
            self.ctx_total = self.ctx_types = np.zeros(0)

    @staticmethod
    def _find(keys, values_list, query):
        if not len(keys):
            return [np.zeros(len(query)) for _ in values_list]
        i = np.minimum(np.searchsorted(keys, query), len(keys) - 1)
        found = keys[i] == query
        return [np.where(found, values[i], 0.0) for values in values_list]

    def lookup(self, gram_codes, ctx_codes):
        (a,) = self._find(self.keys, [self.counts], gram_codes)
        d, t = self._find(self.ctx_keys, [self.ctx_total, self.ctx_types], ctx_codes)
        return a, d, t


class KneserNey:
    """A character n-gram model of order ``order`` (0 = uniform) counted from ``ids``.

    ``discounts[m - 1]`` is the absolute discount of order ``m``; by default the estimate
    ``n1 / (n1 + 2 n2)`` of Chen and Goodman from the counts of counts, or set them with
    :meth:`tune` on held-out text.
    """

    def __init__(self, ids, order: int, vocab_size: int, discounts=None):
        if order < 0:
            raise ValueError(f"order must be 0 or more, got {order}")
        if vocab_size ** max(order, 1) >= 2 ** 62:
            raise ValueError(f"vocab_size ** order = {vocab_size}**{order} does not fit in int64")
        ids = np.asarray(ids, dtype=np.int64)
        if len(ids) and (ids.min() < 0 or ids.max() >= vocab_size):
            raise ValueError(f"ids must lie in [0, {vocab_size})")
        self.order, self.vocab_size = order, vocab_size
        K = vocab_size
        raw = {m: np.unique(ngram_codes(ids, m, K), return_counts=True) for m in range(1, order + 1)}
        self.tables = [None]
        for m in range(1, order + 1):
            if m == order:
                keys, counts = raw[m]
            else:  # continuation counts: distinct characters before each m-gram
                keys, counts = np.unique(raw[m + 1][0] % K ** m, return_counts=True)
            self.tables.append(_Table(keys, counts, K))
        if discounts is None:
            discounts = []
            for table in self.tables[1:]:
                n1, n2 = np.sum(table.counts == 1), np.sum(table.counts == 2)
                discounts.append(float(n1 / (n1 + 2 * n2)) if n1 + n2 else 0.5)
        self.discounts = np.array(discounts, dtype=np.float64)
        if self.discounts.shape != (order,) or np.any((self.discounts < 0) | (self.discounts > 1)):
            raise ValueError(f"need {order} discounts in [0, 1], got {discounts}")

    # -- probabilities ---------------------------------------------------------------
    def statistics(self, windows) -> list:
        """For windows (N, order) of ids, context then target: per order m, (a, d, t)."""
        windows = np.asarray(windows, dtype=np.int64)
        K, n = self.vocab_size, self.order
        stats = [None]
        for m in range(1, n + 1):
            gram = windows[:, n - m:]
            codes = np.zeros(len(windows), np.int64)
            for j in range(m):
                codes = codes * K + gram[:, j]
            stats.append(self.tables[m].lookup(codes, codes // K))
        return stats

    def _combine(self, stats, discounts) -> np.ndarray:
        n = len(stats[1][0]) if self.order else 0
        p = np.full(n, 1.0 / self.vocab_size)
        for m in range(1, self.order + 1):
            a, d, t = stats[m]
            D = discounts[m - 1]
            seen = d > 0
            safe = np.where(seen, d, 1.0)
            p = np.where(seen, np.maximum(a - D, 0.0) / safe + D * t / safe * p, p)
        return p

    def prob(self, windows) -> np.ndarray:
        """P(target | context) for each row of ``windows`` (N, order): context then target."""
        windows = np.asarray(windows, dtype=np.int64).reshape(-1, self.order)
        if self.order == 0:
            return np.full(len(windows), 1.0 / self.vocab_size)
        return self._combine(self.statistics(windows), self.discounts)

    def distribution(self, context) -> np.ndarray:
        """The K probabilities of the next character after ``context`` (order - 1 ids)."""
        context = np.asarray(context, dtype=np.int64).reshape(-1)
        if len(context) != self.order - 1 and self.order:
            raise ValueError(f"an order-{self.order} model needs {self.order - 1} context ids")
        if self.order == 0:
            return np.full(self.vocab_size, 1.0 / self.vocab_size)
        K = self.vocab_size
        windows = np.column_stack([np.tile(context, (K, 1)), np.arange(K)])
        return self.prob(windows)

    def _windows(self, ids, start):
        ids = np.asarray(ids, dtype=np.int64)
        start = self.order - 1 if start is None else start
        if start < self.order - 1 or start >= len(ids):
            raise ValueError(f"start must lie in [{self.order - 1}, {len(ids)}), got {start}")
        view = np.lib.stride_tricks.sliding_window_view(ids, self.order)
        return view[start - self.order + 1:]

    def cross_entropy(self, ids, start: int | None = None) -> float:
        """Mean -ln P(ids[t] | ids[t-order+1:t]) over t = start, ..., len(ids) - 1, in nats.

        The characters before ``start`` serve only as context (default: order - 1)."""
        if self.order == 0:
            return math.log(self.vocab_size)
        return float(-np.mean(np.log(self.prob(self._windows(ids, start)))))

    # -- tuning ----------------------------------------------------------------------
    def tune(self, held_out_ids, start: int | None = None, sweeps: int = 3, tol: float = 1e-4):
        """Choose the discounts that minimise the cross-entropy of ``held_out_ids``.

        Coordinate descent: for each order in turn, a golden-section search over
        ``[0, 1]`` with the other discounts fixed, repeated ``sweeps`` times. The counts
        do not change, so the statistics are looked up once. Returns the discounts."""
        if self.order == 0:
            return self.discounts
        stats = self.statistics(self._windows(held_out_ids, start))
        D = self.discounts.copy()

        def loss(value, m):
            trial = D.copy()
            trial[m] = value
            with np.errstate(divide="ignore"):
                return -np.mean(np.log(self._combine(stats, trial)))

        ratio = (math.sqrt(5) - 1) / 2
        for _ in range(sweeps):
            for m in range(self.order):
                lo, hi = 0.0, 1.0
                x1, x2 = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
                f1, f2 = loss(x1, m), loss(x2, m)
                while hi - lo > tol:
                    if f1 <= f2:
                        hi, x2, f2 = x2, x1, f1
                        x1 = hi - ratio * (hi - lo)
                        f1 = loss(x1, m)
                    else:
                        lo, x1, f1 = x1, x2, f2
                        x2 = lo + ratio * (hi - lo)
                        f2 = loss(x2, m)
                candidates = [(loss(v, m), v) for v in (0.0, (lo + hi) / 2, 1.0)]
                D[m] = min(candidates)[1]
        self.discounts = D
        return D
