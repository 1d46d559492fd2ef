"""Any torchvision classifier, its ImageNet weights read from torch's local cache only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from kubetune.config.schema import ModelConfig
from kubetune.errors import ConfigError
from kubetune.models.adapt import adapt_first_conv, adapt_head

# Builder arguments kubetune chooses for a family unless model.kwargs sets them:
# the training loop wants plain logits, not the auxiliary outputs of training mode.
_DEFAULT_KWARGS: dict[str, dict[str, Any]] = {
    "googlenet": {"aux_logits": False, "init_weights": True},
    "inception_v3": {"aux_logits": False, "init_weights": True},
}
# State-dict keys of auxiliary heads that a model built without them does not load.
_AUX_PREFIXES = ("aux1.", "aux2.", "AuxLogits.")


def _weights(architecture: str) -> Any:
    import torchvision.models as tvm

    return tvm.get_model_weights(architecture).DEFAULT


def cached_weights_path(architecture: str) -> Path:
    """Where torch's hub cache keeps the ImageNet weights of ``architecture``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(_weights(architecture).url).name


def _cached_state(architecture: str, model: nn.Module, image_size: int | None) -> dict[str, Any]:
    path = cached_weights_path(architecture)
    if not path.is_file():
        raise ConfigError(
            f"`model.pretrained` is true but the {architecture} weights are not in the local "
            f"torch cache ({path}); copy them there or set model.pretrained: false",
            path="model.pretrained",
        )
    state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    patch_size = getattr(model, "patch_size", None)
    if architecture.startswith("vit_") and image_size is not None and patch_size is not None:
        from torchvision.models.vision_transformer import interpolate_embeddings

        state = interpolate_embeddings(image_size, patch_size, state)  # weights made at 224x224
    return state


def _check_patches(architecture: str, image_size: int) -> None:
    """A ViT cuts its images into square patches (vit_b_16: 16 pixels) and holds one embedding per patch."""
    patch = int(architecture.rsplit("_", 1)[1])
    if image_size % patch:
        raise ConfigError(f"`data.image_size` must be a multiple of {architecture}'s {patch}-pixel patches, "
                          f"but got {image_size}", path="data.image_size")


def build_torchvision(cfg: ModelConfig, num_classes: int, in_channels: int,
                      image_size: int | None) -> nn.Module:
    """``cfg.architecture`` from torchvision's registry, fitted to the classes and channels."""
    import torchvision.models as tvm

    kwargs = {**_DEFAULT_KWARGS.get(cfg.architecture, {}), **cfg.kwargs}
    if cfg.architecture.startswith("vit_") and image_size is not None:
        _check_patches(cfg.architecture, kwargs.setdefault("image_size", image_size))
    try:
        model = tvm.get_model(cfg.architecture, weights=None, **kwargs)
    except TypeError as exc:
        raise ConfigError(f"`model.kwargs` do not fit torchvision's {cfg.architecture}: {exc}",
                          path="model.kwargs") from None
    if cfg.pretrained:
        state = _cached_state(cfg.architecture, model, kwargs.get("image_size"))
        missing, unexpected = model.load_state_dict(state, strict=False)
        unexpected = [k for k in unexpected if not k.startswith(_AUX_PREFIXES)]
        if missing or unexpected:
            raise ConfigError(
                f"`model.pretrained`: the cached {cfg.architecture} weights do not fit the model built "
                f"with model.kwargs (missing {missing[:3]}, unexpected {unexpected[:3]})",
                path="model.pretrained")
    adapt_first_conv(model, in_channels, cfg.architecture)
    adapt_head(model, num_classes, cfg.dropout, cfg.architecture)
    return model
