"""Small reference networks for the demo, tests and benchmarks (any input size, any classes)."""

from __future__ import annotations

from torch import nn


class SmallCNN(nn.Module):
    """Two conv blocks and a two-layer head; a few thousand parameters at ``width=8``.

    Layer names (for activations and attribution): ``features.conv1``, ``features.relu1``,
    ``features.conv2``, ``features.relu2``, ``features.pool``, ``head.fc1``, ``head.relu``,
    ``head.fc2``.

    >>> import torch
    >>> SmallCNN(in_channels=1, num_classes=10)(torch.zeros(2, 1, 8, 8)).shape
    torch.Size([2, 10])
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 16, pool: int = 2):
        super().__init__()
        self.features = nn.Sequential()
        self.features.add_module("conv1", nn.Conv2d(in_channels, width, 3, padding=1))
        self.features.add_module("relu1", nn.ReLU())
        self.features.add_module("conv2", nn.Conv2d(width, 2 * width, 3, padding=1))
        self.features.add_module("relu2", nn.ReLU())
        # Adaptive pooling makes the head independent of the image size (8×8 digits, 32×32 shapes).
        self.features.add_module("pool", nn.AdaptiveAvgPool2d(pool))
        self.head = nn.Sequential()
        self.head.add_module("flatten", nn.Flatten())
        self.head.add_module("fc1", nn.Linear(2 * width * pool * pool, 4 * width))
        self.head.add_module("relu", nn.ReLU())
        self.head.add_module("fc2", nn.Linear(4 * width, num_classes))

    def forward(self, x):
        return self.head(self.features(x))
