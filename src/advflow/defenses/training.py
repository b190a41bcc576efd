"""Training MagNet's autoencoders (:mod:`advflow.defenses.magnet`) with Lightning, as our classifiers are trained
(:func:`advflow.models.training.make_trainer`): MSE between ``AE(clip(x + σ·n, 0, 1))`` and ``x``, n ~ N(0, 1). Kept apart
from the detectors so that only the training rule pays Lightning's import."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, fields
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from advflow.defenses.magnet import MagNetAutoencoder, autoencoder
from advflow.models.training import TrainSettings, make_trainer

log = logging.getLogger("advflow.defenses.magnet")



@dataclass
class AutoencoderSettings:
    """Training of one autoencoder; defaults are the reference's (Adam 1e-3, batch 256, 100 epochs, σ = 0.1)."""

    epochs: int = 100
    batch_size: int = 256
    lr: float = 1e-3
    noise: float = 0.1
    weight_decay: float = 0.0
    seed: int = 0
    log_every: int = 50

    def __post_init__(self) -> None:
        for key, least in (("epochs", 1), ("batch_size", 1), ("log_every", 1), ("seed", 0), ("lr", 1e-12),
                           ("noise", 0.0), ("weight_decay", 0.0)):
            value, kinds = getattr(self, key), (int,) if isinstance(least, int) else (int, float)
            if isinstance(value, bool) or not isinstance(value, kinds) or not least <= value < math.inf:
                bound = ("an int" if kinds == (int,) else "a number") + (" > 0" if key == "lr" else f" >= {least:g}")
                raise ValueError(f"autoencoder setting {key} must be {bound}; got {value!r}")

    @classmethod
    def from_config(cls, settings: dict[str, Any]) -> AutoencoderSettings:
        return cls(**{f.name: settings[f.name] for f in fields(cls) if f.name in settings})


class AutoencoderModule(L.LightningModule):
    """Denoising training: MSE between ``AE(clip(x + σ·n, 0, 1))`` and the clean pixels ``x``, Adam. Unlike the
    reference, n is drawn afresh every step (it draws one noise array for all epochs), and its L2 activity
    regulariser (strength 1e-9, about 1e-6 of the loss) is left out."""

    def __init__(self, model: nn.Module, settings: AutoencoderSettings) -> None:
        super().__init__()
        self.model, self.settings = model, settings

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        return [batch[0].float() / 255.0]  # uint8 travels, pixels in [0, 1] on the device

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        pixels = batch[0]
        noisy = (pixels + self.settings.noise * torch.randn_like(pixels)).clamp(0.0, 1.0)
        loss = F.mse_loss(self.model(noisy), pixels)
        self.log("train_loss", loss, on_step=True, on_epoch=True, prog_bar=True)
        return loss

    def configure_optimizers(self) -> Any:
        return torch.optim.Adam(self.model.parameters(), lr=self.settings.lr, weight_decay=self.settings.weight_decay)


def channels_first(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 images ``(N, C, H, W)`` (as data files hold them) or ``(N, H, W, C)``, C in {1, 3}, as
    ``(N, C, H, W)``."""
    images = images if isinstance(images, torch.Tensor) else torch.tensor(np.asarray(images))  # copies
    if images.dtype != torch.uint8:
        raise ValueError(f"autoencoders train on uint8 pixels as the prepared data files hold them; got "
                         f"{images.dtype}. Pass the images of data/{{dataset}}.h5 unscaled")
    if images.ndim == 4 and images.shape[1] in (1, 3):
        return images.contiguous()
    if images.ndim == 4 and images.shape[-1] in (1, 3):
        return images.permute(0, 3, 1, 2).contiguous()
    raise ValueError(f"expected images (N, C, H, W) or (N, H, W, C) with C = 1 or 3; got shape {tuple(images.shape)}")


def train_autoencoder(name: str, images: np.ndarray | torch.Tensor, settings: AutoencoderSettings,
                      device: str | torch.device = "cpu", log_dir: str | None = None) -> MagNetAutoencoder:
    """Train autoencoder ``name`` on clean uint8 ``images`` (see :func:`channels_first`); seeded, and repeatable
    on the CPU. Returns it in eval mode on ``device``; a progress line is logged every ``log_every`` steps."""
    device = torch.device(device)
    images = channels_first(images)
    if len(images) == 0:
        raise ValueError("train_autoencoder got no images; pass the clean training images")
    L.seed_everything(settings.seed, workers=True, verbose=False)
    model = autoencoder(name, images.shape[1])
    trainer = make_trainer(TrainSettings(epochs=settings.epochs, batch_size=settings.batch_size, lr=settings.lr,
                                         weight_decay=settings.weight_decay, lr_schedule="constant",
                                         channels_last=False, log_every=settings.log_every), device, log_dir)
    loader = DataLoader(TensorDataset(images), batch_size=settings.batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(settings.seed), pin_memory=device.type == "cuda")
    log.info("training MagNet %s on %d images %s, %s", name, len(images), tuple(images.shape[1:]), settings)
    trainer.fit(AutoencoderModule(model, settings), train_dataloaders=loader)
    loss = trainer.callback_metrics.get("train_loss_epoch")
    log.info("MagNet %s trained; last epoch's loss %s", name, "n/a" if loss is None else f"{float(loss):.5f}")
    return model.to(device).eval()
