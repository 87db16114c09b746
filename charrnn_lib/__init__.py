"""charrnn_lib: the helper library of *Recurrent Neural Networks from the Ground Up*.

Each module holds one idea and is imported on its own, e.g.
``from charrnn_lib.numpy_rnn import rnn_forward``.  Importing this package does nothing
else: TensorFlow is only loaded by the modules that need it.
"""

__version__ = "0.1.0"
