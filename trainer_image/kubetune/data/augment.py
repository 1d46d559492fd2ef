"""uint8 images to normalised floats, with the training augmentation, per item or per batch.

One :class:`ImageTransform` describes what happens to an image: random crop with
zero padding, horizontal flip, rotation, then normalisation. It runs two ways with
the same distribution of results:

- per item (``transform(image)``), through torchvision, for the streaming path's
  DataLoader workers;
- per batch on the training device (``transform.batched(device)(images, generator)``),
  where crop and flip are one gather over the uint8 batch, rotation one
  ``grid_sample``, and the ``/255``, ``-mean`` and ``/std`` one multiply-add.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import torch
import torch.nn.functional as F

from kubetune.config.schema import DataConfig
from kubetune.errors import DataError


@dataclass(frozen=True)
class ImageTransform:
    """What turns a uint8 ``[C, H, W]`` image into the model's normalised input."""

    size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_padding: int = 0
    horizontal_flip: bool = False
    rotation_degrees: float = 0.0

    @classmethod
    def from_config(cls, cfg: DataConfig, channels: int, train: bool) -> ImageTransform:
        """The config's normalisation; its augmentation only for training images."""
        mean, std = tuple(cfg.normalize.mean), tuple(cfg.normalize.std)
        if len(mean) == 1 and channels > 1:
            mean, std = mean * channels, std * channels
        if len(mean) != channels:
            raise DataError(
                f"data.normalize has {len(mean)} values but the images have {channels} "
                f"channel{'s' if channels != 1 else ''}"
            )
        if not train:
            return cls(cfg.image_size, mean, std)
        aug = cfg.augment
        return cls(cfg.image_size, mean, std, aug.random_crop_padding, aug.horizontal_flip,
                   aug.rotation_degrees)

    @property
    def augments(self) -> bool:
        return bool(self.crop_padding or self.horizontal_flip or self.rotation_degrees)

    @cached_property
    def _per_item(self):
        from torchvision.transforms import v2

        steps: list = []
        if self.crop_padding:
            steps.append(v2.RandomCrop(self.size, padding=self.crop_padding))
        if self.horizontal_flip:
            steps.append(v2.RandomHorizontalFlip())
        if self.rotation_degrees:
            steps.append(v2.RandomRotation(self.rotation_degrees))
        steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(self.mean), list(self.std))]
        return v2.Compose(steps)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        """One uint8 image, augmented with torch's global generator (DataLoader workers)."""
        return self._per_item(image)

    def batched(self, device: torch.device) -> BatchTransform:
        """This transform for whole uint8 batches on ``device``."""
        return BatchTransform(self, device)


class BatchTransform:
    """An :class:`ImageTransform` over ``[B, C, H, W]`` uint8 batches on one device."""

    def __init__(self, spec: ImageTransform, device: torch.device) -> None:
        self.spec = spec
        std = torch.tensor(spec.std, dtype=torch.float32)
        mean = torch.tensor(spec.mean, dtype=torch.float32)
        # (x / 255 - mean) / std == x * scale + shift
        self.scale = (1.0 / (255.0 * std)).view(1, -1, 1, 1).to(device)
        self.shift = (-mean / std).view(1, -1, 1, 1).to(device)

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Normalised float batch; augmented when ``generator`` is given (training)."""
        spec = self.spec
        if generator is not None and (spec.crop_padding or spec.horizontal_flip):
            images = crop_and_flip(images, spec.crop_padding, spec.horizontal_flip, generator)
        x = images.float()
        if generator is not None and spec.rotation_degrees:
            x = rotate(x, spec.rotation_degrees, generator)
        return torch.addcmul(self.shift, x, self.scale)


def crop_and_flip(images: torch.Tensor, padding: int, flip: bool,
                  generator: torch.Generator) -> torch.Tensor:
    """Random crops of the zero-padded batch, mirrored with probability 1/2, as one gather."""
    b, _, h, w = images.shape
    device = images.device
    if padding:
        images = F.pad(images, (padding,) * 4)
    offsets = torch.randint(0, 2 * padding + 1, (2, b, 1), generator=generator, device=device)
    rows = offsets[0] + torch.arange(h, device=device)
    cols = offsets[1] + torch.arange(w, device=device)
    if flip:
        mirrored = torch.rand(b, 1, generator=generator, device=device) < 0.5
        cols = torch.where(mirrored, cols.flip(1), cols)
    batch = torch.arange(b, device=device).view(b, 1, 1)
    # Advanced indices around a slice put their dims first: [B, H, W, C].
    return images[batch, :, rows.unsqueeze(2), cols.unsqueeze(1)].permute(0, 3, 1, 2).contiguous()


def rotate(x: torch.Tensor, degrees: float, generator: torch.Generator) -> torch.Tensor:
    """Rotate each image by an angle uniform in ``[-degrees, degrees]``, nearest, zero fill."""
    b = x.size(0)
    angles = (torch.rand(b, generator=generator, device=x.device) * 2 - 1) * math.radians(degrees)
    cos, sin = angles.cos(), angles.sin()
    zero = torch.zeros_like(cos)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)
