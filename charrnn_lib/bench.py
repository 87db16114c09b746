"""Throughput figures: how fast does char-rnn train and sample on this machine?

``python -m charrnn_lib.bench [--quick]`` (or ``make bench``) prints, for the deck's
configuration -- a 2 x 128 LSTM, batch 50, sequences of 50 characters, on the Shakespeare
corpus:

* training characters per second of the library's loop (``charrnn_lib.train``, state
  carried from batch to batch) with its fast path (``charrnn_lib.fast``) and with the
  reference step, and of a plain ``keras.Model.fit`` of the same architecture (stateless:
  every batch starts from a zero state; same Adam, same clipping), measured in turn in the
  same run (``--rounds`` repeats the three, interleaved), and the fast path's ratio to
  ``fit``;
* the arithmetic behind them: FLOPs per character (counted below) and the FLOP/s that
  each loop reaches;
* sampling characters per second: one stream (the deck's 4,000-character sample) and a
  batch of 32 streams.

Every loop runs with ``charrnn_lib.fast.memory.keep_freed_memory()`` in effect (the
process keeps freed blocks instead of page-faulting them in again every step); ``main``
switches it on first, for all of them.  ``measure_throughput`` times the bare step of any
configuration (the appendix on scaling up uses it for the presets).  These are figures to read, not tests: nothing fails when a machine is slow.  On
a shared machine the numbers fall with the load; the machine line says what ran them.

FLOPs per character come from ``charrnn_lib.model.flops_per_char``: a matrix product of a
(1, n) row with an (n, m) matrix costs ``2 n m`` FLOPs (a multiply and an add each); one
LSTM layer with input size ``D`` and ``H`` units computes ``x_t @ U.T`` and
``h_{t-1} @ W.T`` for its four gates, ``2 * 4H (D + H)`` FLOPs; the output layer adds
``2 H K``; the embedding is a lookup, and the O(H) elementwise gate arithmetic is left out.
Training costs about three times the forward pass (the backward pass needs two products
per forward product: one for the input's gradient, one for the weights').
"""
from __future__ import annotations

import argparse
import os
import platform
import time


def machine() -> str:
    """CPU model, core count and library versions, in one line."""
    import keras
    import tensorflow as tf

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    gpus = tf.config.list_physical_devices("GPU")
    device = f", {len(gpus)} GPU(s)" if gpus else ", no GPU"
    load = f", load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    return (f"{cpu}, {os.cpu_count()} logical cores{device}{load}; Python {platform.python_version()}, "
            f"TensorFlow {tf.__version__}, Keras {keras.__version__}")


def bench_compiled_training(loader, model_config, steps: int, fused: bool = True) -> float:
    """Characters per second of the library's training loop (``charrnn_lib.train.train``),
    with the fast path (``fused=True``, where it applies) or the reference step.

    ``train`` times its own compiled step after the first (tracing) call: the figure
    covers the step and reading its loss back, not checkpoints or validation.
    """
    from charrnn_lib.config import TrainConfig
    from charrnn_lib.train import train

    config = TrainConfig(batch_size=loader.batch_size, seq_length=loader.seq_length,
                         val_fraction=loader.val_fraction, num_epochs=1, fused=fused)
    result = train(loader, model_config, config, out_dir=None, progress=False, max_batches=steps + 1)
    return result.chars_per_second


def keras_fit_model(model_config, learning_rate=0.002, grad_clip=5.0):
    """The same architecture as a plain ``keras.Sequential``, compiled for ``fit``: Adam with
    global-norm clipping, sparse cross-entropy from logits (LSTM layers, Keras's defaults)."""
    import keras

    K, H = model_config.vocab_size, model_config.hidden_size
    layers = [keras.Input((None,), dtype="int32"), keras.layers.Embedding(K, model_config.embed_size)]
    layers += [keras.layers.LSTM(H, return_sequences=True) for _ in range(model_config.num_layers)]
    model = keras.Sequential(layers + [keras.layers.Dense(K)])
    model.compile(optimizer=keras.optimizers.Adam(learning_rate, global_clipnorm=grad_clip),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def bench_keras_fit(loader, model_config, steps: int, learning_rate=0.002, grad_clip=5.0) -> float:
    """Characters per second of ``keras.Model.fit`` on the same architecture (stateless).

    Timed like ``train``: from the end of the first batch (which also traces) to the end of
    the last, so ``fit``'s per-call set-up is not counted.
    """
    import keras

    model = keras_fit_model(model_config, learning_rate, grad_clip)
    B, T = loader.batch_size, loader.seq_length
    x = loader.x_batches[:steps + 1].reshape(-1, T)  # (steps * B, T)
    y = loader.y_batches[:steps + 1].reshape(-1, T)

    class Clock(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.ends = []  # time at the end of each batch

        def on_train_batch_end(self, batch, logs=None):
            self.ends.append(time.perf_counter())

    clock = Clock()
    model.fit(x, y, batch_size=B, epochs=1, verbose=0, shuffle=False, callbacks=[clock])
    return (len(clock.ends) - 1) * B * T / (clock.ends[-1] - clock.ends[0])


def measure_throughput(config, batch_size: int, seq_length: int, steps: int = 3, strategy=None,
                       mixed_precision: bool = False) -> float:
    """Training speed of ``config``'s bare step on this machine, in characters per second.

    Builds the model (under ``strategy``, default: the current one), compiles the step
    with one warm-up call, then times ``steps`` steps on random ids and returns
    ``steps * B * T / seconds``.  A rough figure: it includes neither data loading nor
    validation, and it varies with whatever else the machine is doing.
    """
    import numpy as np
    import tensorflow as tf

    from charrnn_lib.config import TrainConfig
    from charrnn_lib.distribute import split_rows
    from charrnn_lib.model import zero_states
    from charrnn_lib.train import build_for_training, make_train_step

    strategy = strategy or tf.distribute.get_strategy()
    train_config = TrainConfig(batch_size=batch_size, seq_length=seq_length, mixed_precision=mixed_precision)
    model, optimizer = build_for_training(config, train_config, strategy)
    step = make_train_step(model, optimizer, config, train_config, strategy)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, config.vocab_size, (batch_size, seq_length + 1)).astype(np.int32)
    x, y = split_rows(strategy, [ids[:, :-1], ids[:, 1:]])
    states = split_rows(strategy, zero_states(config, batch_size))
    lr = tf.constant(train_config.learning_rate, tf.float32)
    loss, _, states = step(x, y, lr, states)  # trace and compile
    float(loss)
    start = time.perf_counter()
    for _ in range(steps):
        loss, _, states = step(x, y, lr, states)
    float(loss)  # wait for the last step
    return steps * batch_size * seq_length / (time.perf_counter() - start)


def bench_sampling(model, vocab, model_config, length: int, streams: int) -> float:
    """Characters per second of :class:`charrnn_lib.sample.Sampler` for ``streams`` streams."""
    from charrnn_lib.sample import Sampler

    sampler = Sampler(model, vocab, model_config)
    sampler.generate(length, num_streams=streams)  # compile
    start = time.perf_counter()
    sampler.generate(length, num_streams=streams, seed=1)
    return length * streams / (time.perf_counter() - start)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m charrnn_lib.bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps: a rough figure in about 30 s")
    parser.add_argument("--rounds", type=int, default=1,
                        help="measure the three training loops this many times, interleaved (default: 1)")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

    from charrnn_lib.config import ModelConfig
    from charrnn_lib.data import TextLoader
    from charrnn_lib.fast.memory import keep_freed_memory
    from charrnn_lib.model import build_model, flops_per_char
    from charrnn_lib.repro import seed_everything

    keep_freed_memory()  # for every loop, whichever runs first

    steps = 10 if args.quick else 40  # training batches timed per loop
    print(f"machine: {machine()}")
    seed_everything(0)
    loader = TextLoader("shakespeare", batch_size=50, seq_length=50)
    config = ModelConfig(loader.vocab_size)  # the deck's 2 x 128 LSTM
    flops = flops_per_char(config, training=False)
    print(f"model: 2 x 128 LSTM, K = {config.vocab_size}, batch 50 x 50; "
          f"{flops:,} forward FLOPs per character, {flops_per_char(config):,} per trained character")

    loops = {"fast path (charrnn_lib.train + charrnn_lib.fast)": lambda: bench_compiled_training(loader, config, steps),
             "reference step (charrnn_lib.train, fused=False)":
                 lambda: bench_compiled_training(loader, config, steps, fused=False),
             "keras Model.fit (same layers, stateless)": lambda: bench_keras_fit(loader, config, steps)}
    for round_ in range(args.rounds):
        rates = {name: measure() for name, measure in loops.items()}
        for name, rate in rates.items():
            print(f"training  {name:52s} {rate:10,.0f} chars/s  {rate * flops_per_char(config) / 1e9:6.2f} GFLOP/s")
        fast, reference, fit = rates.values()
        print(f"training  round {round_ + 1}: fast path / fit {fast / fit:.2f}x, reference / fit {reference / fit:.2f}x")

    model = build_model(config)
    length = 1000 if args.quick else 4000
    one = bench_sampling(model, loader.vocab, config, length, 1)
    many = bench_sampling(model, loader.vocab, config, length // 4, 32)
    print(f"sampling  1 stream   {one:10,.0f} chars/s  ({length / one:.2f} s for {length:,} characters; "
          f"{one * flops / 1e9:.2f} GFLOP/s)")
    print(f"sampling  32 streams {many:10,.0f} chars/s  (all streams together; {many * flops / 1e9:.2f} GFLOP/s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
