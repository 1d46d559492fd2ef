"""Build a classifier from ``model:``: torchvision backbones or the small CNN."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from kubetune.config.schema import ModelConfig
from kubetune.errors import ConfigError
from kubetune.models.small_cnn import SmallCNN

_WEIGHTS = {
    "resnet18": "ResNet18_Weights",
    "resnet34": "ResNet34_Weights",
    "resnet50": "ResNet50_Weights",
    "efficientnet_b0": "EfficientNet_B0_Weights",
    "mobilenet_v3_small": "MobileNet_V3_Small_Weights",
}


def cached_weights_path(architecture: str) -> Path:
    """Where torch's hub cache keeps the ImageNet weights of ``architecture``."""
    import torchvision.models as tvm

    weights = getattr(tvm, _WEIGHTS[architecture]).DEFAULT
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name


def _load_pretrained(model: nn.Module, architecture: str) -> None:
    path = cached_weights_path(architecture)
    if not path.is_file():
        raise ConfigError(
            f"`model.pretrained` is true but the {architecture} weights are not in the local "
            f"torch cache ({path}); copy them there or set model.pretrained: false",
            path="model.pretrained",
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state)


def _pair(values: tuple[int, ...]) -> tuple[int, int]:
    """A Conv2d's size argument (its attributes are typed as tuples of any length)."""
    return values[0], values[1]


def _replace_first_conv(conv: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    """The same convolution for ``in_channels`` inputs, averaging RGB weights for grey."""
    new = nn.Conv2d(
        in_channels,
        conv.out_channels,
        kernel_size=_pair(conv.kernel_size),
        stride=_pair(conv.stride),
        padding=conv.padding if isinstance(conv.padding, str) else _pair(conv.padding),
        bias=conv.bias is not None,
    )
    with torch.no_grad():
        new.weight.copy_(conv.weight.mean(dim=1, keepdim=True).expand_as(new.weight))
        if conv.bias is not None and new.bias is not None:
            new.bias.copy_(conv.bias)
    return new


def build_model(cfg: ModelConfig, num_classes: int, in_channels: int) -> nn.Module:
    """A fresh model with ``num_classes`` outputs for ``in_channels``-channel images."""
    if cfg.architecture == "small_cnn":
        if cfg.pretrained:
            raise ConfigError(
                "`model.pretrained` has no weights for small_cnn; set it to false",
                path="model.pretrained",
            )
        return SmallCNN(num_classes, in_channels, cfg.dropout)

    import torchvision.models as tvm

    model = getattr(tvm, cfg.architecture)(weights=None)
    if cfg.pretrained:
        _load_pretrained(model, cfg.architecture)
    if cfg.architecture.startswith("resnet"):
        if in_channels != 3:
            model.conv1 = _replace_first_conv(model.conv1, in_channels)
        model.fc = nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(model.fc.in_features, num_classes))
    else:  # efficientnet_b0, mobilenet_v3_small: features[0][0] conv, classifier[-1] linear
        if in_channels != 3:
            model.features[0][0] = _replace_first_conv(model.features[0][0], in_channels)
        model.classifier[-2] = nn.Dropout(cfg.dropout)
        last = model.classifier[-1]
        model.classifier[-1] = nn.Linear(last.in_features, num_classes)
    return model
