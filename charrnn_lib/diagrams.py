"""The book's diagrams, drawn by code with matplotlib (nothing is fetched or stored).

A diagram is a handful of *nodes* (rounded boxes and circles with a label) joined by
arrows.  The small toolkit at the top does exactly that, in data coordinates on an
axes with equal aspect, so circles stay round and the layout reads like a sketch on
squared paper.  Each ``draw_*`` function below builds one figure of the book and
returns the :class:`matplotlib.figure.Figure` (a notebook displays it; a test inspects
its labels with :func:`figure_texts`).  Labels use the notation page's symbols.

Figures:

* :func:`draw_unrolled_rnn`   - the folded loop and the same network unrolled in time
* :func:`draw_architectures`  - one-to-many, many-to-one, many-to-many, seq2seq
* :func:`draw_bptt_graph`     - the unrolled computational graph with forward and backward arrows
* :func:`draw_lstm_cell`      - an LSTM memory block (optionally with peepholes)
* :func:`draw_gru_cell`       - a GRU cell (Keras convention)
* :func:`draw_truncated_bptt` - truncated BPTT as a timeline: state carried, gradient cut at chunk boundaries
* :func:`draw_charrnn_model`  - chapter 5's char-rnn, layer by layer, with tensor shapes and carried states
* :func:`draw_sampling_loop`  - generating text: prime, one step, softmax with temperature, pick, feed back
"""
from __future__ import annotations

import dataclasses
import math

import matplotlib.patheffects as pe
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Circle, FancyArrowPatch, FancyBboxPatch

# One colour per role, used consistently in every figure of the book.
COLORS = {
    "input": "#d9f0d3",  # x_t
    "hidden": "#cfe2f3",  # h_t
    "decoder": "#9fc5e8",  # a decoder's h_t (seq2seq)
    "output": "#fde0c5",  # o_t, y_t
    "loss": "#f4cccc",  # L_t
    "gate": "#fff2cc",  # sigmoid valves
    "candidate": "#e1d5e7",  # tanh content
    "op": "#ffffff",  # elementwise x and +
    "cell": "#f3f3f3",  # the body of a cell
    "edge": "#333333",
    "forward": "#222222",
    "backward": "#c0392b",  # gradients
    "W": "#1f5fa8",
    "U": "#2e7d32",
    "V": "#b45f06",
    "muted": "#666666",
}
MATH_FONT = "cm"  # Computer Modern for the mathtext labels, like the book's equations


# ---------------------------------------------------------------------------
# Toolkit
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class Node:
    """A box or circle centred at (x, y); ``w``, ``h`` are its full width and height."""

    x: float
    y: float
    w: float
    h: float
    shape: str = "box"  # "box" or "circle"

    @property
    def center(self) -> tuple[float, float]:
        return (self.x, self.y)

    def boundary(self, toward: tuple[float, float], pad: float = 0.0) -> tuple[float, float]:
        """The point where the ray from the centre toward ``toward`` leaves the node."""
        dx, dy = toward[0] - self.x, toward[1] - self.y
        if dx == 0 and dy == 0:
            return self.center
        if self.shape == "circle":
            r = self.w / 2 + pad
            d = math.hypot(dx, dy)
            return (self.x + dx / d * r, self.y + dy / d * r)
        sx = (self.w / 2 + pad) / abs(dx) if dx else math.inf
        sy = (self.h / 2 + pad) / abs(dy) if dy else math.inf
        s = min(sx, sy)
        return (self.x + dx * s, self.y + dy * s)

    def side(self, which: str, offset: float = 0.0) -> tuple[float, float]:
        """Midpoint of a side ("left", "right", "top", "bottom"), shifted along it by ``offset``."""
        return {
            "left": (self.x - self.w / 2, self.y + offset),
            "right": (self.x + self.w / 2, self.y + offset),
            "top": (self.x + offset, self.y + self.h / 2),
            "bottom": (self.x + offset, self.y - self.h / 2),
        }[which]


def new_diagram(xlim, ylim, figsize=(7, 3)):
    """A figure with one axes: equal aspect, no frame, limits ``xlim`` x ``ylim``."""
    fig = Figure(figsize=figsize, layout="constrained")
    ax = fig.add_subplot()
    _setup_axes(ax, xlim, ylim)
    return fig, ax


def _setup_axes(ax, xlim, ylim):
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.set_aspect("equal")
    ax.axis("off")


def label(ax, xy, text, size=11, color="black", ha="center", va="center", **kw):
    """Text at ``xy``; mathtext (``r'$\\mathbf{h}_t$'``) is set in Computer Modern."""
    return ax.text(*xy, text, fontsize=size, color=color, ha=ha, va=va, math_fontfamily=MATH_FONT, zorder=6, **kw)


def box(ax, xy, text="", w=1.0, h=0.7, fc=COLORS["hidden"], ec=COLORS["edge"], size=11, ls="-", lw=1.2, **kw):
    """A rounded box centred at ``xy`` with ``text`` inside; returns its :class:`Node`."""
    x, y = xy
    r = min(w, h) * 0.18
    patch = FancyBboxPatch(
        (x - w / 2 + r, y - h / 2 + r), w - 2 * r, h - 2 * r,
        boxstyle=f"round,pad={r}", fc=fc, ec=ec, lw=lw, ls=ls, zorder=3,
    )
    ax.add_patch(patch)
    if text:
        label(ax, xy, text, size=size, **kw)
    return Node(x, y, w, h, "box")


def circle(ax, xy, text="", r=0.3, fc=COLORS["input"], ec=COLORS["edge"], size=11, ls="-", lw=1.2, **kw):
    """A circle of radius ``r`` centred at ``xy`` with ``text`` inside; returns its :class:`Node`."""
    ax.add_patch(Circle(xy, r, fc=fc, ec=ec, lw=lw, ls=ls, zorder=3))
    if text:
        label(ax, xy, text, size=size, **kw)
    return Node(xy[0], xy[1], 2 * r, 2 * r, "circle")


def op(ax, xy, symbol="×", r=0.22, size=12):
    """An elementwise operation (``"×"``, ``"+"``, ``"1−"``) drawn as a small white circle."""
    return circle(ax, xy, symbol, r=r, fc=COLORS["op"], size=size)


def arrow(ax, start, end, color=COLORS["forward"], lw=1.3, ls="-", head=True, rad=0.0, halo=False, zorder=2,
          halo_color="white", **kw):
    """An arrow (or plain line with ``head=False``) from point ``start`` to point ``end``.

    ``rad`` bends it (matplotlib's ``arc3`` connection); ``halo`` draws an outline in the
    background colour ``halo_color`` first, so that a line crossing another one shows a
    small gap (a "bridge").
    """
    patch = FancyArrowPatch(
        start, end,
        arrowstyle="-|>" if head else "-", mutation_scale=11, shrinkA=0, shrinkB=0,
        connectionstyle=f"arc3,rad={rad}", color=color, lw=lw, ls=ls, zorder=zorder, **kw,
    )
    if halo:
        patch.set_path_effects([pe.Stroke(linewidth=lw + 5, foreground=halo_color), pe.Normal()])
    ax.add_patch(patch)
    return patch


def connect(ax, a: Node, b: Node, offset=0.0, text=None, text_side=1, text_color=None, text_size=10, gap=0.04, **kw):
    """Arrow from node ``a`` to node ``b``, boundary to boundary.

    ``offset`` shifts the arrow sideways (perpendicular to its direction) so that a forward
    and a backward arrow between the same nodes run side by side; ``text`` labels its middle,
    on the left (``text_side=1``) or right (``-1``) of the direction of travel.
    """
    dx, dy = b.x - a.x, b.y - a.y
    d = math.hypot(dx, dy)
    nx, ny = -dy / d, dx / d  # unit normal (to the left of travel)
    ca = (a.x + nx * offset, a.y + ny * offset)
    cb = (b.x + nx * offset, b.y + ny * offset)
    pa = Node(ca[0], ca[1], a.w, a.h, a.shape).boundary(cb, pad=gap)
    pb = Node(cb[0], cb[1], b.w, b.h, b.shape).boundary(ca, pad=gap)
    patch = arrow(ax, pa, pb, **kw)
    if text:
        mx, my = (pa[0] + pb[0]) / 2, (pa[1] + pb[1]) / 2
        s = 0.22 * text_side
        label(ax, (mx + nx * s, my + ny * s), text, size=text_size, color=text_color or kw.get("color", "black"))
    return patch


def polyline(ax, points, color=COLORS["forward"], lw=1.3, ls="-", head=True, halo=False, halo_color="white"):
    """A path through ``points`` with an arrow head at the last one (for routed wires)."""
    for p, q in zip(points[:-2], points[1:-1]):
        arrow(ax, p, q, color=color, lw=lw, ls=ls, head=False, halo=halo, halo_color=halo_color)
    return arrow(ax, points[-2], points[-1], color=color, lw=lw, ls=ls, head=head, halo=halo, halo_color=halo_color)


def figure_texts(fig) -> list[str]:
    """Every text string drawn in ``fig`` (axes texts, titles, legend entries): for tests."""
    out = [t.get_text() for t in fig.texts]
    for ax in fig.axes:
        out += [t.get_text() for t in ax.texts]
        out += [ax.get_title(loc) for loc in ("left", "center", "right") if ax.get_title(loc)]
        leg = ax.get_legend()
        if leg is not None:
            out += [t.get_text() for t in leg.get_texts()]
    if getattr(fig, "_suptitle", None) is not None:
        out.append(fig._suptitle.get_text())
    return out


def _vec(letter: str, sub) -> str:
    return rf"$\mathbf{{{letter}}}_{{{sub}}}$"


# ---------------------------------------------------------------------------
# Chapter 2: the computational graph of BPTT
# ---------------------------------------------------------------------------


def draw_bptt_graph(T: int = 3, backward: bool = True, figsize=None) -> Figure:
    """The unrolled computational graph of a simple RNN for ``T`` steps.

    Forward (black): ``h_t = tanh(W h_{t-1} + U x_t + b)``, ``o_t = V h_t + c``, a loss
    ``L_t`` per step (against the target ``ŷ_t``), summed into ``L``.  Backward (red,
    dashed, with ``backward=True``): ``∂L/∂L_t = 1``, ``∂L/∂o_t``, the error signals
    ``δ_t = ∂L/∂a_t`` in the hidden boxes, and ``W^T δ_{t+1}`` flowing right to left.
    """
    if T < 1:
        raise ValueError(f"T must be at least 1, got {T}")
    dx = 2.5
    xs = [dx * t for t in range(T + 1)]
    y_x, y_h, y_o, y_l, y_L = 0.0, 1.7, 3.3, 4.8, 6.3
    fig, ax = new_diagram((-0.9, xs[-1] + 1.6), (-0.6, 6.9), figsize=figsize or (1.9 + 1.75 * T, 5.0))
    fw, bw = COLORS["forward"], COLORS["backward"]
    off = 0.14 if backward else 0.0

    h0 = box(ax, (xs[0], y_h), _vec("h", 0), w=0.8, h=0.62, ls="--")
    L = circle(ax, ((xs[1] + xs[-1]) / 2, y_L), r"$\mathcal{L}$", r=0.34, fc=COLORS["loss"], size=13)
    label(ax, (L.x + 0.45, L.y), r"$=\sum_t \mathcal{L}_t$", size=11, ha="left")
    prev = h0
    for t in range(1, T + 1):
        x = xs[t]
        xn = circle(ax, (x, y_x), _vec("x", t), r=0.32, fc=COLORS["input"])
        h = box(ax, (x, y_h), _vec("h", t), w=0.8, h=0.62)
        o = box(ax, (x, y_o), _vec("o", t), w=0.8, h=0.62, fc=COLORS["output"])
        lt = circle(ax, (x, y_l), rf"$\mathcal{{L}}_{{{t}}}$", r=0.32, fc=COLORS["loss"])
        target = (x + 0.95, y_l - 0.55)
        label(ax, target, rf"$\hat{{\mathbf{{y}}}}_{{{t}}}$", size=12, color=COLORS["muted"])
        arrow(ax, (target[0] - 0.12, target[1] + 0.12), lt.boundary(target, pad=0.04), color=COLORS["muted"], lw=1.0)

        connect(ax, xn, h, text=r"$\mathbf{U}$", text_color=COLORS["U"], color=fw)
        connect(ax, prev, h, offset=off, text=r"$\mathbf{W}$", text_color=COLORS["W"], color=fw, text_side=1)
        connect(ax, h, o, offset=off, text=r"$\mathbf{V}$", text_color=COLORS["V"], color=fw)
        connect(ax, o, lt, offset=off, color=fw)
        connect(ax, lt, L, offset=off, color=fw)
        if backward:
            connect(ax, L, lt, offset=off, color=bw, ls="--")
            connect(ax, lt, o, offset=off, color=bw, ls="--")
            connect(ax, o, h, offset=off, color=bw, ls="--",
                    text=rf"$\partial\mathcal{{L}}/\partial\mathbf{{o}}_{{{t}}}$", text_side=1, text_size=9)
            connect(ax, h, prev, offset=off, color=bw, ls="--",
                    text=rf"$\mathbf{{W}}^{{\!\top}}\boldsymbol{{\delta}}_{{{t}}}$", text_size=9)
            label(ax, (x - 0.62, y_h + 0.42), rf"$\boldsymbol{{\delta}}_{{{t}}}$", size=11, color=bw)
        prev = h
    if backward:
        handles = [
            Line2D([], [], color=fw, lw=1.3, label="forward: values"),
            Line2D([], [], color=bw, lw=1.3, ls="--", label="backward: gradients"),
        ]
        ax.legend(handles=handles, loc="upper left", fontsize=9, frameon=False)
    return fig


# ---------------------------------------------------------------------------
# Chapter 3: gated cells
# ---------------------------------------------------------------------------


def _gate(ax, xy, kind, name, fc, w=0.95, h=0.62):
    """A gate box (``σ`` or ``tanh``) with its name in small grey text under it."""
    node = box(ax, xy, kind, w=w, h=h, fc=fc, size=12)
    label(ax, (xy[0] + 0.1, xy[1] - h / 2 - 0.22), name, size=8, color=COLORS["muted"], ha="left", style="italic")
    return node


def _cell_body(ax):
    """The light grey rounded rectangle behind a gated cell."""
    ax.add_patch(FancyBboxPatch((0.0, 0.0), 10.2, 5.6, boxstyle="round,pad=0.15",
                                fc=COLORS["cell"], ec="#999999", lw=1.0, zorder=0))


def draw_lstm_cell(peepholes: bool = False, figsize=(7.6, 4.6)) -> Figure:
    """An LSTM memory block.

    The cell state ``s`` runs along the top: it is multiplied by the forget gate ``f_t``
    and receives ``i_t ⊙ g_t``; the output gate ``o_t`` lets ``tanh(s_t)`` out as ``h_t``.
    Gates (sigmoid, values in (0, 1)) are valves; the candidate ``g_t`` (tanh, values in
    (-1, 1)) is signed content.  With ``peepholes=True`` the dashed lines show the
    peephole connections ``p_f, p_i`` (from ``s_{t-1}``) and ``p_o`` (from ``s_t``).
    """
    fig, ax = new_diagram((-1.6, 12.0), (-1.2, 6.3), figsize=figsize)
    fw = COLORS["forward"]
    _cell_body(ax)
    y_s, y_bus, y_gate = 4.9, 0.7, 2.2

    # Cell state line along the top: s_{t-1} -> x f_t -> + i_t*g_t -> s_t
    f_mul = op(ax, (2.4, y_s), "×")
    add = op(ax, (5.6, y_s), "+")
    label(ax, (-0.55, y_s), _vec("s", "t-1"), size=12, ha="right")
    label(ax, (11.15, y_s), _vec("s", "t"), size=12, ha="left")
    arrow(ax, (-0.5, y_s), f_mul.side("left"), color=fw, lw=2.2)
    arrow(ax, f_mul.side("right"), add.side("left"), color=fw, lw=2.2)
    arrow(ax, add.side("right"), (11.1, y_s), color=fw, lw=2.2)
    label(ax, (4.0, y_s + 0.35), "cell state", size=8, color=COLORS["muted"], style="italic")

    # Input bus along the bottom: h_{t-1} and x_t feed every gate.
    label(ax, (-0.55, y_bus), _vec("h", "t-1"), size=12, ha="right")
    arrow(ax, (-0.5, y_bus), (7.6, y_bus), color=fw, head=False)
    label(ax, (0.9, -0.95), _vec("x", "t"), size=12)
    arrow(ax, (0.9, -0.7), (0.9, y_bus), color=fw, head=False)
    ax.add_patch(Circle((0.9, y_bus), 0.06, color=fw, zorder=4))

    f = _gate(ax, (2.4, y_gate), r"$\sigma$", "forget", COLORS["gate"])
    i = _gate(ax, (4.2, y_gate), r"$\sigma$", "input", COLORS["gate"])
    g = _gate(ax, (5.6, y_gate), r"$\tau$", "candidate", COLORS["candidate"])
    o = _gate(ax, (7.6, y_gate), r"$\sigma$", "output", COLORS["gate"])
    for node in (f, i, g, o):
        arrow(ax, (node.x, y_bus), node.side("bottom"), color=fw)

    # f_t gates the old cell state.
    arrow(ax, f.side("top"), f_mul.side("bottom"), color=fw)
    label(ax, (2.4 + 0.3, 3.3), _vec("f", "t"), size=11)
    # i_t x g_t is added to it.
    ig = op(ax, (5.6, 3.65), "×")
    polyline(ax, [i.side("top"), (4.2, 3.65), ig.side("left")], color=fw)
    label(ax, (3.9, 3.1), _vec("i", "t"), size=11)
    arrow(ax, g.side("top"), ig.side("bottom"), color=fw)
    label(ax, (5.9, 2.95), _vec("g", "t"), size=11)
    arrow(ax, ig.side("top"), add.side("bottom"), color=fw)

    # Output: h_t = o_t x tanh(s_t)
    tanh_s = box(ax, (9.0, 3.65), r"$\tau$", w=0.8, h=0.55, fc=COLORS["candidate"], size=12)
    arrow(ax, (9.0, y_s), tanh_s.side("top"), color=fw)
    out_mul = op(ax, (9.0, y_gate), "×")
    arrow(ax, tanh_s.side("bottom"), out_mul.side("top"), color=fw)
    arrow(ax, o.side("right"), out_mul.side("left"), color=fw)
    label(ax, (8.3, y_gate + 0.3), _vec("o", "t"), size=11)
    polyline(ax, [out_mul.side("bottom"), (9.0, y_bus), (11.1, y_bus)], color=fw, lw=1.6)
    label(ax, (11.15, y_bus), _vec("h", "t"), size=12, ha="left")

    if peepholes:
        pk = dict(color=COLORS["W"], ls=(0, (3, 2)), lw=1.1)
        arrow(ax, (1.2, y_s), f.side("left", 0.1), **pk)
        label(ax, (1.25, 3.25), r"$\mathbf{p}_f$", size=10, color=COLORS["W"])
        arrow(ax, (1.2, y_s), i.side("top", -0.3), halo=True, halo_color=COLORS["cell"], **pk)
        label(ax, (3.3, 3.9), r"$\mathbf{p}_i$", size=10, color=COLORS["W"])
        arrow(ax, (6.6, y_s), o.side("top", -0.2), **pk)
        label(ax, (6.7, 3.55), r"$\mathbf{p}_o$", size=10, color=COLORS["W"])
        ax.add_patch(Circle((1.2, y_s), 0.06, color=COLORS["W"], zorder=4))
        ax.add_patch(Circle((6.6, y_s), 0.06, color=COLORS["W"], zorder=4))
        label(ax, (10.2, -0.95), "dashed: peephole connections", size=8, color=COLORS["W"], ha="right", style="italic")
    return fig


def draw_gru_cell(figsize=(7.6, 4.6)) -> Figure:
    """A GRU cell in the Keras convention (``reset_after=True``):

    ``z_t, r_t = σ(...)``, ``n_t = tanh(U_n x_t + b_n + r_t ⊙ (W_n h_{t-1} + b'_n))``,
    ``h_t = z_t ⊙ h_{t-1} + (1 − z_t) ⊙ n_t``.  The state line runs along the top.
    """
    fig, ax = new_diagram((-1.6, 12.0), (-1.2, 6.3), figsize=figsize)
    fw = COLORS["forward"]
    _cell_body(ax)
    y_h, y_bus, y_gate, y_mid = 4.9, 0.7, 2.0, 3.45

    keep = op(ax, (7.4, y_h), "×")
    add = op(ax, (9.3, y_h), "+")
    label(ax, (-0.55, y_h), _vec("h", "t-1"), size=12, ha="right")
    label(ax, (11.15, y_h), _vec("h", "t"), size=12, ha="left")
    arrow(ax, (-0.5, y_h), keep.side("left"), color=fw, lw=2.2)
    arrow(ax, keep.side("right"), add.side("left"), color=fw, lw=2.2)
    arrow(ax, add.side("right"), (11.1, y_h), color=fw, lw=2.2)

    # h_{t-1} also drops to the bus that feeds the gates; x_t joins it.
    arrow(ax, (0.35, y_h), (0.35, y_bus), color=fw, head=False)
    arrow(ax, (0.35, y_bus), (7.4, y_bus), color=fw, head=False)
    label(ax, (1.1, -0.95), _vec("x", "t"), size=12)
    arrow(ax, (1.1, -0.7), (1.1, y_bus), color=fw, head=False)
    for p in ((0.35, y_h), (0.35, y_bus), (1.1, y_bus), (3.5, y_h)):
        ax.add_patch(Circle(p, 0.06, color=fw, zorder=4))

    r = _gate(ax, (2.2, y_gate), r"$\sigma$", "reset", COLORS["gate"])
    n = _gate(ax, (5.4, y_mid), r"$\tau$", "candidate", COLORS["candidate"])
    z = _gate(ax, (7.4, y_gate), r"$\sigma$", "update", COLORS["gate"])
    for node in (r, z):
        arrow(ax, (node.x, y_bus), node.side("bottom"), color=fw)
    arrow(ax, (5.4, y_bus), n.side("bottom"), color=fw)

    # The reset gate scales the recurrent contribution to the candidate.
    r_mul = op(ax, (3.5, y_mid), "×")
    polyline(ax, [r.side("top"), (2.2, y_mid), r_mul.side("left")], color=fw)
    label(ax, (1.9, 2.95), _vec("r", "t"), size=11)
    arrow(ax, (3.5, y_h), r_mul.side("top"), color=fw)
    label(ax, (3.5 + 0.65, 4.2), r"$\mathbf{W}_n\mathbf{h}_{t-1}$", size=8, color=COLORS["muted"])
    arrow(ax, r_mul.side("right"), n.side("left"), color=fw)

    # Update gate: keep z_t of the old state, take 1 - z_t of the candidate.
    arrow(ax, z.side("top"), keep.side("bottom"), color=fw, halo=True, halo_color=COLORS["cell"], zorder=3)
    label(ax, (7.1, 2.75), _vec("z", "t"), size=11)
    one_minus = op(ax, (9.3, y_gate), "1−", r=0.27, size=10)
    arrow(ax, z.side("right"), one_minus.side("left"), color=fw)
    new_mul = op(ax, (9.3, y_mid), "×")
    arrow(ax, n.side("right"), new_mul.side("left"), color=fw, zorder=1)
    label(ax, (6.35, y_mid + 0.28), _vec("n", "t"), size=11)
    arrow(ax, one_minus.side("top"), new_mul.side("bottom"), color=fw)
    arrow(ax, new_mul.side("top"), add.side("bottom"), color=fw)
    return fig


# ---------------------------------------------------------------------------
# Chapter 1: the unrolled network and the architectures
# ---------------------------------------------------------------------------


def draw_unrolled_rnn(T: int = 4, figsize=None) -> Figure:
    """Left: the folded network, a loop through ``W``.  Right: the same network unrolled
    over ``T`` steps; every copy uses the same ``U``, ``W``, ``V`` (parameter sharing)."""
    if T < 1:
        raise ValueError(f"T must be at least 1, got {T}")
    dx = 1.75
    x0 = 3.6  # where the unrolled part starts (h_0)
    xmax = x0 + dx * T + 0.8
    fig, ax = new_diagram((-1.0, xmax), (-0.75, 3.75), figsize=figsize or (2.6 + 1.35 * T, 3.3))
    fw = COLORS["forward"]
    y_x, y_h, y_y = 0.0, 1.5, 3.0

    def column(x, sub):
        xn = circle(ax, (x, y_x), _vec("x", sub), r=0.32, fc=COLORS["input"])
        h = box(ax, (x, y_h), _vec("h", sub), w=0.85, h=0.62)
        y = circle(ax, (x, y_y), _vec("y", sub), r=0.32, fc=COLORS["output"])
        connect(ax, xn, h, text=r"$\mathbf{U}$", text_color=COLORS["U"], text_side=-1, color=fw)
        connect(ax, h, y, text=r"$\mathbf{V}$", text_color=COLORS["V"], text_side=-1, color=fw)
        return h

    # Folded: the loop feeds h_t back in at the next step.
    h = column(0.0, "t")
    top = h.side("top", 0.22)
    polyline(ax, [top, (top[0], y_h + 0.62), (0.95, y_h + 0.62), (0.95, y_h), h.side("right")], color=fw)
    box(ax, (0.95, y_h + 0.31), "", w=0.16, h=0.16, fc=fw, ec=fw)  # one-step delay
    label(ax, (1.22, y_h + 0.31), r"$\mathbf{W}$", size=10, color=COLORS["W"])
    label(ax, (0.0, -0.68), "folded", size=9, color=COLORS["muted"], style="italic")

    # "unfold"
    arrow(ax, (1.55, y_h), (2.55, y_h), color=COLORS["muted"], lw=2.0)
    label(ax, (2.05, y_h + 0.28), "unfold", size=9, color=COLORS["muted"], style="italic")

    # Unrolled: h_0 -> h_1 -> ... -> h_T
    prev = box(ax, (x0, y_h), _vec("h", 0), w=0.75, h=0.58, ls="--")
    for t in range(1, T + 1):
        h = column(x0 + dx * t, t)
        connect(ax, prev, h, text=r"$\mathbf{W}$", text_color=COLORS["W"], color=fw)
        prev = h
    label(ax, (x0 + dx * (T + 1) / 2, -0.68), f"unrolled over T = {T} steps: the same U, W, V at every step",
          size=9, color=COLORS["muted"], style="italic")
    return fig


def _arch_panel(ax, title, example, in_steps, out_steps, seq2seq=False, in_labels=None, repeated=(),
                dec_in_labels=None):
    """One architecture: inputs at ``in_steps``, outputs at ``out_steps`` (1-based columns).

    ``in_labels`` maps a column to the label of its input box; columns in ``repeated`` draw
    their input dashed (a copy of the same vector, as ``RepeatVector`` makes).  With
    ``seq2seq=True`` the columns after the inputs are the decoder; ``dec_in_labels`` maps a
    decoder column to the label of the decoder's own input there (the previous target).
    """
    n = max(max(in_steps, default=0), max(out_steps, default=0))
    n_in = len(in_steps)
    in_labels, dec_in_labels = in_labels or {}, dec_in_labels or {}
    fw = COLORS["forward"]
    dx = 1.0
    _setup_axes(ax, (0.3, n * dx + 0.7), (-0.65, 3.0))
    prev = None
    for t in range(1, n + 1):
        x = t * dx
        enc = seq2seq and t <= n_in
        h = box(ax, (x, 1.15), "", w=0.55, h=0.45, fc=COLORS["hidden"] if not seq2seq or enc else COLORS["decoder"])
        if prev is not None:
            connect(ax, prev, h, color=fw, gap=0.02, lw=1.1)
        if t in in_steps or t in dec_in_labels:
            dec = t in dec_in_labels
            text = dec_in_labels[t] if dec else in_labels.get(t, "")
            xi = box(ax, (x, 0.0), text, w=0.55, h=0.4, fc=COLORS["output" if dec else "input"],
                     ls="--" if t in repeated else "-", size=8)
            connect(ax, xi, h, color=fw, gap=0.02, lw=1.1)
        if t in out_steps:
            yo = box(ax, (x, 2.3), "", w=0.55, h=0.4, fc=COLORS["output"])
            connect(ax, h, yo, color=fw, gap=0.02, lw=1.1)
        prev = h
    ax.set_title(title, fontsize=10)
    label(ax, ((n * dx + 1.0) / 2, -0.55), example, size=8, color=COLORS["muted"], style="italic")
    if seq2seq:
        label(ax, ((1 + n_in) / 2 * dx, 1.65), "encoder", size=8, color=COLORS["muted"])
        label(ax, (((n_in + 1 + n) / 2 + 0.5) * dx, 1.65), "decoder", size=8, color=COLORS["muted"])  # between arrows
        label(ax, ((n_in + 0.5) * dx, 0.82), _vec("h", "T"), size=8, color=COLORS["muted"])


def draw_architectures(figsize=(10, 2.6)) -> Figure:
    """Four ways to wire a recurrent network, side by side: one-to-many, many-to-one,
    many-to-many aligned, and sequence-to-sequence (encoder-decoder).  Inputs are green at
    the bottom, hidden states blue (a decoder's darker blue), outputs orange at the top.

    The panels draw what chapter 1's Keras code builds.  One-to-many: the single input
    ``x`` is repeated at every step (``RepeatVector``; the copies are dashed).
    Sequence-to-sequence: the encoder hands its last state ``h_T`` to the decoder as its
    initial state, and the decoder reads inputs of its own, orange like outputs because
    they are the previous targets (a start symbol ``<s>`` first, then ``ŷ_1``, ``ŷ_2``).
    """
    fig = Figure(figsize=figsize, layout="constrained")
    axes = fig.subplots(1, 4, gridspec_kw={"width_ratios": [4, 4, 4, 6]})
    x = r"$\mathbf{x}$"
    _arch_panel(axes[0], "one-to-many", "image → caption,\nnote → melody", [1, 2, 3, 4], [1, 2, 3, 4],
                in_labels={t: x for t in range(1, 5)}, repeated=(2, 3, 4))
    _arch_panel(axes[1], "many-to-one", "review → sentiment,\nprices → tomorrow's move", [1, 2, 3, 4], [4])
    _arch_panel(axes[2], "many-to-many (aligned)", "char-rnn: next character\nat every step",
                [1, 2, 3, 4], [1, 2, 3, 4])
    _arch_panel(axes[3], "sequence-to-sequence", "translation: read all,\nthen write",
                [1, 2, 3], [4, 5, 6], seq2seq=True,
                dec_in_labels={4: r"$\langle s\rangle$", 5: r"$\hat{\mathbf{y}}_1$", 6: r"$\hat{\mathbf{y}}_2$"})
    return fig


# ---------------------------------------------------------------------------
# Chapter 2: truncated BPTT as a timeline
# ---------------------------------------------------------------------------


def draw_truncated_bptt(text: str = "to be or not", kappa: int = 4, figsize=None) -> Figure:
    """Truncated BPTT over ``text``, read as consecutive chunks of ``kappa`` steps.

    One column per character: the input ``x_t`` (the character) at the bottom, the state
    ``h_t`` above it.  Forward (black, solid): the state runs through every step and is
    carried across the chunk boundaries (grey dotted lines) into the next chunk.  Backward
    (red, dashed): the gradient runs from step to step back to the first step of its own
    chunk and stops there; at a boundary the carried state is a constant.
    """
    if kappa < 1:
        raise ValueError(f"kappa must be at least 1, got {kappa}")
    n = len(text)
    if n == 0 or n % kappa:
        raise ValueError(f"the text's length ({n}) must be a positive multiple of kappa ({kappa})")
    n_chunks = n // kappa
    dx = 1.25
    xs = [dx * t for t in range(n + 1)]  # xs[0]: h_0
    y_x, y_h, y_chunk = 0.0, 1.45, 2.55
    fig, ax = new_diagram((-0.75, xs[-1] + 0.75), (-1.45, 3.05), figsize=figsize or (1.2 + 0.62 * n, 2.9))
    fw, bw, muted = COLORS["forward"], COLORS["backward"], COLORS["muted"]
    off = 0.11

    # Chunks: a light band behind each, a dotted line at each boundary.
    for c in range(n_chunks):
        left, right = xs[c * kappa] + dx / 2, xs[(c + 1) * kappa] + dx / 2
        if c == n_chunks - 1:
            right = xs[-1] + 0.6
        ax.add_patch(FancyBboxPatch((left + 0.08, -0.55), right - left - 0.16, 3.45, boxstyle="round,pad=0.02",
                                    fc=COLORS["cell"] if c % 2 == 0 else "#fafafa", ec="none", zorder=0))
        first, last = c * kappa + 1, (c + 1) * kappa
        label(ax, ((left + right) / 2, y_chunk), rf"chunk {c + 1}: steps {first}$-${last}", size=9, color=muted)
        if c:
            ax.plot([left, left], [-0.75, 2.95], color=muted, lw=1.0, ls=":", zorder=1)

    h0 = box(ax, (xs[0], y_h), _vec("h", 0), w=0.78, h=0.58, ls="--")
    prev = h0
    hs = []
    for t in range(1, n + 1):
        ch = text[t - 1]
        xn = circle(ax, (xs[t], y_x), "␣" if ch == " " else ch, r=0.3, fc=COLORS["input"], size=11)
        h = box(ax, (xs[t], y_h), _vec("h", t), w=0.78, h=0.58)
        connect(ax, xn, h, color=fw, gap=0.03)
        boundary = (t - 1) % kappa == 0 and t > 1
        connect(ax, prev, h, offset=off, color=fw, gap=0.03, lw=2.0 if boundary else 1.3)
        if (t - 1) % kappa:  # the gradient flows back within the chunk only
            connect(ax, h, prev, offset=off, color=bw, ls="--", gap=0.03)
        elif t > 1:  # at the chunk's first step the gradient stops at the boundary
            stop = (xs[t] - dx / 2, y_h - off)
            arrow(ax, (h.x - h.w / 2 - 0.03, y_h - off), stop, color=bw, ls="--", head=False)
            ax.plot([stop[0]], [stop[1]], marker="x", color=bw, ms=7, mew=1.8, zorder=4)
        hs.append(h)
        prev = h
    label(ax, (xs[0], y_x), "text:", size=9, color=muted)
    for c in range(1, n_chunks):
        xb = xs[c * kappa] + dx / 2
        label(ax, (xb, -1.05), "state carried,\ngradient cut", size=8, color=muted, style="italic")
    handles = [
        Line2D([], [], color=fw, lw=1.3, label="forward: the state, carried across chunks"),
        Line2D([], [], color=bw, lw=1.3, ls="--", label=r"backward: the gradient, within its chunk only"),
    ]
    ax.legend(handles=handles, loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=2, fontsize=9, frameon=False)
    return fig


# ---------------------------------------------------------------------------
# Chapter 5: the char-rnn model
# ---------------------------------------------------------------------------


def draw_charrnn_model(num_layers: int = 2, figsize=None) -> Figure:
    """Chapter 5's char-rnn as Keras builds it, with the shapes of the tensors between layers.

    Character ids ``(B, T)`` → embedding (a ``K × E`` table) → ``(B, T, E)`` → LSTM layers
    → ``(B, T, H)`` → dense layer (kernel ``H × K``) → logits ``(B, T, K)`` → softmax and
    cross-entropy against the targets.  Each LSTM layer's state ``h_l, s_l`` (each ``(B, H)``)
    comes in from the previous batch (top, dashed) and leaves, updated, for the next batch
    (bottom, dashed).
    """
    if num_layers < 1:
        raise ValueError(f"num_layers must be at least 1, got {num_layers}")
    dx = 2.45
    n = 4 + num_layers  # ids, embedding, LSTMs, dense, loss
    xs = [dx * j for j in range(n)]
    y, y_in, y_out = 0.0, 1.75, -1.75
    fig, ax = new_diagram((-1.0, xs[-1] + 1.05), (-2.35, 2.35), figsize=figsize or (1.3 + 1.55 * n, 3.5))
    fw, muted = COLORS["forward"], COLORS["muted"]
    bw, bh = 1.6, 1.0

    nodes = [box(ax, (xs[0], y), "character\nids", w=1.35, h=bh, fc=COLORS["op"], size=10)]
    nodes.append(box(ax, (xs[1], y), "embedding\n" + r"$K \times E$", w=bw, h=bh, fc=COLORS["input"], size=10))
    for l in range(1, num_layers + 1):
        x = xs[1 + l]
        nodes.append(box(ax, (x, y), f"LSTM {l}\n" + r"$H$ units", w=bw, h=bh, fc=COLORS["hidden"], size=10))
        s_in = box(ax, (x, y_in), rf"$\mathbf{{h}}_{l}, \mathbf{{s}}_{l}$", w=1.3, h=0.55, ls="--", size=10)
        s_out = box(ax, (x, y_out), rf"$\mathbf{{h}}_{l}', \mathbf{{s}}_{l}'$", w=1.3, h=0.55, ls="--", size=10)
        connect(ax, s_in, nodes[-1], color=fw, ls="--", gap=0.03)
        connect(ax, nodes[-1], s_out, color=fw, ls="--", gap=0.03)
        label(ax, (x + 0.72, (y_in + bh / 2) / 2 + 0.1), r"$(B, H)$ each", size=8, color=muted, ha="left")
    nodes.append(box(ax, (xs[-2], y), "dense\n" + r"$H \times K$", w=bw, h=bh, fc=COLORS["output"], size=10))
    nodes.append(box(ax, (xs[-1], y), "softmax,\ncross-entropy", w=1.75, h=bh, fc=COLORS["loss"], size=10))

    shapes = [r"$(B, T)$", r"$(B, T, E)$"] + [r"$(B, T, H)$"] * num_layers + [r"$(B, T, K)$"]
    for a, b, s in zip(nodes, nodes[1:], shapes):
        connect(ax, a, b, color=fw, gap=0.03)
        label(ax, ((a.x + a.w / 2 + b.x - b.w / 2) / 2, y + 0.3), s, size=9)
    label(ax, ((nodes[-2].x + nodes[-1].x) / 2 + 0.05, y - 0.3), "logits", size=8, color=muted, style="italic")

    # Targets into the loss, the loss out.
    loss = nodes[-1]
    target = box(ax, (loss.x, y_out), r"targets $(B, T)$", w=1.75, h=0.55, fc=COLORS["op"], size=9)
    connect(ax, target, loss, color=fw, gap=0.03)
    label(ax, (loss.x, y_in), r"loss $\mathcal{L}$", size=11)
    arrow(ax, loss.side("top"), (loss.x, y_in - 0.22), color=fw)

    first_lstm = xs[2]
    label(ax, (first_lstm - dx / 2 - 0.05, y_in), "from the\nprevious batch", size=8, color=muted, style="italic",
          ha="right")
    label(ax, (first_lstm - dx / 2 - 0.05, y_out), "to the\nnext batch", size=8, color=muted, style="italic",
          ha="right")
    return fig


# ---------------------------------------------------------------------------
# Chapter 6: the sampling loop
# ---------------------------------------------------------------------------


def draw_sampling_loop(figsize=(10, 3.7)) -> Figure:
    """Generating text one character at a time.

    The prime, all but its last character, is read first to warm the state up (outputs
    discarded); its last character is the first input.  Then, at every step: one step of
    the model on the input character (updating the carried state ``h, s``) gives the logits
    ``o``; ``softmax(o / T_s)`` gives ``p``; a rule picks ``k`` (argmax, a weighted pick with
    the uniform number ``u``, or the space rule); character ``k`` is appended to the text
    and becomes the next input.
    """
    fig, ax = new_diagram((-1.1, 14.9), (-2.5, 3.05), figsize=figsize)
    fw, muted = COLORS["forward"], COLORS["muted"]
    y, y_top, y_bot = 0.0, 2.2, -1.95

    prime = box(ax, (0.0, y), "prime\n" + r"“ROMEO:\n”", w=1.7, h=1.0, fc=COLORS["op"], size=10)
    inp = box(ax, (2.75, y), "input\ncharacter", w=1.5, h=1.0, fc=COLORS["input"], size=10)
    step = box(ax, (5.45, y), "one step\nof the model", w=1.7, h=1.0, fc=COLORS["hidden"], size=10)
    logits = box(ax, (7.9, y), r"logits $\mathbf{o}$", w=1.4, h=1.0, fc=COLORS["output"], size=10)
    soft = box(ax, (10.4, y), r"$\operatorname{softmax}(\mathbf{o}/T_{\mathrm{s}})$", w=2.1, h=1.0,
               fc=COLORS["output"], size=10)
    pick = box(ax, (13.35, y), r"pick $k$", w=1.5, h=1.0, fc=COLORS["gate"], size=11)
    state = box(ax, (5.45, y_top), r"state $\mathbf{h}, \mathbf{s}$", w=1.7, h=0.6, ls="--", size=10)

    connect(ax, prime, inp, color=fw, gap=0.03)
    label(ax, ((prime.x + inp.x) / 2 + 0.05, y + 0.32), "last char.", size=8, color=muted)
    connect(ax, inp, step, color=fw, gap=0.03)
    connect(ax, step, logits, color=fw, gap=0.03)
    connect(ax, logits, soft, color=fw, gap=0.03)
    connect(ax, soft, pick, color=fw, gap=0.03)
    label(ax, ((soft.x + soft.w / 2 + pick.x - pick.w / 2) / 2, y + 0.3), r"$p_k$", size=11)
    label(ax, (soft.x, y - 1.25), r"temperature $T_{\mathrm{s}}$", size=9, color=muted)
    arrow(ax, (soft.x, y - 1.05), soft.side("bottom"), color=muted, lw=1.0)

    # The state: read and updated by every step, warmed up on the prime first.
    connect(ax, state, step, offset=0.35, color=fw, ls="--", gap=0.03)
    connect(ax, step, state, offset=0.35, color=fw, ls="--", gap=0.03)
    label(ax, (state.x + state.w / 2 + 0.1, y_top), "carried from\nstep to step", size=8, color=muted,
          ha="left", style="italic")
    polyline(ax, [prime.side("top"), (prime.x, y_top), state.side("left")], color=fw, ls="--")
    label(ax, ((prime.x + state.x - state.w / 2) / 2, y_top + 0.32), "all but the last character:\nwarms the state up",
          size=8, color=muted, va="bottom")

    # The rules, under the pick; the choice is appended and fed back.
    label(ax, (pick.x, y_top), "argmax,\nweighted pick ($u$),\nor space rule", size=8, color=muted)
    arrow(ax, (pick.x, y_top - 0.5), pick.side("top", 0.0), color=muted, lw=1.0)
    text = box(ax, (pick.x, y_bot), r"append $k$ to the text", w=2.6, h=0.6, fc=COLORS["op"], size=10)
    connect(ax, pick, text, color=fw, gap=0.03)
    polyline(ax, [text.side("left"), (inp.x, y_bot), inp.side("bottom")], color=fw, lw=1.6)
    label(ax, ((inp.x + text.x - text.w / 2) / 2, y_bot - 0.32), "the chosen character is the next input",
          size=9, color=muted, style="italic")
    return fig
