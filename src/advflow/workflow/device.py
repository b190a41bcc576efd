"""Where computations run: ``device: auto`` is the GPU when there is one, the CPU otherwise."""

from __future__ import annotations

import torch


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` picks the GPU when there is one and the CPU otherwise."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} was requested but no CUDA GPU is available; use device: auto or cpu")
    return resolved


#: The line every job that used CUDA ends its log with (``benchmarks/stage_times.py`` collects it per rule: the
#: measured peaks that :data:`advflow.workflow.resources.GPU_MEMORY_MB` declares).
GPU_PEAK_LINE = "peak GPU memory: %.0f MiB reserved"


def log_gpu_peak() -> float | None:
    """Log (:data:`GPU_PEAK_LINE`) and return the most GPU memory PyTorch's allocator reserved in this process, in
    MiB; None (and nothing logged) where CUDA was not used."""
    if not (torch.cuda.is_available() and torch.cuda.is_initialized()):
        return None
    import logging

    peak = max(torch.cuda.max_memory_reserved(i) for i in range(torch.cuda.device_count())) / 2**20
    logging.getLogger("advflow").info(GPU_PEAK_LINE, peak)
    return peak
