"""Framework overhead: kubetune's ``train()`` vs a minimal hand-written PyTorch loop.

Same model (small CNN), same in-memory digits data, batch size and epochs, in one
process, alternating A/B so machine noise hits both. Prints the median time ratio
(kubetune / hand-written); the target is <= 1.05.

    .venv/bin/python bench/framework_overhead.py [--repeats 5] [--epochs 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from kubetune.config import validate_config
from kubetune.data.datasets import load_splits
from kubetune.data.sample import write_digits
from kubetune.models import build_model
from kubetune.training import train


def hand_written(config, data) -> float:
    """The loop a PyTorch user would write: train, then evaluate, every epoch."""
    torch.manual_seed(config.training.seed)
    generator = torch.Generator().manual_seed(config.training.seed)
    model = build_model(config.model, data.num_classes, data.channels)
    opt = torch.optim.SGD(model.parameters(), lr=config.optimizer.lr, momentum=config.optimizer.momentum)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=config.training.num_epochs)
    crit = nn.CrossEntropyLoss()
    train_loader = DataLoader(data.train, batch_size=config.training.batch_size, shuffle=True,
                              generator=generator)
    val_loader = DataLoader(data.val, batch_size=config.training.batch_size)
    acc = 0.0
    for _ in range(config.training.num_epochs):
        model.train()
        for x, y in train_loader:
            opt.zero_grad()
            loss = crit(model(x), y)
            loss.backward()
            opt.step()
        model.eval()
        correct = 0
        with torch.no_grad():
            for x, y in val_loader:
                correct += (model(x).argmax(1) == y).sum().item()
        acc = correct / len(data.val)
        sched.step()
    return acc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--image-size", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "digits"
        write_digits(root)
        config = validate_config({
            "data": {"path": str(root), "image_size": args.image_size, "channels": 1},
            "training": {"num_epochs": args.epochs, "batch_size": args.batch_size, "device": "cpu"},
            "optimizer": {"type": "sgd", "lr": 0.05, "momentum": 0.9},
            "scheduler": {"type": "cosine"},
            "logging": {"output_dir": str(Path(tmp) / "runs")},
        })
        data = load_splits(config.data, config.training.seed)
        hand_written(config, data)  # warm-up: allocator, kernels
        ours, theirs = [], []
        for _ in range(args.repeats):
            start = time.perf_counter()
            hand_written(config, data)
            theirs.append(time.perf_counter() - start)
            start = time.perf_counter()
            train(config, data=data, progress=False)
            ours.append(time.perf_counter() - start)
    ratios = [a / b for a, b in zip(ours, theirs, strict=True)]
    print(f"torch threads: {torch.get_num_threads()}, epochs: {args.epochs}, "
          f"batch size: {args.batch_size}, image size: {args.image_size}, repeats: {args.repeats}")
    print(f"hand-written loop: median {statistics.median(theirs):.3f} s")
    print(f"kubetune train():  median {statistics.median(ours):.3f} s")
    print(f"ratio kubetune / hand-written: median {statistics.median(ratios):.3f} "
          f"(min {min(ratios):.3f}, max {max(ratios):.3f}); target <= 1.05")


if __name__ == "__main__":
    main()
