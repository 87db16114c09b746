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

Reproducibility.  The uniform numbers of a whole generation are drawn up front from
NumPy's generator seeded with ``seed`` (:func:`uniforms`) and passed into the loop, so a
seed fixes the text, and the compiled loop, the plain loop :func:`generate_naive` and a
loop written by hand agree character for character.

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


def uniforms(seed: int, length: int, num_streams: int = 1) -> np.ndarray:
    """The random numbers of a whole generation, drawn up front: (num_streams, length) float32 in (0, 1].

    Column ``j`` is used for the ``j``-th generated character of every stream.  Drawing
    them with NumPy's seeded generator (not inside the graph) makes a seed mean the same
    text in the compiled loop, in the naive loop and in the chapter's hand-written one.
    """
    rng = np.random.default_rng(seed)
    return (1.0 - rng.random((num_streams, length), dtype=np.float32)).astype(np.float32)


class UniformStream:
    """The numbers of ``uniforms(seed, length, num_streams)``, handed out a block of columns at a time.

    ``take(n)`` returns the next ``n`` columns, (num_streams, n) float32, equal to that slice
    of ``uniforms(seed, length, num_streams)``, without holding the whole array: stream ``b``
    gets a generator of its own, moved to where its numbers start in the row-major draw
    (``PCG64.advance`` counts 64-bit outputs, and a float32 uses half of one).  Small
    generations are drawn at once.  (Memory: one block, whatever ``length``.)
    """

    AT_ONCE = 1 << 20  # numbers drawn up front below this many

    def __init__(self, seed: int, length: int, num_streams: int = 1):
        self.length, self.num_streams, self.position = length, num_streams, 0
        self._all = uniforms(seed, length, num_streams) if length * num_streams <= self.AT_ONCE else None
        self._generators = []
        if self._all is None:
            for b in range(num_streams):
                start = b * length                        # in float32 draws of the row-major array
                bits = np.random.PCG64(seed)              # what default_rng(seed) holds
                bits.advance(start // 2)
                generator = np.random.Generator(bits)
                if start % 2:
                    generator.random(1, dtype=np.float32)  # the first half of a 64-bit output
                self._generators.append(generator)

    def take(self, n: int) -> np.ndarray:
        """The next ``n`` columns (fewer at the end): (num_streams, n) float32 in (0, 1]."""
        n = min(n, self.length - self.position)
        if self._all is not None:
            block = self._all[:, self.position:self.position + n]
        else:
            block = np.stack([(1.0 - g.random(n, dtype=np.float32)).astype(np.float32)
                              for g in self._generators]) if n else np.ones((self.num_streams, 0), np.float32)
        self.position += n
        return block


def _choose(logits, prev_ids, u, mode, temperature, space_id):
    """TF version of the three rules.  logits (B, K), prev_ids (B,), u (B,) -> ids (B,) int32."""
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
            chosen = _choose(logits, x, u[:, t], mode, temperature, self.space_id)  # (B,)
            nxt = tf.where(forced[:, t] >= 0, forced[:, t], chosen)
            return t + 1, nxt, states, out.write(t, nxt)

        _, x, states, out = tf.while_loop(cond, body, [tf.constant(0), x, list(states), out])
        return tf.transpose(out.stack(), [1, 0]), x, states  # (B, C), (B,), states

    def generate(self, length: int = 4000, prime: str = " ", mode: str = "sample", temperature: float = 1.0,
                 seed: int = 0, num_streams: int = 1, include_prime: bool = True) -> str | list[str]:
        """Generate ``length`` characters after ``prime``.

        Returns one string (``num_streams == 1``) or a list of ``num_streams`` strings, each
        starting with the prime when ``include_prime`` (as the deck printed it).
        Raises :class:`SamplingError` for bad options and
        :class:`UnknownPrimeCharactersError` naming prime characters outside the vocabulary.
        """
        check_options(mode, temperature, length, num_streams)
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
        jit = self.jit_compile if self.jit_compile is not None else B <= self.XLA_MAX_STREAMS
        run_chunk = self._compiled[bool(jit)]
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
        jit = self.jit_compile if self.jit_compile is not None else B <= self.XLA_MAX_STREAMS
        run_chunk = self._compiled[bool(jit)]
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
