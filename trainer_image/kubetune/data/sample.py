"""Write scikit-learn's bundled 8x8 handwritten digits as an ImageFolder tree."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from kubetune.errors import DataError

SAMPLES = ("digits",)

# The demo's settings. On all 1,437 training digits every sane point reaches
# val_acc ~0.99 within ten epochs, so a search shows nothing and its plots are flat.
# On a stratified twentieth (~7 images a class) learning rate, batch size, weight
# decay and dropout decide between ~0.4 and ~0.95, and a trial takes about a second
# on one CPU core.
DEMO_TRAIN_FRACTION = 0.05
DEMO_N_TRIALS = 30


def write_digits(target: str | Path) -> int:
    """Export the 1,797 digits as ``target/<digit>/<index>.png``; return the count.

    Writes into a temporary folder beside ``target`` and renames it, so an
    interrupted export leaves nothing half-written.
    """
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    target = Path(target)
    if target.exists() and not target.is_dir():
        raise DataError(f"{target} is a file; the digits sample needs a new or empty folder")
    if target.exists() and any(target.iterdir()):
        raise DataError(f"{target} already exists and is not empty")
    digits = load_digits()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    except OSError as exc:
        raise DataError(f"cannot write the digits sample to {target}: {exc.strerror or exc}") from None
    try:
        # Pixel values are 0..16; scale to the full 8-bit range.
        pixels = np.clip(digits.images * (255.0 / 16.0), 0, 255).round().astype(np.uint8)
        for index, (image, label) in enumerate(zip(pixels, digits.target, strict=True)):
            folder = staging / str(int(label))
            folder.mkdir(exist_ok=True)
            Image.fromarray(image).save(folder / f"{index:04d}.png")
        if target.exists():
            target.rmdir()
        staging.rename(target)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise DataError(f"cannot write the digits sample to {target}: {exc.strerror or exc}") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return len(pixels)
