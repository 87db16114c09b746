"""The fast path: the same training step, computed faster on a CPU.  Skip it on a first reading.

``charrnn_lib.train`` computes a step's loss and gradients the plain way -- the Keras
model under a ``tf.GradientTape`` (chapter 5) -- unless this package applies.  For an LSTM
without dropout, in float32, on a machine without a GPU, ``fused_loss_and_grads`` computes
the *same* loss and gradients (up to float32 rounding; ``tests/test_train.py`` checks the
two paths agree over several updates) with:

* ``fused_lstm``: a stacked LSTM with its input products taken out of the time loop and a
  hand-written backward pass (chapter 3's equations);
* XLA: each group's work compiled into a few fused loops (``jit_compile=True``);
* row groups (``row_groups``): the batch's rows split into groups computed side by side,
  so that two recurrences keep two cores busy.

``memory.keep_freed_memory`` is the fourth trick, and a process-wide one, so the entry
points that want it call it themselves.  The appendix "Making it fast on a CPU" measures
what each trick buys.
"""
from charrnn_lib.fast.step import fused_loss_and_grads, row_groups, uses_fused_step

__all__ = ["fused_loss_and_grads", "row_groups", "uses_fused_step"]
