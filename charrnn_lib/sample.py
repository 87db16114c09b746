"""Sampling: turning a trained char-rnn into a text generator.

The model gives, for every position, the logits ``o_t`` of the next character;
``softmax(o_t / T_s)`` is the distribution we draw from, ``T_s`` the temperature
(``T_s = 1``: the model's own distribution; ``T_s -> 0``: argmax; ``T_s > 1``: flatter).
The deck's three ways of choosing the next character are kept:

* ``"argmax"``  -- always the most probable character (greedy decoding);
* ``"sample"``  -- a weighted random draw (the deck's ``weighted_pick``: invert the
  cumulative distribution at a uniform random number);
* ``"space"``   -- a random draw only when the character just fed in is a space,
  argmax otherwise (random word starts, greedy spelling).

The chosen character is fed back as the next input, and the recurrent state is carried
from step to step.  A priming text warms the state up: every character of the prime
is fed through the network (the deck fed only ``prime[-1]``, so the rest of the prime
had no influence on what followed).

Reproducibility.  The uniform numbers of a generation are drawn from the seed up front
(:func:`uniforms`) and passed into the loop, so a seed fixes the text, and the compiled
loop, the plain loop :func:`generate_naive` and a loop written by hand agree character
for character.  They come from TensorFlow's counter-based, stateless Philox generator
(``tf.random.stateless_uniform(..., alg="philox")``), in blocks of ``UNIFORM_BLOCK``
columns: block ``j`` of a seed is a pure function of ``(seed, j)``, computed the same way
eagerly, in a graph, and inside an exported SavedModel (``charrnn_lib.export``), which
therefore reproduces the library's text without the library.  Blocks also make the
numbers independent of how they are taken: :class:`UniformStream` computes only the
blocks it hands out, a longer generation extends a shorter one, and stream ``b`` gets the
same numbers whatever the number of streams.

Speed.  Calling a Keras model eagerly once per character costs milliseconds of Python
and dispatch overhead per step, far more than the step's arithmetic (about half a
million FLOPs for the deck's model).  :class:`Sampler` instead traces the *whole*
generation loop into a TensorFlow graph (``tf.function`` around a ``tf.while_loop``),
compiled with XLA: one step reads the embedding row, runs each layer's recurrent *cell*
(the same weights the Keras layers use) and the output layer, and picks the next id,
all inside the graph.  The loop runs in fixed-size chunks, so one compiled program
serves every length.

Long generations.  :meth:`Sampler.stream` yields the same text chunk by chunk, holding one
chunk's numbers at a time (:class:`UniformStream` hands out the seed's uniform numbers
without drawing them all up front), so memory stays bounded for any length; the command
line prints it as it comes.  Temperatures below ``MIN_TEMPERATURE`` are refused: there
``logits / T_s`` can overflow float32 and the softmax turns into NaN (``mode="argmax"`` is
the limit ``T_s -> 0``).

Shapes: ids (B,) per step, states (B, H) each, logits (B, K); B is the number of
streams generated side by side.
"""
from __future__ import annotations

import functools
import numbers
import unicodedata
from typing import Sequence

import numpy as np
import tensorflow as tf

from charrnn_lib.config import MIN_TEMPERATURE, MODES  # noqa: F401  (the choices; defined there once)
from charrnn_lib.data import UnknownCharactersError
from charrnn_lib.model import recurrent_layers


class SamplingError(ValueError):
    """Bad sampling arguments (mode, temperature, length, prime)."""


class UnknownPrimeCharactersError(SamplingError, UnknownCharactersError):
    """The priming text has characters the model never saw (``.unknown`` lists them)."""


def check_prime(prime: str, chars: Sequence[str]) -> None:
    """Raise :class:`UnknownPrimeCharactersError` naming every prime character not in ``chars``."""
    if not prime:
        raise SamplingError("prime must be a non-empty string (the deck used a single space ' ')")
    known = set(chars)
    unknown = sorted(set(prime) - known)
    if unknown:
        shown = ", ".join(repr(c) for c in unknown)
        hint = "remove them or prime with characters from the training corpus"
        if not set(unicodedata.normalize("NFC", prime)) - known:
            hint = "the corpus is NFC-normalised: prime with unicodedata.normalize('NFC', prime)"
        raise UnknownPrimeCharactersError(
            f"the prime contains {len(unknown)} character(s) not in the model's vocabulary: {shown}; {hint}",
            tuple(unknown))


def check_options(mode: str, temperature: float, length: int, num_streams: int = 1) -> None:
    """Validate sampling options; raise :class:`SamplingError` with what to do."""
    if mode not in MODES:
        raise SamplingError(f"mode must be one of {MODES}, got {mode!r}")
    if not temperature > 0:
        raise SamplingError(f"temperature must be > 0 (use mode='argmax' for T_s -> 0), got {temperature}")
    if not (MIN_TEMPERATURE <= temperature < float("inf")):
        raise SamplingError(f"temperature must be a finite number >= {MIN_TEMPERATURE:g}: below that "
                            f"softmax(logits / T_s) degenerates (use mode='argmax' for T_s -> 0), got {temperature}")
    if int(length) != length or length < 0:
        raise SamplingError(f"length must be a non-negative integer, got {length!r}")
    if int(num_streams) != num_streams or num_streams < 1:
        raise SamplingError(f"num_streams must be a positive integer, got {num_streams!r}")


# ----------------------------------------------------------------------------------------
# The deck's choice rules, written once for NumPy (readable reference) and once for TF.
# ----------------------------------------------------------------------------------------

def softmax_with_temperature(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """``softmax(logits / T_s)`` along the last axis, in NumPy.  (..., K) -> (..., K)."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def weighted_pick(p: np.ndarray, u: float) -> int:
    """The deck's ``weighted_pick`` with the uniform number ``u`` in (0, 1] passed in.

    The first index whose cumulative probability reaches ``u * sum(p)``: index ``k`` is
    chosen with probability ``p[k] / sum(p)``.  (K,) -> int.
    """
    c = np.cumsum(p)
    return int(np.searchsorted(c, u * c[-1]))


UNIFORM_BLOCK = 256        # columns of uniform numbers per Philox key (seed, block index)
MAX_SEED = 2**63 - 1       # seeds are int64 in the graph


def check_seed(seed) -> None:
    """Raise :class:`SamplingError` unless ``seed`` is an integer in [0, ``MAX_SEED``]."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed <= MAX_SEED:
        raise SamplingError(f"seed must be an integer from 0 to 2**63 - 1, got {seed!r}")


def uniform_blocks(seed, first, count, num_streams):
    """Blocks ``first .. first + count - 1`` of a seed's uniform numbers, side by side.

    TensorFlow ops, run eagerly or inside a graph (the exported model calls this very
    function): seed, first int64 scalars, count, num_streams int32 scalars ->
    (num_streams, count * UNIFORM_BLOCK) float32 in (0, 1].  Block ``j`` is one call of the
    stateless Philox generator keyed by ``(seed, j)``: Philox is counter based, so row ``b``
    of a block is the block's numbers ``b * UNIFORM_BLOCK`` to ``(b + 1) * UNIFORM_BLOCK - 1``,
    the same whatever ``num_streams``.  TensorFlow documents the stateless ops as giving the
    same numbers from run to run and on CPU and GPU (they may change between TensorFlow
    versions); ``alg`` is fixed, not ``"auto_select"``.  ``1 - x`` maps [0, 1) to (0, 1]
    exactly (float32 in steps of 2**-23), so the weighted pick never sees ``u = 0``.
    """
    seed = tf.convert_to_tensor(seed, tf.int64)
    shape = tf.stack([tf.convert_to_tensor(num_streams, tf.int32), UNIFORM_BLOCK])

    def block(j):  # (num_streams, UNIFORM_BLOCK)
        return 1.0 - tf.random.stateless_uniform(shape, seed=tf.stack([seed, j]), dtype=tf.float32, alg="philox")

    index = tf.convert_to_tensor(first, tf.int64) + tf.range(tf.cast(count, tf.int64))
    out = tf.map_fn(block, index, fn_output_signature=tf.TensorSpec([None, UNIFORM_BLOCK], tf.float32))
    return tf.reshape(tf.transpose(out, [1, 0, 2]), tf.stack([shape[0], -1]))  # (num_streams, count * block)


@functools.cache
def _uniform_blocks_graph():
    """:func:`uniform_blocks` as one graph (built on first use): one call per request."""
    scalar = tf.TensorSpec([], tf.int64), tf.TensorSpec([], tf.int32)
    return tf.function(uniform_blocks, autograph=False, input_signature=[scalar[0], scalar[0], scalar[1], scalar[1]])


def _columns(seed: int, start: int, n: int, num_streams: int) -> np.ndarray:
    """Columns ``start .. start + n - 1`` of the seed's numbers: (num_streams, n) float32."""
    if n <= 0:
        return np.ones((num_streams, 0), np.float32)
    first, last = start // UNIFORM_BLOCK, (start + n - 1) // UNIFORM_BLOCK
    blocks = _uniform_blocks_graph()(tf.constant(seed, tf.int64), tf.constant(first, tf.int64),
                                     tf.constant(last - first + 1, tf.int32), tf.constant(num_streams, tf.int32))
    offset = start - first * UNIFORM_BLOCK
    return blocks.numpy()[:, offset:offset + n]


def uniforms(seed: int, length: int, num_streams: int = 1) -> np.ndarray:
    """The random numbers of a whole generation, drawn up front: (num_streams, length) float32 in (0, 1].

    Column ``j`` is used for the ``j``-th generated character of every stream.  Drawing
    them from the seed outside the loop makes a seed mean the same text in the compiled
    loop, in the naive loop, in the chapter's hand-written one and in an exported model;
    ``uniforms(seed, n)`` is the first ``n`` columns of ``uniforms(seed, m)`` for ``m > n``.
    """
    check_seed(seed)
    return _columns(int(seed), 0, int(length), int(num_streams))


class UniformStream:
    """The numbers of ``uniforms(seed, length, num_streams)``, handed out a block of columns at a time.

    ``take(n)`` returns the next ``n`` columns, (num_streams, n) float32, equal to that slice
    of ``uniforms(seed, length, num_streams)``, without holding the whole array: it computes
    only the Philox blocks those columns lie in, several at a time (one graph call costs
    far more than a block's arithmetic), as many as fit in ``BUFFER_NUMBERS`` numbers and
    at least one.  (Memory: that buffer and one request, whatever ``length``.)
    """

    BUFFER_NUMBERS = 1 << 16  # 256 KB of float32

    def __init__(self, seed: int, length: int, num_streams: int = 1):
        check_seed(seed)
        self.seed, self.length, self.num_streams, self.position = int(seed), int(length), int(num_streams), 0
        self.blocks_per_call = max(1, self.BUFFER_NUMBERS // (self.num_streams * UNIFORM_BLOCK))
        self._buffer, self._buffer_start = np.ones((self.num_streams, 0), np.float32), 0  # columns held

    def take(self, n: int) -> np.ndarray:
        """The next ``n`` columns (fewer at the end): (num_streams, n) float32 in (0, 1]."""
        n = max(0, min(n, self.length - self.position))
        start, stop = self.position, self.position + n
        if stop > self._buffer_start + self._buffer.shape[1]:  # not all held: compute the blocks from here on
            first = start // UNIFORM_BLOCK * UNIFORM_BLOCK
            width = max(stop - first, self.blocks_per_call * UNIFORM_BLOCK)
            width = min(width, -(-self.length // UNIFORM_BLOCK) * UNIFORM_BLOCK - first)  # not past the end
            self._buffer, self._buffer_start = _columns(self.seed, first, width, self.num_streams), first
        block = self._buffer[:, start - self._buffer_start:stop - self._buffer_start]
        self.position = stop
        return block


def choose_next(logits, prev_ids, u, mode, temperature, space_id):
    """The deck's three rules in TensorFlow: the next ids from the logits.  (B, K), (B,), (B,) -> (B,) int32.

    ``mode`` is the index in ``MODES`` (an int32 tensor, so that a compiled loop serves all
    three), ``u`` the step's uniform numbers in (0, 1], ``space_id`` the id of ``" "`` (-1 if
    none).  ``"sample"`` inverts the cumulative distribution of ``softmax(logits / T_s)`` at
    ``u`` (:func:`weighted_pick`'s rule, ``searchsorted(side="left")`` counted as the
    entries below ``u * total``); ``"space"`` does so only where ``prev_ids`` is the space,
    argmax elsewhere.  One function for every sampler -- :class:`Sampler`, the Transformer's
    (``charrnn_lib.transformer``) and the exported model (``charrnn_lib.export``) -- so they
    choose alike.
    """
    greedy = tf.argmax(logits, axis=-1, output_type=tf.int32)  # (B,)
    p = tf.nn.softmax(logits / temperature, axis=-1)  # (B, K)
    c = tf.cumsum(p, axis=-1)  # (B, K)
    target = u * c[:, -1]  # (B,)
    drawn = tf.reduce_sum(tf.cast(c < target[:, None], tf.int32), axis=-1)  # searchsorted, side='left'
    drawn = tf.minimum(drawn, tf.shape(logits)[-1] - 1)
    random_here = tf.logical_or(tf.equal(mode, 1), tf.logical_and(tf.equal(mode, 2), tf.equal(prev_ids, space_id)))
    return tf.where(random_here, drawn, greedy)


# ----------------------------------------------------------------------------------------
# One step of the network, from the model's own layers.
# ----------------------------------------------------------------------------------------

class Stepper:
    """One character step of a model made by :func:`charrnn_lib.model.build_model`.

    ``stepper(ids, states) -> (logits, new_states)`` with ids (B,) int32, each state
    (B, H), logits (B, K).  It calls the model's embedding, each recurrent layer's cell and
    the output layer directly: the same weights as ``model([ids[:, None], *states])``,
    without the per-call machinery of a whole Keras layer over a length-1 sequence.
    """

    def __init__(self, model, model_config):
        self.config = model_config
        self.embedding = model.get_layer("embedding")
        self.cells = [layer.cell for layer in recurrent_layers(model)]
        self.output = model.get_layer("logits")

    def zero_states(self, batch_size):
        n = self.config.num_states
        return [tf.zeros(tf.stack([batch_size, self.config.hidden_size])) for _ in range(n)]

    def __call__(self, ids, states):
        x = self.embedding(ids)  # (B, E)
        k = self.config.states_per_layer
        new_states = []
        for i, cell in enumerate(self.cells):
            x, layer_states = cell(x, list(states[i * k:(i + 1) * k]), training=False)  # x: (B, H)
            if not isinstance(layer_states, (list, tuple)):
                layer_states = [layer_states]
            new_states += list(layer_states)
        return self.output(x), new_states  # (B, K), [(B, H)] * (L * k)


class Sampler:
    """A compiled generator for one model; build once, call :meth:`generate` many times.

    The loop runs in chunks of ``chunk`` steps; one chunk is a ``tf.while_loop`` traced and
    compiled once and called ``ceil(steps / chunk)`` times, carrying ids and states from
    chunk to chunk.  Mode and temperature are tensors, so changing them does not
    recompile; a new number of streams compiles once more.  ``jit_compile=None`` (auto)
    uses XLA for up to ``XLA_MAX_STREAMS`` streams -- XLA fuses a step's many tiny ops
    into a few kernels, which is much faster for a few streams on a CPU (chapter 6 times
    it) -- and TensorFlow's ordinary graph executor for more, whose matrix kernels win once
    the batch is wide.  The same loop feeds the prime: at prime positions the next input is
    *forced* to the prime's next character instead of chosen.
    """

    XLA_MAX_STREAMS = 64

    def __init__(self, model, vocab, model_config, chunk: int = 256, jit_compile: bool | None = None):
        self.vocab = vocab
        self.chars = list(vocab.chars)
        self.index = {c: i for i, c in enumerate(self.chars)}
        self.config = model_config
        self.chunk = int(chunk)
        self.step = Stepper(model, model_config)
        self.space_id = self.index.get(" ", -1)
        # ids -> text for a whole chunk at once (when every entry is one code point, as built by Vocab)
        self._char_array = np.array(self.chars, dtype="<U1") if all(len(c) == 1 for c in self.chars) else None
        self.jit_compile = jit_compile
        self._compiled = {flag: tf.function(self._chunk, jit_compile=flag, autograph=False) for flag in (True, False)}

    def _chunk(self, x, states, forced, u, mode, temperature):
        """Run ``C`` steps.  x (B,) first inputs; forced (B, C) ids or -1 (choose); u (B, C).

        Returns the C next ids (B, C), the last of them (B,) and the states after the chunk.
        """
        n_steps = tf.shape(forced)[1]
        out = tf.TensorArray(tf.int32, size=n_steps, element_shape=x.shape)

        def cond(t, x, states, out):
            return t < n_steps

        def body(t, x, states, out):
            logits, states = self.step(x, states)  # (B, K), [(B, H)]
            chosen = choose_next(logits, x, u[:, t], mode, temperature, self.space_id)  # (B,)
            nxt = tf.where(forced[:, t] >= 0, forced[:, t], chosen)
            return t + 1, nxt, states, out.write(t, nxt)

        _, x, states, out = tf.while_loop(cond, body, [tf.constant(0), x, list(states), out])
        return tf.transpose(out.stack(), [1, 0]), x, states  # (B, C), (B,), states

    def chunk_function(self, num_streams: int):
        """The compiled chunk this sampler runs for ``num_streams`` streams (XLA or not, see above):
        ``(x, states, forced, u, mode, temperature) -> (ids (B, C), last ids (B,), states)``."""
        jit = self.jit_compile if self.jit_compile is not None else num_streams <= self.XLA_MAX_STREAMS
        return self._compiled[bool(jit)]

    def generate(self, length: int = 4000, prime: str = " ", mode: str = "sample", temperature: float = 1.0,
                 seed: int = 0, num_streams: int = 1, include_prime: bool = True) -> str | list[str]:
        """Generate ``length`` characters after ``prime``.

        Returns one string (``num_streams == 1``) or a list of ``num_streams`` strings, each
        starting with the prime when ``include_prime`` (as the deck printed it).
        Raises :class:`SamplingError` for bad options and
        :class:`UnknownPrimeCharactersError` naming prime characters outside the vocabulary.
        """
        check_options(mode, temperature, length, num_streams)
        check_seed(seed)
        check_prime(prime, self.chars)
        if mode == "space" and self.space_id < 0:
            raise SamplingError("mode 'space' needs a space character in the vocabulary; use 'sample' or 'argmax'")
        B, P, C = num_streams, len(prime), self.chunk
        prime_ids = np.array([self.index[c] for c in prime], dtype=np.int32)  # (P,)
        steps = P - 1 + length  # step t reads input t and yields input t + 1
        padded = -(-steps // C) * C
        forced = np.full((B, padded), -1, np.int32)
        forced[:, : P - 1] = prime_ids[1:]  # warm-up: the next input is the prime's next character
        u = np.ones((B, padded), np.float32)
        u[:, P - 1: steps] = uniforms(seed, length, B)
        x = tf.constant(np.full((B,), prime_ids[0], np.int32))
        states = self.step.zero_states(B)
        mode_t, temp_t = tf.constant(MODES.index(mode)), tf.constant(temperature, tf.float32)
        run_chunk = self.chunk_function(B)
        pieces = []
        for start in range(0, steps, C):
            ids, x, states = run_chunk(x, states, tf.constant(forced[:, start:start + C]),
                                             tf.constant(u[:, start:start + C]), mode_t, temp_t)
            pieces.append(ids.numpy())
        ids = np.concatenate(pieces, axis=1)[:, P - 1: steps] if pieces else np.zeros((B, 0), np.int32)
        head = prime if include_prime else ""
        texts = [head + "".join(self.chars[i] for i in row) for row in ids]
        return texts[0] if num_streams == 1 else texts


    def stream(self, length: int = 4000, prime: str = " ", mode: str = "sample", temperature: float = 1.0,
               seed: int = 0, num_streams: int = 1, include_prime: bool = True):
        """:meth:`generate`, chunk by chunk: yields lists of ``num_streams`` strings.

        Joined, the pieces of stream ``b`` are ``generate(...)`` of stream ``b`` character for
        character (same chunks, same compiled loop, same random numbers, from
        :class:`UniformStream`), but only one chunk's inputs and outputs exist at a time, so
        memory does not grow with ``length``.  The first piece is the prime when
        ``include_prime``.  Raises as :meth:`generate`, before yielding anything.
        """
        check_options(mode, temperature, length, num_streams)
        check_seed(seed)
        check_prime(prime, self.chars)
        if mode == "space" and self.space_id < 0:
            raise SamplingError("mode 'space' needs a space character in the vocabulary; use 'sample' or 'argmax'")
        return self._stream(length, prime, mode, temperature, seed, num_streams, include_prime)

    def _stream(self, length, prime, mode, temperature, seed, num_streams, include_prime):
        B, P, C = num_streams, len(prime), self.chunk
        prime_ids = np.array([self.index[c] for c in prime], dtype=np.int32)  # (P,)
        steps = P - 1 + length  # step t reads input t and yields input t + 1
        if include_prime:
            yield [prime] * B
        source = UniformStream(seed, length, B)
        x = tf.constant(np.full((B,), prime_ids[0], np.int32))
        states = self.step.zero_states(B)
        mode_t, temp_t = tf.constant(MODES.index(mode)), tf.constant(temperature, tf.float32)
        run_chunk = self.chunk_function(B)
        for start in range(0, steps, C):
            forced = np.full((B, C), -1, np.int32)
            warm = min(start + C, P - 1) - start          # prime positions in this chunk
            if warm > 0:
                forced[:, :warm] = prime_ids[start + 1:start + 1 + warm]
            u = np.ones((B, C), np.float32)
            first, last = max(start, P - 1), min(start + C, steps)  # generated positions [first, last)
            if last > first:
                u[:, first - start:last - start] = source.take(last - first)
            ids, x, states = run_chunk(x, states, tf.constant(forced), tf.constant(u), mode_t, temp_t)
            if last > first:
                ids = ids.numpy()[:, first - start:last - start]  # (B, last - first)
                yield self._texts(ids)

    def _texts(self, ids: np.ndarray) -> list[str]:
        """The text of each row of ids (B, n)."""
        if self._char_array is None:
            return ["".join(self.chars[i] for i in row) for row in ids]
        codes = np.ascontiguousarray(self._char_array[ids])  # (B, n) of one code point each: UTF-32
        return [row.tobytes().decode("utf-32-le", "surrogatepass") for row in codes]


def generate(model, vocab, model_config, length: int = 4000, prime: str = " ", mode: str = "sample",
             temperature: float = 1.0, seed: int = 0, num_streams: int = 1,
             include_prime: bool = True) -> str | list[str]:
    """One-off convenience: build a :class:`Sampler` and generate (see :meth:`Sampler.generate`)."""
    return Sampler(model, vocab, model_config).generate(length, prime, mode, temperature, seed, num_streams,
                                                        include_prime)


def generate_naive(model, vocab, model_config, length: int = 100, prime: str = " ", mode: str = "sample",
                   temperature: float = 1.0, seed: int = 0, include_prime: bool = True) -> str:
    """The deck's loop, written plainly: one eager model call per character, choice in NumPy.

    Same rules and the same random numbers as :class:`Sampler` (one stream), so both give
    the same text up to float rounding; it is only slow.  A reference for tests and for
    the chapter's timing.
    """
    check_options(mode, temperature, length)
    check_seed(seed)
    check_prime(prime, vocab.chars)
    chars = list(vocab.chars)
    index = {c: i for i, c in enumerate(chars)}
    n_states = model_config.num_states
    states = [tf.zeros((1, model_config.hidden_size)) for _ in range(n_states)]
    for c in prime[:-1]:  # warm the state up on the whole prime
        _, *states = model([tf.constant([[index[c]]], tf.int32), *states], training=False)
    u = uniforms(seed, length, 1)[0]  # (length,)
    char, out = prime[-1], []
    for t in range(length):
        logits, *states = model([tf.constant([[index[char]]], tf.int32), *states], training=False)
        o = np.asarray(logits)[0, -1]  # (K,)
        if mode == "argmax" or (mode == "space" and char != " "):
            k = int(np.argmax(o))
        else:
            p = softmax_with_temperature(o, temperature).astype(np.float32)  # (K,)
            k = weighted_pick(p, u[t])
        char = chars[k]
        out.append(char)
    return (prime if include_prime else "") + "".join(out)
