"""Checkpoint writes: ``train()`` with each epoch's checkpoints written in the background
(as shipped) against the same run waiting for them on the training thread.

Every epoch writes ``last.pt`` (and ``best.pt`` when val_acc improves), each fsync'd
before its rename so a preempted pod resumes from a whole file. For a small model on
small images an epoch is short and that wait is a few percent of it; the background
writer overlaps it with the next epoch. Runs alternate in one process, 8x8 digits,
one thread, 3 epochs, the same config as ``framework_overhead.py``; prints the median
ratio of wall-clock speed over pairs of runs.

    .venv/bin/python bench/checkpoint_writes.py [--pairs 21] [--size 8] [--epochs 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from framework_overhead import bench_config

from kubetune.data.datasets import load_splits
from kubetune.data.sample import write_digits
from kubetune.training import train
from kubetune.training.checkpoint import CheckpointWriter


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=21)
    parser.add_argument("--size", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_digits(root / "digits")
        config = bench_config(root / "digits", root / "runs", args.size, args.epochs)
        data = load_splits(config.data, config.training.seed)
        background = CheckpointWriter.save

        def waiting(self: CheckpointWriter, payload: dict, *, best: bool) -> None:
            background(self, payload, best=best)
            self.wait()

        def seconds(save) -> float:
            CheckpointWriter.save = save
            start = time.perf_counter()
            train(config, data=data, progress=False, epoch_lines=False)
            return time.perf_counter() - start

        seconds(background), seconds(waiting)  # warm-up
        ratios = [seconds(waiting) / seconds(background) for _ in range(args.pairs)]
        CheckpointWriter.save = background
    print(f"{args.size}x{args.size} digits, {args.epochs} epochs, {args.pairs} pairs of runs")
    print(f"  train() speed, checkpoints written in the background / on the training thread: "
          f"{statistics.median(ratios):.3f}x (min {min(ratios):.3f}, max {max(ratios):.3f})")


if __name__ == "__main__":
    main()
