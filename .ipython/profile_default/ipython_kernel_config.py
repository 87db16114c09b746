# Kernel options for every notebook this repository executes (nbval, `make execute`).
# conftest.py and the Makefile point IPYTHONDIR here.
c = get_config()  # noqa: F821  (provided by IPython when it loads this file)

# TensorFlow's C++ runtime writes start-up notices (absl, oneDNN) straight to file
# descriptor 2.  By default ipykernel forwards that descriptor into the notebook as
# stderr output, which differs on every run and fails strict nbval.  Keep C-level
# output out of the notebook; Python-level prints and warnings are still captured.
c.IPKernelApp.capture_fd_output = False

# Plots are drawn inline as PNG with a fixed resolution, so the stored outputs are stable.
c.InlineBackend.figure_formats = {"png"}
c.InlineBackend.rc = {"figure.dpi": 100, "savefig.dpi": 100}
