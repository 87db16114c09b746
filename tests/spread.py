"""Measure how much chapter 5's and 6's trained numbers move between machines and seeds.

The chapters compare exactly only what is exact everywhere; what comes out of training is
checked with tolerances, and this script measures them.  It trains chapter 5's two runs
(the deck's configuration and the better recipe, two epochs each) under several CPU
instruction-set settings (how another reader's CPU computes) and several seeds, and prints,
for each run, the numbers the chapters assert on.  About 70 s per run on 2 cores (more
under SSE4.2), so it is not part of `make test`:

    make spread                                  # all settings with seed 0, then seeds 1 and 2
    python tests/spread.py --settings default --seeds 0 1 2
    python tests/spread.py --settings default --seeds 0 1 --holdout first   # another held-out part

The table it printed when the tolerances were chosen is quoted in chapter 5
({ref}`training-spread`) as a stored measurement.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys

SETTINGS = {
    "default": {},
    "AVX2": {"XLA_FLAGS": "--xla_cpu_max_isa=AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
    "AVX": {"XLA_FLAGS": "--xla_cpu_max_isa=AVX", "ONEDNN_MAX_CPU_ISA": "AVX"},
    "SSE4.2": {"XLA_FLAGS": "--xla_cpu_max_isa=SSE4_2", "ONEDNN_MAX_CPU_ISA": "SSE41"},
    "no oneDNN": {"TF_ENABLE_ONEDNN_OPTS": "0"},
}
COLUMNS = ["deck_last7", "deck_val", "recipe_val", "gain", "reset_cost", "deck_clipped", "T1_score",
           "line_r", "tv"]


def one_run(seed: int, holdout: str = "last") -> dict[str, float]:
    """Chapter 5's two runs with ``seed``, and the chapter-6 statistics of the deck's model.

    ``holdout="first"``: validate on the corpus's first 5 % instead of its last (the text is
    rotated, so that the loader's usual last-5 % split holds out the beginning).
    """
    import tempfile
    from pathlib import Path

    import numpy as np
    import tensorflow as tf

    from charrnn_lib import probe, sample
    from charrnn_lib.config import ModelConfig, TrainConfig
    from charrnn_lib.data import TextLoader
    from charrnn_lib.model import zero_states
    from charrnn_lib.repro import seed_everything
    from charrnn_lib.train import evaluate, train

    seed_everything(seed)
    corpus, cache = "shakespeare", None
    if holdout == "first":
        text = TextLoader("shakespeare").path.read_text(encoding="utf-8")
        cut = int(0.05 * len(text))
        folder = Path(tempfile.mkdtemp())
        corpus, cache = folder / "shakespeare-rotated.txt", folder / "cache"
        corpus.write_text(text[cut:] + text[:cut], encoding="utf-8")
    loader = TextLoader(corpus, batch_size=50, seq_length=50, val_fraction=0.05, cache_dir=cache)
    K = loader.vocab_size
    deck = train(loader, ModelConfig(K, init="unit_normal"), TrainConfig(seed=seed), progress=False)
    recipe_loader = TextLoader(corpus, batch_size=50, seq_length=20, val_fraction=0.05, cache_dir=cache)
    recipe_mc = ModelConfig(K, init="unit_embedding")
    recipe = train(recipe_loader, recipe_mc,
                   TrainConfig(seq_length=20, learning_rate=0.005, lr_schedule="cosine", warmup_batches=50,
                               seed=seed), progress=False)
    recipe_val = evaluate(recipe.model, loader.val_x, loader.val_y, recipe_mc)
    reset = evaluate(recipe.model, loader.val_x, loader.val_y, recipe_mc, carry_state=False)

    model, vocab, config = deck.model, loader.vocab, deck.model_config
    sampler = sample.Sampler(model, vocab, config)

    def logits_of(text):                                          # (T, K)
        ids = tf.constant(vocab.encode(text)[None])
        return model([ids, *zero_states(config, 1)])[0][0].numpy().astype(np.float64)

    def next_p(text):
        o = logits_of(text)[-1]
        return np.exp(o - o.max()) / np.exp(o - o.max()).sum()

    text = sampler.generate(2000, prime="ROMEO:\n", temperature=1.0, seed=4)
    ids = vocab.encode(text)
    o = logits_of(text)[:-1]
    log_z = np.log(np.exp(o - o.max(-1, keepdims=True)).sum(-1)) + o.max(-1)
    t1_score = float(np.mean(log_z - o[np.arange(len(o)), ids[1:]]))
    held_out = vocab.decode(loader.val_ids[:2500])
    line_r = probe.best_cells(probe.activations(model, vocab, config, held_out),
                              probe.position_in_line(held_out), top=1)[0].r
    tv = 0.5 * np.abs(next_p("ROMEO:\n") - next_p("\n")).sum()
    h = deck.history
    return {
        "deck_last7": float(np.mean(h.train_loss[-7:])), "deck_val": h.val_loss[-1],
        "recipe_val": recipe_val, "gain": h.val_loss[-1] - recipe_val, "reset_cost": reset - recipe_val,
        "deck_clipped": float(np.mean(np.array(h.grad_norm) > 5.0)), "T1_score": t1_score,
        "line_r": abs(float(line_r)), "tv": float(tv),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--holdout", choices=["last", "first"], default="last",
                        help="which 5 %% of the corpus to hold out for validation (default: last, as the book)")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)   # run one seed, print JSON
    args = parser.parse_args(argv)
    if args.child is not None:
        print(json.dumps(one_run(args.child, args.holdout)))
        return 0
    print(f"{'setting':10s} {'seed':>4s} " + " ".join(f"{c:>12s}" for c in COLUMNS), flush=True)
    rows = []
    for name in args.settings:
        for seed in args.seeds:
            env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "ONEDNN_MAX_CPU_ISA")}
            env.update({"TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": "", **SETTINGS[name]})
            done = subprocess.run([sys.executable, __file__, "--child", str(seed), "--holdout", args.holdout], env=env,
                                  capture_output=True, text=True, check=True)
            row = json.loads(done.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(f"{name:10s} {seed:4d} " + " ".join(f"{row[c]:12.4f}" for c in COLUMNS), flush=True)
    if len(rows) > 1:
        spread = {c: max(r[c] for r in rows) - min(r[c] for r in rows) for c in COLUMNS}
        print(f"{'range':15s} " + " ".join(f"{spread[c]:12.4f}" for c in COLUMNS))
        worst = {c: min(r[c] for r in rows) for c in COLUMNS}
        print(f"{'smallest':15s} " + " ".join(f"{worst[c]:12.4f}" for c in COLUMNS))
    assert all(math.isfinite(v) for r in rows for v in r.values())
    return 0


if __name__ == "__main__":
    sys.exit(main())
