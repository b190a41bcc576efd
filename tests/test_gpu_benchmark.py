"""benchmarks/gpu.py (issue 31) runs everywhere: where there is no CUDA device it says so and exits 0 (CI), where
there is one it compares the GPU with the CPU (run by hand on a lent machine: docs/benchmarks.md, "GPU")."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu.py"


def benchmark():
    spec = importlib.util.spec_from_file_location("gpu_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_gpu_benchmark_documents_its_options(capsys):
    with pytest.raises(SystemExit) as exit_:
        benchmark().main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "--threads" in out and "--models" in out and "MI kernel" in out


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is here: the benchmark measures (by hand)")
def test_without_a_gpu_the_benchmark_says_why_it_measures_nothing_and_succeeds(capsys):
    assert benchmark().main([]) == 0
    out = capsys.readouterr().out
    assert "no CUDA device here" in out and "|" not in out  # no table of made-up numbers
