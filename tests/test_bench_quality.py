"""charrnn_lib.bench_quality: the procedure (plan by measured speed, stop at the deadline), on a tiny budget."""
import math

import pytest

from charrnn_lib import bench_quality
from charrnn_lib.config import ModelConfig, TransformerConfig


def test_the_candidates_build_and_have_comparable_sizes():
    from charrnn_lib.resources import parameter_count
    from charrnn_lib.transformer import transformer_parameter_count

    sizes = {}
    for candidate in bench_quality._candidates():
        model, train = candidate.configs(64, epochs=3)
        assert model.vocab_size == 64 and train.num_epochs == 3 and train.val_fraction == 0.1
        count = transformer_parameter_count if isinstance(model, TransformerConfig) else parameter_count
        sizes[candidate.name] = count(model)
    assert [c.name for c in bench_quality._candidates()] == list(bench_quality.CANDIDATES)
    assert max(sizes.values()) < 1.5 * min(sizes.values())     # about the same size (0.8 to 1.1 million)


@pytest.mark.slow
def test_a_run_plans_by_its_speed_and_stops_at_the_deadline(tmp_path):
    corpus = tmp_path / "tiny.txt"
    corpus.write_text("the cat sat on the mat. the dog sat on the log. " * 60, encoding="utf-8")
    candidate = bench_quality.Candidate("tiny GRU", lambda k: ModelConfig(k, hidden_size=8, num_layers=1, cell="gru"),
                                        dict(batch_size=4, seq_length=16, learning_rate=0.01))
    r = bench_quality.run_candidate(candidate, budget_s=6.0, corpus=corpus, cache_dir=tmp_path / "cache")
    assert math.isfinite(r["val_loss"]) and r["val_loss"] < math.log(20)
    assert 1 <= r["updates"] <= r["planned"] and r["epochs"] >= 1
