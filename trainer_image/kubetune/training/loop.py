"""One epoch of training and one pass of evaluation: the whole training loop."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

from kubetune.training.precision import Precision


def train_one_epoch(
    model: nn.Module,
    loader: Iterable,
    optimizer: torch.optim.Optimizer,
    criterion: nn.Module,
    precision: Precision,
    on_batch: Callable[[], None] | None = None,
) -> tuple[float, float]:
    """Train over ``loader`` once; return (mean loss, accuracy)."""
    model.train()
    device = precision.device
    # Sums stay on the device so a GPU never waits for a .item() per batch.
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen = 0
    for images, targets in loader:
        images = images.to(device, non_blocking=True, memory_format=precision.memory_format)
        targets = targets.to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        with precision.autocast():
            logits = model(images)
            loss = criterion(logits, targets)
        precision.backward_step(loss, optimizer)
        loss_sum += loss.detach().float() * targets.size(0)
        correct += (logits.detach().argmax(dim=1) == targets).sum()
        seen += targets.size(0)
        if on_batch is not None:
            on_batch()
    return (loss_sum / max(seen, 1)).item(), correct.item() / max(seen, 1)


@torch.no_grad()
def evaluate(
    model: nn.Module, loader: Iterable, criterion: nn.Module, precision: Precision
) -> tuple[float, float]:
    """Evaluate over ``loader``; return (mean loss, accuracy)."""
    model.eval()
    device = precision.device
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen = 0
    for images, targets in loader:
        images = images.to(device, non_blocking=True, memory_format=precision.memory_format)
        targets = targets.to(device, non_blocking=True)
        with precision.autocast():
            logits = model(images)
            loss = criterion(logits, targets)
        loss_sum += loss.float() * targets.size(0)
        correct += (logits.argmax(dim=1) == targets).sum()
        seen += targets.size(0)
    return (loss_sum / max(seen, 1)).item(), correct.item() / max(seen, 1)
