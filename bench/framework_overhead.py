"""Framework overhead: kubetune's ``train()`` vs the strongest hand-written CPU loop.

The hand loop is what a user who knows the tricks writes: the uint8 dataset in one
tensor, batched random crop (padding 2) + horizontal flip + normalisation, the same
model (``small_cnn``), optimizer, cosine schedule, batch size (64) and epochs, and
evaluation in one batch. A third row is the per-item path
(a DataLoader over the dataset, torchvision transforms per image), same model.

Everything runs in one process, alternating the rows so machine noise hits all of
them; images/s counts training images over the whole run (evaluation, logging and
checkpoints included), once by the wall clock and once by this process's CPU time,
which other processes on a shared machine disturb less. Prints medians and the
ratios; targets: train() >= 0.95x the hand loop at 8x8 and 32x32.

    .venv/bin/python bench/framework_overhead.py [--repeats 7] [--epochs 3] [--sizes 8 32] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from kubetune.config import validate_config
from kubetune.data.datasets import load_splits
from kubetune.data.sample import write_digits
from kubetune.models import build_model
from kubetune.training import train

PADDING = 2
CPU = torch.device("cpu")


def _model_and_optimizer(config, data, device=CPU, layout=torch.preserve_format):
    torch.manual_seed(config.training.seed)
    model = build_model(config.model, data.num_classes, data.channels).to(device, memory_format=layout)
    opt = torch.optim.SGD(model.parameters(), lr=config.optimizer.lr,
                          momentum=config.optimizer.momentum,
                          weight_decay=config.optimizer.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=config.training.num_epochs)
    return model, opt, sched


def hand_resident(config, data, device: torch.device = CPU, amp: bool = False) -> float:
    """uint8 tensors on ``device``, batched crop + flip + normalise, one evaluation batch.

    ``amp`` (CUDA): fp16 autocast + GradScaler and channels_last, as a tuned GPU loop has.
    """
    layout = torch.channels_last if amp else torch.preserve_format
    model, opt, sched = _model_and_optimizer(config, data, device, layout)
    scaler = torch.amp.GradScaler("cuda") if amp else None
    crit = nn.CrossEntropyLoss()
    gen = torch.Generator(device=device).manual_seed(config.training.seed)
    x_all, y_all = data.train.images.to(device), data.train.targets.to(device)
    mean = torch.tensor(config.data.normalize.mean, device=device).view(1, -1, 1, 1)
    std = torch.tensor(config.data.normalize.std, device=device).view(1, -1, 1, 1)
    x_val = (data.val.images.to(device).float() / 255 - mean) / std
    y_val = data.val.targets.to(device)
    n, size, bs = len(y_all), x_all.shape[-1], config.training.batch_size
    span = torch.arange(size, device=device)
    acc = 0.0
    for _ in range(config.training.num_epochs):
        model.train()
        order = torch.randperm(n, generator=gen, device=device)
        for i in range(0, n, bs):
            idx = order[i:i + bs]
            b = len(idx)
            padded = F.pad(x_all[idx], (PADDING,) * 4)
            dy = torch.randint(0, 2 * PADDING + 1, (b, 1), generator=gen, device=device)
            dx = torch.randint(0, 2 * PADDING + 1, (b, 1), generator=gen, device=device)
            cols = dx + span
            flip = torch.rand(b, 1, generator=gen, device=device) < 0.5
            cols = torch.where(flip, cols.flip(1), cols)
            rows = dy + span
            crop = padded[torch.arange(b, device=device)[:, None, None], :, rows[:, :, None],
                          cols[:, None, :]]
            x = ((crop.permute(0, 3, 1, 2).float() / 255 - mean) / std).contiguous(memory_format=layout)
            opt.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
                loss = crit(model(x), y_all[idx])
            if scaler is None:
                loss.backward()
                opt.step()
            else:
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
        model.eval()
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.float16, enabled=amp):
            acc = (model(x_val.contiguous(memory_format=layout)).argmax(1) == y_val).float().mean().item()
        sched.step()
    return acc


def per_item_loop(config, data) -> float:
    """The old train() data path: a DataLoader, torchvision transforms per image."""
    model, opt, sched = _model_and_optimizer(config, data)
    crit = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(config.training.seed)
    bs = config.training.batch_size
    train_loader = DataLoader(data.train, batch_size=bs, shuffle=True, generator=gen)
    val_loader = DataLoader(data.val, batch_size=bs)
    acc = 0.0
    for _ in range(config.training.num_epochs):
        model.train()
        for x, y in train_loader:
            opt.zero_grad(set_to_none=True)
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


def bench_config(root: Path, runs: Path, size: int, epochs: int, *, architecture="small_cnn",
                 batch_size=64, device="cpu", trainer="standard"):
    """Digits at ``size``, crop (padding 2) + flip, SGD with a cosine schedule."""
    return validate_config({
        "model": {"architecture": architecture, "dropout": 0.1},
        "data": {"path": str(root), "image_size": size, "channels": 1, "in_memory": True,
                 "normalize": {"mean": [0.3], "std": [0.37]},
                 "augment": {"random_crop_padding": PADDING, "horizontal_flip": True}},
        "training": {"num_epochs": epochs, "batch_size": batch_size, "device": device,
                     "trainer": trainer},
        "optimizer": {"type": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4},
        "scheduler": {"type": "cosine"},
        "logging": {"output_dir": str(runs)},
    })


HAND, OURS, OLD = "hand loop, tensor-resident", "kubetune train()", "per-item DataLoader (old path)"


def measure(size: int, args, root: Path, runs: Path) -> dict:
    """Images/s of every row, per repeat: by the wall clock and by this process's CPU time."""
    config = bench_config(root, runs, size, args.epochs)
    data = load_splits(config.data, config.training.seed)
    images = args.epochs * len(data.train)

    def kubetune(config, data) -> float:
        return train(config, data=data, progress=False, epoch_lines=False).final["val_acc"]

    rows = {HAND: hand_resident, OURS: kubetune, OLD: per_item_loop}
    if args.skip_per_item:
        rows.pop(OLD)
    rates = {clock: {name: [] for name in rows} for clock in ("wall", "cpu")}
    accs: dict[str, list[float]] = {name: [] for name in rows}
    for run in rows.values():  # warm-up: allocator, kernels, first checkpoint
        run(config, data)
    for repeat in range(args.repeats):
        order = list(rows.items())
        for name, run in order if repeat % 2 == 0 else reversed(order):
            wall, cpu = time.perf_counter(), time.process_time()
            accs[name].append(run(config, data))
            rates["cpu"][name].append(images / (time.process_time() - cpu))
            rates["wall"][name].append(images / (time.perf_counter() - wall))
    return {"rates": rates, "accs": accs, "train_images": len(data.train)}


def report(size: int, result: dict) -> None:
    print(f"\n{size}x{size} digits, {result['train_images']} training images "
          "(images/s by the wall clock, then by CPU time; ratios: medians of per-repeat pairs)")
    for clock, rates in result["rates"].items():
        for name, values in rates.items():
            ratio = [v / h for v, h in zip(values, rates[HAND], strict=True)]
            spread = "" if name == HAND else f" (min {min(ratio):.3f}, max {max(ratio):.3f})"
            print(f"  {clock:4s} {name:32s} {statistics.median(values):8,.0f} images/s  "
                  f"{statistics.median(ratio):.3f}x hand{spread}  "
                  f"val_acc {statistics.median(result['accs'][name]):.3f}")
        if OLD in rates:
            speedup = [o / p for o, p in zip(rates[OURS], rates[OLD], strict=True)]
            print(f"  {clock:4s} train() / old per-item path: {statistics.median(speedup):.2f}x")
    print("  target: train() >= 0.95x the hand loop")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--sizes", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--skip-per-item", action="store_true", help="leave out the old path's row")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: steadier on a shared machine; 0: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    print(f"torch {torch.__version__}, threads: {torch.get_num_threads()}, epochs: {args.epochs}, "
          f"batch size: 64, repeats: {args.repeats} (medians)")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "digits"
        write_digits(root)
        for size in args.sizes:
            report(size, measure(size, args, root, Path(tmp) / f"runs{size}"))


if __name__ == "__main__":
    main()
