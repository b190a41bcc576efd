"""The model zoo of the study (docs/method.md, "Models"; paper Table X, Table VII).

Every network is a :class:`ConvNet` described by a JSON-serialisable *architecture* dict, so a
pruned (physically smaller) network is the same class with other widths, and a checkpoint
carries everything needed to rebuild its model::

    {"name": "good_init", "in_channels": 3, "image_size": [32, 32], "num_classes": 10,
     "blocks": [{"channels": 32, "pool": false, "dropout": 0.0}, ...],
     "head": "global_max" | "flatten", "hidden": [500], "fc_dropout": 0.25}

A *conv layer* in the sense of the paper is one :class:`ConvBlock`: convolution, ReLU and the
max-pool that directly follows it, if any. Its output maps are what later stages record.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import numpy as np

import torch
from torch import nn

from advflow.workflow.catalog import MODELS
from advflow.data import to_model_space
from advflow.workflow.io import atomic_path, quarantine





ENSEMBLE_MEMBERS = ("good_init", "deep_conv", "vgg_like")


def _blocks(widths: list[int | str], pool_dropout: float) -> list[dict[str, Any]]:
    """Turn ``[32, 32, "P", 64]`` into block dicts; "P" marks a 2×2 max-pool (+ dropout) after the
    preceding convolution."""
    blocks: list[dict[str, Any]] = []
    for w in widths:
        if w == "P":
            blocks[-1]["pool"] = True
            blocks[-1]["dropout"] = pool_dropout
        else:
            blocks.append({"channels": int(w), "pool": False, "dropout": 0.0})
    return blocks


def architecture(name: str, in_channels: int, image_size: tuple[int, int] | list[int], num_classes: int) -> dict:
    """The architecture dict of ``name`` for inputs of the given shape."""
    base = {"name": name, "in_channels": int(in_channels), "image_size": [int(s) for s in image_size],
            "num_classes": int(num_classes)}
    if name in ("good_init", "compressed", "distilled"):
        # Table X: 15 convs 32,32,32,48,48 / pool / 80x5 / pool / 128x5, global max-pool,
        # dropout 0.25 after each pool and before each fully connected layer, FC 500, FC 10.
        widths = [32, 32, 32, 48, 48, "P", 80, 80, 80, 80, 80, "P", 128, 128, 128, 128, 128]
        return {**base, "blocks": _blocks(widths, 0.25), "head": "global_max", "hidden": [500], "fc_dropout": 0.25}
    if name == "deep_conv":
        # Feinman et al. 2017: conv 32,32 / pool / 64,64 / pool / 128,128 / pool, flatten,
        # dropout 0.5, FC 1024, dropout 0.5, FC 512, dropout 0.5, FC 10.
        widths = [32, 32, "P", 64, 64, "P", 128, 128, "P"]
        return {**base, "blocks": _blocks(widths, 0.0), "head": "flatten", "hidden": [1024, 512], "fc_dropout": 0.5}
    if name == "vgg_like":
        # Our design (the paper's row is illegible): VGG's pattern of 3x3 'same' convs in stages
        # whose width doubles after each 2x2 max-pool (32,32 / 64,64 / 128,128,128), then VGG's
        # classifier of two hidden FC layers (256, 256) with dropout 0.5, scaled to 28-32 px inputs.
        widths = [32, 32, "P", 64, 64, "P", 128, 128, 128, "P"]
        return {**base, "blocks": _blocks(widths, 0.0), "head": "flatten", "hidden": [256, 256], "fc_dropout": 0.5}
    raise ValueError(f"unknown model {name!r}; allowed: {', '.join(MODELS)}")


class ConvBlock(nn.Module):
    """One conv layer of the paper: 3x3 'same' convolution, ReLU, optional 2x2 max-pool."""

    def __init__(self, in_channels: int, out_channels: int, pool: bool, dropout: float) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(2) if pool else nn.Identity()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def output_maps(self, x: torch.Tensor) -> torch.Tensor:
        """The maps this layer contributes to the information flow (before dropout)."""
        return self.pool(self.relu(self.conv(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.output_maps(x))


class ConvNet(nn.Module):
    """A plain CNN built from an architecture dict (see the module docstring)."""

    def __init__(self, arch: dict[str, Any]) -> None:
        super().__init__()
        self.arch = copy.deepcopy(arch)
        channels = arch["in_channels"]
        height, width = arch["image_size"]
        blocks = []
        for spec in arch["blocks"]:
            blocks.append(ConvBlock(channels, spec["channels"], spec["pool"], spec["dropout"]))
            channels = spec["channels"]
            if spec["pool"]:
                height, width = height // 2, width // 2
        self.blocks = nn.ModuleList(blocks)
        if arch["head"] == "global_max":
            features = channels
        elif arch["head"] == "flatten":
            features = channels * height * width
        else:
            raise ValueError(f"unknown head {arch['head']!r}; allowed: global_max, flatten")
        self.final_shape = (channels, height, width)
        sizes = [features, *arch["hidden"], arch["num_classes"]]
        self.fc = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.fc_relus = nn.ModuleList(nn.ReLU() for _ in arch["hidden"])
        self.fc_dropout = nn.Dropout(arch["fc_dropout"]) if arch["fc_dropout"] > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.head(x)

    def head(self, x: torch.Tensor) -> torch.Tensor:
        """Logits from the last conv layer's output: the global pooling (or flattening) and the fully
        connected layers. The global max-pool is part of the head, not of the last conv layer (docs/method.md,
        "Information flow")."""
        x = x.amax(dim=(2, 3)) if self.arch["head"] == "global_max" else x.flatten(1)
        for i, fc in enumerate(self.fc):
            x = fc(self.fc_dropout(x))
            if i < len(self.fc_relus):
                x = self.fc_relus[i](x)
        return x


class LogitEnsemble(nn.Module):
    """The ``ensemble`` model: the average of its members' logits (Liu et al. 2017)."""

    def __init__(self, members: list[nn.Module], name: str = "ensemble") -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        self.arch = {"name": name, "kind": "ensemble", "members": [m.arch for m in members]}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x) for m in self.members]).mean(dim=0)


def build_model(arch: dict[str, Any]) -> nn.Module:
    """The model an architecture dict describes: a :class:`ConvNet`, a :class:`LogitEnsemble` of any models, or a
    model of the user's (:class:`advflow.models.user.UserModel`, whose factory is imported)."""
    if arch.get("kind") == "ensemble":
        return LogitEnsemble([build_model(a) for a in arch["members"]], name=arch["name"])
    if arch.get("kind") == "user":
        from advflow.models.user import build_user_model

        return build_user_model(arch)
    return ConvNet(arch)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def lsuv_init(model: ConvNet, batch: torch.Tensor, *, tol: float = 0.05, max_iter: int = 10) -> None:
    """Layer-sequential unit-variance initialisation (Mishkin & Matas 2015, "All you need is a
    good init", the origin of ``good_init``): orthonormal weights, then each layer in turn is
    rescaled until its output variance on ``batch`` is 1."""
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    for layer in layers:
        nn.init.orthogonal_(layer.weight)
        nn.init.zeros_(layer.bias)
    was_training = model.training
    model.eval()
    for layer in layers:
        seen: dict[str, float] = {}
        handle = layer.register_forward_hook(lambda _m, _i, out: seen.__setitem__("var", float(out.var())))
        for _ in range(max_iter):
            model(batch)
            var = seen["var"]
            if var <= 1e-12 or abs(var - 1.0) < tol:
                break
            layer.weight.div_(math.sqrt(var))
        handle.remove()
    model.train(was_training)


def save_checkpoint(model: nn.Module, path: str | Path) -> None:
    """Save architecture + state dict; :func:`load_checkpoint` reads it with ``weights_only=True``."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        torch.save({"architecture": model.arch, "state_dict": state}, tmp)


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a model from :func:`save_checkpoint`'s file, in eval mode, on ``device``."""
    from advflow.models.user import UserModelError

    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        model = build_model(payload["architecture"])
        model.load_state_dict(payload["state_dict"])
    except (FileNotFoundError, UserModelError):  # a user's module that no longer imports: the checkpoint is fine
        raise
    except Exception as err:
        # Truncated, overwritten, of another architecture, or a pickle that would run code: never used. The
        # workflow's own checkpoint is moved aside (kept), so the next run trains the model again.
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise quarantine(path, f"not a readable advflow checkpoint: {reason}",
                         rebuilt_by="the rule that trains the model") from err
    return model.to(device).eval()


@torch.no_grad()
def predict_logits(model: nn.Module, images: np.ndarray | torch.Tensor, device: torch.device,
                   batch_size: int = 500) -> torch.Tensor:
    """Logits (at T = 1) of uint8 ``images``, batched, returned on the CPU."""
    model = model.to(device).eval().to(memory_format=torch.channels_last)
    images = torch.as_tensor(images)
    out = []
    for start in range(0, len(images), batch_size):
        batch = to_model_space(images[start:start + batch_size].to(device).float())
        out.append(model(batch.contiguous(memory_format=torch.channels_last)).float().cpu())
    model.to(memory_format=torch.contiguous_format)
    return torch.cat(out) if out else torch.empty(0)
