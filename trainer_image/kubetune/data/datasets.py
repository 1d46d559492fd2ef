"""Torch datasets for ImageFolder trees: split stratified and seeded, held or streamed.

A dataset that fits ``data.in_memory`` is decoded once into one uint8 tensor
(:class:`ImageTensorDataset`); the trainer moves it to the device and augments
whole batches there. A larger one stays on disk (:class:`ImageFileDataset`) and is
decoded per item by DataLoader workers. Both carry an
:class:`~kubetune.data.augment.ImageTransform`, so indexing either gives the same
normalised float image.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from kubetune.config.schema import DataConfig
from kubetune.data.augment import ImageTransform
from kubetune.data.folder import (
    ImageList,
    check_folder,
    dataset_layout,
    inspect_dataset,
    list_images,
    open_image,
)
from kubetune.data.memory import decoded_bytes, hold_in_memory
from kubetune.data.sizes import check_split_sizes
from kubetune.errors import DataError

log = logging.getLogger(__name__)


class _ImageDataset(Dataset):
    """Items are ``(transform(image), target)``; subclasses say where images come from."""

    targets: torch.Tensor
    transform = None

    def image(self, index: int) -> torch.Tensor:
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.image(index)
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.targets[index])


class ImageTensorDataset(_ImageDataset):
    """Images held as one uint8 tensor ``[N, C, H, W]``; ``transform`` runs per item."""

    def __init__(self, images: torch.Tensor, targets: torch.Tensor, transform=None) -> None:
        self.images = images
        self.targets = targets
        self.transform = transform

    def image(self, index: int) -> torch.Tensor:
        return self.images[index]

    def subset(self, indices: Sequence[int] | np.ndarray, transform=None) -> ImageTensorDataset:
        """The items at ``indices`` (a copy), with ``transform``."""
        index = torch.as_tensor(np.asarray(indices), dtype=torch.long)
        return ImageTensorDataset(self.images[index], self.targets[index], transform)


class ImageFileDataset(_ImageDataset):
    """Image files decoded and resized per item: the streaming path for large datasets."""

    def __init__(self, paths: Sequence[Path], targets: torch.Tensor, size: int, channels: int,
                 transform=None) -> None:
        self.paths = list(paths)
        self.targets = targets
        self.size = size
        self.channels = channels
        self.transform = transform

    def image(self, index: int) -> torch.Tensor:
        return decode_image(self.paths[index], self.size, self.channels)

    def subset(self, indices: Sequence[int] | np.ndarray, transform=None) -> ImageFileDataset:
        """The items at ``indices``, with ``transform``."""
        index = np.asarray(indices, dtype=np.int64)
        return ImageFileDataset([self.paths[i] for i in index], self.targets[torch.from_numpy(index)],
                                self.size, self.channels, transform)


@dataclass
class DataSplits:
    """Train and validation datasets plus what the model needs to know about them."""

    train: ImageTensorDataset | ImageFileDataset
    val: ImageTensorDataset | ImageFileDataset
    classes: list[str]
    channels: int

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_memory(self) -> bool:
        return isinstance(self.train, ImageTensorDataset) and isinstance(self.val, ImageTensorDataset)


def decode_image(path: Path, size: int, channels: int) -> torch.Tensor:
    """One image file as a uint8 ``[channels, size, size]`` tensor (bilinear resize)."""
    from PIL import Image

    mode = "L" if channels == 1 else "RGB"
    with open_image(path) as image:
        image = image.convert(mode)
        if image.size != (size, size):
            image = image.resize((size, size), Image.Resampling.BILINEAR)
        array = np.array(image, dtype=np.uint8)
    return torch.from_numpy(array.reshape(size, size, channels)).permute(2, 0, 1)


def decode_images(paths: Sequence[Path], size: int, channels: int) -> torch.Tensor:
    """Decode and resize every image once into one uint8 tensor ``[N, C, H, W]``."""
    out = torch.empty((len(paths), channels, size, size), dtype=torch.uint8)
    for i, path in enumerate(paths):
        out[i] = decode_image(path, size, channels)
    return out


def stratified_split(
    targets: Sequence[int], fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (kept, held out) with ``fraction`` held out, every class represented."""
    from sklearn.model_selection import train_test_split

    indices = np.arange(len(targets))
    try:
        kept, held = train_test_split(
            indices, test_size=fraction, stratify=np.asarray(targets), random_state=seed
        )
    except ValueError:  # a class too small to stratify: fall back to a plain shuffle
        kept, held = train_test_split(indices, test_size=fraction, random_state=seed)
    return np.sort(kept), np.sort(held)


def stratified_folds(targets: Sequence[int], n_folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n_folds`` (train, val) index pairs over ``targets``, stratified and seeded."""
    from sklearn.model_selection import StratifiedKFold

    counts = np.bincount(np.asarray(targets))
    if counts[counts > 0].min() < n_folds:
        raise DataError(
            f"search.cross_validation.n_folds={n_folds} is more than the smallest class has images"
        )
    folds = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    return list(folds.split(np.zeros(len(targets)), np.asarray(targets)))


def _dataset(images: ImageList, size: int, channels: int, in_memory: bool):
    targets = torch.tensor(images.targets)
    if in_memory:
        return ImageTensorDataset(decode_images(images.paths, size, channels), targets)
    return ImageFileDataset(images.paths, targets, size, channels)


def load_splits(cfg: DataConfig, seed: int = 0) -> DataSplits:
    """Train and validation datasets for ``cfg``: ``train/``+``val/`` or a seeded split.

    ``cfg.in_memory`` decides between decoding everything now into uint8 tensors
    and streaming the files (``auto``: whatever fits the memory budget).
    """
    root = Path(cfg.path)
    check_folder(root, field="data.path")
    layout = dataset_layout(root)
    if layout == "split":
        train_list = list_images(root / "train")
        lists = [train_list, list_images(root / "val", train_list.classes)]
    else:
        lists = [list_images(root)]
    # Before sklearn sees a split it cannot make; names the setting to change.
    check_split_sizes(root, layout, len(lists[0].paths), len(lists[0].classes), cfg.val_split,
                      cfg.train_fraction)
    channels = cfg.channels or inspect_dataset(root, sample_size=50).channels
    size = cfg.image_size
    n_bytes = decoded_bytes(sum(len(images.paths) for images in lists), channels, size)
    in_memory = hold_in_memory(cfg.in_memory, n_bytes)
    log.info("data: %s, %.1f MB decoded", "held in memory" if in_memory else "streamed from disk",
             n_bytes / 2**20)
    datasets = [_dataset(images, size, channels, in_memory) for images in lists]
    if len(datasets) == 2:
        train, val = datasets
    else:
        train_idx, val_idx = stratified_split(lists[0].targets, cfg.val_split, seed)
        train, val = datasets[0].subset(train_idx), datasets[0].subset(val_idx)
    if cfg.train_fraction < 1.0:
        kept, _ = stratified_split(train.targets.tolist(), 1.0 - cfg.train_fraction, seed)
        train = train.subset(kept)
    train.transform = ImageTransform.from_config(cfg, channels, train=True)
    val.transform = ImageTransform.from_config(cfg, channels, train=False)
    return DataSplits(train=train, val=val, classes=lists[0].classes, channels=channels)
