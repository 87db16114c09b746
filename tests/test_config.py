"""charrnn_lib.config: Keras-free, self-checking configurations and the named recipes."""
import dataclasses
import subprocess
import sys

import pytest

from charrnn_lib import config
from charrnn_lib.config import (DEFAULT_PRESET, PRESETS, SPEED_FIELDS, ModelConfig, TrainConfig, default,
                                preset)


def test_importing_config_loads_no_tensorflow_keras_or_numpy():
    code = ("import sys, charrnn_lib.config, charrnn_lib.cli; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'tensorflow', 'keras', 'numpy'}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    loaded = done.stdout.strip()
    # The command line may load NumPy (to read a corpus) but never TensorFlow or Keras before it trains.
    assert "tensorflow" not in loaded and "keras" not in loaded
    only_config = subprocess.run([sys.executable, "-c", code.replace(", charrnn_lib.cli", "")],
                                 capture_output=True, text=True, timeout=60)
    assert only_config.stdout.strip() == "[]"


def test_configs_round_trip_and_refuse_what_cannot_be_built():
    mc, tc = ModelConfig(vocab_size=11, cell="gru", embedding_dim=5), TrainConfig(lr_schedule="cosine")
    assert ModelConfig.from_dict(mc.to_dict()) == mc and TrainConfig.from_dict(tc.to_dict()) == tc
    assert (mc.embed_size, mc.states_per_layer, mc.num_states) == (5, 1, 2)
    assert ModelConfig(vocab_size=11, num_layers=3).num_states == 6      # LSTM: h and s per layer
    for bad in [dict(vocab_size=1), dict(hidden_size=0), dict(num_layers=2.5), dict(cell="transformer"),
                dict(init="deck"), dict(dropout=1.0), dict(embedding_dim=0)]:
        with pytest.raises(ValueError):
            ModelConfig(**{"vocab_size": 11, **bad})
    for bad in [dict(batch_size=0), dict(learning_rate=0.0), dict(grad_clip=-1.0), dict(lr_schedule="step"),
                dict(val_fraction=1.0), dict(min_lr_fraction=2.0), dict(row_groups=0), dict(row_groups=1.5),
                dict(warmup_batches=-1), dict(checkpoint_every=True), dict(seed=2**32), dict(seed=1.5),
                dict(learning_rate=float("nan")), dict(grad_clip=float("inf"))]:
        with pytest.raises(ValueError):
            TrainConfig(**bad)
    with pytest.raises(ValueError, match="unknown"):
        TrainConfig.from_dict({"batch_size": 5, "momentum": 0.9})


def test_the_deck_preset_is_the_defaults_and_the_recipe_is_chapter_5s_run():
    """One source for every default: the deck's recipe is the dataclasses' defaults, except
    the deck's unit-normal initialisation; the command line's default is the recipe."""
    deck = preset("deck")
    assert deck.train_config() == TrainConfig()
    assert deck.model_config(65) == dataclasses.replace(ModelConfig(65), init="unit_normal")
    assert DEFAULT_PRESET == "recipe"
    recipe = preset("recipe").train_config()
    changed = {f.name for f in dataclasses.fields(TrainConfig) if getattr(recipe, f.name) != default(TrainConfig, f.name)}
    assert changed == {"seq_length", "learning_rate", "lr_schedule", "warmup_batches"}
    # at the deck's cost: the same model, batch rows and epochs
    assert preset("recipe").model_config(65).hidden_size == ModelConfig(65).hidden_size
    assert (recipe.batch_size, recipe.num_epochs) == (TrainConfig().batch_size, TrainConfig().num_epochs)


def test_every_preset_builds_and_overrides_apply():
    for name, p in PRESETS.items():
        mc, tc = p.model_config(30), p.train_config()
        assert p.note and p.measured, name
        for field, value in {**p.model, **p.train}.items():
            assert p.value(field) == value == getattr(mc if field in p.model else tc, field)
    large = preset("large").model_config(30, cell="gru")
    assert large.cell == "gru" and large.num_layers == preset("large").value("num_layers")
    assert preset("medium").train_config(num_epochs=5).num_epochs == 5
    assert preset("deck").value("grad_clip") == default(TrainConfig, "grad_clip")
    with pytest.raises(ValueError, match="preset must be one of"):
        preset("huge")
    with pytest.raises(KeyError):
        preset("deck").value("momentum")


def test_speed_fields_are_training_fields_and_not_run_identity():
    from charrnn_lib.checkpoint import BOOKKEEPING_FIELDS

    names = {f.name for f in dataclasses.fields(TrainConfig)}
    assert set(SPEED_FIELDS) <= names and set(SPEED_FIELDS) <= set(BOOKKEEPING_FIELDS)
    assert "mixed_precision" not in BOOKKEEPING_FIELDS     # float16 changes the numbers
    assert config.MIN_TEMPERATURE > 0 and set(config.MODES) == {"argmax", "sample", "space"}
