"""Device choice and the two trainers' numerics: full precision or mixed precision."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field

import torch

from kubetune.errors import ConfigError

log = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present; ``cuda`` without a GPU is a config error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "`training.device` is cuda but no CUDA device is available; use auto or cpu",
            path="training.device",
        )
    return torch.device(name)


@dataclass
class Precision:
    """Autocast, gradient scaler and memory layout of one trainer on one device."""

    device: torch.device
    dtype: torch.dtype | None = None  # None: no autocast
    scaler: torch.amp.GradScaler | None = field(default=None, repr=False)
    # channels_last on CUDA: convolutions run in NHWC, which tensor cores need
    memory_format: torch.memory_format = torch.preserve_format

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def backward_step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler is None:
            loss.backward()
            optimizer.step()
        else:
            self.scaler.scale(loss).backward()
            self.scaler.step(optimizer)
            self.scaler.update()


def build_precision(trainer: str, device: torch.device) -> Precision:
    """``standard``: fp32. ``mixed_precision``: fp16 + GradScaler on CUDA, bf16 on CPU.

    On CUDA both use channels_last.
    """
    layout = torch.channels_last if device.type == "cuda" else torch.preserve_format
    if trainer == "standard":
        return Precision(device, memory_format=layout)
    if device.type == "cuda":
        return Precision(device, torch.float16, torch.amp.GradScaler("cuda"), memory_format=layout)
    log.warning("mixed_precision on %s: using bfloat16 autocast without a gradient scaler", device)
    return Precision(device, torch.bfloat16)
