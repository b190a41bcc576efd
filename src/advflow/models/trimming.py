"""Network Trimming (Hu, Peng, Tai & Tang 2016): the ``compressed`` model of the paper's Q3.

APoZ (average percentage of zeros) of a channel is the share of its post-ReLU activations that
are exactly zero, over held-out inputs and all spatial positions (a neuron of a fully connected
layer: over held-out inputs). Channels and neurons with the highest APoZ carry the least signal;
they are removed -- the network becomes physically smaller -- and the network is fine-tuned.
This repeats until the parameter target is met.
"""

from __future__ import annotations

import copy
import logging
import math
from typing import Any, Callable

import numpy as np
import torch

from advflow.data import to_model_space
from advflow.models.architectures import ConvNet, count_parameters

log = logging.getLogger("advflow.models.trimming")


def prunable_layers(model: ConvNet) -> list[str]:
    """Keys of the layers whose units can be removed: every conv block and every hidden FC layer."""
    return [f"blocks.{i}" for i in range(len(model.blocks))] + [f"fc.{j}" for j in range(len(model.fc_relus))]


@torch.no_grad()
def apoz(model: ConvNet, inputs: np.ndarray | torch.Tensor, device: torch.device | str = "cpu",
         batch_size: int = 500) -> dict[str, torch.Tensor]:
    """APoZ of every channel (conv blocks, measured after the ReLU, before pooling) and every hidden
    FC neuron, over ``inputs`` (uint8 images, or floats already in [-1, 1])."""
    model = model.to(device).eval()
    zeros: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}

    def hook(key: str) -> Callable:
        def record(_module: Any, _inp: Any, out: torch.Tensor) -> None:
            dims = (0, 2, 3) if out.dim() == 4 else (0,)
            zeros[key] = zeros.get(key, 0) + (out == 0).sum(dim=dims).double().cpu()
            counts[key] = counts.get(key, 0) + out.numel() // out.shape[1]
        return record

    relus = [block.relu for block in model.blocks] + list(model.fc_relus)
    handles = [relu.register_forward_hook(hook(key)) for key, relu in zip(prunable_layers(model), relus)]
    try:
        inputs = torch.as_tensor(inputs)
        for start in range(0, len(inputs), batch_size):
            batch = inputs[start:start + batch_size].to(device)
            model(to_model_space(batch.float()) if batch.dtype == torch.uint8 else batch.float())
    finally:
        for handle in handles:
            handle.remove()
    return {key: (zeros[key] / counts[key]).float() for key in zeros}


def layer_widths(arch: dict[str, Any]) -> dict[str, int]:
    widths = {f"blocks.{i}": b["channels"] for i, b in enumerate(arch["blocks"])}
    widths.update({f"fc.{j}": h for j, h in enumerate(arch["hidden"])})
    return widths


def parameter_count(arch: dict[str, Any]) -> int:
    """Parameters of a :class:`ConvNet` of ``arch``, from the widths alone (no model is built)."""
    total, channels = 0, arch["in_channels"]
    height, width = arch["image_size"]
    for block in arch["blocks"]:
        total += channels * block["channels"] * 9 + block["channels"]
        channels = block["channels"]
        if block["pool"]:
            height, width = height // 2, width // 2
    features = channels if arch["head"] == "global_max" else channels * height * width
    for size in [*arch["hidden"], arch["num_classes"]]:
        total += features * size + size
        features = size
    return total


def _with_widths(arch: dict[str, Any], widths: dict[str, int]) -> dict[str, Any]:
    arch = copy.deepcopy(arch)
    for key, value in widths.items():
        kind, index = key.split(".")
        if kind == "blocks":
            arch["blocks"][int(index)]["channels"] = value
        else:
            arch["hidden"][int(index)] = value
    return arch


@torch.no_grad()
def prune(model: ConvNet, keep: dict[str, torch.Tensor]) -> ConvNet:
    """A new, physically smaller ConvNet holding only the kept channels/neurons of ``model``.

    ``keep`` maps a layer key (see :func:`prunable_layers`) to the indices of its units to keep;
    layers not named keep everything. Weights are copied, so the outputs of the kept units are
    unchanged.
    """
    model = model.cpu()
    keep = {k: torch.as_tensor(v, dtype=torch.long).sort().values for k, v in keep.items()}
    widths = {k: len(v) for k, v in keep.items()}
    pruned = ConvNet(_with_widths(model.arch, widths))
    pruned.arch["name"] = model.arch["name"]
    previous = torch.arange(model.arch["in_channels"])
    for i, (old, new) in enumerate(zip(model.blocks, pruned.blocks)):
        out = keep.get(f"blocks.{i}", torch.arange(old.conv.out_channels))
        new.conv.weight.copy_(old.conv.weight[out][:, previous])
        new.conv.bias.copy_(old.conv.bias[out])
        previous = out
    if model.arch["head"] == "flatten":  # a channel owns H*W consecutive inputs of the first FC layer
        _, height, width = model.final_shape
        spatial = height * width
        previous = (previous[:, None] * spatial + torch.arange(spatial)[None, :]).flatten()
    for j, (old, new) in enumerate(zip(model.fc, pruned.fc)):
        out = keep.get(f"fc.{j}", torch.arange(old.out_features))
        new.weight.copy_(old.weight[out][:, previous])
        new.bias.copy_(old.bias[out])
        previous = out
    return pruned


def select_removals(arch: dict[str, Any], scores: dict[str, torch.Tensor], *, parameter_goal: int,
                    original_widths: dict[str, int], min_keep: float) -> dict[str, torch.Tensor]:
    """Kept indices per layer after removing the highest-APoZ units, one at a time, until the
    network has at most ``parameter_goal`` parameters. No layer drops below ``min_keep`` of its
    original width."""
    widths = layer_widths(arch)
    removed: dict[str, list[int]] = {key: [] for key in widths}
    candidates = sorted(
        ((float(score), order, key, idx) for order, (key, values) in enumerate(scores.items())
         for idx, score in enumerate(values.tolist())),
        key=lambda c: (-c[0], c[1], c[3]),
    )
    floor = {key: max(1, math.ceil(min_keep * original_widths[key])) for key in widths}
    for _, _, key, idx in candidates:
        if parameter_count(_with_widths(arch, widths)) <= parameter_goal:
            break
        if widths[key] - 1 < floor[key]:
            continue
        widths[key] -= 1
        removed[key].append(idx)
    return {key: torch.tensor(sorted(set(range(layer_widths(arch)[key])) - set(gone)), dtype=torch.long)
            for key, gone in removed.items()}


def network_trimming(model: ConvNet, held_out: np.ndarray, fine_tune: Callable[[ConvNet, int], None], *,
                     target_parameters: int, step: float = 0.05, min_keep: float = 0.5, max_rounds: int = 20,
                     device: torch.device | str = "cpu") -> tuple[ConvNet, list[dict[str, Any]]]:
    """Prune-and-fine-tune rounds until ``model`` has at most ``target_parameters`` parameters.

    Each round removes the highest-APoZ units (measured on ``held_out``) so the parameter count
    falls by about ``step`` of its current value (never below the target), then calls
    ``fine_tune(model, round)``. Returns the final model and one record per round.
    """
    original_widths = layer_widths(model.arch)
    rounds: list[dict[str, Any]] = []
    for round_index in range(1, max_rounds + 1):
        current = count_parameters(model)
        if current <= target_parameters:
            break
        scores = apoz(model, held_out, device)
        goal = max(target_parameters, int(current * (1.0 - step)))
        keep = select_removals(model.arch, scores, parameter_goal=goal, original_widths=original_widths,
                               min_keep=min_keep)
        removed = {k: original - len(keep[k]) for k, original in layer_widths(model.arch).items()
                   if original != len(keep[k])}
        if not removed:
            raise RuntimeError(
                f"Network Trimming cannot reach {target_parameters} parameters: every layer is at its floor "
                f"(min_keep={min_keep}). Lower min_keep or raise the target."
            )
        model = prune(model, keep)
        removed_apoz = [float(scores[k][i]) for k in removed
                        for i in sorted(set(range(len(scores[k]))) - set(keep[k].tolist()))]
        record = {"round": round_index, "parameters_before": current, "parameters_after": count_parameters(model),
                  "units_removed": sum(removed.values()), "mean_apoz_removed": round(float(np.mean(removed_apoz)), 4),
                  "removed_per_layer": removed}
        log.info("trimming round %d: %d -> %d parameters, %d units removed (mean APoZ %.3f)", round_index,
                 current, record["parameters_after"], record["units_removed"], record["mean_apoz_removed"])
        fine_tune(model, round_index)
        rounds.append(record)
    else:
        if count_parameters(model) > target_parameters:
            raise RuntimeError(f"Network Trimming did not reach {target_parameters} parameters in {max_rounds} "
                               "rounds; raise trimming.step or trimming.max_rounds")
    return model, rounds
