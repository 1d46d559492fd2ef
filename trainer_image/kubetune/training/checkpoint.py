"""Checkpoints: ``last.pt`` after every epoch, ``best.pt`` when the monitored metric improves.

A checkpoint holds the config next to the weights, so it says what it is.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch
from torch import nn


def checkpoint_payload(model: nn.Module, optimizer: torch.optim.Optimizer, epoch: int,
                       metrics: dict[str, float], config: dict[str, Any],
                       classes: list[str]) -> dict[str, Any]:
    """What a checkpoint stores; ``config`` is the resolved config as plain data."""
    return {
        "epoch": epoch,
        "model_state": model.state_dict(),
        "optimizer_state": optimizer.state_dict(),
        "metrics": metrics,
        "config": config,
        "classes": classes,
    }


def save_checkpoints(run_dir: Path, payload: dict[str, Any], *, best: bool) -> None:
    """Write ``last.pt`` (and ``best.pt``), serialising the payload once."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    data = buffer.getvalue()
    (run_dir / "last.pt").write_bytes(data)
    if best:
        (run_dir / "best.pt").write_bytes(data)
