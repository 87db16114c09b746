"""Repository-wide pytest set-up.

`pytest --nbval chapters/` must pass as typed, with no extra flags, so everything the
notebook kernels need is set here: nbval starts each kernel as a child of this process,
and children inherit this environment.
"""
import os
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent

# The IPython profile with the kernel options (C-level stderr kept out of notebooks).
os.environ["IPYTHONDIR"] = str(ROOT / ".ipython")
# Quiet TensorFlow's Python-side logging as well; the C++ side is handled by the profile.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Same hash seed in every kernel: set/dict iteration orders are reproducible.
os.environ.setdefault("PYTHONHASHSEED", "0")
# Tests and notebooks never touch the network; make any accidental attempt fail fast.
os.environ.setdefault("CHARRNN_OFFLINE", "1")


def pytest_configure(config):
    """Kernels started by nbval run on the CPU.

    The stored outputs were produced on a CPU, and the chapters' checks (and their
    measured tolerances) are about CPU runs; a GPU sums in another order and takes other
    code paths (cuDNN instead of the fused CPU step).  So a reader with a GPU who types
    `pytest --nbval chapters/` gets the CPU run the book was checked with.  Only the
    notebook kernels are affected: the library tests, and JupyterLab started by hand,
    still see every GPU.
    """
    if getattr(config.option, "nbval", False) or getattr(config.option, "nbval_lax", False):
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
