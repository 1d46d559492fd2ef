"""``ml-init-config``: inspect a dataset folder and write a config that trains on it."""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from kubetune.cli.common import ArgumentParser, add_common_flags, run_command
from kubetune.config.template import TemplateValues, render_config
from kubetune.data.folder import DatasetInfo, inspect_dataset, list_images, open_image
from kubetune.data.sample import DEMO_N_TRIALS, DEMO_TRAIN_FRACTION, SAMPLES, write_digits
from kubetune.data.sizes import check_split_sizes
from kubetune.errors import UsageError
from kubetune.fileio import unwritable_reason, write_text_atomic

PROG = "ml-init-config"


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog=PROG,
        description="Inspect an ImageFolder dataset and write a kubetune config for it.",
    )
    parser.add_argument("dataset", help="dataset folder: <class>/<image> or train/ and val/")
    parser.add_argument(
        "--output", "-o", help="config file to write (default: configs/<dataset>_config.yaml)"
    )
    parser.add_argument("--optuna", action="store_true", help="add a search section for ml-search")
    parser.add_argument("--yes", "-y", action="store_true", help="ask nothing; take the defaults")
    parser.add_argument("--force", action="store_true", help="overwrite an existing config")
    parser.add_argument(
        "--sample", choices=SAMPLES,
        help="first write a bundled sample dataset into DATASET (digits: 1,797 8x8 PNGs)",
    )
    add_common_flags(parser)
    return parser


def channel_stats(info: DatasetInfo, limit: int = 500) -> tuple[list[float], list[float]]:
    """Per-channel mean and std over a sample of the (training) images."""
    import numpy as np

    folder = info.root / "train" if info.layout == "split" else info.root
    paths = list_images(folder).paths
    paths = paths[:: max(1, len(paths) // limit)]
    mode = "L" if info.channels == 1 else "RGB"
    pixels = []
    for path in paths:
        with open_image(path) as image:
            array = np.asarray(image.convert(mode), dtype=np.float64) / 255.0
        pixels.append(array.reshape(-1, info.channels))
    stacked = np.concatenate(pixels)
    std = np.maximum(stacked.std(axis=0), 1e-3)
    return stacked.mean(axis=0).round(4).tolist(), std.round(4).tolist()


def suggest(info: DatasetInfo, data_path: str) -> TemplateValues:
    """Defaults that suit this dataset: small images get the small CNN at native size."""
    side = max(info.image_size)
    small = side <= 64
    mean, std = channel_stats(info)
    return TemplateValues(
        data_path=data_path,
        classes=len(info.classes),
        image_size=max(8, side) if small else 224,
        channels=info.channels,
        mean=mean,
        std=std,
        architecture="small_cnn" if small else "resnet18",
        batch_size=32 if small else 64,
        lr=0.05 if small else 0.01,
        experiment=info.root.resolve().name,
    )


def demo_settings(values: TemplateValues) -> TemplateValues:
    """The bundled sample searched is the demo: a small training split where tuning shows.

    Without ``--optuna`` the sample trains on all of its training split (~0.98 val_acc).
    """
    values.train_fraction = DEMO_TRAIN_FRACTION
    values.train_fraction_note = "the demo trains on a stratified 5 %, where tuning matters"
    values.n_trials = DEMO_N_TRIALS
    return values


def describe(info: DatasetInfo) -> str:
    lines = [
        f"dataset {info.root}: {len(info.classes)} classes, {info.n_images} images, "
        f"{info.image_size[0]}x{info.image_size[1]} px, {info.channels} channel(s), "
        f"layout {'train/ + val/' if info.layout == 'split' else 'one folder (split by data.val_split)'}"
    ]
    for split, counts in info.counts.items():
        shown = ", ".join(f"{c}: {n}" for c, n in list(counts.items())[:12])
        more = ", ..." if len(counts) > 12 else ""
        lines.append(f"  {split}: {shown}{more}")
    return "\n".join(lines)


def ask(values: TemplateValues) -> TemplateValues:
    """A few questions on a terminal; Enter keeps the suggestion."""
    from rich.prompt import IntPrompt, Prompt

    from kubetune.config.architectures import COMMON_ARCHITECTURES

    values.architecture = Prompt.ask(
        "architecture", choices=list(COMMON_ARCHITECTURES), default=values.architecture
    )
    values.num_epochs = IntPrompt.ask("epochs", default=values.num_epochs)
    values.batch_size = IntPrompt.ask("batch size", default=values.batch_size)
    return values


def check_output(output: Path) -> None:
    """Refuse, before anything is written, a config path that cannot be written."""
    if output.is_dir():
        raise UsageError(f"--output {output} is a folder; give a file such as {output / 'config.yaml'}")
    reason = unwritable_reason(output.parent)
    if reason:
        raise UsageError(f"cannot write {output}: {reason}; choose another --output")


def check_sizes(info: DatasetInfo, values: TemplateValues) -> None:
    """The config about to be written must split this dataset (``load_splits`` checks the same)."""
    from kubetune.config.schema import DataConfig

    split = "train" if info.layout == "split" else "all"
    check_split_sizes(info.root, info.layout, sum(info.counts[split].values()), len(info.classes),
                      DataConfig.model_fields["val_split"].default, values.train_fraction)


def _run(args: argparse.Namespace) -> int:
    dataset = Path(args.dataset)
    output = Path(args.output) if args.output else Path("configs") / f"{dataset.resolve().name}_config.yaml"
    check_output(output)
    if output.exists() and not args.force:
        raise UsageError(f"{output} already exists; pass --force to overwrite it")
    wrote_sample = False
    if args.sample:
        if dataset.is_dir() and any(dataset.iterdir()):
            print(f"{dataset} already exists; using it as it is")
        else:
            count = write_digits(dataset)
            wrote_sample = True
            print(f"wrote the {args.sample} sample: {count} images under {dataset}")
    try:
        _write_config(args, dataset, output)
    except BaseException:
        if wrote_sample:  # leave nothing behind from a run that wrote no config
            shutil.rmtree(dataset, ignore_errors=True)
        raise
    return 0


def _write_config(args: argparse.Namespace, dataset: Path, output: Path) -> None:
    info = inspect_dataset(dataset)
    print(describe(info))
    values = suggest(info, str(args.dataset))
    if args.sample and args.optuna:
        demo_settings(values)
    check_sizes(info, values)
    if not args.yes and sys.stdin.isatty():
        values = ask(values)
    text = render_config(values, with_search=args.optuna)
    try:
        write_text_atomic(output, text)
    except OSError as exc:
        raise UsageError(f"cannot write {output}: {exc.strerror or exc}") from None
    print(f"wrote {output}; train with: ml-train --config {output}")
    if args.optuna:
        print(f"search with: ml-search --config {output}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``ml-init-config``."""
    return run_command(PROG, _run, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
