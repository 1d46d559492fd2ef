"""Find and inspect ImageFolder trees (``class/image.png``), no torch needed."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubetune.errors import DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
SPLIT_FOLDERS = ("train", "val")
MIN_CLASSES = 2


@contextmanager
def open_image(path: Path) -> Iterator[Any]:
    """PIL's ``Image.open``; a file PIL cannot read, or that ends early while the body
    reads it, is a DataError naming it."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            yield image
    except OSError as exc:
        raise DataError(f"cannot read image {path}: {exc}") from None


@dataclass
class ImageList:
    """The images of one folder: paths, class indices and the class names."""

    paths: list[Path]
    targets: list[int]
    classes: list[str]


@dataclass
class DatasetInfo:
    """What ``ml-init-config`` reports about a dataset folder."""

    root: Path
    layout: str  # "split" (train/ and val/) or "single"
    classes: list[str]
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # split -> class -> n
    image_size: tuple[int, int] = (0, 0)  # most common (width, height)
    channels: int = 3

    @property
    def n_images(self) -> int:
        return sum(sum(c.values()) for c in self.counts.values())


def dataset_layout(root: Path) -> str:
    """``split`` when ``root`` has ``train/`` and ``val/`` sub-folders and ``train/`` holds
    class folders, else ``single`` (where ``train`` and ``val`` may be two classes of images)."""
    split = all((root / name).is_dir() for name in SPLIT_FOLDERS) and _has_subfolders(root / "train")
    return "split" if split else "single"


def check_folder(folder: Path, field: str | None = None) -> None:
    """Raise :class:`DataError` unless ``folder`` is an existing folder; ``field`` (``data.path``)
    leads the message when the folder comes from a config."""
    lead = f"{field}: " if field else ""
    if not folder.exists():
        # A relative path is taken from the working folder, not the config file's: say which.
        where = "" if folder.is_absolute() else f" (relative to the working folder {Path.cwd()})"
        raise DataError(f"{lead}dataset folder {folder} does not exist{where}")
    if not folder.is_dir():
        raise DataError(f"{lead}dataset folder {folder} is a file, not a folder")


def check_classes(folder: Path, classes: list[str]) -> None:
    """At least two class folders, and no ``train/`` (or ``val/``) of a half-made split layout."""
    if not classes:
        raise DataError(f"{folder} has no class sub-folders (expected {folder}/<class>/<image>)")
    for name in SPLIT_FOLDERS:
        # A lone train/, or one holding class folders, is a split layout missing its other half.
        if name in classes and (len(classes) == 1 or _has_subfolders(folder / name)):
            missing = next(s for s in SPLIT_FOLDERS if s != name)
            raise DataError(
                f"{folder} has {name}/ but no {missing}/; expected {folder}/train/<class>/<image> "
                f"and {folder}/val/<class>/<image>, or {folder}/<class>/<image> (split by data.val_split)"
            )
    if len(classes) < MIN_CLASSES:
        raise DataError(
            f"{folder} has 1 class folder ({classes[0]}); a classifier needs at least {MIN_CLASSES}"
        )


def _has_subfolders(folder: Path) -> bool:
    return any(p.is_dir() for p in folder.iterdir())


def list_images(folder: Path, classes: list[str] | None = None) -> ImageList:
    """All images under ``folder/<class>/``; ``classes`` fixes the index order.

    Without ``classes`` the class folders are found, and fewer than two is a DataError.
    """
    check_folder(folder)
    found = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if classes is None:
        classes = found
        check_classes(folder, classes)
    elif extra := sorted(set(found) - set(classes)):
        raise DataError(f"{folder} has classes {extra} that the training split does not have")
    paths: list[Path] = []
    targets: list[int] = []
    for index, name in enumerate(classes):
        class_dir = folder / name
        if not class_dir.is_dir():
            continue
        for path in sorted(class_dir.rglob("*")):
            if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file():
                paths.append(path)
                targets.append(index)
    if not paths:
        raise DataError(f"{folder} holds no images ({', '.join(IMAGE_EXTENSIONS[:3])}, ...)")
    return ImageList(paths, targets, classes)


def inspect_dataset(root: str | Path, sample_size: int = 200) -> DatasetInfo:
    """Classes, counts per split, the usual image size and the channel count."""
    root = Path(root)
    check_folder(root)
    layout = dataset_layout(root)
    splits = {name: root / name for name in SPLIT_FOLDERS} if layout == "split" else {"all": root}
    first = list_images(next(iter(splits.values())))
    info = DatasetInfo(root=root, layout=layout, classes=first.classes)
    sample: list[Path] = []
    for split, folder in splits.items():
        images = list_images(folder, first.classes)
        counts = Counter(images.targets)
        info.counts[split] = {c: counts.get(i, 0) for i, c in enumerate(first.classes)}
        sample.extend(images.paths[:: max(1, len(images.paths) // sample_size)])
    sizes: Counter[tuple[int, int]] = Counter()
    modes: Counter[str] = Counter()
    for path in sample:
        with open_image(path) as image:
            sizes[image.size] += 1
            modes[image.mode] += 1
    info.image_size = sizes.most_common(1)[0][0]
    info.channels = 1 if set(modes) <= {"L", "1", "I", "I;16", "F", "LA"} else 3
    return info
