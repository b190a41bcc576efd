"""The model zoo's recipes: what each training rule of the workflow does, end to end.

Each recipe reads the prepared dataset, trains (or derives) one model, and writes its checkpoint
(:func:`advflow.models.architectures.save_checkpoint`) and a JSON record: architecture, parameter count, test
accuracy, training settings, seed.
"""

from __future__ import annotations

import csv
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from advflow import __version__
from advflow.data import Dataset, load_prepared, to_model_space
from advflow.workflow.io import atomic_h5, atomic_path, write_json
from advflow.models.architectures import (
    ConvNet, LogitEnsemble, architecture, count_parameters, load_checkpoint, lsuv_init, save_checkpoint,
)
from advflow.models.training import TrainSettings, accuracy, fit, soft_labels, split_indices
from advflow.models.trimming import network_trimming
from advflow.models.user import check_user_model
from advflow.workflow.catalog import is_user_model
from advflow.workflow.digests import file_sha256

log = logging.getLogger("advflow.models.recipes")


def _split(dataset: Dataset, settings: dict[str, Any], seed: int) -> tuple[np.ndarray, np.ndarray]:
    return split_indices(len(dataset.train.labels), val_size=settings["val_size"],
                         train_size=settings.get("train_size"), seed=seed)


def new_model(name: str, dataset: Dataset, settings: dict[str, Any], seed: int, init_images: np.ndarray
              ) -> torch.nn.Module:
    """A freshly initialised ``name`` network for ``dataset``'s image shape (seeded): an advflow ConvNet, or a model
    of the user's (``settings`` has its ``module``) as its factory initialises it (no LSUV)."""
    channels, height, width = dataset.shape
    torch.manual_seed(seed)
    if is_user_model(settings):
        return check_user_model(name, settings, dataset.shape, len(dataset.classes), weights=False)[0].train()
    model = ConvNet(architecture(name, channels, (height, width), len(dataset.classes)))
    if settings.get("init", "lsuv") == "lsuv":
        lsuv_init(model, to_model_space(torch.as_tensor(init_images[:256]).float()))
    return model


def _write_model(model: torch.nn.Module, name: str, dataset: Dataset, settings: dict[str, Any], seed: int,
                 device: torch.device, out_pt: str | Path, out_json: str | Path, **extra: Any) -> dict[str, Any]:
    start = time.perf_counter()
    test_accuracy = accuracy(model, dataset.test.images, dataset.test.labels, device)
    record = {
        "model": name,
        "dataset": dataset.name,
        "architecture": model.arch,
        "parameters": count_parameters(model),
        "test_accuracy": round(test_accuracy, 5),
        "test_size": int(len(dataset.test.labels)),
        "settings": settings,
        "seed": seed,
        "device": str(device),
        "advflow_version": __version__,
        **extra,
    }
    log.info("%s: %d parameters, test accuracy %.4f on %d images (evaluated in %.1f s)", name,
             record["parameters"], test_accuracy, record["test_size"], time.perf_counter() - start)
    save_checkpoint(model, out_pt)
    write_json(out_json, record)
    return record


def train_model(name: str, data_path: str | Path, settings: dict[str, Any], *, seed: int, device: torch.device,
                out_pt: str | Path, out_json: str | Path, temperature: float = 1.0, architecture_of: str | None = None,
                log_dir: str | None = None) -> dict[str, Any]:
    """Train ``name`` from scratch on hard labels (at ``temperature``; T > 1 makes a distillation teacher)."""
    dataset = load_prepared(data_path)
    train_idx, val_idx = _split(dataset, settings, seed)
    images, labels = dataset.train.images[train_idx], dataset.train.labels[train_idx]
    model = new_model(architecture_of or name, dataset, settings, seed, images)
    log.info("training %s (%d parameters) on %d images for %d epochs at T=%g on %s", name,
             count_parameters(model), len(images), settings["epochs"], temperature, device)
    history = fit(model, images, labels, TrainSettings.from_config(settings), seed=seed, device=device,
                  temperature=temperature, log_dir=log_dir,
                  val=(dataset.train.images[val_idx], dataset.train.labels[val_idx]))
    model.arch["name"] = name
    return _write_model(model, name, dataset, settings, seed, device, out_pt, out_json,
                        train_images=int(len(images)), history=history, source="trained")


def import_model(name: str, data_path: str | Path, settings: dict[str, Any], *, seed: int, device: torch.device,
                 out_pt: str | Path, out_json: str | Path) -> dict[str, Any]:
    """A model of the user's with a checkpoint: loaded (``weights_only=True``), checked, its test accuracy measured,
    and written as a workflow checkpoint (its network, input convention and chosen layers); never trained."""
    dataset = load_prepared(data_path)
    checkpoint = settings["checkpoint"]
    model, arch = check_user_model(name, settings, dataset.shape, len(dataset.classes))
    log.info("loaded %s from %s (%s); layers %s", name, checkpoint, arch["module"], ", ".join(arch["layers"]))
    for warning in arch.get("layer_warnings") or []:
        log.warning("%s: %s", name, warning)
    return _write_model(model.to(device), name, dataset, settings, seed, device, out_pt, out_json, source="checkpoint",
                        checkpoint=str(checkpoint), checkpoint_sha256=file_sha256(checkpoint))


def distill(data_path: str | Path, teacher_pt: str | Path, settings: dict[str, Any], *, seed: int,
            device: torch.device, out_pt: str | Path, out_json: str | Path, out_soft_labels: str | Path,
            log_dir: str | None = None) -> dict[str, Any]:
    """Defensive distillation (Papernot et al. 2016): the student, of the teacher's architecture,
    is trained at temperature T on the teacher's soft labels softmax(Z_teacher / T); inference is at T = 1."""
    dataset = load_prepared(data_path)
    temperature = float(settings["temperature"])
    train_idx, val_idx = _split(dataset, settings, seed)
    images = dataset.train.images[train_idx]
    teacher = load_checkpoint(teacher_pt, device)
    teacher_record = json.loads(Path(teacher_pt).with_suffix(".json").read_text())  # written beside it
    targets = soft_labels(teacher, images, temperature, device)
    with atomic_h5(out_soft_labels) as h5:
        h5.create_dataset("indices", data=train_idx)
        h5.create_dataset("soft_labels", data=targets.numpy(), compression="gzip")
        h5.attrs["temperature"] = temperature
        h5.attrs["teacher"] = str(teacher_pt)
    log.info("soft labels of %d images at T=%g (mean max probability %.3f)", len(images), temperature,
             float(targets.max(1).values.mean()))
    student = new_model("distilled", dataset, settings, seed, images)
    history = fit(student, images, targets, TrainSettings.from_config(settings), seed=seed, device=device,
                  temperature=temperature, log_dir=log_dir,
                  val=(dataset.train.images[val_idx], dataset.train.labels[val_idx]))
    return _write_model(student, "distilled", dataset, settings, seed, device, out_pt, out_json,
                        train_images=int(len(images)), history=history, temperature=temperature,
                        teacher={"checkpoint": str(teacher_pt), "test_accuracy": teacher_record["test_accuracy"]})


def compress(data_path: str | Path, base_pt: str | Path, settings: dict[str, Any], *, seed: int,
             device: torch.device, out_pt: str | Path, out_json: str | Path, out_rounds: str | Path,
             log_dir: str | None = None) -> dict[str, Any]:
    """Network Trimming of ``good_init`` down to ``target_ratio`` of its parameters, then a final
    fine-tuning of ``epochs`` epochs."""
    dataset = load_prepared(data_path)
    train_idx, val_idx = _split(dataset, settings, seed)
    base = load_checkpoint(base_pt, "cpu")
    target = int(round(settings["target_ratio"] * count_parameters(base)))
    rng = np.random.default_rng(seed)

    def fine_tune(model: ConvNet, round_index: int) -> None:
        idx = train_idx
        if settings.get("finetune_size") and settings["finetune_size"] < len(idx):
            idx = np.sort(rng.choice(idx, settings["finetune_size"], replace=False))
        # fine-tuning runs a fixed number of epochs: no held-out accuracy to stop on (APoZ uses the held-out part)
        run = TrainSettings.from_config({**settings, "epochs": settings["finetune_epochs"], "patience": None})
        if run.epochs > 0:
            fit(model, dataset.train.images[idx], dataset.train.labels[idx], run, seed=seed + round_index,
                device=device, log_dir=None)

    log.info("Network Trimming: %d -> at most %d parameters (APoZ on %d held-out images)",
             count_parameters(base), target, len(val_idx))
    model, rounds = network_trimming(base, dataset.train.images[val_idx], fine_tune, target_parameters=target,
                                     step=settings["step"], min_keep=settings["min_keep"],
                                     max_rounds=settings["max_rounds"], device=device)
    if settings["epochs"] > 0:
        log.info("final fine-tuning: %d epochs", settings["epochs"])
        history = fit(model, dataset.train.images[train_idx], dataset.train.labels[train_idx],
                      TrainSettings.from_config({**settings, "patience": None}), seed=seed, device=device,
                      log_dir=log_dir)
    else:
        history = {}
    with atomic_path(out_rounds) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["round", "parameters_before", "parameters_after", "units_removed",
                                                "mean_apoz_removed", "removed_per_layer"])
        writer.writeheader()
        for record in rounds:
            writer.writerow({**record, "removed_per_layer": json.dumps(record["removed_per_layer"])})
    model.arch["name"] = "compressed"
    return _write_model(model, "compressed", dataset, settings, seed, device, out_pt, out_json,
                        base_parameters=count_parameters(base), target_parameters=target, rounds=len(rounds),
                        history=history)


def ensemble(member_pts: list[str | Path], data_path: str | Path, settings: dict[str, Any], *, seed: int,
             device: torch.device, out_pt: str | Path, out_json: str | Path) -> dict[str, Any]:
    """The logit-average ensemble of already trained members (no training of its own)."""
    dataset = load_prepared(data_path)
    members = [load_checkpoint(p, device) for p in member_pts]
    model = LogitEnsemble(members)
    return _write_model(model, "ensemble", dataset, settings, seed, device, out_pt, out_json,
                        members=[str(p) for p in member_pts])
