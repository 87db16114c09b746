"""Pick a CPU instruction-set setting other than this machine's best, for the portability pass.

XLA and oneDNN choose their float32 kernels by the instruction set of the CPU (SSE4.2, AVX,
AVX2, AVX-512 ...).  Wider vectors sum in another order, so the last bits of a float32 sum
differ, and a thousand Adam updates turn that into a different third decimal of a loss.
`make test-portability` re-runs the chapters that train under the setting printed here, so
that an output stored on one machine but compared exactly is caught on any machine.

    python tests/isa_setting.py            # prints e.g. "XLA_FLAGS=--xla_cpu_max_isa=AVX2 ONEDNN_MAX_CPU_ISA=AVX2"
    python tests/isa_setting.py --check    # also proves that the setting changes float32 results here

An unknown ``--xla_cpu_max_isa`` value is ignored without a word, which is why ``--check``
exists: it runs the same float32 computation under the host's default and under the setting,
in two fresh processes, and fails if the bits agree.
"""
from __future__ import annotations

import os
import platform
import subprocess
import sys

# x86-64 levels from the best down: (CPU flag that marks the level, XLA's name, oneDNN's name).
X86_LEVELS = [
    ("avx512f", "AVX512", "AVX512_CORE"),
    ("avx2", "AVX2", "AVX2"),
    ("avx", "AVX", "AVX"),
    ("sse4_2", "SSE4_2", "SSE41"),
]


def cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (Linux); empty elsewhere."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


# CPU flags of native float16 arithmetic.  TensorFlow decides from the *CPU's* flags whether to
# hand a float16 matrix product to oneDNN; oneDNN, limited by ONEDNN_MAX_CPU_ISA to a level
# without float16, then cannot build it and aborts the process (measured on an Intel Xeon with
# avx512_fp16: appendix A's mixed-precision cell killed its kernel).  A real CPU of the lower
# level would not take that path, so on such CPUs the pass switches TensorFlow's oneDNN
# optimisations off instead of limiting them; XLA's limit still changes the float32 results.
FLOAT16_FLAGS = {"avx512_fp16", "amx_fp16"}


def other_setting(machine: str | None = None, flags: set[str] | None = None) -> dict[str, str]:
    """Environment variables that make TensorFlow compute on a lower level than the host's best.

    On x86-64: one level below the best the CPU has (AVX-512 -> AVX2, AVX2 -> AVX, ...), for
    XLA and for oneDNN (oneDNN switched off instead on a CPU with native float16, see
    ``FLOAT16_FLAGS``).  Elsewhere (aarch64), or when the level is unknown: oneDNN's
    optimisations switched off.
    """
    machine = (machine or platform.machine()).lower()
    flags = cpu_flags() if flags is None else flags
    if machine in ("x86_64", "amd64") and flags:
        best = next((i for i, (flag, _, _) in enumerate(X86_LEVELS) if flag in flags), None)
        if best is not None and best + 1 < len(X86_LEVELS):
            _, xla, onednn = X86_LEVELS[best + 1]
            if flags & FLOAT16_FLAGS:
                return {"XLA_FLAGS": f"--xla_cpu_max_isa={xla}", "TF_ENABLE_ONEDNN_OPTS": "0"}
            return {"XLA_FLAGS": f"--xla_cpu_max_isa={xla}", "ONEDNN_MAX_CPU_ISA": onednn}
    return {"TF_ENABLE_ONEDNN_OPTS": "0" if os.environ.get("TF_ENABLE_ONEDNN_OPTS") != "0" else "1"}


# A float32 computation on both of the paths the chapters use: an XLA-compiled reduction and
# matrix product, and an eager oneDNN matrix product.  Prints the bits of the results.
_PROBE = """
import numpy as np, tensorflow as tf
x = tf.constant(np.random.default_rng(0).standard_normal((256, 1024)), tf.float32)
w = tf.constant(np.random.default_rng(1).standard_normal((1024, 512)), tf.float32)
xla = tf.function(lambda a, b: tf.reduce_sum(tf.tanh(a @ b), axis=0), jit_compile=True)(x, w)
eager = tf.reduce_sum(tf.matmul(x, w), axis=0)
print(np.concatenate([xla.numpy(), eager.numpy()]).view(np.uint32).tobytes().hex())
"""


def probe_bits(extra_env: dict[str, str]) -> str:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": "", **extra_env}
    for name in ("XLA_FLAGS", "ONEDNN_MAX_CPU_ISA", "TF_ENABLE_ONEDNN_OPTS"):  # the host's default: none set
        if name not in extra_env:
            env.pop(name, None)
    done = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def main(argv: list[str]) -> int:
    setting = other_setting()
    line = " ".join(f"{k}={v}" for k, v in setting.items())
    if "--check" in argv:
        if probe_bits({}) == probe_bits(setting):
            print(f"isa_setting: {line} computes the same float32 bits as this CPU's default, so the "
                  "portability pass would check nothing here", file=sys.stderr)
            return 1
        print(f"isa_setting: {line} changes float32 results on this CPU (checked)", file=sys.stderr)
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
