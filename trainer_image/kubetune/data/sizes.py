"""Refuse splits that would leave a class with no training image, before splitting.

scikit-learn sizes a held-out part as ``ceil(fraction * n)`` and keeps the rest; the
checks here do the same sums, so they refuse exactly the splits that would crash
``train_test_split`` ("the resulting train set will be empty") or keep fewer training
images than there are classes, and they name the setting to change. No torch needed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from kubetune.data.folder import check_folder, dataset_layout, list_images
from kubetune.errors import ConfigError, DataError

if TYPE_CHECKING:
    from kubetune.config.schema import DataConfig


def kept_after_holding_out(n: int, held_fraction: float) -> int:
    """How many of ``n`` items ``train_test_split(test_size=held_fraction)`` keeps."""
    return n - math.ceil(held_fraction * n)


def kept_by_fraction(n: int, fraction: float) -> int:
    """How many of ``n`` training images ``data.train_fraction`` keeps (as ``load_splits`` does)."""
    return n if fraction >= 1.0 else kept_after_holding_out(n, 1.0 - fraction)


def check_val_split(root: Path, n_images: int, n_classes: int, val_split: float) -> int:
    """Images left for training once ``data.val_split`` is held out; raise if too few."""
    n_train = kept_after_holding_out(n_images, val_split)
    if n_train >= n_classes:
        return n_train
    if n_images <= n_classes:  # no val_split leaves one per class and a validation image
        raise DataError(
            f"{root} has {n_images} images for {n_classes} classes, too few to hold out validation "
            f"images and keep one per class for training; add images (or use train/ and val/ folders)"
        )
    most = _round_fraction((n_images - n_classes) / n_images, up=False,
                           ok=lambda f: kept_after_holding_out(n_images, f) >= n_classes)
    raise ConfigError(
        f"`data.val_split` {val_split:g} of {n_images} images leaves {n_train} for training, "
        f"fewer than the {n_classes} classes; lower it to at most {most:g}",
        path="data.val_split",
    )


def check_train_fraction(
    n_train: int, n_classes: int, train_fraction: float, trial_train_fraction: float = 1.0,
) -> None:
    """Raise when ``train_fraction`` (times a search's ``trial_train_fraction``) keeps too few.

    ``search.trial_train_fraction`` is named when ``train_fraction`` alone would do.
    """
    fraction = train_fraction * trial_train_fraction if trial_train_fraction < 1.0 else train_fraction
    kept = kept_by_fraction(n_train, fraction)
    if kept >= n_classes:
        return
    by_trial = kept_by_fraction(n_train, train_fraction) >= n_classes
    if by_trial:
        key = "search.trial_train_fraction"
        times = f" times `data.train_fraction` {train_fraction:g}" if train_fraction < 1.0 else ""
        what = f"`{key}` {trial_train_fraction:g}{times}"
    else:
        key = "data.train_fraction"
        times = (f" times `search.trial_train_fraction` {trial_train_fraction:g}"
                 if trial_train_fraction < 1.0 else "")
        what = f"`{key}` {train_fraction:g}{times}"
    scale = train_fraction if by_trial else min(trial_train_fraction, 1.0)
    enough = _round_fraction(n_classes / n_train / scale, up=True,
                             ok=lambda f: kept_by_fraction(n_train, f * scale) >= n_classes)
    raise ConfigError(
        f"{what} of {n_train} training images leaves {kept}, fewer than the {n_classes} classes; "
        f"raise it to at least {enough:g}",
        path=key,
    )


def _round_fraction(value: float, ok: Callable[[float], bool], up: bool) -> float:
    """``value`` to two significant figures, rounded ``up`` or down until ``ok`` holds."""
    step = 10.0 ** (math.floor(math.log10(value)) - 1)
    steps = math.ceil(value / step) if up else math.floor(value / step)
    candidate = float(f"{steps * step:.2g}")
    while 0.0 < candidate < 1.0 and not ok(candidate):
        steps += 1 if up else -1
        candidate = float(f"{steps * step:.2g}")
    return min(candidate, 1.0)


def check_split_sizes(
    root: Path, layout: str, n_images: int, n_classes: int, val_split: float,
    train_fraction: float, trial_train_fraction: float = 1.0,
) -> None:
    """Every check above for a dataset of ``n_images`` training (or, ``single``, all) images."""
    if layout == "single":
        n_train = check_val_split(root, n_images, n_classes, val_split)
    else:
        n_train = n_images
        if n_train < n_classes:
            raise DataError(
                f"{root / 'train'} has {n_train} images for {n_classes} classes; "
                f"a classifier needs at least one training image per class"
            )
    check_train_fraction(n_train, n_classes, train_fraction, trial_train_fraction)


def check_data_sizes(cfg: DataConfig, trial_train_fraction: float = 1.0,
                     searched: Mapping[str, float] | None = None) -> None:
    """Raise DataError or ConfigError when ``cfg`` (and a search's trial fraction) is too small.

    ``searched``: the ends of searched ``data`` ranges (``train_fraction``: its lowest,
    ``val_split``: its highest), checked too; their ConfigError names the search-space
    entry. Lists the folder once and decodes nothing: ml-search calls it before any trial.
    """
    root = Path(cfg.path)
    check_folder(root, field="data.path")
    layout = dataset_layout(root)
    images = list_images(root / "train" if layout == "split" else root)
    n_images, n_classes = len(images.paths), len(images.classes)
    check_split_sizes(root, layout, n_images, n_classes, cfg.val_split, cfg.train_fraction, trial_train_fraction)
    if not searched:
        return
    ends = {"val_split": cfg.val_split, "train_fraction": cfg.train_fraction, **searched}
    try:
        check_split_sizes(root, layout, n_images, n_classes, ends["val_split"], ends["train_fraction"])
    except ConfigError as exc:
        field = (exc.path or "").removeprefix("data.")
        field = field if field in searched else next(iter(searched))  # val_split left too few for train_fraction
        key = f"search.search_space.data.{field}"
        raise ConfigError(f"`{key}` reaches {searched[field]:g}, and {exc}", path=key) from None
