"""The char-rnn model: shapes, state plumbing, parameter counts, initialisations."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from charrnn_lib.config import CELLS
from charrnn_lib.model import (ModelConfig, build_model, flops_per_char, parameter_count,
                               zero_states)
from charrnn_lib.repro import seed_everything


@pytest.mark.parametrize("cell", CELLS)
def test_shapes_and_state_count(cell):
    config = ModelConfig(vocab_size=7, hidden_size=5, num_layers=2, cell=cell)
    model = build_model(config)
    n_states = 2 * config.states_per_layer
    assert len(model.inputs) == 1 + n_states and len(model.outputs) == 1 + n_states
    ids = tf.zeros((3, 4), tf.int32)
    logits, *states = model([ids, *zero_states(config, 3)])
    assert logits.shape == (3, 4, 7)
    assert [tuple(s.shape) for s in states] == [(3, 5)] * n_states


@pytest.mark.parametrize("cell", CELLS)
def test_two_chunks_with_carried_state_equal_one_pass(cell):
    """Truncated BPTT's premise: feeding the state back makes chunking invisible forward."""
    seed_everything(0)
    config = ModelConfig(vocab_size=9, hidden_size=6, num_layers=2, cell=cell, embedding_dim=4)
    model = build_model(config)
    ids = tf.constant(np.random.default_rng(0).integers(0, 9, (2, 10)), tf.int32)
    logits, *states = model([ids, *zero_states(config, 2)])
    first, *mid = model([ids[:, :6], *zero_states(config, 2)])
    second, *end = model([ids[:, 6:], *mid])
    np.testing.assert_allclose(tf.concat([first, second], axis=1), logits, rtol=1e-5, atol=1e-6)
    for a, b in zip(end, states):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_state_order_is_h_then_s_per_layer():
    """The LSTM's returned states are (h, s) per layer; h is the last output of that layer."""
    config = ModelConfig(vocab_size=5, hidden_size=4, num_layers=1)
    model = build_model(config)
    logits, h, s = model([tf.constant([[1, 2, 3]]), *zero_states(config, 1)])
    hidden = keras.Model(model.inputs, model.get_layer("lstm_0").output[0])
    seq = hidden([tf.constant([[1, 2, 3]]), *zero_states(config, 1)])
    np.testing.assert_allclose(seq[:, -1], h, rtol=1e-6)
    assert not np.allclose(h, s)


@settings(max_examples=8, deadline=None)
@given(cell=st.sampled_from(CELLS), K=st.integers(2, 30), H=st.integers(1, 12),
       L=st.integers(1, 3), E=st.one_of(st.none(), st.integers(1, 9)))
def test_parameter_count_closed_form(cell, K, H, L, E):
    config = ModelConfig(vocab_size=K, hidden_size=H, num_layers=L, cell=cell, embedding_dim=E)
    assert build_model(config).count_params() == parameter_count(config)


def test_parameter_count_of_the_decks_model():
    # 2 x 128 LSTM, K = 65 (tinyshakespeare): 65*128 + 2 * 4*128*(128+128+1) + 128*65 + 65
    config = ModelConfig(vocab_size=65)
    assert parameter_count(config) == 65 * 128 + 2 * 4 * 128 * 257 + 128 * 65 + 65 == 279_873


@pytest.mark.parametrize("cell", CELLS)
def test_flops_per_char_counts_the_models_own_kernels(cell):
    """Every matrix product a character goes through is one of the model's kernels (input,
    recurrent, logits): a multiply and an add per kernel entry.  The embedding is a lookup;
    biases, peepholes and gates are elementwise and left out, as the docstring says."""
    config = ModelConfig(vocab_size=13, hidden_size=6, num_layers=2, cell=cell, embedding_dim=5)
    model = build_model(config)
    kernels = [w for w in model.trainable_weights if w.path.endswith("kernel")]
    per_layer = 1 if cell == "mingru" else 2          # input kernel (and recurrent kernel)
    assert len(kernels) == per_layer * config.num_layers + 1
    forward = 2 * sum(int(np.prod(w.shape)) for w in kernels)
    assert flops_per_char(config, training=False) == forward
    assert flops_per_char(config) == 3 * forward   # backward: two products per forward product


def test_deck_initialisation_statistics():
    """init='unit_normal' (the deck's): embedding, softmax weights and bias ~ N(0, 1) like tf.random_normal."""
    seed_everything(0)
    config = ModelConfig(vocab_size=60, hidden_size=128, init="unit_normal")
    model = build_model(config)
    emb = model.get_layer("embedding").embeddings.numpy()
    kernel = model.get_layer("logits").kernel.numpy()
    bias = model.get_layer("logits").bias.numpy()
    for values, tol in [(emb, 0.03), (kernel, 0.03), (bias, 0.35)]:
        assert abs(values.mean()) < 3 * values.std() / np.sqrt(values.size) + 1e-3
        assert abs(values.std() - 1.0) < tol


def test_keras_initialisation_statistics():
    seed_everything(0)
    config = ModelConfig(vocab_size=60, hidden_size=128)
    model = build_model(config)
    emb = model.get_layer("embedding").embeddings.numpy()
    kernel = model.get_layer("logits").kernel.numpy()
    assert np.abs(emb).max() <= 0.05                     # uniform(-0.05, 0.05)
    limit = np.sqrt(6 / (128 + 60))                       # Glorot uniform
    assert np.abs(kernel).max() <= limit and kernel.std() > 0.5 * limit / np.sqrt(3)
    assert np.all(model.get_layer("logits").bias.numpy() == 0)
    lstm_bias = model.get_layer("lstm_0").cell.bias.numpy()
    np.testing.assert_array_equal(lstm_bias[128:256], 1.0)  # forget-gate bias 1


def test_config_validation_and_round_trip():
    config = ModelConfig(vocab_size=10, hidden_size=3, cell="gru", embedding_dim=4)
    assert ModelConfig.from_dict(config.to_dict()) == config
    for bad in [dict(vocab_size=1), dict(vocab_size=5, cell="transformer"),
                dict(vocab_size=5, init="xavier"), dict(vocab_size=5, dropout=1.0),
                dict(vocab_size=5, hidden_size=0)]:
        with pytest.raises(ValueError):
            ModelConfig(**bad)


def test_fixed_batch_size():
    config = ModelConfig(vocab_size=5, hidden_size=3)
    model = build_model(config, batch_size=4)
    assert model.inputs[0].shape[0] == 4
    assert [tuple(z.shape) for z in zero_states(config, 4)] == [(4, 3)] * 4


def test_one_build_and_forward_for_both_families():
    """charrnn_lib.architecture: the config decides the network; forward is the model's own call."""
    from charrnn_lib.architecture import build, carries_state, forward
    from charrnn_lib.config import TransformerConfig
    from charrnn_lib.transformer import CharTransformer

    ids = tf.constant([[1, 2, 3, 0]], tf.int32)                       # (1, 4)
    rnn_config = ModelConfig(vocab_size=5, hidden_size=6, num_layers=2)
    seed_everything(0)
    rnn = build(rnn_config, batch_size=1)
    assert carries_state(rnn_config) and rnn.inputs[0].shape == (1, None)
    states = [tf.random.normal((1, 6), seed=i) for i in range(4)]
    logits, new_states = forward(rnn, ids, states, training=False)
    expected, *expected_states = rnn([ids, *states])
    np.testing.assert_array_equal(logits.numpy(), expected.numpy())
    assert len(new_states) == 4 and all(np.array_equal(a, b) for a, b in zip(new_states, expected_states))

    tf_config = TransformerConfig(vocab_size=5, d_model=8, num_layers=1, num_heads=2, context=8)
    transformer = build(tf_config)
    assert isinstance(transformer, CharTransformer) and not carries_state(tf_config)
    logits, new_states = forward(transformer, ids, [], training=False)
    assert new_states == [] and logits.shape == (1, 4, 5)
    np.testing.assert_array_equal(logits.numpy(), transformer(ids).numpy())
    with pytest.raises(ValueError, match="float32"):
        build(tf_config, dtype_policy="mixed_float16")
