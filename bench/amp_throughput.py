"""Mixed precision on CUDA: kubetune vs hand-tuned loops, images/s in one process.

1. The training loop alone: resnet18 on synthetic 224 px batches, kubetune's
   ``train_one_epoch`` with ``mixed_precision`` vs a hand-tuned autocast + GradScaler
   loop, both channels_last. Target: ratio >= 0.95.
2. The whole ``train()`` on 32x32 digits held on the GPU, for ``small_cnn`` and
   ``resnet18``, vs the tensor-resident hand loop of ``framework_overhead.py`` with
   fp16 autocast, GradScaler and channels_last. Target: ratio >= 0.9.
   ``--compile`` adds a ``training.compile: true`` row (first epoch includes compiling).

Needs a CUDA device; exits 0 with a message without one.

    .venv/bin/python bench/amp_throughput.py [--batch-size 128] [--steps 50] [--repeats 3]
        [--digits-batch-size 256] [--digits-epochs 10] [--compile]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

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
        images = images.contiguous(memory_format=torch.channels_last)
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


def loop_only(args, device: torch.device) -> None:
    model = build_model(ModelConfig(architecture="resnet18"), 1000, 3)
    model = model.to(device, memory_format=torch.channels_last)
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
    print(f"1. loop only: resnet18, 224 px, batch {args.batch_size}, channels_last")
    print(f"   hand-tuned autocast + GradScaler: {hand:,.0f} images/s")
    print(f"   kubetune mixed_precision:         {kt:,.0f} images/s")
    print(f"   ratio kubetune / hand-tuned: {kt / hand:.3f}; target >= 0.95")


def whole_train(args) -> None:
    from framework_overhead import bench_config, hand_resident

    from kubetune.config import with_overrides
    from kubetune.data.datasets import load_splits
    from kubetune.data.sample import write_digits
    from kubetune.training import train

    device = torch.device("cuda")
    print(f"2. whole train(), 32x32 digits on the GPU, batch {args.digits_batch_size}, "
          f"{args.digits_epochs} epochs, mixed_precision")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "digits"
        write_digits(root)
        for architecture in ("small_cnn", "resnet18"):
            config = bench_config(root, Path(tmp) / "runs", 32, args.digits_epochs,
                                  architecture=architecture, batch_size=args.digits_batch_size,
                                  device="cuda", trainer="mixed_precision")
            data = load_splits(config.data, config.training.seed)
            images = args.digits_epochs * len(data.train)
            rows = {
                "hand loop": lambda c=config, d=data: hand_resident(c, d, device, amp=True),
                "train()": lambda c=config, d=data: train(c, data=d, progress=False,
                                                          epoch_lines=False),
            }
            if args.compile:
                compiled = with_overrides(config, {"training.compile": True})
                rows["train(), compile"] = lambda c=compiled, d=data: train(
                    c, data=d, progress=False, epoch_lines=False)
            for run in rows.values():
                run()  # warm-up: cudnn autotuning, compilation
            rates: dict[str, list[float]] = {name: [] for name in rows}
            for _ in range(args.repeats):
                for name, run in rows.items():
                    torch.cuda.synchronize()
                    start = time.perf_counter()
                    run()
                    torch.cuda.synchronize()
                    rates[name].append(images / (time.perf_counter() - start))
            hand = statistics.median(rates["hand loop"])
            for name, values in rates.items():
                rate = statistics.median(values)
                print(f"   {architecture:10s} {name:18s} {rate:10,.0f} images/s  {rate / hand:.3f}x")
    print("   target: train() >= 0.9x the hand loop")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--digits-batch-size", type=int, default=256)
    parser.add_argument("--digits-epochs", type=int, default=10)
    parser.add_argument("--compile", action="store_true", help="add a training.compile row")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: this benchmark needs a GPU (see docs/benchmarks.md)")
        return 0
    device = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    print(f"device: {torch.cuda.get_device_name(device)}, torch {torch.__version__}")
    loop_only(args, device)
    whole_train(args)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # framework_overhead's hand loop
    sys.exit(main())
