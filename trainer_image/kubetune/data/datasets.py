"""Torch datasets for ImageFolder trees: decoded once, split stratified and seeded."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2

from kubetune.config.schema import DataConfig
from kubetune.data.folder import dataset_layout, inspect_dataset, list_images
from kubetune.errors import DataError


class ImageTensorDataset(Dataset):
    """Images held as one uint8 tensor ``[N, C, H, W]``; ``transform`` runs per item."""

    def __init__(self, images: torch.Tensor, targets: torch.Tensor, transform=None) -> None:
        self.images = images
        self.targets = targets
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.images[index]
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.targets[index])

    def subset(self, indices: Sequence[int] | np.ndarray, transform=None) -> ImageTensorDataset:
        """The items at ``indices``, sharing no storage with this dataset's transform."""
        index = torch.as_tensor(np.asarray(indices), dtype=torch.long)
        return ImageTensorDataset(self.images[index], self.targets[index], transform)


@dataclass
class DataSplits:
    """Train and validation datasets plus what the model needs to know about them."""

    train: ImageTensorDataset
    val: ImageTensorDataset
    classes: list[str]
    channels: int

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def decode_images(paths: Sequence[Path], size: int, channels: int) -> torch.Tensor:
    """Decode and resize every image once into a uint8 tensor."""
    from PIL import Image

    mode = "L" if channels == 1 else "RGB"
    out = torch.empty((len(paths), channels, size, size), dtype=torch.uint8)
    for i, path in enumerate(paths):
        try:
            with Image.open(path) as image:
                image = image.convert(mode)
                if image.size != (size, size):
                    image = image.resize((size, size), Image.Resampling.BILINEAR)
                array = np.array(image, dtype=np.uint8)
        except OSError as exc:
            raise DataError(f"cannot read image {path}: {exc}") from None
        out[i] = torch.from_numpy(array.reshape(size, size, channels)).permute(2, 0, 1)
    return out


def build_transforms(cfg: DataConfig, channels: int, train: bool) -> v2.Compose:
    """uint8 image -> normalised float tensor; light augmentation for training only."""
    steps: list = []
    aug = cfg.augment
    if train:
        if aug.random_crop_padding:
            steps.append(v2.RandomCrop(cfg.image_size, padding=aug.random_crop_padding))
        if aug.horizontal_flip:
            steps.append(v2.RandomHorizontalFlip())
        if aug.rotation_degrees:
            steps.append(v2.RandomRotation(aug.rotation_degrees))
    mean, std = list(cfg.normalize.mean), list(cfg.normalize.std)
    if len(mean) == 1 and channels > 1:
        mean, std = mean * channels, std * channels
    if len(mean) != channels:
        raise DataError(
            f"data.normalize has {len(mean)} values but the images have {channels} channels"
        )
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]
    return v2.Compose(steps)


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


def load_splits(cfg: DataConfig, seed: int = 0) -> DataSplits:
    """Train and validation datasets for ``cfg``: ``train/``+``val/`` or a seeded split."""
    root = Path(cfg.path)
    if not root.is_dir():
        raise DataError(f"data.path: dataset folder {root} does not exist")
    channels = cfg.channels or inspect_dataset(root, sample_size=50).channels
    size = cfg.image_size
    if dataset_layout(root) == "split":
        train_list = list_images(root / "train")
        val_list = list_images(root / "val", train_list.classes)
        train = ImageTensorDataset(
            decode_images(train_list.paths, size, channels), torch.tensor(train_list.targets)
        )
        val = ImageTensorDataset(
            decode_images(val_list.paths, size, channels), torch.tensor(val_list.targets)
        )
        classes = train_list.classes
    else:
        images = list_images(root)
        everything = ImageTensorDataset(
            decode_images(images.paths, size, channels), torch.tensor(images.targets)
        )
        train_idx, val_idx = stratified_split(images.targets, cfg.val_split, seed)
        train, val = everything.subset(train_idx), everything.subset(val_idx)
        classes = images.classes
    if cfg.train_fraction < 1.0:
        kept, _ = stratified_split(train.targets.tolist(), 1.0 - cfg.train_fraction, seed)
        train = train.subset(kept)
    train.transform = build_transforms(cfg, channels, train=True)
    val.transform = build_transforms(cfg, channels, train=False)
    return DataSplits(train=train, val=val, classes=classes, channels=channels)
