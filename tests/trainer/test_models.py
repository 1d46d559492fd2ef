"""Model factory: every architecture, channel counts, dropout, pretrained from cache only."""

from __future__ import annotations

import pytest
import torch

from kubetune.config.architectures import COMMON_ARCHITECTURES
from kubetune.config.schema import ModelConfig
from kubetune.errors import ConfigError
from kubetune.models import build_model
from kubetune.models.torchvision_models import cached_weights_path


@pytest.mark.parametrize("architecture", COMMON_ARCHITECTURES)
@pytest.mark.parametrize("channels", [1, 3])
def test_every_architecture_classifies_n_classes(architecture, channels):
    model = build_model(ModelConfig(architecture=architecture, dropout=0.3), 7, channels).eval()
    with torch.no_grad():
        out = model(torch.randn(2, channels, 32, 32))
    assert out.shape == (2, 7)
    assert any(isinstance(m, torch.nn.Dropout) and m.p == 0.3 for m in model.modules())


def test_pretrained_without_cached_weights_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    with pytest.raises(ConfigError, match="not in the local torch cache") as info:
        build_model(ModelConfig(architecture="resnet18", pretrained=True), 10, 3)
    assert info.value.path == "model.pretrained"


def test_pretrained_loads_weights_from_the_cache(tmp_path, monkeypatch):
    import torchvision

    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    path = cached_weights_path("mobilenet_v3_small")
    path.parent.mkdir(parents=True)
    reference = torchvision.models.mobilenet_v3_small(weights=None)
    torch.save(reference.state_dict(), path)
    model = build_model(ModelConfig(architecture="mobilenet_v3_small", pretrained=True), 4, 3)
    first_conv = model.features[0][0].weight
    assert torch.equal(first_conv, reference.features[0][0].weight)


def test_small_cnn_has_no_pretrained_weights():
    with pytest.raises(ConfigError, match="small_cnn"):
        build_model(ModelConfig(architecture="small_cnn", pretrained=True), 10, 1)


def conv_multiply_adds(model: torch.nn.Module, side: int, channels: int = 1) -> int:
    """Multiply-adds of every convolution for one ``side`` x ``side`` image."""
    total = 0

    def count(module, _inputs, output):
        nonlocal total
        kernel = module.weight[0].numel()  # in_channels * kh * kw
        total += output.numel() * kernel

    hooks = [m.register_forward_hook(count) for m in model.modules()
             if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        model.eval()(torch.zeros(1, channels, side, side))
    for hook in hooks:
        hook.remove()
    return total


def test_small_cnn_downsamples_early_so_32px_costs_about_what_8px_does():
    model = build_model(ModelConfig(architecture="small_cnn"), 10, 1)
    seen = []
    model.body.register_forward_hook(lambda m, inputs, out: seen.append(inputs[0].shape[-2:]))
    at_8, at_32 = conv_multiply_adds(model, 8), conv_multiply_adds(model, 32)
    assert [tuple(s) for s in seen] == [(8, 8), (8, 8)]
    assert at_32 < 1.3 * at_8
    assert at_8 < 1.5e6  # the default model's whole forward pass on an 8x8 digit
