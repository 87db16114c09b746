"""Looking inside: recorded activations match the Keras model; features and correlations are right."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from charrnn_lib import probe
from charrnn_lib.data import UnknownCharactersError, Vocab
from charrnn_lib.model import ModelConfig, build_model, zero_states
from charrnn_lib.repro import seed_everything

CODE = 'def f(x):\n    if x:\n        return "a (b)"\n    return [x, {1: 2}]\n'


@pytest.mark.parametrize("cell, n_kinds", [("lstm", 2), ("gru", 1)])
def test_activations_match_the_keras_model(cell, n_kinds):
    import tensorflow as tf

    seed_everything(0)
    vocab = Vocab.from_text(CODE)
    cfg = ModelConfig(len(vocab), hidden_size=12, num_layers=2, cell=cell)
    model = build_model(cfg)
    acts = probe.activations(model, vocab, cfg, CODE)
    T = len(CODE)
    assert acts.h.shape == (2, T, 12) and acts.probs.shape == (T, len(vocab))
    assert (acts.s is None) == (n_kinds == 1) and (acts.s is None or acts.s.shape == (2, T, 12))
    assert len(list(acts.cells())) == n_kinds * 2 * 12
    # Reference: the Keras model over the whole text; its final states and its logits.
    logits, *final = model([tf.constant(vocab.encode(CODE)[None]), *zero_states(cfg, 1)], training=False)
    np.testing.assert_allclose(acts.probs, tf.nn.softmax(logits[0]).numpy(), atol=1e-6)
    k = cfg.states_per_layer
    for layer in range(2):
        np.testing.assert_allclose(acts.h[layer, -1], final[layer * k].numpy()[0], atol=1e-6)
        if k == 2:
            np.testing.assert_allclose(acts.s[layer, -1], final[layer * k + 1].numpy()[0], atol=1e-6)
    # Layer 1's hidden state over time is what the output layer reads.
    np.testing.assert_allclose(acts.h[1] @ model.get_layer("logits").kernel.numpy()
                               + model.get_layer("logits").bias.numpy(), logits[0].numpy(), atol=1e-5)


def test_activations_name_unknown_characters():
    vocab = Vocab.from_text("abc ")
    cfg = ModelConfig(len(vocab), hidden_size=4, num_layers=1)
    with pytest.raises(UnknownCharactersError, match="'x'"):
        probe.activations(build_model(cfg), vocab, cfg, "abx")


def test_features_on_a_small_text():
    text = 'a "b c" d\n  e(f[g])\n'
    np.testing.assert_array_equal(probe.inside_quotes(text)[:10], [0, 0, 1, 1, 1, 1, 0, 0, 0, 0])
    np.testing.assert_array_equal(probe.position_in_line(text)[:12], [1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2])
    np.testing.assert_array_equal(probe.indentation(text)[9:20], [0, 1, 2, 2, 2, 2, 2, 2, 2, 2, 0])
    np.testing.assert_array_equal(probe.bracket_depth(text)[12:20], [0, 1, 1, 2, 2, 1, 0, 0])
    # An apostrophe is taken for a quote when "'" counts as one: why prose probes use '"' only.
    assert probe.inside_quotes("it's \"x'y\" z", quotes="\"'").tolist() == [0, 0, 1, 1, 1, 1, 1, 0, 0, 1, 1, 1]
    code = "x = 'a' # it's\ny = \"b'c\"\n"
    np.testing.assert_array_equal(probe.inside_quotes(code, "'\"", comment="#"),
                                  [0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 0, 0])
    assert set(probe.FEATURES) == {"inside quotes", "position in line", "indentation", "bracket depth"}


@settings(max_examples=30, deadline=None)
@given(st.integers(5, 40), st.integers(1, 6), st.integers(0, 10_000))
def test_correlations_equal_corrcoef(T, N, seed):
    rng = np.random.default_rng(seed)
    values, feature = rng.normal(size=(T, N)), rng.normal(size=T)
    expected = [np.corrcoef(values[:, j], feature)[0, 1] for j in range(N)]
    np.testing.assert_allclose(probe.correlations(values, feature), expected, atol=1e-10)
    assert np.all(probe.correlations(np.ones((T, N)), feature) == 0)  # constant cell: no correlation


def test_best_cells_finds_a_planted_cell():
    rng = np.random.default_rng(0)
    text = "ab\ncd ef\n" * 20
    feature = probe.position_in_line(text)
    h = rng.normal(size=(2, len(text), 5))
    s = rng.normal(size=(2, len(text), 5))
    s[1, :, 3] = -0.5 * feature + 0.1 * rng.normal(size=len(text))  # a "line position" cell, sign flipped
    acts = probe.Activations(text, h, s, np.zeros((len(text), 3)))
    best = probe.best_cells(acts, feature, top=2)
    assert (best[0].kind, best[0].layer, best[0].unit) == ("s", 1, 3) and best[0].r < -0.95
    assert abs(best[1].r) < 0.5
    np.testing.assert_array_equal(best[0].values(acts), s[1, :, 3])


def test_plot_text_activation_draws_one_box_per_character():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    text = "to be\nor not"
    values = np.linspace(-1, 1, len(text))
    ax = probe.plot_text_activation(text, values, width=4, title="demo")
    assert len(ax.texts) == len(text) and ax.get_ylim() == (-4.0, 0.0)  # "to b" | "e↵" | "or n" | "ot"
    grid = ax.collections[0].get_array().reshape(4, 4)  # one background cell per character, blank elsewhere
    np.testing.assert_allclose(grid[0], values[:4])
    np.testing.assert_allclose(grid[1, :2], values[4:6])
    np.testing.assert_allclose(grid[3, :2], values[10:])
    assert np.ma.getmaskarray(grid)[1, 2:].all() and np.ma.getmaskarray(grid)[3, 2:].all()
    with pytest.raises(ValueError, match="one entry per character"):
        probe.plot_text_activation(text, np.zeros(3))
    plt.close("all")
