"""A model of your own for kubetune: ``model.architecture: digits_net:build``.

kubetune calls ``build(num_classes, in_channels, **model.kwargs)`` and trains what it
returns; the number of classes and channels come from the data.
"""

from torch import nn


def build(num_classes: int, in_channels: int, width: int = 16, depth: int = 2,
          dropout: float = 0.0) -> nn.Module:
    """``depth`` convolution blocks of ``width`` channels, pooling to 2x2, dropout, a linear head."""
    layers: list[nn.Module] = []
    channels = in_channels
    for _ in range(depth):
        layers += [nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
        channels = width
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Dropout(dropout),
                         nn.Linear(width * 4, num_classes))
