"""What a model costs: its size, FLOPs, latency, memory and training time.

Every run measures them; they join each epoch's metrics (``metrics.json``, TensorBoard)
and can be objectives, constraints or goals of a search.

- ``params``: the model's parameter count.
- ``flops``: FLOPs of one image's forward pass, from ``torch.utils.flop_counter``
  (a multiply-add counts 2).
- ``latency_ms``: the median time of a forward pass of one image (batch size 1) in eval
  mode on the training device, after warm-up passes; ``latency_batch_ms`` the same for a
  batch of ``training.batch_size`` images. Measured once, before the first epoch (the
  weights' values do not change the time of a dense network), with the training
  precision's autocast; on a GPU each pass is synchronised.
- ``peak_memory_mb``: the peak of the device's allocated memory so far (CUDA), or of the
  process's resident memory on the CPU.
- ``train_seconds``: wall-clock seconds of training and evaluation so far;
  ``gpu_seconds`` the same times the GPUs used (0 on the CPU).
"""

from __future__ import annotations

import resource
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager

import torch
from torch import nn

WARMUP_PASSES = 3
TIMED_PASSES = 10
BATCH_TIMED_PASSES = 3


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def flops_per_image(model: nn.Module, example: torch.Tensor) -> int:
    """FLOPs of ``model``'s forward pass on one image shaped like ``example[0]``."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(example[:1])
    return int(counter.get_total_flops())


def _median_ms(run: Callable[[], object], device: torch.device, passes: int) -> float:
    times = []
    for _ in range(passes):
        start = time.perf_counter()
        run()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


def latency_ms(model: nn.Module, images: torch.Tensor, autocast: Callable[[], AbstractContextManager[object]],
               passes: int = TIMED_PASSES) -> float:
    """The median milliseconds of a forward pass on ``images`` after :data:`WARMUP_PASSES`."""
    device = images.device

    def forward() -> object:
        with torch.no_grad(), autocast():
            return model(images)

    _median_ms(forward, device, WARMUP_PASSES)
    return _median_ms(forward, device, passes)


def static_costs(model: nn.Module, example: torch.Tensor, batch_size: int,
                 autocast: Callable[[], AbstractContextManager[object]]) -> dict[str, float]:
    """``params``, ``flops``, ``latency_ms``, ``latency_batch_ms`` and the seconds their
    measurement took (``cost_seconds``); ``example`` is one batch on the device."""
    started = time.perf_counter()
    was_training = model.training
    model.eval()
    try:
        one = example[:1]
        batch = example[:1].expand(batch_size, *example.shape[1:]).contiguous()
        costs = {
            "params": float(parameter_count(model)),
            "flops": float(flops_per_image(model, one)),
            "latency_ms": latency_ms(model, one, autocast),
            "latency_batch_ms": latency_ms(model, batch, autocast, BATCH_TIMED_PASSES),
        }
    finally:
        model.train(was_training)
    costs["cost_seconds"] = time.perf_counter() - started
    return costs


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / (2**20 if sys.platform == "darwin" else 2**10)


def run_costs(device: torch.device, train_seconds: float) -> dict[str, float]:
    """The costs that grow as a run trains, after ``train_seconds`` of it."""
    gpus = 1 if device.type == "cuda" else 0
    return {"peak_memory_mb": peak_memory_mb(device), "train_seconds": train_seconds,
            "gpu_seconds": train_seconds * gpus}
