"""Batched augmentation on the device and the batches the training loop draws."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils.data import DataLoader

from kubetune.config.schema import DataConfig
from kubetune.data.augment import ImageTransform
from kubetune.data.datasets import ImageTensorDataset, load_splits
from kubetune.training.batches import DeviceBatches, make_batches

CPU = torch.device("cpu")


def numbered_images(n: int, side: int = 8) -> torch.Tensor:
    """``n`` copies of one image whose pixels are 1..side*side (0 is left for padding)."""
    return torch.arange(1, side * side + 1, dtype=torch.uint8).view(1, 1, side, side).repeat(n, 1, 1, 1)


def windows(image: torch.Tensor, padding: int) -> dict[tuple[int, int, bool], torch.Tensor]:
    """Every crop of the zero-padded ``image``, plain and mirrored, by (dy, dx, flipped)."""
    side = image.shape[-1]
    padded = torch.nn.functional.pad(image, (padding,) * 4)
    out = {}
    for dy in range(2 * padding + 1):
        for dx in range(2 * padding + 1):
            crop = padded[..., dy:dy + side, dx:dx + side]
            out[(dy, dx, False)] = crop
            out[(dy, dx, True)] = crop.flip(-1)
    return out


def which_window(crop: torch.Tensor, candidates: dict) -> tuple[int, int, bool]:
    found = [key for key, window in candidates.items() if torch.equal(crop, window)]
    assert len(found) == 1, "a crop is no window of the padded image"
    return found[0]


def test_without_augmentation_batched_equals_per_item():
    images = torch.randint(0, 256, (16, 3, 8, 8), dtype=torch.uint8)
    spec = ImageTransform(8, (0.1, 0.2, 0.3), (0.5, 0.6, 0.7))
    per_item = torch.stack([spec(image) for image in images])
    batched = spec.batched(CPU)(images, torch.Generator().manual_seed(0))
    assert torch.allclose(batched, per_item, atol=1e-5)


@pytest.mark.parametrize("batched", [True, False], ids=["batched", "per-item"])
def test_crop_and_flip_draw_every_window_uniformly(batched):
    padding, n = 2, 2000
    images = numbered_images(n)
    # mean 0, std 1/255: the normalised output is the uint8 value itself
    spec = ImageTransform(8, (0.0,), (1 / 255,), crop_padding=padding, horizontal_flip=True)
    torch.manual_seed(0)
    if batched:
        out = spec.batched(CPU)(images, torch.Generator().manual_seed(0))
    else:
        out = torch.stack([spec(image) for image in images])
    out = out.round().to(torch.uint8)
    candidates = windows(images[0], padding)
    seen = [which_window(crop, candidates) for crop in out]
    offsets = [(dy, dx) for dy, dx, _ in seen]
    counts = [offsets.count(key) for key in set(offsets)]
    assert len(counts) == (2 * padding + 1) ** 2
    expected = n / len(counts)
    assert min(counts) > 0.5 * expected and max(counts) < 1.5 * expected
    flipped = sum(f for _, _, f in seen) / n
    assert 0.45 < flipped < 0.55


def test_batched_rotation_matches_torchvision_in_distribution():
    n, degrees = 600, 30.0
    images = torch.full((n, 1, 16, 16), 255, dtype=torch.uint8)
    spec = ImageTransform(16, (0.0,), (1.0,), rotation_degrees=degrees)
    torch.manual_seed(0)
    per_item = torch.stack([spec(image) for image in images])
    batched = spec.batched(CPU)(images, torch.Generator().manual_seed(0))
    # The share of zero-filled corners grows with |angle|: same angles, same shares.
    filled = [(x == 0).float().mean(dim=(1, 2, 3)) for x in (batched, per_item)]
    assert filled[0].max() > 0.1
    assert abs(filled[0].mean() - filled[1].mean()) < 0.01
    assert abs(filled[0].std() - filled[1].std()) < 0.01
    plain = ImageTransform(16, (0.0,), (1.0,)).batched(CPU)(images, torch.Generator())
    assert (plain == 1.0).all()


def test_an_epoch_visits_every_image_once_in_a_fresh_order():
    n = 50
    dataset = ImageTensorDataset(torch.zeros(n, 1, 4, 4), torch.arange(n))
    batches = DeviceBatches(dataset, CPU, 7, torch.Generator().manual_seed(0))
    assert len(batches) == math.ceil(n / 7)
    epochs = [torch.cat([targets for _, targets in batches]) for _ in range(2)]
    for order in epochs:
        assert sorted(order.tolist()) == list(range(n))
    assert not torch.equal(epochs[0], epochs[1])
    assert epochs[0].tolist() != list(range(n))


def test_batches_are_seeded():
    dataset = ImageTensorDataset(numbered_images(40), torch.arange(40),
                                 ImageTransform(8, (0.5,), (0.5,), 1, True, 15.0))

    def first_epoch(seed):
        batches = DeviceBatches(dataset, CPU, 16, torch.Generator().manual_seed(seed))
        return torch.cat([images for images, _ in batches])

    assert torch.equal(first_epoch(3), first_epoch(3))
    assert not torch.equal(first_epoch(3), first_epoch(4))


def test_in_memory_data_is_batched_on_the_device_and_evaluated_in_one_batch(digits_dir):
    splits = load_splits(DataConfig(path=str(digits_dir), image_size=8), seed=0)
    train, val = make_batches(splits, 64, CPU, seed=0)
    assert isinstance(train, DeviceBatches) and isinstance(val, DeviceBatches)
    assert len(train) == math.ceil(1437 / 64)
    assert len(val) == 1 and val.generator is None
    images, _ = next(iter(val))
    assert images.dtype == torch.float32 and images.shape == (360, 1, 8, 8)


def test_streamed_data_goes_through_dataloader_workers(digits_dir):
    splits = load_splits(DataConfig(path=str(digits_dir), image_size=8, in_memory=False), seed=0)
    train, val = make_batches(splits, 64, CPU, seed=0, num_workers=2)
    assert isinstance(train, DataLoader) and train.num_workers == 2
    assert train.persistent_workers and not train.pin_memory  # pinned only for CUDA
    assert val.batch_size >= 360
