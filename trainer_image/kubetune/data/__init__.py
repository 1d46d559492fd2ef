"""Datasets: inspect ImageFolder trees, load and split them, write the digits sample.

``folder`` and ``sample`` need no torch; ``datasets`` does and is imported on use.
"""

from kubetune.data.folder import DatasetInfo, inspect_dataset, list_images
from kubetune.data.sample import write_digits

__all__ = ["DatasetInfo", "inspect_dataset", "list_images", "write_digits"]
