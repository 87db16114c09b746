"""What each family reaches in a fixed wall-clock budget: ``make bench-quality`` (outside CI).

Chapter 7 compares chapter 5's LSTM, a small Transformer and minGRU at equal size, each for
one or two epochs (up to a few minutes of step time).  This benchmark asks the other question: give each family its best
configuration we know and the same wall-clock budget (five minutes by default) on this
machine, on the Shakespeare corpus with the last 10 % held out -- what validation loss does
it reach?

Each run first measures its step's speed (``charrnn_lib.bench.measure_throughput``),
plans a cosine schedule over the number of updates that the budget buys at that speed, and
trains with ``charrnn_lib.train.train``, which stops at the deadline if the plan was too
optimistic (``stop=``).  The table it prints is a stored benchmark result in the README and
in chapter 7: the numbers depend on the machine and its load, so no test checks them
(``tests/test_bench_quality.py`` checks the procedure on a tiny budget).
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
import time
from functools import partial
from typing import Callable

__all__ = ["CANDIDATES", "Candidate", "run_candidate", "main"]


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One family's configuration: its model and how it trains (``num_epochs`` is planned)."""

    name: str
    model: Callable[[int], object]  # vocab_size -> a ModelConfig or TransformerConfig
    train: dict                     # TrainConfig fields (batch_size, seq_length, learning rate, schedule)

    def configs(self, vocab_size: int, epochs: int):
        from charrnn_lib.config import TrainConfig

        return (self.model(vocab_size),
                TrainConfig(num_epochs=epochs, val_fraction=0.1, checkpoint_every=0, **self.train))


def _candidates():
    from charrnn_lib.config import ModelConfig, TransformerConfig

    schedule = dict(lr_schedule="cosine", warmup_batches=100)
    return [
        Candidate("LSTM 2 x 256", partial(ModelConfig, hidden_size=256, num_layers=2, init="unit_embedding"),
                  dict(batch_size=50, seq_length=50, learning_rate=0.006, **schedule)),
        Candidate("Transformer 4 x 128",
                  partial(TransformerConfig, d_model=128, num_layers=4, num_heads=4, context=128),
                  dict(batch_size=32, seq_length=128, learning_rate=0.001, **schedule)),
        Candidate("minGRU 4 x 320", partial(ModelConfig, hidden_size=320, num_layers=4, cell="mingru",
                                                 init="unit_embedding"),
                  dict(batch_size=50, seq_length=100, learning_rate=0.004, **schedule)),
    ]


PLAN_MARGIN = 0.9   # measured: planned on the full speed, the LSTM made 2,740 of 3,064 updates before the deadline
CANDIDATES = ("LSTM 2 x 256", "Transformer 4 x 128", "minGRU 4 x 320")


def run_candidate(candidate: Candidate, budget_s: float, corpus="shakespeare", cache_dir=None) -> dict:
    """Train ``candidate`` for about ``budget_s`` seconds; its validation loss and what it did."""
    from charrnn_lib.bench import measure_throughput
    from charrnn_lib.data import TextLoader
    from charrnn_lib.repro import seed_everything
    from charrnn_lib.train import train

    seed_everything(0)
    B, T = candidate.train["batch_size"], candidate.train["seq_length"]
    loader = TextLoader(corpus, batch_size=B, seq_length=T, val_fraction=0.1, cache_dir=cache_dir)
    model_config, _ = candidate.configs(loader.vocab_size, 1)
    start = time.perf_counter()
    speed = measure_throughput(model_config, B, T, steps=3)                    # chars per second
    # a few timed steps overestimate the speed of a whole run (evaluation, the Python loop):
    # plan on PLAN_MARGIN of it, so that the cosine schedule ends before the deadline
    planned = max(1, int((budget_s - (time.perf_counter() - start)) * PLAN_MARGIN * speed / (B * T)))
    epochs = max(1, round(planned / loader.num_batches))
    model_config, train_config = candidate.configs(loader.vocab_size, epochs)
    deadline = start + budget_s
    result = train(loader, model_config, train_config, progress=False,
                   stop=lambda: time.perf_counter() > deadline)
    from charrnn_lib.train import evaluate

    val = result.history.val_loss[-1] if result.finished else evaluate(result.model, loader.val_x, loader.val_y,
                                                                       model_config)
    return {"name": candidate.name, "val_loss": val, "updates": result.global_step, "epochs": epochs,
            "planned": epochs * loader.num_batches, "finished": result.finished,
            "seconds": time.perf_counter() - start, "chars_per_second": speed}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m charrnn_lib.bench_quality", description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=5.0, help="wall-clock budget per family (default: 5)")
    parser.add_argument("--only", choices=CANDIDATES, action="append", help="run only these families")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from charrnn_lib.bench import machine
    from charrnn_lib.fast.memory import keep_freed_memory

    keep_freed_memory()
    print(f"machine: {machine()}")
    print(f"budget: {args.minutes:g} min per family; Shakespeare, last 10 % held out")
    for candidate in _candidates():
        if args.only and candidate.name not in args.only:
            continue
        r = run_candidate(candidate, 60 * args.minutes)
        print(f"{r['name']:20s} validation {r['val_loss']:.3f} nats ({r['val_loss'] / math.log(2):.3f} bits/char) "
              f"after {r['updates']:,} of {r['planned']:,} planned updates in {r['seconds']:.0f} s "
              f"({r['chars_per_second']:,.0f} chars/s)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
