"""Networks of a user's own, for the tests of models of the user's (tests/test_user_models.py).

The tests copy this file into their working directory and name its factories in a config, as a user would
(``module: "user_nets:small_resnet"``); nothing here imports advflow.
"""

from __future__ import annotations

import torch
from torch import nn


class BasicBlock(nn.Module):
    """A ResNet basic block (torchvision's layout): conv-BN-ReLU-conv-BN, plus the input (or its 1x1 conv + BN
    projection when the width or stride changes), then ReLU (one ReLU module applied twice, as torchvision does)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                                            nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class SmallResNet(nn.Module):
    """stem (conv, BN, ReLU), layer1 (a block of the same width), layer2 (a block of twice the width, stride 2,
    with a projection shortcut), global average pooling, a linear head."""

    def __init__(self, width: int = 8, num_classes: int = 4, in_channels: int = 3) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                                  nn.ReLU(inplace=True))
        self.layer1 = BasicBlock(width, width)
        self.layer2 = BasicBlock(width, 2 * width, stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer2(self.layer1(self.stem(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


def small_resnet(width: int = 8, num_classes: int = 4, in_channels: int = 3) -> SmallResNet:
    return SmallResNet(width=width, num_classes=num_classes, in_channels=in_channels)


class RecordingNet(nn.Module):
    """A small ConvNet that keeps a copy of the last input it was given (``seen``)."""

    def __init__(self, in_channels: int = 3, num_classes: int = 4) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, num_classes)
        self.seen: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen = x.detach().clone()
        return self.fc(torch.flatten(self.pool(self.relu(self.conv(x))), 1))


def recording_net(in_channels: int = 3, num_classes: int = 4) -> RecordingNet:
    return RecordingNet(in_channels=in_channels, num_classes=num_classes)


def grey_net(num_classes: int = 4) -> SmallResNet:
    """A network for one-channel images (its first convolution expects 1 channel)."""
    return SmallResNet(width=4, num_classes=num_classes, in_channels=1)


#: Not a factory: a number.
NOT_CALLABLE = 42


def not_a_module() -> dict:
    """A factory that returns the network's description instead of the network."""
    return {"layers": [8, 16]}


def raising_factory(width: int = 8) -> nn.Module:
    raise RuntimeError(f"cannot build a network of width {width}")
