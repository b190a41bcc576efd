"""MagNet (Meng & Chen, CCS 2017): denoising autoencoders as detectors and as a reformer (docs/method.md, "Defenses and
detectors"; seed 003 mounts its MID detector on it), as the MagNet reference code builds its MNIST defense
(``train_defense.py``, ``defensive_models.py``, ``worker.py``):

- **Autoencoders** (:data:`ARCHITECTURES`, :func:`autoencoder`), pixels ``[0, 1]`` -> ``[0, 1]``, convs 3×3
  "same" with sigmoids: AE-I conv(3), avg-pool 2×2, conv(3) | conv(3), upsample 2×, conv(3) | conv(C); AE-II
  conv(3) | conv(3) | conv(C). Trained (:func:`train_autoencoder`) with MSE between ``AE(clip(x + σ·n, 0, 1))``
  and ``x``, n ~ N(0, 1), σ = 0.1 (:mod:`advflow.defenses.training`, with Lightning; this module imports no
  Lightning, so the stage's scoring jobs start quickly).
- **Reconstruction error** (``magnet_l1``, ``magnet_l2``): mean over pixels of ``|x − AE(x)|^p``.
- **Divergence** (``magnet_jsd_T10``, ``magnet_jsd_T40``): JSD between ``softmax(f(x)/T)`` and
  ``softmax(f(AE(x))/T)``, f the classifier's logits.
- **Reformer** (AE-I): the defended classifier classifies ``AE(x)``.

Detectors and the reformer take ``(N, C, H, W)`` inputs in model space ``[-1, 1]`` and convert with
:func:`~advflow.defenses.to_pixels`.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from advflow.defenses import Detector, from_pixels, to_pixels
from advflow.workflow.io import atomic_path, quarantine

log = logging.getLogger("advflow.defenses.magnet")

#: MagNet's MNIST autoencoders: the encoder's layers (int: conv 3×3 with that many filters; "average": avg-pool
#: 2×2); the decoder mirrors them (pool -> upsample) and a last conv returns to the image's channels.
ARCHITECTURES: dict[str, tuple[int | str, ...]] = {"ae_i": (3, "average", 3), "ae_ii": (3,)}
CHECKPOINT_FORMAT = "advflow.magnet_autoencoder/1"


class MagNetAutoencoder(nn.Module):
    """One of :data:`ARCHITECTURES`: ``(N, C, H, W)`` pixels in ``[0, 1]`` -> ``(N, C, H, W)`` in ``[0, 1]``."""

    def __init__(self, architecture: str, in_channels: int) -> None:
        super().__init__()
        self.architecture, self.in_channels = architecture, int(in_channels)
        encoder = ARCHITECTURES[architecture]
        layers: list[nn.Module] = []
        width = self.in_channels
        for position, item in enumerate((*encoder, *reversed(encoder), self.in_channels)):  # encoder, mirror, output
            if isinstance(item, int):
                layers += [nn.Conv2d(width, item, 3, padding=1), nn.Sigmoid()]
                width = item
            elif position < len(encoder):  # Keras' "same" pooling: a window off the edge averages what it covers
                layers.append(nn.AvgPool2d(2, ceil_mode=True))
            else:
                layers.append(nn.Upsample(scale_factor=2, mode="nearest"))
        self.layers = nn.Sequential(*layers)
        for layer in self.layers:
            if isinstance(layer, nn.Conv2d):  # Keras' defaults, as the reference trains them
                nn.init.xavier_uniform_(layer.weight)
                nn.init.zeros_(layer.bias)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        height, width = pixels.shape[-2:]
        return self.layers(pixels)[..., :height, :width]  # odd sizes: pool rounds up, so crop the upsampled row


def autoencoder(name: str, in_channels: int) -> MagNetAutoencoder:
    """A freshly initialised MagNet autoencoder ``name`` (``ae_i`` or ``ae_ii``) for ``in_channels`` channels."""
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown MagNet autoencoder {name!r}; allowed: {', '.join(ARCHITECTURES)}")
    if isinstance(in_channels, bool) or not isinstance(in_channels, (int, np.integer)) or in_channels < 1:
        raise ValueError(f"in_channels must be a positive int (1 for Fashion-MNIST, 3 for CIFAR-10); "
                         f"got {in_channels!r}")
    return MagNetAutoencoder(name, int(in_channels))


# --------------------------------------------------------------------------- checkpoints


def _cpu_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in module.state_dict().items()}


def save_autoencoder(model: nn.Module, name: str, path: str | Path) -> None:
    """Save architecture name, channels and state dict; :func:`load_autoencoder` reads it with
    ``weights_only=True``. Written atomically."""
    if name not in ARCHITECTURES or getattr(model, "architecture", None) != name:
        raise ValueError(f"save_autoencoder: model is {getattr(model, 'architecture', type(model).__name__)!r}, "
                         f"named {name!r}; pass a MagNet autoencoder and its name ({', '.join(ARCHITECTURES)})")
    payload = {"format": CHECKPOINT_FORMAT, "architecture": name, "in_channels": int(model.in_channels),
               "state_dict": _cpu_state(model)}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_autoencoder(path: str | Path, device: str | torch.device = "cpu") -> MagNetAutoencoder:
    """Rebuild the autoencoder that :func:`save_autoencoder` wrote, in eval mode, on ``device``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no MagNet autoencoder there; run the workflow rule that trains it")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
            found = sorted(payload) if isinstance(payload, dict) else type(payload).__name__
            raise ValueError(f"not a MagNet autoencoder checkpoint (found {found})")
        model = autoencoder(payload["architecture"], payload["in_channels"])
        model.load_state_dict(payload["state_dict"])
    except Exception as err:
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise quarantine(path, f"not a readable MagNet autoencoder checkpoint: {reason}",
                         rebuilt_by="rule train_autoencoder") from err
    return model.to(device).eval()


# --------------------------------------------------------------------------- detectors and reformer


def jensen_shannon(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Row-wise JSD (natural log) of probability rows ``(N, K)``: ``½ KL(p‖m) + ½ KL(q‖m)``, m = ``(p + q)/2``;
    ``(N,)``, in ``[0, log 2]``; ``0·log 0 = 0``."""
    if p.shape != q.shape or p.ndim != 2:
        raise ValueError(f"jensen_shannon needs two (N, K) tensors of the same shape; got {tuple(p.shape)} and "
                         f"{tuple(q.shape)}")
    m = (p + q) / 2.0
    kl_sum = (torch.xlogy(p, p) - torch.xlogy(p, m) + torch.xlogy(q, q) - torch.xlogy(q, m)).sum(dim=1)
    return (kl_sum / 2.0).clamp(0.0, math.log(2.0))  # clamp: rounding only


@contextlib.contextmanager
def _eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """``module`` in eval mode (no dropout) for the block, its mode restored afterwards."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


class _AutoencoderDefense:
    """What every MagNet part shares: the autoencoder, its device, batching of model-space inputs."""

    def __init__(self, ae: MagNetAutoencoder, *, batch_size: int = 500) -> None:
        if not isinstance(ae, MagNetAutoencoder):
            raise TypeError(f"MagNet needs an autoencoder from magnet.autoencoder/load_autoencoder; got "
                             f"{type(ae).__name__}")
        self.ae, self.batch_size = ae.eval(), int(batch_size)

    @property
    def device(self) -> torch.device:
        return next(self.ae.parameters()).device

    def batches(self, x: torch.Tensor) -> Iterator[torch.Tensor]:
        """Model-space ``(N, C, H, W)`` inputs in float32 batches on the autoencoder's device."""
        x = torch.as_tensor(x)
        if x.ndim != 4 or x.shape[1] != self.ae.in_channels:
            raise ValueError(f"MagNet {self.ae.architecture} takes (N, {self.ae.in_channels}, H, W) inputs in model "
                             f"space [-1, 1]; got shape {tuple(x.shape)}")
        for start in range(0, len(x), self.batch_size):
            yield x[start:start + self.batch_size].to(self.device, torch.float32)

    def reform(self, batch: torch.Tensor) -> torch.Tensor:
        """``AE(x)`` in model space, clipped to the pixel range as the reference's reformer does."""
        return from_pixels(self.ae(to_pixels(batch)).clamp(0.0, 1.0))

    def ae_state(self) -> dict[str, Any]:
        return {"architecture": self.ae.architecture, "in_channels": self.ae.in_channels,
                "autoencoder": _cpu_state(self.ae)}

    def load_ae_state(self, state: dict[str, Any], name: str, **settings: Any) -> None:
        expected = {"architecture": self.ae.architecture, "in_channels": self.ae.in_channels, **settings}
        found = {key: state.get(key) for key in expected}
        if found != expected:
            raise ValueError(f"detector {name}: the saved state has {found}, this detector {expected}; build it with "
                             "the saved autoencoder architecture and settings")
        self.ae.load_state_dict(state["autoencoder"])


def _scores(parts: list[torch.Tensor]) -> np.ndarray:
    return torch.cat(parts).cpu().numpy().astype(np.float64) if parts else np.zeros(0, dtype=np.float64)


def _differentiable(parts: list[torch.Tensor], device: torch.device) -> torch.Tensor:
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64, device=device)


class ReconstructionDetector(_AutoencoderDefense, Detector):
    """MagNet's error-based detector: score = mean over pixels of ``|x − AE(x)|^p``, p = 1 (``magnet_l1``) or
    2 (``magnet_l2``), on pixels in ``[0, 1]``; ``(N, C, H, W)`` model-space inputs -> ``(N,)`` float64."""

    adaptive_surrogate = "exact"

    def __init__(self, ae: MagNetAutoencoder, p: int, *, batch_size: int = 500) -> None:
        if p not in (1, 2):
            raise ValueError(f"MagNet's reconstruction error uses p = 1 or 2; got p = {p!r}")
        super().__init__(ae, batch_size=batch_size)
        self.p, self.name = int(p), f"magnet_l{int(p)}"

    def _score(self, batch: torch.Tensor) -> torch.Tensor:
        pixels = to_pixels(batch)
        error = (pixels.double() - self.ae(pixels).double()).abs().pow(self.p)
        return error.flatten(1).mean(dim=1)

    @torch.no_grad()
    def score(self, x: torch.Tensor) -> np.ndarray:
        return _scores([self._score(batch) for batch in self.batches(x)])

    def differentiable_score(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`score` as an ``(N,)`` float64 tensor on the autoencoder's device, with its graph (exact)."""
        return _differentiable([self._score(batch) for batch in self.batches(x)], self.device)

    def state_dict(self) -> dict[str, Any]:
        return {**self.ae_state(), "p": self.p}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.load_ae_state(state, self.name, p=self.p)


class JSDDetector(_AutoencoderDefense, Detector):
    """MagNet's divergence-based detector: score = JSD(softmax(f(x)/T), softmax(f(AE(x))/T)) (natural log),
    named ``magnet_jsd_T{T}``. ``classifier``: logits of model-space inputs, on the autoencoder's device; it runs
    in eval mode. Its state is the autoencoder and T (the classifier is saved by its own stage)."""

    adaptive_surrogate = "exact"

    def __init__(self, ae: MagNetAutoencoder, classifier: nn.Module, temperature: float, *,
                 batch_size: int = 500) -> None:
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float, np.number)) \
                or not (math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"the JSD detector's temperature must be a positive number (MagNet: 10, 40); "
                             f"got {temperature!r}")
        super().__init__(ae, batch_size=batch_size)
        self.classifier, self.temperature = classifier, float(temperature)
        self.name = f"magnet_jsd_T{self.temperature:g}"

    def _parts(self, x: torch.Tensor) -> list[torch.Tensor]:
        parts = []
        with _eval_mode(self.classifier) as classifier:
            for batch in self.batches(x):
                p = torch.softmax(classifier(batch).double() / self.temperature, dim=1)
                q = torch.softmax(classifier(self.reform(batch)).double() / self.temperature, dim=1)
                parts.append(jensen_shannon(p, q))
        return parts

    @torch.no_grad()
    def score(self, x: torch.Tensor) -> np.ndarray:
        return _scores(self._parts(x))

    def differentiable_score(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`score` as an ``(N,)`` float64 tensor on the autoencoder's device, with its graph through f, the
        autoencoder and the reformer's clip (exact)."""
        return _differentiable(self._parts(x), self.device)

    def state_dict(self) -> dict[str, Any]:
        return {**self.ae_state(), "temperature": self.temperature}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.load_ae_state(state, self.name, temperature=self.temperature)


class Reformer(_AutoencoderDefense):
    """MagNet's reformer: model-space ``(N, C, H, W)`` inputs -> ``AE(x)`` in model space (on the inputs' device),
    which the defended classifier classifies instead of ``x``."""

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.differentiable(x)

    def differentiable(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`__call__` with its graph, differentiable with respect to ``x`` (the MID detector's
        :meth:`~advflow.defenses.mine.MIDDetector.differentiable_score` reconstructs through it)."""
        x = torch.as_tensor(x)
        parts = [self.reform(batch).to(x.device) for batch in self.batches(x)]
        return torch.cat(parts) if parts else torch.empty_like(x, dtype=torch.float32)

    @torch.no_grad()
    def predict(self, classifier: nn.Module, x: torch.Tensor) -> np.ndarray:
        """``(N,)`` int64 labels the classifier (eval mode, on the autoencoder's device) gives ``AE(x)``."""
        with _eval_mode(classifier):
            parts = [classifier(self.reform(batch)).argmax(dim=1).cpu() for batch in self.batches(x)]
        return torch.cat(parts).numpy().astype(np.int64) if parts else np.zeros(0, dtype=np.int64)


def reference_detectors(ae_i: MagNetAutoencoder, ae_ii: MagNetAutoencoder, classifier: nn.Module,
                        temperatures: tuple[float, ...] = (10.0, 40.0)) -> dict[str, Detector]:
    """MagNet's detectors as its reference code pairs them: L2 error of AE-I, L1 error of AE-II (MNIST), and the
    JSD with AE-I (the reformer's autoencoder) at each temperature. Keyed by detector name."""
    if (ae_i.architecture, ae_ii.architecture) != ("ae_i", "ae_ii"):
        raise ValueError(f"reference_detectors takes (ae_i, ae_ii); got ({ae_i.architecture}, {ae_ii.architecture})")
    detectors: list[Detector] = [ReconstructionDetector(ae_i, 2), ReconstructionDetector(ae_ii, 1)]
    detectors += [JSDDetector(ae_i, classifier, t) for t in temperatures]
    return {d.name: d for d in detectors}
