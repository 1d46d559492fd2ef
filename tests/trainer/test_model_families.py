"""Every family a user names builds for any classes and channels and trains one real step."""

from __future__ import annotations

import socket
import time

import pytest
import torch

from kubetune.config.schema import ModelConfig
from kubetune.models import build_model

# (architecture, the smallest image side it takes: ViT's patches are 16 pixels, timm's resnet10t
# and the CNNs downsample 32 times)
FAMILIES = [
    ("resnet18", 32),
    ("efficientnet_b0", 32),
    ("mobilenet_v3_small", 32),
    ("convnext_tiny", 32),
    ("vit_b_16", 16),
    ("regnet_y_400mf", 32),
    ("densenet121", 32),
    ("squeezenet1_1", 32),  # its head is a 1x1 convolution
    ("googlenet", 32),  # auxiliary heads off: plain logits in training mode
    ("swin_t", 32),
    ("timm/resnet10t", 32),
    ("timm/vit_tiny_patch16_224", 32),  # built for 32x32 (img_size) instead of 224x224
]


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Building a model must never download: any connection fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("a model build opened a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize(("architecture", "side"), FAMILIES)
def test_each_family_fits_classes_and_channels_and_trains_a_step(architecture, side, channels):
    if architecture.startswith("timm/"):
        pytest.importorskip("timm")
    start = time.perf_counter()
    torch.manual_seed(0)
    model = build_model(ModelConfig(architecture=architecture, dropout=0.25), 7, channels, side)
    images, labels = torch.randn(2, channels, side, side), torch.tensor([0, 6])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    before = [p.detach().clone() for p in model.parameters()]
    model.train()
    logits = model(images)
    assert logits.shape == (2, 7)
    loss = torch.nn.functional.cross_entropy(logits, labels)
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    changed = sum(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))
    assert changed > len(before) // 2  # the step reached the stem, the body and the head
    first_conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert first_conv.in_channels == channels
    dropouts = [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    assert 0.25 in dropouts or getattr(model, "drop_rate", None) == 0.25  # timm's ResNet: F.dropout
    print(f"{architecture} {channels}ch: build + one step {time.perf_counter() - start:.2f} s")
