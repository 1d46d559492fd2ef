"""Batches for the training loop: from tensors on the device, or streamed by a DataLoader.

In-memory data (:class:`~kubetune.data.datasets.ImageTensorDataset` with an
:class:`~kubetune.data.augment.ImageTransform`) is copied to the training device
once per run as uint8; every batch is a gather from it, augmented and normalised
there. Anything else goes through a DataLoader: workers decode and transform per
item, pinned memory and persistent workers keep a GPU fed.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any, TypeGuard

import torch
from torch.utils.data import DataLoader

from kubetune.data.augment import BatchTransform, ImageTransform
from kubetune.data.datasets import DataSplits, ImageFileDataset, ImageTensorDataset

# Evaluation needs no gradients, so it takes batches of up to this many input values
# (16 MiB of float32): 4,096 8x8 or 32x32 digits, the training batch size at 224 px.
EVAL_BATCH_VALUES = 2**22
MAX_EVAL_BATCH = 4096


class DeviceBatches:
    """Batches of a uint8 dataset held on the device; shuffled and augmented when training."""

    def __init__(self, dataset: ImageTensorDataset, device: torch.device, batch_size: int,
                 generator: torch.Generator | None = None) -> None:
        self.images = dataset.images.to(device)
        self.targets = dataset.targets.to(device)
        transform = dataset.transform
        self.transform: BatchTransform | None = (
            transform.batched(device) if isinstance(transform, ImageTransform) else None
        )
        self.batch_size = batch_size
        self.generator = generator  # None: in order, no augmentation (evaluation)

    def __len__(self) -> int:
        return math.ceil(len(self.targets) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.targets)
        order = None
        if self.generator is not None:
            order = torch.randperm(n, generator=self.generator, device=self.images.device)
        for start in range(0, n, self.batch_size):
            index = slice(start, start + self.batch_size) if order is None else \
                order[start:start + self.batch_size]
            images, targets = self.images[index], self.targets[index]
            if self.transform is not None:
                images = self.transform(images, self.generator)
            yield images, targets


def eval_batch_size(batch_size: int, image_shape: torch.Size) -> int:
    """Large evaluation batches for small images, never below the training batch."""
    return max(batch_size, min(MAX_EVAL_BATCH, EVAL_BATCH_VALUES // max(1, image_shape.numel())))


def _on_device(dataset: ImageTensorDataset | ImageFileDataset) -> TypeGuard[ImageTensorDataset]:
    """Whether ``dataset`` can be batched on the device (else it goes per item)."""
    return isinstance(dataset, ImageTensorDataset) and (
        dataset.transform is None or isinstance(dataset.transform, ImageTransform)
    )


def _image_shape(dataset) -> torch.Size:
    """One model input's shape. An ImageTransform keeps the image's shape, so a held
    dataset answers from its tensor without the per-item transform (torchvision: ~1 s
    to import, unused on the device path)."""
    return dataset.images.shape[1:] if _on_device(dataset) else dataset[0][0].shape


def make_batches(data: DataSplits, batch_size: int, device: torch.device, seed: int,
                 num_workers: int = 0) -> tuple:
    """(training batches, evaluation batches) for ``data`` on ``device``, seeded by ``seed``."""
    eval_size = eval_batch_size(batch_size, _image_shape(data.val))
    if _on_device(data.train) and _on_device(data.val):
        generator = torch.Generator(device=device).manual_seed(seed)
        return (DeviceBatches(data.train, device, batch_size, generator),
                DeviceBatches(data.val, device, eval_size))
    common: dict[str, Any] = {
        "num_workers": num_workers,
        "pin_memory": device.type == "cuda",
        "persistent_workers": num_workers > 0,
    }
    generator = torch.Generator().manual_seed(seed)
    return (DataLoader(data.train, batch_size=batch_size, shuffle=True, generator=generator, **common),
            DataLoader(data.val, batch_size=eval_size, shuffle=False, **common))
