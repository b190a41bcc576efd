"""Training with PyTorch Lightning: supervised training, defensive distillation, evaluation.

Images travel as uint8 and are scaled to [-1, 1] on the device (:func:`advflow.data.to_model_space`),
so a whole dataset fits in memory at a quarter of its float size.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from dataclasses import dataclass
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from advflow.data import to_model_space
from advflow.workflow.device import resolve_device  # noqa: F401 (part of this module's API)
from advflow.models.architectures import predict_logits

log = logging.getLogger("advflow.models.training")


@dataclass
class TrainSettings:
    """The settings of one training run; every field is part of the model's JSON record."""

    epochs: int = 1
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    lr_schedule: str = "onecycle"
    channels_last: bool = True
    log_every: int = 20
    #: Early stopping: stop after this many epochs without a better held-out accuracy, keeping the best epoch's
    #: weights (``epochs`` is then the most); None trains every epoch.
    patience: int | None = None

    @classmethod
    def from_config(cls, settings: dict[str, Any]) -> "TrainSettings":
        known = {k: settings[k] for k in ("epochs", "batch_size", "lr", "weight_decay", "lr_schedule", "channels_last",
                           "log_every", "patience")
                 if k in settings}
        return cls(**known)


def split_indices(n: int, *, val_size: int, train_size: int | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of ``n`` training images into (train, held-out validation) indices.

    The validation part is never trained on; Network Trimming measures APoZ on it.
    """
    if val_size >= n:
        raise ValueError(f"val_size ({val_size}) must be smaller than the training set ({n} images)")
    order = np.random.default_rng(seed).permutation(n)
    val, rest = order[:val_size], order[val_size:]
    if train_size is not None:
        rest = rest[:train_size]
    return np.sort(rest), np.sort(val)


class ClassifierModule(L.LightningModule):
    """Cross-entropy on softmax(Z / T) against hard labels or soft label vectors.

    T = 1 is ordinary training; T > 1 trains a distillation teacher or student
    (Papernot et al. 2016, Eq. 1 of the paper's Q4). At inference the bare model is used, i.e. T = 1.
    """

    def __init__(self, model: nn.Module, settings: TrainSettings, temperature: float = 1.0) -> None:
        super().__init__()
        self.model = model
        self.settings = settings
        self.temperature = float(temperature)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        images, targets = batch
        images = to_model_space(images.float())
        if self.settings.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images, targets

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        images, targets = batch
        loss = F.cross_entropy(self.model(images) / self.temperature, targets)
        self.log("train_loss", loss, on_step=True, on_epoch=True, prog_bar=True)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        """Accuracy (argmax of Z, i.e. T = 1) on held-out images with hard labels."""
        images, labels = batch
        correct = (self.model(images).argmax(1) == labels).float()
        self.log("val_accuracy", correct.mean(), on_epoch=True, batch_size=len(labels), prog_bar=True)

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.Adam(self.model.parameters(), lr=self.settings.lr,
                                     weight_decay=self.settings.weight_decay)
        if self.settings.lr_schedule == "constant":
            return optimizer
        # One-cycle (Smith & Topin 2019): warm up to ``lr``, then anneal; reaches a given accuracy
        # in far fewer steps than a constant rate, which matters on a CPU budget.
        schedule = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=self.settings.lr, total_steps=max(1, int(self.trainer.estimated_stepping_batches)))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def duration(seconds: float) -> str:
    """``seconds`` as ``m:ss`` or ``h:mm:ss``."""
    minutes, secs = divmod(int(round(max(seconds, 0.0))), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class ProgressLog(L.Callback):
    """Periodic progress lines for a rule's log file (a bar would be unreadable there): every ``every`` batches the
    epoch, the batch, the loss, the images per second so far and the time left at that rate; each epoch's
    validation accuracy; and a last line when training ends, logged with ``extra={"console": True}``. A job of a
    local run also shows them on Snakemake's console, at most one line every few seconds and always the last
    (:func:`advflow.workflow.console_progress`)."""

    def __init__(self, every: int) -> None:
        self.every = max(1, every)
        self.start = 0.0
        self.seen = 0

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.start, self.seen = time.perf_counter(), 0
        self.val_accuracy: list[float] = []

    def on_validation_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        accuracy = trainer.callback_metrics.get("val_accuracy")
        if accuracy is not None and not trainer.sanity_checking:
            self.val_accuracy.append(round(float(accuracy), 5))
            log.info("epoch %d/%d validation accuracy %.4f", trainer.current_epoch + 1, trainer.max_epochs,
                     float(accuracy))

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self.seen += len(batch[0])
        total = trainer.num_training_batches
        if (batch_idx + 1) % self.every == 0 or batch_idx + 1 == total:
            elapsed = max(time.perf_counter() - self.start, 1e-9)
            loss = float(outputs["loss"]) if isinstance(outputs, dict) else float(outputs)
            done = trainer.current_epoch * total + batch_idx + 1
            left = elapsed / done * (trainer.max_epochs * total - done) if math.isfinite(total) else float("nan")
            log.info("epoch %d/%d batch %d/%d loss %.4f (%.0f img/s, %s left)", trainer.current_epoch + 1,
                     trainer.max_epochs, batch_idx + 1, total, loss, self.seen / elapsed,
                     duration(left) if math.isfinite(left) else "?")

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        log.info("trained %d epoch(s) of %d batches in %s (%.0f img/s)", trainer.current_epoch,
                 trainer.num_training_batches, duration(elapsed), self.seen / elapsed, extra={"console": True})


class KeepBest(L.Callback):
    """With Lightning's ``EarlyStopping`` on the held-out accuracy: keeps (in memory) the weights of the epoch with the
    best held-out accuracy so far, and puts them back when training ends, so an early-stopped model is its best
    epoch's, not its last's. ``best_epoch`` (1-based) and ``best`` say which."""

    def __init__(self) -> None:
        self.best, self.best_epoch, self.state = -math.inf, 0, None

    def on_validation_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        accuracy = trainer.callback_metrics.get("val_accuracy")
        if accuracy is not None and not trainer.sanity_checking and float(accuracy) > self.best:
            self.best, self.best_epoch = float(accuracy), trainer.current_epoch + 1
            self.state = {k: v.detach().cpu().clone() for k, v in module.model.state_dict().items()}

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if self.state is not None:
            module.model.load_state_dict(self.state)
            log.info("kept epoch %d's weights (held-out accuracy %.4f)", self.best_epoch, self.best)


def make_loader(images: np.ndarray | torch.Tensor, targets: np.ndarray | torch.Tensor, batch_size: int,
                seed: int, shuffle: bool = True) -> DataLoader:
    dataset = TensorDataset(torch.as_tensor(images), torch.as_tensor(targets))
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator,
                      pin_memory=torch.cuda.is_available())


def make_trainer(settings: TrainSettings, device: torch.device, log_dir: str | None = None) -> L.Trainer:
    from lightning.pytorch.loggers import CSVLogger
    from lightning.pytorch.plugins.environments import LightningEnvironment

    return L.Trainer(
        max_epochs=settings.epochs,
        accelerator="gpu" if device.type == "cuda" else "cpu",
        devices=[device.index or 0] if device.type == "cuda" else 1,
        # Some CUDA kernels (e.g. scatter in max-pool backward) have no deterministic version: warn there.
        deterministic=True if device.type == "cpu" else "warn",
        logger=CSVLogger(log_dir, name="", version="") if log_dir else False,
        enable_checkpointing=False,
        enable_progress_bar=sys.stderr.isatty(),
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[ProgressLog(settings.log_every), *_early_stopping(settings)],
        # One process on one device: not a Slurm multi-task launch, even inside a Slurm job (otherwise
        # Lightning warns about srun in every training log).
        plugins=[LightningEnvironment()],
    )


def _early_stopping(settings: TrainSettings) -> list[L.Callback]:
    """Lightning's EarlyStopping on the held-out accuracy and :class:`KeepBest`, when ``patience`` is set."""
    if settings.patience is None:
        return []
    from lightning.pytorch.callbacks import EarlyStopping

    return [EarlyStopping(monitor="val_accuracy", mode="max", patience=int(settings.patience), min_delta=0.0,
                          check_on_train_epoch_end=False), KeepBest()]


def fit(model: nn.Module, images: np.ndarray, targets: np.ndarray | torch.Tensor, settings: TrainSettings, *,
        seed: int, device: torch.device, temperature: float = 1.0, log_dir: str | None = None,
        val: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, Any]:
    """Train ``model`` in place on uint8 ``images`` and hard (int) or soft (float rows) ``targets``.

    ``val``: held-out uint8 images and their int labels, whose accuracy is logged after every epoch and
    returned as ``val_accuracy`` (one value per epoch); it does not change the training."""
    if settings.patience is not None and (val is None or not len(val[1])):
        raise ValueError("training.patience stops on the held-out accuracy, and this training has no held-out images; "
                         "set training.val_size, or patience: null")
    L.seed_everything(seed, workers=True, verbose=False)
    if device.type == "cpu":
        # Training at T = 40 divides every gradient by T; deep in the network they reach the subnormal
        # range, where x86 arithmetic is many times slower. Flushing them to zero costs no accuracy.
        torch.set_flush_denormal(True)
    if settings.channels_last:
        model = model.to(memory_format=torch.channels_last)
    module = ClassifierModule(model, settings, temperature)
    trainer = make_trainer(settings, device, log_dir)
    loader = make_loader(images, targets, settings.batch_size, seed)
    start = time.perf_counter()
    val_loader = (make_loader(val[0], np.asarray(val[1], dtype=np.int64), 256, seed, shuffle=False)
                  if val is not None and len(val[1]) else None)
    try:
        trainer.fit(module, train_dataloaders=loader, val_dataloaders=val_loader)
    finally:
        if device.type == "cpu":
            # Back to IEEE subnormals for whatever runs next in this process: an attack's softmax
            # derivative of about 1e-40 is not 0 (Q4's saturation premise depends on it).
            torch.set_flush_denormal(False)
    seconds = time.perf_counter() - start
    model.to(memory_format=torch.contiguous_format)
    final_loss = trainer.callback_metrics.get("train_loss_epoch")
    kept = next((c for c in trainer.callbacks if isinstance(c, KeepBest)), None)
    stopping = {} if kept is None else {"epochs_run": int(trainer.current_epoch), "best_epoch": kept.best_epoch}
    return {**stopping, "seconds": round(seconds, 2),
            "images_per_second": round(len(images) * (trainer.current_epoch if kept else settings.epochs) / seconds, 1),
            "final_train_loss": None if final_loss is None else round(float(final_loss), 5),
            "val_accuracy": next(c.val_accuracy for c in trainer.callbacks if isinstance(c, ProgressLog)),
            "temperature": temperature}


def accuracy(model: nn.Module, images: np.ndarray, labels: np.ndarray, device: torch.device) -> float:
    logits = predict_logits(model, images, device)
    return float((logits.argmax(1) == torch.as_tensor(labels)).float().mean())


def soft_labels(teacher: nn.Module, images: np.ndarray, temperature: float, device: torch.device) -> torch.Tensor:
    """Defensive distillation's soft labels: softmax(Z_teacher(x) / T) for every training image."""
    return torch.softmax(predict_logits(teacher, images, device) / temperature, dim=1)
