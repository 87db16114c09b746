"""Tests of charrnn_lib.ngram against a brute-force Kneser-Ney written from the definition."""
import math
from collections import Counter
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from charrnn_lib.ngram import KneserNey, ngram_codes


def brute_kn(text, alphabet, order, discounts):
    """P(w | h) for every context h of order - 1 characters, straight from the definition,
    with strings, substring counts and exact fractions (no hashing, no NumPy)."""
    D = [Fraction(d) for d in discounts]

    def count(s):                       # occurrences of s in text, overlapping
        return sum(text.startswith(s, i) for i in range(len(text) - len(s) + 1))

    def before(s):                      # N1+(. s): distinct characters right before s
        return len({text[i - 1] for i in range(1, len(text) - len(s) + 1) if text.startswith(s, i)})

    def p(h, w, top):
        m = len(h) + 1
        lower = Fraction(1, len(alphabet)) if m == 1 else p(h[1:], w, False)
        a = count if top else before
        d = sum(a(h + x) for x in alphabet)
        if d == 0:
            return lower
        t = sum(a(h + x) > 0 for x in alphabet)
        return max(a(h + w) - D[m - 1], 0) / d + D[m - 1] * t / d * lower

    return lambda h, w: p(h, w, True)


def contexts(alphabet, length):
    if length == 0:
        return [""]
    return [c + rest for c in alphabet for rest in contexts(alphabet, length - 1)]


def test_hand_computed_bigram():
    # "abracadabra": b is followed by r twice, so c(b.) = 2 with one type; every character
    # except a has one distinct predecessor, a has three (r, c, d): continuation total 7.
    # P1(r) = 1/7 for any D1, P2(r | b) = (2 - 1/2) / 2 + (1/2)(1/2)(1/7) = 11/14.
    alphabet = "abcdr"
    ids = [alphabet.index(c) for c in "abracadabra"]
    for d1 in (0.0, 0.3, 1.0):
        model = KneserNey(ids, 2, 5, discounts=[d1, 0.5])
        assert model.prob([[1, 4]])[0] == pytest.approx(11 / 14, abs=1e-15)
        assert model.prob([[1, 0]])[0] == pytest.approx(3 / 28, abs=1e-15)


@settings(max_examples=60, deadline=None)
@given(text=st.text(alphabet="abcd", min_size=1, max_size=40), order=st.integers(1, 4),
       discounts=st.lists(st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0]), min_size=4, max_size=4))
def test_matches_brute_force(text, order, discounts):
    alphabet = "abcde"                  # "e" never occurs: unseen characters must work too
    ids = [alphabet.index(c) for c in text]
    model = KneserNey(ids, order, len(alphabet), discounts=discounts[:order])
    reference = brute_kn(text, alphabet, order, discounts[:order])
    for h in contexts(alphabet, order - 1):
        got = model.distribution([alphabet.index(c) for c in h])
        want = np.array([float(reference(h, w)) for w in alphabet])
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)


@settings(max_examples=30, deadline=None)
@given(ids=st.lists(st.integers(0, 6), min_size=1, max_size=300), order=st.integers(1, 5),
       seed=st.integers(0, 1000))
def test_distributions_sum_to_one(ids, order, seed):
    rng = np.random.default_rng(seed)
    discounts = rng.uniform(0.05, 1.0, size=order)
    model = KneserNey(ids, order, 7, discounts=discounts)
    for _ in range(5):
        context = rng.integers(0, 7, size=order - 1)
        if len(ids) > order and rng.random() < 0.5:   # also contexts seen in the text
            start = rng.integers(0, len(ids) - order + 1)
            context = np.array(ids[start:start + order - 1])
        assert model.distribution(context).sum() == pytest.approx(1.0, abs=1e-12)


def test_unigram_without_discount_is_the_frequency():
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 10, size=1000)
    model = KneserNey(ids, 1, 12, discounts=[0.0])
    np.testing.assert_allclose(model.distribution([]), np.bincount(ids, minlength=12) / 1000, rtol=1e-15)


def test_text_shorter_than_the_order():
    model = KneserNey([0, 0, 0], 5, 7, discounts=[0.5] * 5)
    assert len(ngram_codes([0, 0, 0], 5, 7)) == 0
    assert model.distribution([1, 2, 3, 4]).sum() == pytest.approx(1.0, abs=1e-12)


def test_order_zero_is_uniform():
    model = KneserNey([0, 1, 2], 0, 8)
    np.testing.assert_array_equal(model.distribution([]), np.full(8, 1 / 8))
    assert model.cross_entropy([3, 4, 5], start=0) == pytest.approx(math.log(8))


def test_cross_entropy_and_codes():
    rng = np.random.default_rng(1)
    ids = rng.integers(0, 5, size=200)
    model = KneserNey(ids[:150], 3, 5)
    by_hand = -np.mean([math.log(model.distribution(ids[t - 2:t])[ids[t]]) for t in range(160, 200)])
    assert model.cross_entropy(ids, start=160) == pytest.approx(by_hand, rel=1e-12)
    codes = ngram_codes(ids, 3, 5)
    assert codes[7] == ids[7] * 25 + ids[8] * 5 + ids[9] and len(codes) == 198
    assert Counter(codes.tolist())[codes[0]] == sum(tuple(ids[i:i + 3]) == tuple(ids[:3]) for i in range(198))


def test_tune_beats_the_default_on_held_out_text():
    rng = np.random.default_rng(2)
    # a Markov chain of order 2 over 6 symbols, so the discounts matter
    table = rng.dirichlet(np.full(6, 0.3), size=(6, 6))
    ids = [0, 1]
    for _ in range(6000):
        ids.append(rng.choice(6, p=table[ids[-2], ids[-1]]))
    ids = np.array(ids)
    fit, tune = ids[:4000], ids[4000:5000]
    default = KneserNey(fit, 3, 6)
    tuned = KneserNey(fit, 3, 6)
    tuned.tune(tune)
    assert np.all((tuned.discounts >= 0) & (tuned.discounts <= 1))
    assert tuned.cross_entropy(tune) <= default.cross_entropy(tune)
    # golden section found the minimum along each coordinate (to its tolerance)
    for m in range(3):
        for step in (-0.01, 0.01):
            trial = tuned.discounts.copy()
            trial[m] = min(max(trial[m] + step, 0.0), 1.0)
            assert KneserNey(fit, 3, 6, discounts=trial).cross_entropy(tune) >= tuned.cross_entropy(tune) - 1e-6


def test_bad_input():
    with pytest.raises(ValueError, match="discounts"):
        KneserNey([0, 1], 2, 3, discounts=[0.5])
    with pytest.raises(ValueError, match="ids must lie"):
        KneserNey([0, 3], 2, 3)
    with pytest.raises(ValueError, match="context"):
        KneserNey([0, 1], 3, 3).distribution([0])
