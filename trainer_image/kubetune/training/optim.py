"""Optimizers and learning-rate schedulers from the config."""

from __future__ import annotations

import torch
from torch import nn

from kubetune.config.schema import OptimizerConfig, SchedulerConfig


def build_optimizer(cfg: OptimizerConfig, model: nn.Module) -> torch.optim.Optimizer:
    """sgd (momentum, nesterov), adam or adamw, all with ``weight_decay``."""
    params = model.parameters()
    if cfg.type == "sgd":
        return torch.optim.SGD(
            params,
            lr=cfg.lr,
            momentum=cfg.momentum,
            nesterov=cfg.nesterov,
            weight_decay=cfg.weight_decay,
        )
    if cfg.type == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def build_scheduler(
    cfg: SchedulerConfig, optimizer: torch.optim.Optimizer, num_epochs: int
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """A per-epoch scheduler: step, cosine over ``num_epochs``, or none."""
    if cfg.type == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.step_size, gamma=cfg.gamma)
    if cfg.type == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=num_epochs)
    return None


def first_lr_drop(scheduler: SchedulerConfig, epochs: int) -> int | None:
    """The last epoch a run trains at its first learning rate, if the rate drops before its end.

    Only a step schedule drops within a run; a cosine schedule decays from the start.
    """
    if scheduler.type == "step" and scheduler.gamma < 1.0 and scheduler.step_size < epochs:
        return scheduler.step_size
    return None
