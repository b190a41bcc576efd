"""GPU memory per rule, for running several GPU jobs at once on one GPU (``resources: gpu_mem_mb``; README, "Running
on one GPU"; docs/cluster.md).

Each rule that uses the GPU declares ``gpu_mem_mb``: the most GPU memory one of its jobs holds, its CUDA context
included. ``profiles/local`` offers a budget (``--resources gpu_mem_mb=N``, N the GPU's memory less a margin), and
Snakemake runs GPU jobs side by side while their declared sum fits, instead of one at a time.

**Provenance: estimates, not yet measured on a GPU.** Every job that used CUDA ends its log with its peak
(``advflow.workflow.device.GPU_PEAK_LINE``: what PyTorch's allocator reserved), and ``benchmarks/stage_times.py``
prints the largest per rule; the values below are upper estimates for the batch sizes of ``config.yaml`` and
``configs/gpu.yaml`` on 28x28 or 32x32 images (activations of a batch forward and backward, the MI stage's
2^26-element chunks, the defense's fitted states) plus :data:`CONTEXT_MB` for the context, to be replaced by the
measured peaks where a GPU run has logged them (docs/benchmarks.md, "GPU").
"""

from __future__ import annotations

#: A CUDA context's own memory (driver, kernels, cuDNN/cuBLAS workspaces), outside PyTorch's allocator.
CONTEXT_MB = 600

#: Rule -> peak GPU memory of one job, MiB, context included (estimates: see the module docstring).
GPU_MEMORY_MB: dict[str, int] = {
    "train_model": 2500, "train_distillation_teacher": 2500, "distill": 2500, "compress": 2500, "ensemble": 1600,
    "import_model": 1600,
    "select_inputs": 1600, "attack": 2500, "jsma_trajectories": 1600,
    "features": 1600, "mi": 3000,
    "defense_inputs": 1600, "train_autoencoder": 1600, "fit_mid": 2000, "fit_detector": 3000, "defense_attack": 2500,
    "defense_scores": 3000, "dropout_vote": 2500, "adaptive_attack": 3000,
    "average_grid": 1600,
}


def gpu_memory(rule: str, device: str) -> int:
    """``gpu_mem_mb`` of ``rule``'s jobs: its :data:`GPU_MEMORY_MB`, or 0 when the config pins the CPU."""
    if device == "cpu":
        return 0
    if rule not in GPU_MEMORY_MB:
        raise KeyError(f"rule {rule!r} uses the GPU but declares no GPU memory: add it to "
                       "advflow.workflow.resources.GPU_MEMORY_MB")
    return GPU_MEMORY_MB[rule]
