"""Estimates before a run: the parameter count agrees with the model's, sizes grow as they
should, and the search for what fits finds the boundary."""
import pytest

from charrnn_lib import resources
from charrnn_lib.config import CELLS, ModelConfig
from charrnn_lib.model import build_model


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("embedding_dim", [None, 7])
def test_parameter_count_agrees_with_the_built_model(cell, embedding_dim):
    config = ModelConfig(vocab_size=11, hidden_size=13, num_layers=3, cell=cell, embedding_dim=embedding_dim)
    assert resources.parameter_count(config) == build_model(config).count_params()


def test_estimates_grow_with_the_model_and_the_batch():
    model = ModelConfig(vocab_size=64).to_dict()
    bigger = dict(model, hidden_size=256)
    assert resources.training_bytes(bigger, 50, 50) > resources.training_bytes(model, 50, 50)
    assert resources.training_bytes(model, 100, 50) > resources.training_bytes(model, 50, 50)
    # the deck's model: about 1.1 MB of weights, three copies in a checkpoint, plus the state
    assert 3.3e6 < resources.checkpoint_bytes(model, 50, 810) < 4e6
    assert resources.sampling_bytes(model, 2, 10**6) - resources.sampling_bytes(model, 2, 0) == 4 * 10**6
    assert resources.sampling_bytes(model, 1, 10**9) == resources.sampling_bytes(model, 1, 0)  # streamed


def test_largest_fitting_finds_the_boundary():
    assert resources.largest_fitting(lambda n: n * n, 1000, 1, 10**6) == 31
    assert resources.largest_fitting(lambda n: n, 5, 1, 3) == 3
    assert resources.largest_fitting(lambda n: 10 + n, 5, 1, 3) is None


def test_available_memory_is_a_plausible_number():
    available = resources.available_memory()
    assert available is None or 10**7 < available < 10**15
