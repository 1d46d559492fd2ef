"""Mixed precision on CUDA: kubetune's training loop vs a hand-tuned autocast + GradScaler loop.

resnet18 on synthetic 224 px batches, images/s of both in one process, alternating.
Target: ratio >= 0.95. Needs a CUDA device; exits 0 with a message without one.

    .venv/bin/python bench/amp_throughput.py [--batch-size 128] [--steps 50] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
from torch import nn

from kubetune.config.schema import ModelConfig
from kubetune.models import build_model
from kubetune.training.loop import train_one_epoch
from kubetune.training.precision import build_precision


def synthetic_batches(n: int, batch_size: int, device: torch.device) -> list:
    images = torch.randn(batch_size, 3, 224, 224, device=device)
    targets = torch.randint(0, 1000, (batch_size,), device=device)
    return [(images, targets)] * n


def hand_tuned(model, batches, optimizer) -> None:
    scaler = torch.amp.GradScaler("cuda")
    criterion = nn.CrossEntropyLoss()
    model.train()
    for images, targets in batches:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.float16):
            loss = criterion(model(images), targets)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    torch.cuda.synchronize()


def ours(model, batches, optimizer, device) -> None:
    precision = build_precision("mixed_precision", device)
    train_one_epoch(model, batches, optimizer, nn.CrossEntropyLoss(), precision)
    torch.cuda.synchronize()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: this benchmark needs a GPU (see the README's benchmark section)")
        return 0
    device = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    model = build_model(ModelConfig(architecture="resnet18"), 1000, 3).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    batches = synthetic_batches(args.steps, args.batch_size, device)
    hand_tuned(model, batches[:10], optimizer)  # warm-up: cudnn autotuning
    ours(model, batches[:10], optimizer, device)
    rates = {"hand": [], "kubetune": []}
    for _ in range(args.repeats):
        for name, run in (("hand", lambda: hand_tuned(model, batches, optimizer)),
                          ("kubetune", lambda: ours(model, batches, optimizer, device))):
            start = time.perf_counter()
            run()
            rates[name].append(args.steps * args.batch_size / (time.perf_counter() - start))
    hand, kt = statistics.median(rates["hand"]), statistics.median(rates["kubetune"])
    print(f"device: {torch.cuda.get_device_name(device)}; resnet18, 224 px, batch {args.batch_size}")
    print(f"hand-tuned autocast + GradScaler: {hand:,.0f} images/s")
    print(f"kubetune mixed_precision:         {kt:,.0f} images/s")
    print(f"ratio kubetune / hand-tuned: {kt / hand:.3f}; target >= 0.95")
    return 0


if __name__ == "__main__":
    sys.exit(main())
