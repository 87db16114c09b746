"""charrnn_lib.bench: what it times is what it says it times (the figures themselves are not tested)."""
import subprocess
import sys

import numpy as np
import pytest

from charrnn_lib import bench
from charrnn_lib.config import ModelConfig
from charrnn_lib.data import TextLoader
from charrnn_lib.model import parameter_count


def test_keras_fit_baseline_is_the_same_architecture_and_optimiser():
    config = ModelConfig(vocab_size=13, hidden_size=6, num_layers=2)
    model = bench.keras_fit_model(config, learning_rate=0.003, grad_clip=4.0)
    model.build((None, None))
    assert model.count_params() == parameter_count(config)
    assert model.optimizer.global_clipnorm == 4.0
    assert float(model.optimizer.learning_rate) == pytest.approx(0.003)


def test_measure_throughput_times_steps_after_one_compiling_call(monkeypatch):
    """One untimed call (tracing, XLA compilation), then ``steps`` timed calls of the real step."""
    from charrnn_lib import train

    calls = []
    real = train.make_train_step

    def counting(*args, **kwargs):
        step = real(*args, **kwargs)

        def counted(*a):
            calls.append(1)
            return step(*a)
        return counted

    monkeypatch.setattr(train, "make_train_step", counting)
    rate = bench.measure_throughput(ModelConfig(vocab_size=11, hidden_size=8), batch_size=4, seq_length=8, steps=2)
    assert len(calls) == 3 and np.isfinite(rate)


def test_the_training_benchmarks_time_the_batches_they_say(tmp_path):
    corpus = tmp_path / "tiny.txt"
    corpus.write_text("the cat sat on the mat. " * 80, encoding="utf-8")
    loader = TextLoader(corpus, batch_size=4, seq_length=8, cache_dir=tmp_path / "cache")
    config = ModelConfig(vocab_size=loader.vocab_size, hidden_size=4, num_layers=1)
    for fused in (True, False):
        assert np.isfinite(bench.bench_compiled_training(loader, config, steps=3, fused=fused))
    assert np.isfinite(bench.bench_keras_fit(loader, config, steps=3))


@pytest.mark.slow
def test_make_bench_quick_prints_every_figure():
    done = subprocess.run([sys.executable, "-m", "charrnn_lib.bench", "--quick"], capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert lines[0].startswith("machine: ") and "GPU" in lines[0]
    training = [line for line in lines if line.startswith("training  ") and "chars/s" in line]
    assert len(training) == 3 and "fast path" in training[0] and "Model.fit" in training[2]
    assert any("fast path / fit" in line for line in lines)
    assert sum(line.startswith("sampling  ") for line in lines) == 2
