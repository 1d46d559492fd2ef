"""Build a classifier from ``model:``: the small CNN, torchvision, timm or the user's factory."""

from __future__ import annotations

from torch import nn

from kubetune.config.architectures import architecture_kind
from kubetune.config.schema import ModelConfig
from kubetune.errors import ConfigError
from kubetune.models.adapt import check_input_size
from kubetune.models.small_cnn import SmallCNN


def build_model(cfg: ModelConfig, num_classes: int, in_channels: int,
                image_size: int | None = None) -> nn.Module:
    """A fresh model with ``num_classes`` outputs for ``in_channels``-channel images.

    With ``image_size`` the model is also checked to take images of that side.
    """
    kind = architecture_kind(cfg.architecture)
    model: nn.Module
    if kind == "small_cnn":
        if cfg.pretrained:
            raise ConfigError(
                "`model.pretrained` has no weights for small_cnn; set it to false",
                path="model.pretrained",
            )
        return SmallCNN(num_classes, in_channels, cfg.dropout)  # any image size
    if kind == "factory":
        from kubetune.models.user_factory import build_from_factory

        model = build_from_factory(cfg, num_classes, in_channels)
    elif kind == "timm":
        from kubetune.models.timm_models import build_timm

        model = build_timm(cfg, num_classes, in_channels, image_size)
    else:
        from kubetune.models.torchvision_models import build_torchvision

        model = build_torchvision(cfg, num_classes, in_channels, image_size)
    if image_size is not None:
        check_input_size(model, in_channels, image_size, num_classes, cfg.architecture)
    return model
