"""Cheap checks of the book's diagrams: each draws, returns a Figure, and carries its labels."""
import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from charrnn_lib import diagrams  # noqa: E402
from charrnn_lib.diagrams import figure_texts  # noqa: E402


def render(fig):
    """Draw the figure (catches mathtext errors, which only surface at draw time) and close it."""
    assert isinstance(fig, Figure)
    fig.canvas.draw()
    texts = figure_texts(fig)
    fig.clf()
    return texts


def test_unrolled_rnn_has_folded_and_unrolled_parts():
    texts = render(diagrams.draw_unrolled_rnn(T=4))
    for s in (r"$\mathbf{h}_{t}$", r"$\mathbf{h}_{0}$", r"$\mathbf{x}_{4}$", r"$\mathbf{y}_{4}$", "unfold"):
        assert s in texts
    assert r"$\mathbf{h}_{5}$" not in texts
    # the shared weights are labelled at every copy: T + 1 times W (folded loop + T arrows)
    assert texts.count(r"$\mathbf{W}$") == 5
    assert texts.count(r"$\mathbf{U}$") == texts.count(r"$\mathbf{V}$") == 5


def test_unrolled_rnn_follows_T():
    texts = render(diagrams.draw_unrolled_rnn(T=2))
    assert r"$\mathbf{x}_{2}$" in texts and r"$\mathbf{x}_{3}$" not in texts
    with pytest.raises(ValueError):
        diagrams.draw_unrolled_rnn(T=0)


def test_architectures_has_four_panels():
    fig = diagrams.draw_architectures()
    assert len(fig.axes) == 4
    texts = render(fig)
    for title in ("one-to-many", "many-to-one", "many-to-many (aligned)", "sequence-to-sequence"):
        assert title in texts
    assert "encoder" in texts and "decoder" in texts


def test_architectures_match_the_keras_code():
    """One-to-many repeats x at every step (RepeatVector); the seq2seq decoder reads its own
    inputs (start symbol, then the previous targets) and starts from the encoder's h_T."""
    fig = diagrams.draw_architectures()
    one_to_many, seq2seq = fig.axes[0], fig.axes[3]
    assert [t.get_text() for t in one_to_many.texts].count(r"$\mathbf{x}$") == 4
    dashed = [p for p in one_to_many.patches if p.get_linestyle() == "--"]
    assert len(dashed) == 3  # the three copies made by RepeatVector
    s2s = [t.get_text() for t in seq2seq.texts]
    for s in (r"$\langle s\rangle$", r"$\hat{\mathbf{y}}_1$", r"$\hat{\mathbf{y}}_2$", r"$\mathbf{h}_{T}$"):
        assert s in s2s, s
    render(fig)


@pytest.mark.parametrize("T", [1, 3])
def test_bptt_graph_has_forward_and_backward_labels(T):
    texts = render(diagrams.draw_bptt_graph(T=T))
    for t in range(1, T + 1):
        for s in (rf"$\mathbf{{h}}_{{{t}}}$", rf"$\mathbf{{o}}_{{{t}}}$", rf"$\mathcal{{L}}_{{{t}}}$",
                  rf"$\boldsymbol{{\delta}}_{{{t}}}$", rf"$\hat{{\mathbf{{y}}}}_{{{t}}}$"):
            assert s in texts, s
    assert r"$\mathcal{L}$" in texts
    assert "backward: gradients" in texts and "forward: values" in texts
    assert texts.count(r"$\mathbf{W}$") == T


def test_bptt_graph_forward_only():
    texts = render(diagrams.draw_bptt_graph(T=2, backward=False))
    assert not any("delta" in s for s in texts)
    assert "backward: gradients" not in texts


@pytest.mark.parametrize("peepholes", [False, True])
def test_lstm_cell_labels(peepholes):
    texts = render(diagrams.draw_lstm_cell(peepholes=peepholes))
    for s in ("f", "i", "g", "o"):
        assert rf"$\mathbf{{{s}}}_{{t}}$" in texts
    for s in (r"$\mathbf{s}_{t-1}$", r"$\mathbf{s}_{t}$", r"$\mathbf{h}_{t-1}$", r"$\mathbf{h}_{t}$", r"$\mathbf{x}_{t}$"):
        assert s in texts
    assert texts.count(r"$\sigma$") == 3 and texts.count(r"$\tau$") == 2
    assert "×" in texts and "+" in texts
    assert (r"$\mathbf{p}_f$" in texts) == peepholes
    assert (r"$\mathbf{p}_o$" in texts) == peepholes


def test_gru_cell_labels():
    texts = render(diagrams.draw_gru_cell())
    for s in (r"$\mathbf{z}_{t}$", r"$\mathbf{r}_{t}$", r"$\mathbf{n}_{t}$", r"$\mathbf{h}_{t-1}$", r"$\mathbf{h}_{t}$"):
        assert s in texts
    assert texts.count(r"$\sigma$") == 2 and texts.count(r"$\tau$") == 1
    assert "1−" in texts


def test_node_boundary_geometry():
    box = diagrams.Node(0.0, 0.0, 2.0, 1.0, "box")
    assert box.boundary((10.0, 0.0)) == (1.0, 0.0)
    assert box.boundary((0.0, -10.0)) == (0.0, -0.5)
    circ = diagrams.Node(1.0, 1.0, 2.0, 2.0, "circle")
    x, y = circ.boundary((4.0, 5.0))
    assert abs((x - 1) ** 2 + (y - 1) ** 2 - 1.0) < 1e-12


def test_truncated_bptt_timeline():
    fig = diagrams.draw_truncated_bptt(text="to be or not", kappa=4)
    ax = fig.axes[0]
    red = diagrams.COLORS["backward"]
    dashed_red = [p for p in ax.patches if p.get_linestyle() == "--" and matplotlib.colors.same_color(p.get_edgecolor(), red)]
    texts = render(fig)
    for s in ("chunk 1: steps 1$-$4", "chunk 2: steps 5$-$8", "chunk 3: steps 9$-$12"):
        assert s in texts, s
    for t in range(13):
        assert rf"$\mathbf{{h}}_{{{t}}}$" in texts
    assert texts.count("␣") == 3 and "t" in texts and "n" in texts  # the text's characters, spaces visible
    assert texts.count("state carried,\ngradient cut") == 2  # one per inner boundary
    # gradient arrows: kappa - 1 inside each of the 3 chunks, plus a stub stopping at each of the 2 boundaries
    assert len(dashed_red) == 3 * 3 + 2
    assert any("forward" in s for s in texts) and any("backward" in s for s in texts)


def test_truncated_bptt_rejects_ragged_chunks():
    with pytest.raises(ValueError):
        diagrams.draw_truncated_bptt(text="abcde", kappa=2)
    with pytest.raises(ValueError):
        diagrams.draw_truncated_bptt(text="abcd", kappa=0)


@pytest.mark.parametrize("num_layers", [1, 2])
def test_charrnn_model_layers_shapes_and_states(num_layers):
    texts = render(diagrams.draw_charrnn_model(num_layers=num_layers))
    assert "character\nids" in texts and "softmax,\ncross-entropy" in texts
    assert "embedding\n$K \\times E$" in texts and "dense\n$H \\times K$" in texts
    for l in range(1, num_layers + 1):
        assert f"LSTM {l}\n$H$ units" in texts
        assert rf"$\mathbf{{h}}_{l}, \mathbf{{s}}_{l}$" in texts        # from the previous batch
        assert rf"$\mathbf{{h}}_{l}', \mathbf{{s}}_{l}'$" in texts      # to the next batch
    assert f"LSTM {num_layers + 1}\n$H$ units" not in texts
    for shape in (r"$(B, T)$", r"$(B, T, E)$", r"$(B, T, K)$"):
        assert texts.count(shape) == 1, shape
    assert texts.count(r"$(B, T, H)$") == num_layers
    assert texts.count(r"$(B, H)$ each") == num_layers
    assert "from the\nprevious batch" in texts and "to the\nnext batch" in texts
    assert r"loss $\mathcal{L}$" in texts and r"targets $(B, T)$" in texts


def test_sampling_loop_labels():
    texts = render(diagrams.draw_sampling_loop())
    for s in ("input\ncharacter", "one step\nof the model", r"logits $\mathbf{o}$",
              r"$\operatorname{softmax}(\mathbf{o}/T_{\mathrm{s}})$", r"$p_k$", r"pick $k$",
              r"state $\mathbf{h}, \mathbf{s}$", r"append $k$ to the text",
              "argmax,\nweighted pick ($u$),\nor space rule", "the chosen character is the next input"):
        assert s in texts, s
    assert any(s.startswith("prime") for s in texts)
    assert any("warms the state up" in s for s in texts)
