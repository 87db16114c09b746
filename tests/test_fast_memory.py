"""keep_freed_memory: glibc takes the setting, and a process keeps large freed blocks."""
import platform
import resource
import subprocess
import sys

import pytest

from charrnn_lib.fast.memory import keep_freed_memory

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

# Allocate, touch and free a 40 MB block ten times; print the page faults this cost.
PROGRAM = """
import ctypes, resource, sys
from charrnn_lib.fast.memory import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
size = 40 << 20
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)
    libc.free(block)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_freed_blocks_are_reused_without_page_faults():
    faults = {}
    for mode in ("default", "keep"):
        out = subprocess.run([sys.executable, "-c", PROGRAM, mode], capture_output=True, text=True, check=True)
        faults[mode] = int(out.stdout)
    pages = (40 << 20) // resource.getpagesize()
    assert faults["default"] >= 9 * pages        # every round faults the block in again
    assert faults["keep"] <= 2 * pages           # only the first round does


def test_calling_again_is_harmless():
    assert keep_freed_memory() == keep_freed_memory() == GLIBC
