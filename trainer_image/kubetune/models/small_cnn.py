"""A small convolutional network that trains in seconds on the CPU."""

from __future__ import annotations

from torch import nn


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class SmallCNN(nn.Module):
    """Three conv blocks, global average pooling, dropout, one linear layer."""

    def __init__(self, num_classes: int, in_channels: int = 3, dropout: float = 0.0) -> None:
        super().__init__()
        self.features = nn.Sequential(
            _block(in_channels, 32),
            _block(32, 64),
            nn.MaxPool2d(2),
            _block(64, 128),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(128, num_classes))

    def forward(self, x):
        return self.classifier(self.features(x))
