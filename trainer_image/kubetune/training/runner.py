"""``train()``: the one entry the CLIs, the search and the operator's trial pods call."""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from kubetune.config.loader import config_to_dict
from kubetune.config.schema import Config
from kubetune.data.datasets import DataSplits, load_splits
from kubetune.errors import KubetuneError
from kubetune.models import build_model
from kubetune.training.batches import make_batches
from kubetune.training.checkpoint import (
    CheckpointWriter,
    checkpoint_payload,
    load_checkpoint,
    restore,
)
from kubetune.training.costs import run_costs, static_costs
from kubetune.training.loop import evaluate, train_one_epoch
from kubetune.training.optim import build_optimizer, build_scheduler
from kubetune.training.precision import Precision, build_precision, resolve_device
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


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (model init, dropout, per-item augmentation)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _improves(entry: dict[str, float], best: dict[str, Any], monitor: str) -> bool:
    """Whether ``entry`` beats ``best`` on ``monitor`` (``*_loss`` is minimised)."""
    sign = -1.0 if monitor.endswith("loss") else 1.0
    return not best or sign * entry[monitor] > sign * best[monitor]


def _measure(model: nn.Module, data: DataSplits, batch_size: int, precision: Precision) -> dict[str, float]:
    """The model's static costs (:func:`~kubetune.training.costs.static_costs`) on one
    validation image; the RNGs are left as they were, so training draws what it would."""
    image = data.val[0][0].unsqueeze(0).to(precision.device, memory_format=precision.memory_format)
    with torch.random.fork_rng(devices=[]):
        return static_costs(model, image, batch_size, precision.autocast)


def _then(first: Callable[[], None], second: Callable[[], None]) -> Callable[[], None]:
    def both() -> None:
        first()
        second()
    return both


def train(
    config: Config,
    *,
    callback: EpochCallback | None = None,
    data: DataSplits | None = None,
    run_dir: Path | None = None,
    monitor: str = "val_acc",
    progress: bool | None = None,
    epoch_lines: bool = True,
    resume: Path | None = None,
    run_id: str | None = None,
    searched: Sequence[str] = (),
    stop_check: Callable[[], None] | None = None,
) -> TrainResult:
    """Train ``config`` and return its history.

    ``data`` replaces the config's dataset (the search passes folds or subsets);
    ``run_dir`` replaces the fresh ``runs/<experiment>/<run>`` folder; ``monitor``
    picks the metric that decides the best checkpoint (``*_loss`` is minimised);
    ``epoch_lines=False`` prints nothing per epoch (metrics still go to the logs).
    In-memory data trains from tensors on the device, streamed data through
    DataLoader workers (:mod:`kubetune.training.batches`); both are seeded by
    ``training.seed``, and the training batches' ``generator`` holds their RNG state.

    ``resume`` (a ``last.pt`` of a run with the same config) puts back its weights,
    optimizer, scheduler, scaler and RNG states and history, and training goes on at
    the next epoch, in ``resume``'s folder unless ``run_dir`` says otherwise. On the
    CPU, with in-memory data or streamed data and ``data.num_workers: 0``, the result
    is the one an uninterrupted run gets. With DataLoader workers it is not: persistent
    workers seed their RNGs once, from a draw of the batches' generator when the first
    epoch starts, and that seed and the workers' RNG states are not saved, so a resumed
    run sees other batch orders and per-item augmentations (it is still a sound
    continuation of the same training). ``run_id`` is stored in the checkpoints so a
    caller can tell its own from another run's. ``searched`` names the config keys a
    search varies: TensorBoard's HParams tab shows those first. ``stop_check`` runs
    before every epoch and after every batch; what it raises stops the training there.
    """
    settings = config.training
    device = resolve_device(settings.device)
    seed_everything(settings.seed)
    data = data if data is not None else load_splits(config.data, settings.seed)
    torch.manual_seed(settings.seed)  # the same weights whatever the data loading drew
    precision = build_precision(settings.trainer, device)
    model = build_model(config.model, data.num_classes, data.channels, config.data.image_size)
    model = model.to(device, memory_format=precision.memory_format)  # type: ignore[call-overload]  # torch's stubs lack memory_format
    # The compiled module shares its parameters with ``model``; checkpoints save ``model``.
    forward = cast(nn.Module, torch.compile(model)) if settings.compile else model
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: pick the fastest kernels once
    optimizer = build_optimizer(config.optimizer, model)
    scheduler = build_scheduler(config.scheduler, optimizer, settings.num_epochs)
    criterion = nn.CrossEntropyLoss()
    train_loader, val_loader = make_batches(data, settings.batch_size, device, settings.seed,
                                            config.data.num_workers)

    plain_config = config_to_dict(config)
    history: list[dict[str, float]] = []
    resumed_seconds = 0.0
    if resume is not None:
        checkpoint = load_checkpoint(resume)
        history = restore(checkpoint, plain_config, model, optimizer, scheduler,
                          precision.scaler, train_loader.generator)
        resumed_seconds = float(checkpoint.get("metrics", {}).get("train_seconds", 0.0))
        run_dir = run_dir if run_dir is not None else resume.parent
    if run_dir is None:
        run_dir = new_run_dir(config)
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
    continues_here = resume is not None and resume.parent.resolve() == run_dir.resolve()
    run_log = RunLog(run_dir, config, history, continues_here=continues_here, searched=searched)
    best: dict[str, Any] = {}
    for entry in history:
        if _improves(entry, best, monitor):
            best = dict(entry)
    status, stopped = "failed", False
    epochs = settings.num_epochs
    start = int(history[-1]["epoch"]) if history else 0
    costs = _measure(model, data, settings.batch_size, precision)
    run_log.cost_measurement = {"seconds": costs.pop("cost_seconds")}
    train_seconds = resumed_seconds
    bar = EpochProgress(epochs, len(train_loader), enabled=progress, lines=epoch_lines, done=start)
    on_batch = bar.advance if stop_check is None else _then(bar.advance, stop_check)
    try:
        with bar, CheckpointWriter(run_dir) as checkpoints:
            for epoch in range(start + 1, epochs + 1):
                if stop_check is not None:
                    stop_check()
                epoch_start = time.perf_counter()
                train_loss, train_acc = train_one_epoch(
                    forward, train_loader, optimizer, criterion, precision, on_batch=on_batch
                )
                if not math.isfinite(train_loss):
                    raise TrainingDiverged(
                        f"training loss became {train_loss} at epoch {epoch}; "
                        "lower optimizer.lr or check the data"
                    )
                val_loss, val_acc = evaluate(forward, val_loader, criterion, precision)
                metrics = {
                    "train_loss": train_loss,
                    "train_acc": train_acc,
                    "val_loss": val_loss,
                    "val_acc": val_acc,
                    "lr": optimizer.param_groups[0]["lr"],
                }
                train_seconds += time.perf_counter() - epoch_start
                # What the run costs so far: beside the history, not in it (timings differ
                # between runs that learn exactly the same).
                spent = {**costs, **run_costs(device, train_seconds)}
                if scheduler is not None:
                    scheduler.step()
                run_log.log_epoch(epoch, metrics, spent)
                bar.epoch_done(epoch, metrics)
                improved = _improves(run_log.history[-1], best, monitor)
                if improved:
                    best = dict(run_log.history[-1])
                payload = checkpoint_payload(
                    model, optimizer, epoch, {**metrics, **spent}, plain_config, data.classes,
                    history=run_log.history, scheduler=scheduler, scaler=precision.scaler,
                    generator=train_loader.generator, run_id=run_id)
                checkpoints.save(payload, best=improved)
                if callback is not None and callback(epoch, {**metrics, **spent}):
                    stopped = True
                    break
        status = "stopped" if stopped else "completed"
    except BaseException as exc:
        status = ("pruned" if type(exc).__name__ == "TrialPruned"
                  else "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed")
        raise
    finally:
        run_log.close(status, best or None)
    return TrainResult(run_dir, run_log.history, best, stopped, data.classes)

