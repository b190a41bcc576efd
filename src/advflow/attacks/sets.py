"""Adversarial sets: craft one per (attack, target model), record what docs/method.md lists, and summarise them
as the paper's Table II / VIII (distortion, confidence, success rate) and Table VI (transferability).

An adversarial set file ``adv/{target}/{attack}.h5`` holds, per input::

    adversarial (N, C, H, W) float32 in [-1, 1]    labels, indices (into the test split)
    pred_before, pred_after, success, confidence    (confidence: softmax probability of pred_after)
    norms_r/{l0,l1,l2,linf}, norms_x/{l0,l1,l2,linf} (of the perturbation r = x_adv - x and of x)
    attrs: attack, target, norm, settings (JSON), seed
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from advflow.attacks import registry
from advflow.attacks.library import AttackOutcome, run_attack
from advflow.data import to_model_space
from advflow.workflow.io import atomic_h5, open_h5
from advflow.models.architectures import load_checkpoint, predict_logits
from advflow.attacks.profiles import load_profile
from advflow.attacks.checks import check_set

log = logging.getLogger("advflow.attacks.sets")

NORMS = ("l0", "l1", "l2", "linf")


def norms(v: torch.Tensor) -> dict[str, np.ndarray]:
    """L0 (entries that differ from zero), L1, L2 and L-infinity norm of each row of ``v``."""
    flat = v.flatten(1).double()
    return {"l0": (flat != 0).sum(1).numpy().astype(np.float64), "l1": flat.abs().sum(1).numpy(),
            "l2": flat.norm(dim=1).numpy(), "linf": flat.abs().amax(1).numpy()}


def _model_space(images: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(to_model_space(images.astype(np.float32)))


@torch.no_grad()
def model_logits(model: torch.nn.Module, x: torch.Tensor | np.ndarray, device: torch.device,
                 batch_size: int = 200) -> torch.Tensor:
    """Logits (T = 1) of inputs already in model space, batched, on the CPU."""
    x = torch.as_tensor(x)
    model = model.to(device).eval()
    out = [model(x[i:i + batch_size].to(device)).float().cpu() for i in range(0, len(x), batch_size)]
    return torch.cat(out) if out else torch.empty(0)


def write_set(out_path: str | Path, *, x: torch.Tensor, adversarial: torch.Tensor, labels: np.ndarray,
              indices: np.ndarray, before: np.ndarray, logits: torch.Tensor, attrs: dict[str, Any],
              extra: dict[str, np.ndarray] | None = None) -> None:
    """An adversarial set file (layout in the module docstring) from the seeds ``x`` and ``adversarial``
    (both in model space) and the target model's ``logits`` on ``adversarial``."""
    prediction = logits.argmax(1)
    confidence = torch.softmax(logits, 1).gather(1, prediction[:, None]).squeeze(1)
    success = prediction.numpy() != np.asarray(labels)
    with atomic_h5(out_path) as h5:
        h5.create_dataset("adversarial", data=adversarial.numpy().astype(np.float32), compression="gzip")
        for key, value in (("labels", labels), ("indices", indices), ("pred_before", before),
                           ("pred_after", prediction.numpy()), ("success", success),
                           ("confidence", confidence.numpy())):
            h5.create_dataset(key, data=value)
        for group, vectors in (("norms_r", adversarial - x), ("norms_x", x)):
            for key, value in norms(vectors).items():
                h5.create_dataset(f"{group}/{key}", data=value)
        for key, value in (extra or {}).items():
            h5.create_dataset(f"extra/{key}", data=value)
        h5.attrs.update(attrs)


def craft_set(attack: str, target_path: str | Path, seeds_path: str | Path, settings: dict[str, Any], *,
              seed: int, device: torch.device, out_path: str | Path, batch_size: int = 100,
              records: Callable[[torch.Tensor, torch.Tensor, AttackOutcome], dict[str, np.ndarray]] | None = None,
              attrs: dict[str, Any] | None = None) -> dict[str, Any]:
    """Attack the seeds on the target model and write the set; returns its Table II row.

    ``records(x, labels, outcome)`` adds per-input records under ``extra/`` (the defense sweeps: the achieved
    margin and the random control), ``attrs`` attributes over the usual ones (the defense sweeps: their own name
    and strength). The settings are stored as JSON, as every set stores them."""
    model = load_checkpoint(target_path, device)
    images, labels, indices = load_profile(seeds_path)
    x, y = _model_space(images), torch.as_tensor(labels)
    num_classes = int(model.arch.get("num_classes") or model.arch["members"][0]["num_classes"])
    before = predict_logits(model, images, device).argmax(1)
    outcome = run_attack(attack, model, x, y, settings, num_classes=num_classes, device=device, seed=seed,
                         batch_size=batch_size)
    name = model.arch["name"]
    extra = {k: v.numpy() for k, v in outcome.extra.items()}
    extra.update(records(x, y, outcome) if records is not None else {})
    write_set(out_path, x=x, adversarial=outcome.adversarial, labels=labels, indices=indices, before=before.numpy(),
              logits=outcome.logits, extra=extra,
              attrs={"attack": attack, "target": name, "norm": registry.get(attack).norm,
                     "settings": json.dumps(settings, sort_keys=True), "seed": seed, **(attrs or {})})
    row = summarize(out_path)
    log.info("%s on %s: success %.3f, distortion %.4f (%s)", row["attack"], name, row["success_rate"],
             row["distortion"], row["norm"])
    return row


def summarize(set_path: str | Path) -> dict[str, Any]:
    """Table II's row: distortion = mean ||r||_p / ||x||_p in the attack's own norm, distortion (L2),
    confidence = mean softmax probability of the adversarial class, both over successful inputs;
    success rate = successful / attacked."""
    with open_h5(set_path) as h5:
        check_set(h5, set_path)
        success = h5["success"][:].astype(bool)
        norm = str(h5.attrs["norm"])
        own = h5[f"norms_r/{norm}"][:] / np.maximum(h5[f"norms_x/{norm}"][:], 1e-12)
        l2 = h5["norms_r/l2"][:] / np.maximum(h5["norms_x/l2"][:], 1e-12)
        confidence = h5["confidence"][:]
        row = {"target": str(h5.attrs["target"]), "attack": str(h5.attrs["attack"]), "norm": norm}
    mean = (lambda v: float(v[success].mean()) if success.any() else float("nan"))
    row.update(distortion=mean(own), distortion_l2=mean(l2), confidence=mean(confidence),
               success_rate=float(success.mean()) if len(success) else float("nan"), attacked=int(len(success)))
    return row


def transferability(set_path: str | Path, model_path: str | Path, device: torch.device) -> dict[str, Any]:
    """Table VI: among the inputs successful on the set's target, the share the measuring model also
    misclassifies."""
    model = load_checkpoint(model_path, device)
    with open_h5(set_path) as h5:
        check_set(h5, set_path)
        adv, labels = torch.as_tensor(h5["adversarial"][:]), h5["labels"][:]
        success = h5["success"][:].astype(bool)
        attack, target = str(h5.attrs["attack"]), str(h5.attrs["target"])
    with torch.no_grad():
        prediction = torch.cat([model.eval()(adv[i:i + 200].to(device)).argmax(1).cpu()
                                for i in range(0, len(adv), 200)]).numpy()
    fooled = prediction != labels
    rate = float(fooled[success].mean()) if success.any() else float("nan")
    return {"attack": attack, "target": target, "measured_on": model.arch["name"], "successful": int(success.sum()),
            "transferred": int((fooled & success).sum()), "transferability": rate}


def record_trajectories(target_path: str | Path, seeds_path: str | Path, settings: dict[str, Any], *, n: int,
                        device: torch.device, out_path: str | Path) -> None:
    """Q1: every intermediate input of JSMA (least-perturbation target) for the first ``n`` seeds.

    ``steps/{i}`` holds seed i's trajectory (iterations + 1, C, H, W): step 0 is the seed, the last
    step the adversarial input.
    """
    from advflow.attacks.jsma import jsma_least_perturbation

    model = load_checkpoint(target_path, device)
    images, labels, indices = load_profile(seeds_path)
    x, y = _model_space(images[:n]).to(device), torch.as_tensor(labels[:n]).to(device)
    result = jsma_least_perturbation(model, x, y, num_classes=int(model.arch["num_classes"]),
                                     theta=settings["theta"], gamma=settings["gamma"],
                                     temperature=settings.get("temperature", 1.0), record_trajectory=True)
    with atomic_h5(out_path) as h5:
        for i, steps in enumerate(result.trajectory or []):
            h5.create_dataset(f"steps/{i}", data=steps.numpy().astype(np.float32), compression="gzip")
        for key, value in (("labels", labels[:n]), ("indices", indices[:n]), ("target", result.target.cpu().numpy()),
                           ("success", result.success.cpu().numpy()), ("iterations", result.iterations.cpu().numpy())):
            h5.create_dataset(key, data=value)
        h5.attrs.update({"attack": "jsma", "target_model": model.arch["name"],
                         "settings": json.dumps(settings, sort_keys=True)})
    log.info("trajectories of %d seeds: %s steps, success %s", len(x), result.iterations.tolist(),
             result.success.tolist())


def write_tables(set_paths: list[str | Path], transfer: list[tuple[str | Path, str | Path]], device: torch.device,
                 out_attacks: str | Path, out_transfer: str | Path) -> None:
    """Table II / VIII (one row per set) and Table VI (one row per set and measuring model) as CSV."""
    import csv

    from advflow.workflow.io import atomic_path

    rows = [summarize(p) for p in set_paths]
    transfer_rows = [transferability(s, m, device) for s, m in transfer]
    for path, table in ((out_attacks, rows), (out_transfer, transfer_rows)):
        with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
            fields = list(table[0]) if table else ["attack", "target"]
            writer = csv.DictWriter(fh, fieldnames=fields)
            writer.writeheader()
            writer.writerows(table)
