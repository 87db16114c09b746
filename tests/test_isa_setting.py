"""The portability pass's set-up: the instruction-set setting it picks, and GPUs hidden from nbval."""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import isa_setting  # noqa: E402  (a script beside this file, not part of the library)

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("flags, expected", [
    ({"sse4_2", "avx", "avx2", "avx512f"}, {"XLA_FLAGS": "--xla_cpu_max_isa=AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}),
    ({"sse4_2", "avx", "avx2"}, {"XLA_FLAGS": "--xla_cpu_max_isa=AVX", "ONEDNN_MAX_CPU_ISA": "AVX"}),
    ({"sse4_2", "avx"}, {"XLA_FLAGS": "--xla_cpu_max_isa=SSE4_2", "ONEDNN_MAX_CPU_ISA": "SSE41"}),
])
def test_one_level_below_the_best_on_x86(flags, expected):
    assert isa_setting.other_setting("x86_64", flags) == expected


def test_a_cpu_with_native_float16_switches_onednn_off_instead_of_limiting_it():
    flags = {"sse4_2", "avx", "avx2", "avx512f", "avx512_fp16"}
    assert isa_setting.other_setting("x86_64", flags) == {"XLA_FLAGS": "--xla_cpu_max_isa=AVX2",
                                                          "TF_ENABLE_ONEDNN_OPTS": "0"}


def test_other_architectures_switch_onednn(monkeypatch):
    monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS", raising=False)
    assert isa_setting.other_setting("aarch64", set()) == {"TF_ENABLE_ONEDNN_OPTS": "0"}
    assert isa_setting.other_setting("x86_64", {"sse4_2"}) == {"TF_ENABLE_ONEDNN_OPTS": "0"}  # nothing below
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "0")
    assert isa_setting.other_setting("aarch64", set()) == {"TF_ENABLE_ONEDNN_OPTS": "1"}    # the other way


def test_the_names_are_ones_xla_and_onednn_know():
    # XLA ignores an unknown --xla_cpu_max_isa silently; these are the spellings of
    # xla/service/cpu (SSE4_2, AVX, AVX2, AVX512) and of oneDNN's ONEDNN_MAX_CPU_ISA.
    assert [xla for _, xla, _ in isa_setting.X86_LEVELS] == ["AVX512", "AVX2", "AVX", "SSE4_2"]
    assert [o for _, _, o in isa_setting.X86_LEVELS] == ["AVX512_CORE", "AVX2", "AVX", "SSE41"]


@pytest.mark.slow
def test_an_unknown_setting_changes_nothing_and_the_chosen_one_does():
    # What --check relies on: the probe sees a real change and misses a silent no-op.
    host = isa_setting.probe_bits({})
    assert isa_setting.probe_bits({"XLA_FLAGS": "--xla_cpu_max_isa=NO_SUCH_ISA"}) == host
    if isa_setting.cpu_flags() & {"avx", "avx2", "avx512f"}:
        assert isa_setting.probe_bits(isa_setting.other_setting()) != host


@pytest.mark.slow
def test_nbval_kernels_do_not_see_gpus(tmp_path):
    """A notebook run by `pytest --nbval` from this repository sees CUDA_VISIBLE_DEVICES="".

    The probe notebook lives under _build/ (git-ignored) so that the repository's
    conftest.py and pyproject.toml apply to it, as they do to chapters/.
    """
    folder = ROOT / "_build" / "gpu-probe"
    folder.mkdir(parents=True, exist_ok=True)
    probe = folder / "probe.ipynb"
    cell = {"cell_type": "code", "execution_count": 1, "id": "probe", "metadata": {},
            "source": "import os\nprint(repr(os.environ.get('CUDA_VISIBLE_DEVICES')))",
            "outputs": [{"output_type": "stream", "name": "stdout", "text": "''\n"}]}
    probe.write_text(json.dumps({"cells": [cell], "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
                                 "nbformat": 4, "nbformat_minor": 5}), encoding="utf-8")
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "0"}          # as on a machine with a GPU
    done = subprocess.run([sys.executable, "-m", "pytest", "--nbval", "-q", str(probe.relative_to(ROOT))],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "1 passed" in done.stdout
