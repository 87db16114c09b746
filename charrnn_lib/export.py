"""Exporting a trained char-rnn as a TensorFlow SavedModel: the model without the library.

A SavedModel is a folder of TensorFlow graphs and variables that TensorFlow alone can load
(``tf.saved_model.load``) and run: no Python code of ours, no Keras, no checkpoint format
to know.  :func:`export_model` writes one with two serving signatures:

* ``step``: ``ids`` (B,) int32 and ``state`` (n_states, B, H) float32 -> ``logits`` (B, K)
  float32 and the new ``state`` (n_states, B, H).  One character step of every stream; the
  state is the model's states stacked in layer order (``h`` before ``s`` for an LSTM: the
  layout of a checkpoint's ``state.npy``), zeros to start (the model's ``initial_state(B)``
  gives them).  ``n_states`` and ``H`` are fixed in the signature's input spec; B is free.
* ``generate``: ``prime`` (string), ``length`` (int32), ``temperature`` (float32), ``seed``
  (int64), ``mode`` (string: "argmax", "sample" or "space") -> ``text`` (string): the
  prime followed by ``length`` generated characters -- the text of
  ``charrnn_lib.sample.Sampler.generate(length, prime, mode, temperature, seed)``,
  character for character on the same machine and device (another CPU or a GPU computes
  the logits with other kernels, as the library itself would there).  It holds the whole
  text and its random numbers in memory; for endless text, loop over ``step``.

Why the text is the same.  Everything that decides a character runs the library's own
code, traced into the SavedModel: the step is :class:`charrnn_lib.sample.Stepper` (the
model's embedding, cells and output layer), the loop is the sampler's compiled chunk
(:meth:`~charrnn_lib.sample.Sampler.chunk_function`: the same ``tf.while_loop``, the same
XLA compilation, the same :func:`~charrnn_lib.sample.choose_next`), and the random numbers
are :func:`~charrnn_lib.sample.uniform_blocks` -- stateless Philox keyed by (seed, block),
which a graph computes bit for bit as the library does.  Only what the library does in
Python -- the prime's ids, padding the chunks, the text of the ids -- is written again here
in TensorFlow ops.

The vocabulary is inside (``vocabulary``: the characters, id order; ``model_config``: the
``ModelConfig`` as JSON), and bad inputs fail inside the graph with a message that says
what to do (``tf.debugging.Assert``, raised as ``tf.errors.InvalidArgumentError``):
characters the model never saw (named), an empty prime, a negative length or seed, a
temperature below ``MIN_TEMPERATURE`` or not finite, an unknown mode, ids outside the
vocabulary.  The folder is written atomically -- into a temporary sibling, then renamed --
so a failed export leaves nothing behind, and an existing non-empty folder is never
overwritten.  Loading needs TensorFlow only::

    import tensorflow as tf
    generator = tf.saved_model.load("exported/shakespeare")
    text = generator.signatures["generate"](prime=tf.constant("ROMEO:"), length=tf.constant(400),
                                            temperature=tf.constant(0.8), seed=tf.constant(1, tf.int64),
                                            mode=tf.constant("sample"))["text"].numpy().decode()

The recurrent models only: a Transformer (``charrnn_lib.transformer``) has a key/value
cache, not a state, and is refused (:class:`ExportError`).
"""
from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
from pathlib import Path

import tensorflow as tf

from charrnn_lib.config import MIN_TEMPERATURE, MODES, TransformerConfig
from charrnn_lib.sample import UNIFORM_BLOCK, Sampler, Stepper, uniform_blocks

__all__ = ["ExportError", "ExportModule", "check_out_dir", "export_checkpoint", "export_model"]


class ExportError(ValueError):
    """The model cannot be exported there: a Transformer, or ``out_dir`` exists and is not empty."""


def check_out_dir(out_dir) -> None:
    """Raise :class:`ExportError` unless ``out_dir`` is new or an empty folder."""
    out = Path(out_dir)
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise ExportError(f"{str(out)!r} exists and is not a folder; give the path of a new folder")
    if out.is_dir() and any(out.iterdir()):
        raise ExportError(f"{str(out)!r} exists and is not empty; give a new folder (an export never "
                          f"overwrites: delete it first to replace it)")


def _message(*parts):
    """One string tensor from Python strings and string tensors: an ``Assert``'s message.

    (``Assert`` prints its message C-escaped, so the messages avoid quote marks.)
    """
    return tf.strings.join([tf.convert_to_tensor(p, tf.string) for p in parts])


def _code_point_names(code):
    """(n,) int32 code points -> (n,) strings ``"x U+0078"``: each character and its code point
    (which shows what a space, a control character or a look-alike really is)."""
    digits = tf.constant(list("0123456789ABCDEF"))
    hexed = tf.strings.reduce_join(tf.gather(digits, tf.stack([(code // 16**k) % 16 for k in range(5, -1, -1)],
                                                                axis=1)), axis=1)  # (n,) six hex digits
    hexed = tf.where(code > 0xFFFFF, hexed, tf.where(code > 0xFFFF, tf.strings.substr(hexed, 1, 5),
                                                       tf.strings.substr(hexed, 2, 4)))
    return tf.strings.join([tf.strings.unicode_encode(code[:, None], "UTF-8"), " U+", hexed])


class ExportModule(tf.Module):
    """What the SavedModel holds: the signatures' functions, the vocabulary, the weights.

    Built from a Keras model of ``charrnn_lib.model.build_model``; the functions are traced
    here, and only TensorFlow objects are kept (the weights as the ``tf.Variable`` objects
    the traces read), so the saved graph refers to no Python of ours.
    """

    def __init__(self, model, vocab, model_config, chunk: int = 256):
        super().__init__(name="charrnn")
        chars = list(vocab.chars)
        K, H, n_states = len(chars), model_config.hidden_size, model_config.num_states
        self.vocabulary = tf.Variable(chars, dtype=tf.string, trainable=False, name="vocabulary")  # (K,)
        self.model_config = tf.Variable(json.dumps(model_config.to_dict()), dtype=tf.string, trainable=False,
                                        name="model_config")
        sampler = Sampler(model, vocab, model_config, chunk=chunk)
        stepper = Stepper(model, model_config)
        run_chunk = sampler.chunk_function(1)  # the library's compiled chunk for one stream (XLA)
        points = tf.constant([ord(c) for c in chars], tf.int32)  # (K,) code points, id order
        space_id = sampler.space_id
        C = sampler.chunk

        @tf.function(autograph=False, input_signature=[
            tf.TensorSpec([None], tf.int32, name="ids"), tf.TensorSpec([n_states, None, H], tf.float32, name="state")])
        def step(ids, state):
            """ids (B,) int32, state (n_states, B, H) -> {"logits": (B, K), "state": (n_states, B, H)}."""
            checks = [
                tf.debugging.Assert(tf.reduce_all((ids >= 0) & (ids < K)), [_message(
                    f"ids must be character ids in [0, {K}) (positions in the vocabulary), got ",
                    tf.strings.format("{}", ids, summarize=10))]),
                tf.debugging.Assert(tf.equal(tf.shape(state)[1], tf.shape(ids)[0]), [_message(
                    f"state must have shape ({n_states}, B, {H}) with B = the number of ids, got ",
                    tf.strings.format("{}", tf.shape(state)), " for ", tf.strings.format("{}", tf.shape(ids)),
                    " ids (start from zeros)")]),
            ]
            with tf.control_dependencies(checks):
                ids, state = tf.identity(ids), tf.identity(state)
            logits, new_states = stepper(ids, tf.unstack(state, num=n_states))  # (B, K), [(B, H)] * n_states
            return {"logits": logits, "state": tf.stack(new_states)}

        @tf.function(autograph=False, input_signature=[tf.TensorSpec([], tf.int32, name="batch_size")])
        def initial_state(batch_size):
            """The state to start from: zeros (n_states, batch_size, H)."""
            return tf.zeros(tf.stack([n_states, batch_size, H]))

        @tf.function(autograph=False, input_signature=[
            tf.TensorSpec([], tf.string, name="prime"), tf.TensorSpec([], tf.int32, name="length"),
            tf.TensorSpec([], tf.float32, name="temperature"), tf.TensorSpec([], tf.int64, name="seed"),
            tf.TensorSpec([], tf.string, name="mode")])
        def generate(prime, length, temperature, seed, mode):
            """{"text": the prime and ``length`` characters after it}; Sampler.generate's text."""
            code = tf.strings.unicode_decode(prime, "UTF-8", errors="replace")  # (P,) code points
            matches = tf.equal(code[:, None], points[None, :])  # (P, K)
            known = tf.reduce_any(matches, axis=1)  # (P,)
            unknown = tf.sort(tf.unique(tf.boolean_mask(code, ~known)).y)  # sorted, as check_prime names them
            named = tf.strings.reduce_join(_code_point_names(unknown), separator=", ")
            is_mode = tf.equal(mode, tf.constant(MODES))  # (3,)
            checks = [
                tf.debugging.Assert(tf.size(code) > 0, [
                    "prime must be a non-empty string (the deck primed with a single space)"]),
                tf.debugging.Assert(tf.reduce_all(known), [_message(
                    "the prime contains ", tf.strings.as_string(tf.size(unknown)),
                    " character(s) not in the vocabulary of the model: ", named,
                    "; remove them or prime with characters of the training corpus (the vocabulary variable of "
                    "the SavedModel lists them; the corpora are NFC-normalised)")]),
                tf.debugging.Assert(length >= 0, [_message(
                    "length must be a non-negative integer, got ", tf.strings.as_string(length))]),
                tf.debugging.Assert(tf.math.is_finite(temperature) & (temperature >= MIN_TEMPERATURE), [_message(
                    f"temperature must be a finite number >= {MIN_TEMPERATURE:g}: below that softmax(logits / T_s) "
                    f"degenerates (mode argmax is the limit T_s -> 0), got ",
                    tf.strings.as_string(temperature, shortest=True))]),
                tf.debugging.Assert(seed >= 0, [_message(
                    "seed must be an integer from 0 to 2**63 - 1, got ", tf.strings.as_string(seed))]),
                tf.debugging.Assert(tf.reduce_any(is_mode), [_message(
                    f"mode must be {', '.join(MODES[:-1])} or {MODES[-1]}, got ", mode)]),
                tf.debugging.Assert(tf.logical_or(tf.not_equal(mode, "space"), space_id >= 0), [
                    "mode space needs a space character in the vocabulary; use sample or argmax"]),
            ]
            with tf.control_dependencies(checks):  # nothing below runs on inputs that failed a check
                prime_ids = tf.argmax(tf.cast(matches, tf.int32), axis=1, output_type=tf.int32)  # (P,)
                length, seed, temperature = tf.identity(length), tf.identity(seed), tf.identity(temperature)
                mode_id = tf.argmax(tf.cast(is_mode, tf.int32), output_type=tf.int32)  # index in MODES
            # As Sampler.generate: step t reads input t and yields input t + 1; the first P - 1
            # steps are forced to the prime's next character, the others choose with u.
            P = tf.size(prime_ids)
            steps = P - 1 + length
            n_chunks = (steps + C - 1) // C
            padded = n_chunks * C
            n_blocks = (length + UNIFORM_BLOCK - 1) // UNIFORM_BLOCK
            u_generated = uniform_blocks(seed, tf.constant(0, tf.int64), n_blocks, 1)[0, :length]  # (length,)
            u = tf.concat([tf.ones([P - 1]), u_generated, tf.ones([padded - steps])], axis=0)  # (padded,)
            forced = tf.concat([prime_ids[1:], tf.fill([padded - (P - 1)], -1)], axis=0)  # (padded,)
            u, forced = tf.reshape(u, [n_chunks, 1, C]), tf.reshape(forced, [n_chunks, 1, C])

            def body(k, x, states, out):
                ids, x, states = run_chunk(x, states, forced[k], u[k], mode_id, temperature)  # ids (1, C)
                return k + 1, x, states, out.write(k, ids[0])

            out = tf.TensorArray(tf.int32, size=n_chunks, element_shape=[C])
            zeros = [tf.zeros([1, H]) for _ in range(n_states)]
            _, _, _, out = tf.while_loop(lambda k, *_: k < n_chunks, body,
                                         [tf.constant(0), tf.reshape(prime_ids[:1], [1]), zeros, out])
            ids = out.concat()[P - 1:steps]  # (length,) the generated ids
            return {"text": prime + tf.strings.unicode_encode(tf.gather(points, ids), "UTF-8")}

        self.step, self.initial_state, self.generate = step, initial_state, generate
        # The weights: the tf.Variable objects the traces read, kept so that the SavedModel has them.
        seen = {}
        for function in self.serving_signatures().values():
            for variable in function.variables:
                seen.setdefault(id(variable), variable)
        self.weights = list(seen.values())

    def serving_signatures(self) -> dict:
        """``{"step": ..., "generate": ...}``: the concrete functions to save as signatures."""
        return {"step": self.step.get_concrete_function(), "generate": self.generate.get_concrete_function()}


def export_model(model, vocab, model_config, out_dir, chunk: int = 256) -> Path:
    """Write the SavedModel of a recurrent char-rnn into ``out_dir`` (new or empty); return it.

    Written into a temporary folder beside ``out_dir`` and renamed into place when complete:
    if anything fails, the temporary folder -- and any parent folder this call created -- is
    removed, and ``out_dir`` is left as it was.  Raises :class:`ExportError` for a
    Transformer or an ``out_dir`` that exists and is not empty.
    """
    if isinstance(model_config, TransformerConfig):
        raise ExportError("a Transformer (chapter 7) has a key/value cache, not a recurrent state: only the "
                          "recurrent models are exported; use charrnn_lib.transformer.TransformerSampler")
    out = Path(out_dir)
    check_out_dir(out)
    created = []  # parent folders this call creates, removed again on failure
    for parent in reversed(out.absolute().parents):
        if not parent.exists():
            parent.mkdir()
            created.append(parent)
    tmp = out.parent / f".{out.name}.tmp-export-{secrets.token_hex(6)}"
    try:
        module = ExportModule(model, vocab, model_config, chunk=chunk)
        tf.saved_model.save(module, str(tmp), signatures=module.serving_signatures())
        check_out_dir(out)  # still new or empty (another writer?); replacing an empty folder is atomic
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for parent in reversed(created):  # deepest first; only if still empty
            with contextlib.suppress(OSError):
                parent.rmdir()
        raise
    return out


def export_checkpoint(checkpoint, out_dir) -> Path:
    """Load the newest checkpoint of a run folder (or a ``ckpt-<step>`` folder) and export it."""
    from charrnn_lib.checkpoint import latest_checkpoint, load_checkpoint, model_config_of, read_checkpoint_meta

    ckpt = latest_checkpoint(checkpoint)
    if ckpt is not None:
        identity, _, _ = read_checkpoint_meta(ckpt)
        if isinstance(model_config_of(identity, ckpt), TransformerConfig):
            raise ExportError(f"{str(checkpoint)!r} holds a Transformer (chapter 7): only the recurrent models are "
                              f"exported; use charrnn_lib.transformer.TransformerSampler")
    model, vocab, model_config = load_checkpoint(checkpoint)
    return export_model(model, vocab, model_config, out_dir)
