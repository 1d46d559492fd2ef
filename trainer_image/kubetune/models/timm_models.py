"""timm models (``timm/<name>``), pretrained weights from the local caches only."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kubetune.config.architectures import TIMM_EXTRA, TIMM_PREFIX, closest_names
from kubetune.config.schema import ModelConfig
from kubetune.errors import ConfigError

# The files timm looks for in a Hugging Face repository, in its order.
_HF_FILES = ("model.safetensors", "pytorch_model.bin")


def _import_timm() -> Any:
    # Nothing downloads in a kubetune process: Hugging Face's client reads this when imported.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import timm
    except ImportError:
        raise ConfigError(f"`model.architecture` names a timm model but timm is not installed; "
                          f"{TIMM_EXTRA}", path="model.architecture") from None
    return timm


def _hf_cache() -> str:
    from huggingface_hub import constants

    return os.environ.get("HF_HUB_CACHE") or constants.HF_HUB_CACHE


def cached_timm_weights(name: str) -> tuple[Path | None, list[str]]:
    """The local file holding ``name``'s pretrained weights, or None and the places looked in."""
    timm = _import_timm()
    pretrained = timm.models.get_pretrained_cfg(name)
    if pretrained is None:
        return None, []
    looked: list[str] = []
    if pretrained.hf_hub_id:
        from huggingface_hub import try_to_load_from_cache

        cache = _hf_cache()
        for filename in ((pretrained.hf_hub_filename,) if pretrained.hf_hub_filename else _HF_FILES):
            found = try_to_load_from_cache(pretrained.hf_hub_id, filename, cache_dir=cache)
            if isinstance(found, str):
                return Path(found), looked
        looked.append(f"{pretrained.hf_hub_id} in the Hugging Face cache {cache}")
    if pretrained.url:
        path = Path(torch.hub.get_dir()) / "checkpoints" / Path(pretrained.url).name
        if path.is_file():
            return path, looked
        looked.append(str(path))
    return None, looked


def build_timm(cfg: ModelConfig, num_classes: int, in_channels: int, image_size: int | None) -> nn.Module:
    """``timm.create_model`` fitted to the classes and channels; timm adapts head and stem itself."""
    timm = _import_timm()
    name = cfg.architecture[len(TIMM_PREFIX):]
    if not timm.is_model(name):
        hint = closest_names(name, timm.list_models())
        raise ConfigError(f"`model.architecture` must name a timm model, but got {name!r}{hint}",
                          path="model.architecture")
    kwargs: dict[str, Any] = {"drop_rate": cfg.dropout, **cfg.kwargs}
    if cfg.pretrained:
        path, looked = cached_timm_weights(name)
        if path is None:
            where = " nor ".join(looked) if looked else "nowhere: timm has none for it"
            raise ConfigError(
                f"`model.pretrained` is true but the weights of timm's {name} are not cached locally "
                f"({where}); copy them there or set model.pretrained: false", path="model.pretrained")
        kwargs["pretrained_cfg_overlay"] = {"file": str(path)}
    try:
        return _create(timm, name, cfg.pretrained, num_classes, in_channels, image_size, kwargs)
    except TypeError as exc:
        raise ConfigError(f"`model.kwargs` do not fit timm's {name}: {exc}", path="model.kwargs") from None


def _create(timm: Any, name: str, pretrained: bool, num_classes: int, in_channels: int,
            image_size: int | None, kwargs: dict[str, Any]) -> nn.Module:
    def create(**extra: Any) -> nn.Module:
        model: nn.Module = timm.create_model(name, pretrained=pretrained, num_classes=num_classes,
                                             in_chans=in_channels, **kwargs, **extra)
        return model

    if image_size is None or "img_size" in kwargs:
        return create()
    try:  # transformers fix their position embeddings to the image size; CNNs take no img_size
        return create(img_size=image_size)
    except TypeError as exc:
        if "img_size" not in str(exc):
            raise
        return create()
