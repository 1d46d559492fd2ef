"""``train()``: the one entry the CLIs, the search and the operator's trial pods call."""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from kubetune.config.loader import config_to_dict
from kubetune.config.schema import Config
from kubetune.data.datasets import DataSplits, load_splits
from kubetune.errors import KubetuneError
from kubetune.models import build_model
from kubetune.training.loop import evaluate, train_one_epoch
from kubetune.training.optim import build_optimizer, build_scheduler
from kubetune.training.precision import build_precision, resolve_device
from kubetune.training.progress import EpochProgress
from kubetune.training.run_log import RunLog, new_run_dir

log = logging.getLogger(__name__)

# Called after every epoch with (epoch, metrics); returning True stops the run.
# Exceptions it raises (e.g. optuna.TrialPruned) end the run and propagate.
EpochCallback = Callable[[int, dict[str, float]], "bool | None"]


class TrainingDiverged(KubetuneError):
    """The loss became NaN or infinite."""


@dataclass
class TrainResult:
    """What a finished (or stopped) run produced."""

    run_dir: Path
    history: list[dict[str, float]]
    best: dict[str, Any]
    stopped_early: bool = False
    classes: list[str] = field(default_factory=list)

    @property
    def final(self) -> dict[str, float]:
        return self.history[-1]


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return the generator for the data loader."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def _loaders(data: DataSplits, config: Config, device: torch.device, generator) -> tuple:
    common = {
        "batch_size": config.training.batch_size,
        "num_workers": config.data.num_workers,
        "pin_memory": device.type == "cuda",
        "persistent_workers": config.data.num_workers > 0,
    }
    train = DataLoader(data.train, shuffle=True, generator=generator, **common)
    val = DataLoader(data.val, shuffle=False, **common)
    return train, val


def _save_checkpoint(path: Path, model: nn.Module, optimizer, epoch: int, metrics, config, classes) -> None:
    torch.save(
        {
            "epoch": epoch,
            "model_state": model.state_dict(),
            "optimizer_state": optimizer.state_dict(),
            "metrics": metrics,
            "config": config_to_dict(config),
            "classes": classes,
        },
        path,
    )


def train(
    config: Config,
    *,
    callback: EpochCallback | None = None,
    data: DataSplits | None = None,
    run_dir: Path | None = None,
    monitor: str = "val_acc",
    progress: bool | None = None,
    epoch_lines: bool = True,
) -> TrainResult:
    """Train ``config`` and return its history.

    ``data`` replaces the config's dataset (the search passes folds or subsets);
    ``run_dir`` replaces the fresh ``runs/<experiment>/<run>`` folder; ``monitor``
    picks the metric that decides the best checkpoint (``*_loss`` is minimised);
    ``epoch_lines=False`` prints nothing per epoch (metrics still go to the logs).
    """
    device = resolve_device(config.training.device)
    generator = seed_everything(config.training.seed)
    data = data if data is not None else load_splits(config.data, config.training.seed)
    torch.manual_seed(config.training.seed)  # the same weights whatever the data loading drew
    model = build_model(config.model, data.num_classes, data.channels).to(device)
    optimizer = build_optimizer(config.optimizer, model)
    scheduler = build_scheduler(config.scheduler, optimizer, config.training.num_epochs)
    precision = build_precision(config.training.trainer, device)
    criterion = nn.CrossEntropyLoss()
    train_loader, val_loader = _loaders(data, config, device, generator)

    if run_dir is None:
        run_dir = new_run_dir(config)
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
    run_log = RunLog(run_dir, config)
    sign = -1.0 if monitor.endswith("loss") else 1.0
    best: dict[str, Any] = {}
    status, stopped = "failed", False
    epochs = config.training.num_epochs
    bar = EpochProgress(epochs, len(train_loader), enabled=progress, lines=epoch_lines)
    try:
        with bar:
            for epoch in range(1, epochs + 1):
                train_loss, train_acc = train_one_epoch(
                    model, train_loader, optimizer, criterion, precision, on_batch=bar.advance
                )
                if not math.isfinite(train_loss):
                    raise TrainingDiverged(
                        f"training loss became {train_loss} at epoch {epoch}; "
                        "lower optimizer.lr or check the data"
                    )
                val_loss, val_acc = evaluate(model, val_loader, criterion, precision)
                metrics = {
                    "train_loss": train_loss,
                    "train_acc": train_acc,
                    "val_loss": val_loss,
                    "val_acc": val_acc,
                    "lr": optimizer.param_groups[0]["lr"],
                }
                if scheduler is not None:
                    scheduler.step()
                run_log.log_epoch(epoch, metrics)
                bar.epoch_done(epoch, metrics)
                if not best or sign * metrics[monitor] > sign * best[monitor]:
                    best = {"epoch": epoch, **metrics}
                    _save_checkpoint(run_dir / "best.pt", model, optimizer, epoch, metrics, config, data.classes)
                _save_checkpoint(run_dir / "last.pt", model, optimizer, epoch, metrics, config, data.classes)
                if callback is not None and callback(epoch, metrics):
                    stopped = True
                    break
        status = "stopped" if stopped else "completed"
    except BaseException as exc:
        status = "pruned" if type(exc).__name__ == "TrialPruned" else "failed"
        raise
    finally:
        run_log.close(status, best or None)
    return TrainResult(run_dir, run_log.history, best, stopped, data.classes)

