"""The training loop: learning, clipping, evaluation, exact resumption, safe checkpoints.

Every ``train`` call traces its step, which costs a second or two (XLA compilation of the
fused LSTM step several); the tests share one finished run (``run``) wherever they can and
use the Keras step (``fused=False``) except where the fused path is the point.
"""
import dataclasses
import json
import math

import numpy as np
import pytest
import tensorflow as tf

from charrnn_lib import train as train_module
from charrnn_lib.checkpoint import CheckpointMismatchError, latest_checkpoint, load_checkpoint
from charrnn_lib.config import ModelConfig, TrainConfig
from charrnn_lib.data import TextLoader
from charrnn_lib.model import zero_states
from charrnn_lib.train import History, clip_gradients, evaluate, learning_rate_at, train

TEXT = ("the cat sat on the mat. the dog sat on the log. " * 12
        + "a bird sang in the tree; the cat ran after it!\n" * 6)


def small(**kw):
    """Batches of 4 x 8, 10 % validation; the Keras step unless fused=True is asked for."""
    base = dict(batch_size=4, seq_length=8, num_epochs=2, val_fraction=0.1, checkpoint_every=5,
                fused=False)
    base.update(kw)
    return TrainConfig(**base)


def loader_for(path, tc: TrainConfig, cache):
    return TextLoader(path, batch_size=tc.batch_size, seq_length=tc.seq_length,
                      val_fraction=tc.val_fraction, cache_dir=cache)


def weights_of(model):
    return [v.numpy() for v in model.weights]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One finished run (Keras step): 3 epochs of 24 batches, warm-up and cosine schedule."""
    folder = tmp_path_factory.mktemp("run")
    corpus = folder / "tiny.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    tc = small(num_epochs=3, learning_rate=0.03, lr_schedule="cosine", warmup_batches=3,
               min_lr_fraction=0.3)
    loader = loader_for(corpus, tc, folder / "cache")
    mc = ModelConfig(vocab_size=loader.vocab_size, hidden_size=16)
    result = train(loader, mc, tc, out_dir=folder / "whole", progress=False)
    return dict(folder=folder, corpus=corpus, tc=tc, mc=mc, loader=loader, result=result)


@pytest.fixture
def short(tmp_path):
    """A corpus of 340 characters: 9 training batches of 4 x 8 and one validation batch."""
    corpus = tmp_path / "short.txt"
    corpus.write_text(TEXT[:340], encoding="utf-8")
    loader = loader_for(corpus, small(), tmp_path / "cache")
    assert loader.num_batches == 9
    return loader


# --------------------------------------------------------------------------- configuration


def test_learning_rate_schedules():
    constant = TrainConfig(learning_rate=0.002)
    assert all(learning_rate_at(s, 100, constant) == 0.002 for s in range(100))
    cosine = TrainConfig(learning_rate=0.004, lr_schedule="cosine", warmup_batches=10,
                         min_lr_fraction=0.1)
    rates = [learning_rate_at(s, 110, cosine) for s in range(110)]
    np.testing.assert_allclose(rates[:10], 0.004 * np.arange(1, 11) / 10)   # linear warm-up
    assert rates[10] == pytest.approx(0.004)                                # then the peak
    assert rates[60] == pytest.approx(0.004 * (0.1 + 0.9 * 0.5))            # half-way
    assert all(a >= b for a, b in zip(rates[10:], rates[11:]))              # decreasing
    assert rates[-1] > 0.0004 and learning_rate_at(110, 110, cosine) == pytest.approx(0.0004)


def test_clip_gradients_by_global_norm():
    rng = np.random.default_rng(0)
    grads = [tf.constant(rng.normal(size=(3, 4)) * 10, tf.float32),
             tf.constant(rng.normal(size=(5,)) * 10, tf.float32)]
    norm = math.sqrt(sum(float(tf.reduce_sum(g * g)) for g in grads))
    clipped, reported = clip_gradients(grads, 5.0)
    assert float(reported) == pytest.approx(norm, rel=1e-5)
    after = math.sqrt(sum(float(tf.reduce_sum(g * g)) for g in clipped))
    assert after == pytest.approx(5.0, rel=1e-5) and after <= 5.0 + 1e-5
    for g, c in zip(grads, clipped):  # one common factor: the direction is kept
        np.testing.assert_allclose(c, g * (5.0 / norm), rtol=1e-5)
    unclipped, _ = clip_gradients(grads, 2 * norm)  # under the threshold: unchanged
    for g, c in zip(grads, unclipped):
        np.testing.assert_allclose(c, g, rtol=1e-6)
    off, off_norm = clip_gradients(grads, 0.0)  # 0 turns clipping off
    assert float(off_norm) == pytest.approx(norm, rel=1e-5)
    np.testing.assert_allclose(off[0], grads[0])


def test_loader_must_match_train_config(run):
    with pytest.raises(ValueError, match="seq_length"):
        train(run["loader"], run["mc"], small(seq_length=9), progress=False)
    with pytest.raises(ValueError, match="val_fraction"):
        train(run["loader"], run["mc"], small(val_fraction=0.2), progress=False)
    with pytest.raises(ValueError, match="vocab_size"):
        train(run["loader"], ModelConfig(vocab_size=run["mc"].vocab_size + 1), small(),
              progress=False)


# --------------------------------------------------------------------------- learning


def test_loss_decreases_and_history_is_complete(run):
    result, loader = run["result"], run["loader"]
    h = result.history
    n = 3 * loader.num_batches
    assert len(h.train_loss) == len(h.grad_norm) == len(h.learning_rate) == n
    assert len(h.val_loss) == len(h.epoch_train_loss) == 3
    assert h.train_loss[0] == pytest.approx(math.log(loader.vocab_size), abs=0.1)  # Keras init
    assert h.val_loss[-1] < h.val_loss[0] - 0.3
    assert np.mean(h.train_loss[-5:]) < h.train_loss[0] - 1.0
    assert h.val_bpc[-1] == pytest.approx(h.val_loss[-1] / math.log(2))
    assert h.learning_rate[0] == pytest.approx(0.01) and h.learning_rate[2] == pytest.approx(0.03)  # warm-up
    assert min(h.learning_rate) == h.learning_rate[-1] > 0.3 * 0.03                          # cosine floor
    assert result.finished and result.global_step == n and result.chars_per_second is not None


@pytest.mark.parametrize("cell", ["gru", "rnn", "peephole", "mingru"])
def test_each_cell_trains_a_step(cell, short):
    """One update moves every trainable variable and lowers the loss of the batch it saw."""
    config = ModelConfig(vocab_size=short.vocab_size, hidden_size=6, cell=cell)
    start = train(short, config, small(), progress=False, max_batches=0).model
    result = train(short, config, small(learning_rate=0.01), progress=False, max_batches=1)
    assert len(result.history.train_loss) == 1 and not result.finished
    for before, after in zip(start.trainable_variables, result.model.trainable_variables):
        assert np.abs(after.numpy() - before.numpy()).max() > 1e-4, after.path
    first = (short.x_batches[:1], short.y_batches[:1])
    loss_before, loss_after = (evaluate(m, *first, config) for m in (start, result.model))
    assert loss_before == pytest.approx(result.history.train_loss[0], rel=1e-5)
    assert loss_after < loss_before


def test_the_schedule_reaches_the_optimizer(short):
    """Adam's first update moves the weights by about lr * g / |g| = lr: with a warm-up over 10
    batches the largest move of the first update is lr / 10, and of the second 2 lr / 10."""
    config = ModelConfig(vocab_size=short.vocab_size, hidden_size=6, cell="gru")
    tc = small(learning_rate=0.01, warmup_batches=10, grad_clip=0.0)
    models = [train(short, config, tc, progress=False, max_batches=n).model for n in (0, 1)]
    move = max(np.abs(a.numpy() - b.numpy()).max() for a, b in zip(*(m.trainable_variables for m in models)))
    assert move == pytest.approx(0.001, rel=0.01)
    no_warmup = train(short, config, small(learning_rate=0.01, grad_clip=0.0), progress=False, max_batches=1)
    move = max(np.abs(a.numpy() - b.numpy()).max()
               for a, b in zip(models[0].trainable_variables, no_warmup.model.trainable_variables))
    assert move == pytest.approx(0.01, rel=0.01)


def test_clipping_is_applied_in_the_step(short):
    """Adam's first step moves each weight by about lr * g / |g|, whatever the scale of g --
    unless g was clipped to near nothing, when epsilon dominates and the step shrinks."""
    config = ModelConfig(vocab_size=short.vocab_size, hidden_size=6)
    before = weights_of(train(short, config, small(), progress=False, max_batches=0).model)
    moves = {}
    for clip in (0.0, 1e-9):
        tc = small(grad_clip=clip, learning_rate=0.01)
        after = weights_of(train(short, config, tc, progress=False, max_batches=1).model)
        moves[clip] = max(np.abs(a - b).max() for a, b in zip(after, before))
    assert moves[0.0] == pytest.approx(0.01, rel=0.01)
    assert moves[1e-9] < 0.001


@pytest.mark.slow
@pytest.mark.parametrize("groups", [2, 3])
def test_row_groups_compute_the_one_group_step(groups, short):
    """The fused step over 2 or 3 groups of rows (3 groups of 4 rows: sizes 2, 1, 1) gives the
    losses, gradient norms, carried state and weights of the step over all rows at once, up
    to the order of float32 additions."""
    config = ModelConfig(vocab_size=short.vocab_size, hidden_size=8)
    runs = [train(short, config, small(fused=True, row_groups=g, learning_rate=0.01), progress=False)
            for g in (1, groups)]
    one, split = (r.history for r in runs)
    assert len(one.train_loss) == 2 * short.num_batches
    np.testing.assert_allclose(split.train_loss, one.train_loss, rtol=1e-5)
    np.testing.assert_allclose(split.grad_norm, one.grad_norm, rtol=1e-4)
    np.testing.assert_allclose(split.val_loss, one.val_loss, rtol=1e-5)
    assert split.train_loss != one.train_loss or split.grad_norm != one.grad_norm  # really another sum
    for a, b in zip(weights_of(runs[1].model), weights_of(runs[0].model)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_fast_path_and_reference_agree_over_several_updates(short):
    """``charrnn_lib.fast``'s fused step and the reference (Keras under a tape) give the same
    losses, gradient norms and weights over 12 updates, up to float32 rounding (measured:
    relative differences of about 1e-6 in the losses, weights within 1e-6)."""
    from charrnn_lib import fast

    config = ModelConfig(vocab_size=short.vocab_size, hidden_size=8)
    fast_tc = small(learning_rate=0.01, fused=True)
    assert fast.uses_fused_step(config, fast_tc) and not fast.uses_fused_step(config, small())
    runs = {fused: train(short, config, small(learning_rate=0.01, fused=fused), progress=False, max_batches=12)
            for fused in (True, False)}
    a, b = runs[True].history, runs[False].history
    assert len(a.train_loss) == 12 and a.train_loss[-1] < a.train_loss[0] - 0.2   # it learned
    np.testing.assert_allclose(a.train_loss, b.train_loss, rtol=2e-5)
    np.testing.assert_allclose(a.grad_norm, b.grad_norm, rtol=1e-4)
    for x, y in zip(weights_of(runs[True].model), weights_of(runs[False].model)):
        np.testing.assert_allclose(x, y, rtol=0, atol=2e-5)


@pytest.mark.slow
def test_a_run_resumes_with_other_speed_knobs(short, tmp_path):
    """The speed knobs are not part of a run's identity: a run saved by the fast path resumes
    with the reference step (and the other way round) and ends where the uninterrupted run
    does, up to float32 rounding."""
    config = ModelConfig(vocab_size=short.vocab_size, hidden_size=8)
    tc = small(learning_rate=0.01, fused=True)
    whole = train(short, config, tc, out_dir=tmp_path / "whole", progress=False)
    train(short, config, tc, out_dir=tmp_path / "mixed", progress=False, max_batches=7)
    rest = train(short, config, dataclasses.replace(tc, fused=False), out_dir=tmp_path / "mixed", progress=False)
    assert rest.resumed and rest.finished
    np.testing.assert_allclose(rest.history.train_loss, whole.history.train_loss, rtol=2e-5)
    assert rest.history.train_loss[:7] == whole.history.train_loss[:7]   # the saved part, as saved
    for x, y in zip(weights_of(rest.model), weights_of(whole.model)):
        np.testing.assert_allclose(x, y, rtol=0, atol=2e-5)


@pytest.mark.slow
def test_train_leaves_op_determinism_alone(tmp_path):
    """``train`` seeds Keras's generators (the seed names the initial weights) but does not switch
    TensorFlow's op determinism on for the whole process: that is the caller's choice."""
    corpus = tmp_path / "tiny.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    code = f"""
from tensorflow.python.framework.config import is_op_determinism_enabled  # no public getter
from charrnn_lib.config import ModelConfig, TrainConfig
from charrnn_lib.data import TextLoader
from charrnn_lib.train import train
loader = TextLoader({str(corpus)!r}, batch_size=4, seq_length=8, val_fraction=0.1, cache_dir={str(tmp_path / "c")!r})
train(loader, ModelConfig(loader.vocab_size, hidden_size=4), TrainConfig(batch_size=4, seq_length=8,
      val_fraction=0.1, fused=False), progress=False, max_batches=1)
print(is_op_determinism_enabled())
"""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "False"


# --------------------------------------------------------------------------- evaluation


def test_evaluate_equals_manual_computation(run):
    loader, config, model = run["loader"], run["mc"], run["result"].model
    states, losses = zero_states(config, loader.batch_size), []
    for x, y in zip(loader.val_x, loader.val_y):
        logits, *states = model([tf.constant(x), *states])
        logits = logits.numpy().astype(np.float64)
        log_p = logits - logits.max(-1, keepdims=True)
        log_p -= np.log(np.exp(log_p).sum(-1, keepdims=True))
        losses.append(-np.take_along_axis(log_p, y[..., None], -1).mean())
    value = evaluate(model, loader.val_x, loader.val_y, config)
    assert value == pytest.approx(np.mean(losses), rel=1e-5)
    assert evaluate(model, loader.val_x, loader.val_y, config) == value  # the cached step
    assert value == run["result"].history.val_loss[-1]
    # Carrying the state matters: restarting from zeros each batch gives another number.
    fresh = np.mean([evaluate(model, x[None], y[None], config)
                     for x, y in zip(loader.val_x, loader.val_y)])
    assert abs(fresh - np.mean(losses)) > 1e-4
    assert evaluate(model, loader.val_x, loader.val_y, config, carry_state=False) == pytest.approx(fresh)
    with pytest.raises(ValueError):
        evaluate(model, loader.val_x[0], loader.val_y[0], config)


# --------------------------------------------------------------------------- checkpoints


@pytest.mark.slow
def test_resume_mid_epoch_gives_exactly_the_uninterrupted_run(short, tmp_path):
    """The default path (fused LSTM, XLA): interrupted after 7 batches, then resumed."""
    tc = small(learning_rate=0.01, lr_schedule="cosine", warmup_batches=2, fused=True)
    config = ModelConfig(vocab_size=short.vocab_size, hidden_size=8)
    whole = train(short, config, tc, out_dir=tmp_path / "whole", progress=False)
    part = train(short, config, tc, out_dir=tmp_path / "split", progress=False, max_batches=7)
    assert not part.finished and part.global_step == 7
    assert latest_checkpoint(tmp_path / "split").name == "ckpt-00000007"
    rest = train(short, config, tc, out_dir=tmp_path / "split", progress=False)
    assert rest.resumed and rest.finished
    assert rest.history == whole.history
    for a, b in zip(weights_of(rest.model), weights_of(whole.model)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_resume_at_epoch_end_with_dropout(short, tmp_path):
    """The Keras path with dropout (random masks): interrupted exactly at the end of epoch 1."""
    tc = small(learning_rate=0.01)
    config = ModelConfig(vocab_size=short.vocab_size, hidden_size=8, cell="gru", dropout=0.3)
    whole = train(short, config, tc, out_dir=tmp_path / "whole", progress=False)
    part = train(short, config, tc, out_dir=tmp_path / "split", progress=False, max_batches=9)
    assert len(part.history.val_loss) == 1  # stopped after epoch 1's validation
    rest = train(short, config, tc, out_dir=tmp_path / "split", progress=False)
    assert rest.history == whole.history
    for a, b in zip(weights_of(rest.model), weights_of(whole.model)):
        np.testing.assert_array_equal(a, b)


def test_finished_run_returns_at_once_and_loads(run):
    loader, mc, tc, first = run["loader"], run["mc"], run["tc"], run["result"]
    out_dir = run["folder"] / "whole"
    again = train(loader, mc, tc, out_dir=out_dir, progress=False)
    assert again.resumed and again.finished and again.chars_per_second is None
    assert again.history == first.history
    for a, b in zip(weights_of(again.model), weights_of(first.model)):
        np.testing.assert_array_equal(a, b)
    model, vocab, model_config = load_checkpoint(out_dir, batch_size=1)
    assert vocab == loader.vocab and model_config == mc and model.inputs[0].shape[0] == 1
    for a, b in zip(weights_of(model), weights_of(first.model)):
        np.testing.assert_array_equal(a, b)
    ckpt = latest_checkpoint(out_dir)
    assert [p.name for p in out_dir.iterdir()] == [ckpt.name]  # older checkpoints pruned
    progress = json.loads((ckpt / "progress.json").read_text())
    assert progress["finished"] and progress["global_step"] == 3 * loader.num_batches
    assert np.load(ckpt / "state.npy").shape == (4, tc.batch_size, 16)
    assert History.from_dict(progress["history"]) == first.history


def test_mismatched_checkpoint_is_refused(run, tmp_path):
    loader, mc, tc = run["loader"], run["mc"], run["tc"]
    out_dir = run["folder"] / "whole"
    with pytest.raises(CheckpointMismatchError, match=r"hidden_size: checkpoint 16, now 17"):
        train(loader, ModelConfig(vocab_size=loader.vocab_size, hidden_size=17), tc,
              out_dir=out_dir, progress=False)
    with pytest.raises(CheckpointMismatchError, match="(?s)learning_rate.*delete"):
        train(loader, mc, dataclasses.replace(tc, learning_rate=0.1), out_dir=out_dir,
              progress=False)
    other = tmp_path / "other.txt"
    other.write_text(TEXT.upper(), encoding="utf-8")
    other_loader = loader_for(other, tc, tmp_path / "cache")
    with pytest.raises(CheckpointMismatchError, match="vocabulary"):
        train(other_loader, ModelConfig(vocab_size=other_loader.vocab_size, hidden_size=16), tc,
              out_dir=out_dir, progress=False)
    # Same vocabulary, other text: the data fingerprint differs.
    shuffled = tmp_path / "shuffled.txt"
    shuffled.write_text(TEXT[::-1], encoding="utf-8")
    with pytest.raises(CheckpointMismatchError, match="fingerprint"):
        train(loader_for(shuffled, tc, tmp_path / "cache2"), mc, tc, out_dir=out_dir, progress=False)
    # checkpoint_every is bookkeeping, not part of the run: another value is accepted
    again = train(loader, mc, dataclasses.replace(tc, checkpoint_every=3), out_dir=out_dir,
                  progress=False)
    assert again.finished


def test_kept_snapshots_are_the_run_at_those_steps(short, tmp_path):
    """``keep_steps``: checkpoints at those steps survive pruning, and each holds the weights the
    run had then (the same run stopped there by ``max_batches`` is the reference)."""
    config = ModelConfig(vocab_size=short.vocab_size, hidden_size=6, cell="gru")
    tc = small(learning_rate=0.01, checkpoint_every=4)
    train(short, config, tc, out_dir=tmp_path / "run", progress=False, keep_steps=(3, 9, 11))
    names = sorted(p.name for p in (tmp_path / "run").iterdir())
    assert names == ["ckpt-00000003", "ckpt-00000009", "ckpt-00000011", "ckpt-00000018"]  # 18: the end
    for step in (3, 11):
        stopped = train(short, config, tc, out_dir=tmp_path / f"stopped-{step}", progress=False, max_batches=step)
        snapshot = load_checkpoint(tmp_path / "run" / f"ckpt-{step:08d}")[0]
        for a, b in zip(weights_of(snapshot), weights_of(stopped.model)):
            np.testing.assert_array_equal(a, b)
    progress = json.loads((tmp_path / "run" / "ckpt-00000009" / "progress.json").read_text())
    assert (progress["epoch"], progress["batch"], len(progress["history"]["val_loss"])) == (1, 0, 1)  # epoch end


def test_evaluation_cache_does_not_keep_models_alive(run):
    import gc
    import weakref

    config = run["mc"]
    model = load_checkpoint(run["folder"] / "whole")[0]
    evaluate(model, run["loader"].val_x, run["loader"].val_y, config)
    assert model in train_module._EVAL_STEPS
    ref = weakref.ref(model)
    del model
    gc.collect()
    assert ref() is None


# --------------------------------------------------------------------------- hostile use


def test_train_config_refuses_what_cannot_train():
    for bad in [dict(learning_rate=float("inf")), dict(learning_rate=float("nan")), dict(grad_clip=float("nan")),
                dict(grad_clip=float("inf")), dict(seed=2**32), dict(seed=-1), dict(seed=1.5)]:
        with pytest.raises(ValueError, match="finite|seed"):
            TrainConfig(**bad)
    assert TrainConfig(seed=2**32 - 1).seed == 2**32 - 1


def same_run(a, b):
    assert a.history == b.history
    for x, y in zip(weights_of(a.model), weights_of(b.model)):
        np.testing.assert_array_equal(x, y)


@pytest.mark.slow
def test_stop_saves_between_batches_and_resumes_exactly(short, tmp_path):
    """``stop=`` (what the command line's Ctrl-C handler sets) stops before batch 5 with a checkpoint;
    a KeyboardInterrupt between batches still saves and is re-raised; both resume exactly."""
    import threading

    tc, config = small(learning_rate=0.01), ModelConfig(vocab_size=short.vocab_size, hidden_size=8, cell="gru")
    whole = train(short, config, tc, out_dir=tmp_path / "whole", progress=False)
    event, calls = threading.Event(), []

    def stop_at_five():
        calls.append(1)
        if len(calls) == 5:
            event.set()
        return event.is_set()

    part = train(short, config, tc, out_dir=tmp_path / "stopped", progress=False, stop=stop_at_five)
    assert part.stopped and not part.finished and part.global_step == 4
    assert latest_checkpoint(tmp_path / "stopped").name == "ckpt-00000004"
    same_run(train(short, config, tc, out_dir=tmp_path / "stopped", progress=False, stop=threading.Event()), whole)

    def interrupt_at_twelve():
        calls.append(1)
        if len(calls) == 17:  # 5 calls above: the 12th batch of this run
            raise KeyboardInterrupt
        return False

    with pytest.raises(KeyboardInterrupt):
        train(short, config, tc, out_dir=tmp_path / "interrupted", progress=False, stop=interrupt_at_twelve)
    assert latest_checkpoint(tmp_path / "interrupted").name == "ckpt-00000011"
    assert not (tmp_path / "interrupted" / ".lock").exists()
    same_run(train(short, config, tc, out_dir=tmp_path / "interrupted", progress=False), whole)


def test_divergence_stops_and_keeps_the_last_good_checkpoint(short, tmp_path):
    config = ModelConfig(vocab_size=short.vocab_size, hidden_size=8, cell="gru")
    tc = small(learning_rate=1e38, grad_clip=0.0, checkpoint_every=1)
    with pytest.raises(train_module.TrainingDivergedError, match=r"diverged at batch \d+ .*nothing non-finite "
                                                                 r"was saved.*lower learning rate") as error:
        train(short, config, tc, out_dir=tmp_path / "run", progress=False)
    diverged = error.value
    assert not math.isfinite(diverged.loss) or not math.isfinite(diverged.grad_norm)
    assert diverged.checkpoint == latest_checkpoint(tmp_path / "run")
    assert [p.name for p in (tmp_path / "run").iterdir()] == [f"ckpt-{diverged.step - 1:08d}"]  # the last good one
    model = load_checkpoint(tmp_path / "run")[0]  # finite, or it would be refused
    assert all(np.isfinite(w).all() for w in weights_of(model))


@pytest.mark.slow
def test_num_epochs_may_grow_under_the_constant_schedule(short, tmp_path):
    config = ModelConfig(vocab_size=short.vocab_size, hidden_size=8, cell="gru")
    whole = train(short, config, small(learning_rate=0.01), out_dir=tmp_path / "whole", progress=False)
    one = train(short, config, small(learning_rate=0.01, num_epochs=1), out_dir=tmp_path / "grown", progress=False)
    assert one.finished
    grown = train(short, config, small(learning_rate=0.01), out_dir=tmp_path / "grown", progress=False)
    assert grown.resumed and grown.finished and grown.global_step == 2 * short.num_batches
    same_run(grown, whole)
    with pytest.raises(CheckpointMismatchError, match="ask for at least 2 epochs"):
        train(short, config, small(learning_rate=0.01, num_epochs=1), out_dir=tmp_path / "grown", progress=False)
    cosine = small(learning_rate=0.01, num_epochs=1, lr_schedule="cosine")
    train(short, config, cosine, out_dir=tmp_path / "cosine", progress=False)
    with pytest.raises(CheckpointMismatchError, match="(?s)num_epochs: checkpoint 1, now 2.*cosine schedule"):
        train(short, config, dataclasses.replace(cosine, num_epochs=2), out_dir=tmp_path / "cosine",
              progress=False)


def test_out_dir_is_locked_and_never_a_checkpoint(short, tmp_path):
    import threading

    from charrnn_lib.checkpoint import CheckpointError
    from charrnn_lib.outdir import OutDirBusyError, lock_out_dir

    config = ModelConfig(vocab_size=short.vocab_size, hidden_size=6, cell="gru")
    result = train(short, config, small(), out_dir=tmp_path / "run", progress=False, max_batches=2)
    ckpt = latest_checkpoint(tmp_path / "run")
    with pytest.raises(CheckpointError, match="is a checkpoint folder.*pass the folder that holds it"):
        train(short, config, small(), out_dir=ckpt, progress=False)
    assert sorted(p.name for p in ckpt.iterdir()) == sorted(checkpoint_files())  # nothing nested
    held, release = threading.Event(), threading.Event()

    def hold():
        with lock_out_dir(tmp_path / "run"):
            held.set()
            release.wait(30)

    thread = threading.Thread(target=hold)
    thread.start()
    held.wait(30)
    try:
        with pytest.raises(OutDirBusyError):
            train(short, config, small(), out_dir=tmp_path / "run", progress=False)
    finally:
        release.set()
        thread.join()
    assert latest_checkpoint(tmp_path / "run") == ckpt and result.global_step == 2


def checkpoint_files():
    from charrnn_lib.checkpoint import FILES

    return FILES
