"""A small decoder-only character Transformer, and generation with a key/value cache.

The capstone chapter sets this model beside the book's LSTM at the same parameter count
and the same wall-clock budget.  It is a GPT in miniature (the layout of nanoGPT's
``model.py``): token embedding + learned position embedding -> ``num_layers`` pre-LayerNorm
blocks -> final LayerNorm -> a Dense layer to the ``K`` logits.  Each block is

    x = x + Dropout(Attention(LayerNorm(x)))        # mixes information across positions
    x = x + Dropout(MLP(LayerNorm(x)))              # d -> mlp_ratio * d -> d, GELU, per position

Causal self-attention.  Every position ``t`` maps its vector ``x_t`` to a query ``q_t``, a
key ``k_t`` and a value ``v_t`` (three Dense layers).  Its output is a weighted mean of the
values of the positions it may see,

    y_t = sum_{j <= t} softmax_j(q_t . k_j / sqrt(d_head)) v_j,

followed by one more Dense layer.  "It may see" is the causal mask: the score of every
key ``j > t`` gets ``-inf`` added before the softmax, so its weight is ``exp(-inf) = 0``
and the prediction of character ``t + 1`` cannot peek at it.  ``num_heads`` heads do this
side by side, each in its own ``d_head = d_model / num_heads`` dimensions, and their outputs
are concatenated.  Dividing by ``sqrt(d_head)`` keeps the scores' variance near 1 at
initialisation, so the softmax starts soft rather than saturated.

Why training is parallel over time.  No position's output depends on another position's
*output*, only on the inputs before it: there is no ``h_{t-1} -> h_t`` recurrence.  A
(batch, time) batch therefore goes through the network in a few large matrix products
(the scores are one (time x time) product per head) and yields all ``time`` next-character
predictions at once, where an RNN must take ``time`` sequential steps.  The price is the
(time x time) score matrix: attention costs O(time^2 d) per sequence.

Why generation needs a growing cache.  Generating is sequential whatever the model: the
next input is the character just chosen.  Rerunning the whole prefix for every new
character would cost O(t) projections and O(t^2) attention at step ``t``.  But thanks to
the mask the keys and values of past positions never change when a character is
appended (position ``j``'s ``k_j``, ``v_j`` depend only on characters ``<= j``), so they can
be kept: the *KV cache*, one key and one value vector per layer and position,
2 x num_layers x t x d_model numbers (:func:`cache_bytes`).  A new character then costs its
own projections and MLP (as an RNN step does) plus *one query against the t cached keys*.
Both the cache's memory and that per-character cost grow linearly with the context read so
far.  An RNN is the opposite trade: its state is a fixed num_layers x hidden vector (two
for an LSTM) and each character costs the same, however long the text -- but all it
remembers must fit into that state, while the Transformer keeps every one of the last
``context`` positions verbatim.

Beyond the context.  The learned position embedding has ``context`` rows, so the model
never sees more than ``context`` characters.  :class:`TransformerSampler` slides the window
by *re-priming*: when the cache is full, it keeps the last ``keep`` characters, recomputes
their keys and values at positions ``0 .. keep - 1`` in one parallel pass (positions stay
correct: every cached key was computed at the position it now occupies) and goes on one
character at a time.  ``keep = context - 1`` (the default) is exact: every character past
the context is predicted from exactly the last ``context`` characters, as nanoGPT's
``generate`` does by cropping, at the price of a full pass per character once the context
is full.  A smaller ``keep`` (e.g. ``context // 2``) re-primes only every
``context - keep`` characters; the window then shrinks to ``keep + 1`` characters after each
re-prime and grows back.  (Simply dropping the oldest cached keys instead would be wrong:
the kept keys were computed at their old positions and, from the second layer on, with
attention to the characters dropped.)

Shapes: ids (batch, time) int32, time <= context; activations (batch, time, d_model);
per head (batch, heads, time, d_head); logits (batch, time, K).  The cache is a list with
one ``(keys, values)`` pair per layer, each (batch, heads, positions, d_head) float32; the
XLA-compiled generation loop preallocates it instead as one (layers, 2, batch, heads,
context, d_head) buffer, written a slot per character (``TransformerSampler``).
Training is the book's own: ``charrnn_lib.train.train`` builds the model from its
``TransformerConfig`` and runs the reference step (``keras_loss_and_grads``) with no state to
carry (``states=[]``; ``charrnn_lib.architecture.forward``).
"""
from __future__ import annotations

import math
import numbers

import keras
import numpy as np
import tensorflow as tf

from charrnn_lib.config import TransformerConfig  # noqa: F401  (defined with the other configurations)
from charrnn_lib.sample import MODES, SamplingError, check_options, check_prime, choose_next, uniforms

__all__ = ["Block", "CausalSelfAttention", "CharTransformer", "TransformerConfig", "TransformerSampler",
           "build_transformer", "cache_bytes", "causal_mask",
           "transformer_parameter_count"]

LAYER_NORM_EPSILON = 1e-5   # nanoGPT's (PyTorch's default); Keras's default is 1e-3
INIT_STDDEV = 0.02          # GPT-2's initialisation: N(0, 0.02) weights, zero biases


# --------------------------------------------------------------------------- the layers


def causal_mask(queries, keys):
    """The additive causal mask: (queries, keys) float32 of 0 (may attend) and -inf (may not).

    The queries are the *last* ``queries`` of ``keys`` positions: query ``i`` sits at
    position ``keys - queries + i`` and sees the keys at positions up to its own.  With
    ``queries == keys`` it is lower-triangular (4 x 4: row t has t + 1 zeros, then -inf);
    one new query against ``n`` cached keys plus its own is a row of zeros.
    """
    offset = keys - queries
    allowed = tf.range(keys)[None, :] <= offset + tf.range(queries)[:, None]   # (queries, keys)
    return tf.where(allowed, 0.0, -math.inf)


def _dense(units, stddev, name):
    return keras.layers.Dense(units, kernel_initializer=keras.initializers.RandomNormal(stddev=stddev),
                              bias_initializer="zeros", name=name)


class CausalSelfAttention(keras.layers.Layer):
    """Multi-head causal self-attention with its own q, k, v and output projections.

    ``call(x)`` runs a whole sequence; ``call_cached(x, past_k, past_v)`` runs new positions
    against a growing cache of keys and values, ``call_slot`` one position against a
    preallocated one: three uses of the same weights.
    """

    def __init__(self, d_model, num_heads, dropout=0.0, out_stddev=INIT_STDDEV, **kwargs):
        super().__init__(**kwargs)
        self.d_model, self.num_heads, self.d_head = d_model, num_heads, d_model // num_heads
        self.query = _dense(d_model, INIT_STDDEV, "query")
        self.key = _dense(d_model, INIT_STDDEV, "key")
        self.value = _dense(d_model, INIT_STDDEV, "value")
        self.out = _dense(d_model, out_stddev, "out")
        self.attention_dropout = keras.layers.Dropout(dropout)

    def build(self, input_shape):
        for layer in (self.query, self.key, self.value, self.out):
            layer.build(input_shape)

    def _split_heads(self, x):                       # (batch, time, d_model) -> (batch, heads, time, d_head)
        shape = tf.shape(x)
        x = tf.reshape(x, [shape[0], shape[1], self.num_heads, self.d_head])
        return tf.transpose(x, [0, 2, 1, 3])

    def _merge_heads(self, x):                       # (batch, heads, time, d_head) -> (batch, time, d_model)
        x = tf.transpose(x, [0, 2, 1, 3])
        shape = tf.shape(x)
        return tf.reshape(x, [shape[0], shape[1], self.d_model])

    def _attend(self, q, k, v, mask, training=None):
        """softmax(q k^T / sqrt(d_head) + mask) v.  q (b, h, Tq, dh); k, v (b, h, Tk, dh); mask (Tq, Tk)."""
        scores = tf.matmul(q, k, transpose_b=True) / math.sqrt(self.d_head)     # (b, h, Tq, Tk)
        scores = scores + mask                                                  # -inf: may not look
        weights = tf.nn.softmax(scores, axis=-1)                                # rows sum to 1
        weights = self.attention_dropout(weights, training=training)
        return tf.matmul(weights, v)                                            # (b, h, Tq, dh)

    def call(self, x, training=None):                # x (batch, time, d_model)
        q = self._split_heads(self.query(x))         # (batch, heads, time, d_head)
        k = self._split_heads(self.key(x))
        v = self._split_heads(self.value(x))
        mask = causal_mask(tf.shape(x)[1], tf.shape(x)[1])                      # (time, time): -inf above the diagonal
        return self.out(self._merge_heads(self._attend(q, k, v, mask, training)))   # (batch, time, d_model)

    def call_cached(self, x, past_k, past_v):
        """New positions ``x`` (b, Tn, d_model) after ``n`` cached ones (b, h, n, dh).

        Returns the output (b, Tn, d_model) and the keys and values of all n + Tn positions.
        """
        k = tf.concat([past_k, self._split_heads(self.key(x))], axis=2)        # (b, h, n + Tn, dh)
        v = tf.concat([past_v, self._split_heads(self.value(x))], axis=2)
        q = self._split_heads(self.query(x))                                    # (b, h, Tn, dh)
        mask = causal_mask(tf.shape(q)[2], tf.shape(k)[2])                      # (Tn, n + Tn)
        return self.out(self._merge_heads(self._attend(q, k, v, mask))), k, v

    def call_slot(self, x, k_buffer, v_buffer, n):
        """One new position ``x`` (b, 1, d_model) at position ``n``, with a preallocated cache.

        ``k_buffer``, ``v_buffer`` (b, h, C, dh) hold positions 0 .. n-1 in their first slots;
        the new key and value go into slot ``n`` and the query attends to slots 0 .. n (the
        later, empty slots are masked).  Fixed shapes: what XLA needs.
        """
        slots = tf.range(tf.shape(k_buffer)[2])                                  # (C,)
        here = tf.equal(slots, n)[:, None]                                       # (C, 1): slot n
        k = tf.where(here, self._split_heads(self.key(x)), k_buffer)             # (b, h, C, dh)
        v = tf.where(here, self._split_heads(self.value(x)), v_buffer)
        mask = tf.where(slots <= n, 0.0, -math.inf)[None, :]                     # (1, C)
        q = self._split_heads(self.query(x))                                     # (b, h, 1, dh)
        return self.out(self._merge_heads(self._attend(q, k, v, mask))), k, v


class Block(keras.layers.Layer):
    """One pre-LayerNorm Transformer block: attention, then an MLP, each added to the residual stream."""

    def __init__(self, config: TransformerConfig, **kwargs):
        super().__init__(**kwargs)
        d = config.d_model
        residual_stddev = INIT_STDDEV / math.sqrt(2 * config.num_layers)   # GPT-2: the residual sum stays ~unit
        self.ln1 = keras.layers.LayerNormalization(epsilon=LAYER_NORM_EPSILON, name="ln1")
        self.attention = CausalSelfAttention(d, config.num_heads, config.dropout, residual_stddev, name="attention")
        self.ln2 = keras.layers.LayerNormalization(epsilon=LAYER_NORM_EPSILON, name="ln2")
        self.fc = _dense(config.mlp_ratio * d, INIT_STDDEV, "fc")
        self.proj = _dense(d, residual_stddev, "proj")
        self.residual_dropout = keras.layers.Dropout(config.dropout)

    def build(self, input_shape):                    # (batch, time, d_model)
        self.ln1.build(input_shape)
        self.attention.build(input_shape)
        self.ln2.build(input_shape)
        self.fc.build(input_shape)
        self.proj.build((*input_shape[:-1], self.fc.units))

    def _mlp(self, x, training=None):                # (batch, time, d) -> (batch, time, d)
        hidden = tf.nn.gelu(self.fc(self.ln2(x)), approximate=False)   # (batch, time, mlp_ratio * d)
        return self.residual_dropout(self.proj(hidden), training=training)

    def call(self, x, training=None):                # x (batch, time, d_model)
        x = x + self.residual_dropout(self.attention(self.ln1(x), training=training), training=training)
        return x + self._mlp(x, training)

    def call_cached(self, x, past_k, past_v):
        y, k, v = self.attention.call_cached(self.ln1(x), past_k, past_v)
        x = x + y
        return x + self._mlp(x), k, v

    def call_slot(self, x, k_buffer, v_buffer, n):
        y, k, v = self.attention.call_slot(self.ln1(x), k_buffer, v_buffer, n)
        x = x + y
        return x + self._mlp(x), k, v


class CharTransformer(keras.Model):
    """ids (batch, time) -> logits (batch, time, K); ``call_cached`` and ``call_slot`` for
    generation with a cache (growing, or preallocated for the compiled loop)."""

    def __init__(self, config: TransformerConfig, **kwargs):
        super().__init__(**{"name": "char_transformer", **kwargs})
        self.transformer_config = config
        init = keras.initializers.RandomNormal(stddev=INIT_STDDEV)
        self.token_embedding = keras.layers.Embedding(config.vocab_size, config.d_model,
                                                      embeddings_initializer=init, name="token_embedding")
        self.position_embedding = keras.layers.Embedding(config.context, config.d_model,
                                                         embeddings_initializer=init, name="position_embedding")
        self.embedding_dropout = keras.layers.Dropout(config.dropout)
        self.blocks = [Block(config, name=f"block_{i}") for i in range(config.num_layers)]
        self.ln_f = keras.layers.LayerNormalization(epsilon=LAYER_NORM_EPSILON, name="ln_f")
        self.head = _dense(config.vocab_size, INIT_STDDEV, "logits")

    def _embed(self, ids, start):
        """Token + position embeddings of ids (batch, time) at positions start .. start + time - 1."""
        positions = start + tf.range(tf.shape(ids)[1])                                   # (time,)
        return self.token_embedding(ids) + self.position_embedding(positions)[None]     # (batch, time, d)

    def call(self, ids, training=None):
        time = ids.shape[1] if len(ids.shape) == 2 else None
        if time is not None and time > self.transformer_config.context:
            raise ValueError(f"the model reads at most context={self.transformer_config.context} "
                             f"positions, got {time}")
        x = self.embedding_dropout(self._embed(ids, 0), training=training)   # (batch, time, d_model)
        for block in self.blocks:
            x = block(x, training=training)                                   # (batch, time, d_model)
        return self.head(self.ln_f(x))                                        # (batch, time, K)

    def call_cached(self, ids, cache):
        """New ids (batch, Tn) after the cached positions -> (logits (batch, Tn, K), new cache).

        ``cache``: one ``(keys, values)`` pair per layer, each (batch, heads, n, d_head); n may
        be 0.  The new ids sit at positions n .. n + Tn - 1, which must stay below ``context``.
        """
        x = self._embed(ids, tf.shape(cache[0][0])[2])                        # (batch, Tn, d_model)
        new_cache = []
        for block, (past_k, past_v) in zip(self.blocks, cache):
            x, k, v = block.call_cached(x, past_k, past_v)
            new_cache.append((k, v))                                          # (batch, heads, n + Tn, d_head)
        return self.head(self.ln_f(x)), new_cache

    def call_slot(self, ids, buffer, n):
        """One id per stream, ids (batch,), at position ``n``, with a preallocated cache ``buffer``
        (layers, 2, batch, heads, context, d_head) -> (logits (batch, K), the buffer with slot n written)."""
        x = self._embed(ids[:, None], n)                                      # (batch, 1, d_model)
        written = []
        for i, block in enumerate(self.blocks):
            x, k, v = block.call_slot(x, buffer[i, 0], buffer[i, 1], n)
            written.append(tf.stack([k, v]))                                  # (2, batch, heads, context, d_head)
        return self.head(self.ln_f(x))[:, 0], tf.stack(written)

    def empty_cache(self, batch_size: int = 1) -> list:
        """A cache with no positions: per layer (keys, values), each (batch, heads, 0, d_head)."""
        c = self.transformer_config
        empty = tf.zeros((batch_size, c.num_heads, 0, c.d_head))
        return [(empty, empty) for _ in range(c.num_layers)]

    def get_config(self):
        return {**super().get_config(), "config": self.transformer_config.to_dict()}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        return cls(TransformerConfig.from_dict(config.pop("config")), **config)


def build_transformer(config: TransformerConfig) -> CharTransformer:
    """A built :class:`CharTransformer` (weights created, from Keras's global seed)."""
    model = CharTransformer(config)
    model(tf.zeros((1, 1), tf.int32))     # creates every weight
    return model


def transformer_parameter_count(config: TransformerConfig) -> int:
    """Closed-form number of trainable parameters of ``build_transformer(config)``.

    Embeddings ``K d`` (tokens) + ``context d`` (positions); per block two LayerNorms
    (``2 d`` each), four ``d -> d`` projections with biases (``4 (d^2 + d)``) and the MLP
    (``d r d + r d`` in, ``r d d + d`` out); the final LayerNorm ``2 d``; the logits ``d K + K``.
    """
    K, d, C, r = config.vocab_size, config.d_model, config.context, config.mlp_ratio
    block = 2 * 2 * d + 4 * (d * d + d) + (d * r * d + r * d) + (r * d * d + d)
    return K * d + C * d + config.num_layers * block + 2 * d + d * K + K


def cache_bytes(config: TransformerConfig, positions: int, batch: int = 1) -> int:
    """Bytes of a float32 KV cache holding ``positions`` positions for ``batch`` streams:
    a key and a value of ``d_model`` numbers per layer and position, ``2 L batch positions d 4``.

    (The recurrent state of an LSTM is ``2 L batch H 4`` bytes, whatever the position.)
    """
    for name, value in (("positions", positions), ("batch", batch)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
            raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
    return 2 * config.num_layers * batch * positions * config.d_model * 4


# --------------------------------------------------------------------------- generation


class TransformerSampler:
    """Generation with a KV cache; build once, call :meth:`generate` many times.

    Two forms of the same arithmetic:

    * :meth:`prefill` and :meth:`step`, the cache as the module docstring describes it: a
      list of per-layer (keys, values), (batch, heads, n, d_head), that grows by one
      position per character, each new character one query against the ``n`` cached keys.
      ``call_cached`` under one ``tf.function`` (time and positions left free) serves both
      the prime (all its characters in one parallel pass) and each step.  Readable, and
      what the tests hold against the full model; but one call per character, each costing
      milliseconds of dispatch for a few hundred thousand FLOPs.
    * :meth:`generate` / :meth:`generate_ids` run the steps inside one XLA-compiled
      ``tf.while_loop``, as ``charrnn_lib.sample.Sampler`` does for the LSTM.  XLA needs fixed
      shapes, so there the cache is preallocated, one (layers, 2, batch, heads, context,
      d_head) buffer; step ``n`` writes slot ``n`` and its query attends to slots ``0 .. n``
      (the empty rest is masked).  Each character then costs attention over all ``context``
      slots, however many are filled.

    The prime goes through :meth:`prefill`; the next character is chosen by
    ``charrnn_lib.sample``'s rules (modes "argmax", "sample", "space", temperature) inside the
    loop, with the seed's uniform numbers drawn up front: the same seed gives the same text.
    ``keep``: how many characters are kept when the window slides (module docstring);
    ``context - 1`` by default (exact sliding window).
    """

    def __init__(self, model: CharTransformer, vocab, config: TransformerConfig, keep: int | None = None):
        self.model, self.vocab, self.config = model, vocab, config
        self.chars = list(vocab.chars)
        self.space_id = self.chars.index(" ") if " " in self.chars else -1
        self.keep = config.context - 1 if keep is None else keep
        if isinstance(self.keep, bool) or not isinstance(self.keep, numbers.Integral) \
                or not 0 <= self.keep <= config.context - 1:
            raise ValueError(f"keep must be an integer in [0, context - 1 = {config.context - 1}], got {keep!r}")
        part = tf.TensorSpec((None, config.num_heads, None, config.d_head), tf.float32)
        signature = [tf.TensorSpec((None, None), tf.int32), [(part, part)] * config.num_layers]
        self._run = tf.function(model.call_cached, input_signature=signature, autograph=False)
        self._buffer = tf.function(self._prefill_buffer, input_signature=signature[:1], autograph=False)
        self._loop = tf.function(self._segment, jit_compile=True, autograph=False)

    # ---- the growing cache, one call per character

    def prefill(self, ids):
        """ids (batch, T), T <= context, at positions 0 .. T-1 -> (logits (batch, T, K), cache)."""
        ids = tf.convert_to_tensor(ids, tf.int32)
        if not 1 <= ids.shape[1] <= self.config.context:
            raise ValueError(f"prefill takes 1 to context={self.config.context} ids, got {ids.shape[1]}")
        return self._run(ids, self.model.empty_cache(ids.shape[0]))

    def step(self, ids, cache):
        """One new id per stream, ids (batch,), after the n cached positions -> (logits (batch, K), cache)."""
        n = cache[0][0].shape[2]
        if n >= self.config.context:
            raise ValueError(f"the cache is full ({n} = context positions): slide the window first")
        logits, cache = self._run(tf.reshape(tf.convert_to_tensor(ids, tf.int32), (-1, 1)), cache)
        return logits[:, 0], cache

    # ---- the compiled loop over a preallocated cache

    def _prefill_buffer(self, ids):
        """ids (batch, n), n >= 1 -> the buffer (layers, 2, batch, heads, context, d_head), slots < n filled."""
        _, cache = self.model.call_cached(ids, self.model.empty_cache(tf.shape(ids)[0]))
        free = self.config.context - tf.shape(ids)[1]
        return tf.stack([tf.pad(tf.stack(kv), [[0, 0], [0, 0], [0, 0], [0, free], [0, 0]]) for kv in cache])

    def buffer(self, ids):
        """The preallocated cache after reading ids (batch, n), 0 <= n < context, at positions 0 .. n-1."""
        ids = np.asarray(ids, np.int32)
        if ids.shape[1] == 0:
            c = self.config
            return tf.zeros((c.num_layers, 2, ids.shape[0], c.num_heads, c.context, c.d_head))
        return self._buffer(tf.constant(ids))

    def _segment(self, x, buffer, n, steps, u, mode, temperature):
        """Feed x (B,) at position n, choose the next id, feed it at n + 1, ... ``steps`` times.

        u (B, context): the uniform numbers of the (at most context) steps.  Returns the chosen
        ids (context, B), the logits they were chosen from (context, B, K) -- rows past
        ``steps`` unused -- and the last id chosen (B,).
        """
        C = self.config.context
        ids = tf.TensorArray(tf.int32, size=C, element_shape=x.shape)
        logits_seen = tf.TensorArray(tf.float32, size=C, element_shape=(x.shape[0], self.config.vocab_size))

        def body(t, x, buffer, ids, logits_seen):
            logits, buffer = self.model.call_slot(x, buffer, n + t)                    # (B, K)
            chosen = choose_next(logits, x, u[:, t], mode, temperature, self.space_id)  # (B,)
            return t + 1, chosen, buffer, ids.write(t, chosen), logits_seen.write(t, logits)

        _, x, _, ids, logits_seen = tf.while_loop(lambda t, *_: t < steps, body,
                                                  [tf.constant(0), x, buffer, ids, logits_seen])
        return ids.stack(), logits_seen.stack(), x

    def window_start(self, start: int, index: int) -> int:
        """Where the window begins once the character at ``index`` is fed, if it began at ``start``.

        The window is ``text[start : index + 1]``; when that would exceed ``context``
        characters, it restarts ``keep`` characters before ``index``.
        """
        return index - self.keep if index - start + 1 > self.config.context else start

    def generate_ids(self, prime_ids, length: int, mode: str = "sample", temperature: float = 1.0,
                     seed: int = 0):
        """``length`` ids after ``prime_ids`` -> (ids (length,) int32, logits (length, K) float32).

        ``logits[t]`` are the ones the ``t``-th id was chosen from: the model's last-position
        logits for the current window of the text.  The loop runs in segments: the window
        before the next input is prefilled, then the compiled loop runs until the cache is
        full (or ``length`` is reached), then the window slides.
        """
        check_options(mode, temperature, length)
        text, C = [int(i) for i in prime_ids], self.config.context
        if not text:
            raise SamplingError("prime must not be empty")
        start = 0
        for index in range(len(text)):
            start = self.window_start(start, index)
        u = np.ones((1, length + C), np.float32)
        u[:, :length] = uniforms(seed, length, 1)
        mode_t, temperature_t = tf.constant(MODES.index(mode)), tf.constant(temperature, tf.float32)
        ids, logits, done = np.zeros(length, np.int32), np.zeros((length, self.config.vocab_size), np.float32), 0
        while done < length:
            i = len(text) - 1                                # the next input; text[start:i] is cached
            n = i - start
            steps = min(length - done, C - n)
            chosen, seen, _ = self._loop(tf.constant([text[i]]), self.buffer([text[start:i]]), tf.constant(n),
                                         tf.constant(steps), tf.constant(u[:, done:done + C]), mode_t,
                                         temperature_t)
            ids[done:done + steps] = chosen.numpy()[:steps, 0]
            logits[done:done + steps] = seen.numpy()[:steps, 0]
            text += ids[done:done + steps].tolist()
            done += steps
            start = self.window_start(start, len(text) - 1)   # full: slides (unless done)
        return ids, logits

    def generate(self, length: int = 1000, prime: str = " ", mode: str = "sample", temperature: float = 1.0,
                 seed: int = 0, include_prime: bool = True) -> str:
        """``length`` characters after ``prime`` (modes as ``charrnn_lib.sample``: "argmax",
        "sample", "space"); the text starts with the prime when ``include_prime``."""
        check_options(mode, temperature, length)
        check_prime(prime, self.chars)
        if mode == "space" and self.space_id < 0:
            raise SamplingError("mode 'space' needs a space character in the vocabulary; use 'sample' or 'argmax'")
        ids, _ = self.generate_ids(self.vocab.encode(prime), length, mode, temperature, seed)
        return (prime if include_prime else "") + "".join(self.chars[i] for i in ids)
