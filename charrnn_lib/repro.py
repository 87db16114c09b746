"""Reproducibility: one call that makes a notebook or a test run the same every time."""
from __future__ import annotations


def seed_everything(seed: int = 0, deterministic_ops: bool = True) -> None:
    """Seed Python, NumPy and TensorFlow (through Keras), and ask TensorFlow for
    deterministic kernels.

    ``keras.utils.set_random_seed`` seeds ``random``, ``numpy.random`` and TensorFlow's
    global generator.  ``enable_op_determinism`` makes TensorFlow pick deterministic
    implementations (it raises for ops that have none, instead of silently varying).
    """
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    if deterministic_ops:
        tf.config.experimental.enable_op_determinism()
