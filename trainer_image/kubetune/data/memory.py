"""Does a decoded dataset fit in memory? The rule behind ``data.in_memory: auto``."""

from __future__ import annotations

import os
from pathlib import Path

# The decoded uint8 dataset may take this share of the smallest memory it lives in.
BUDGET_SHARE = 0.25
_CGROUP_LIMITS = (
    Path("/sys/fs/cgroup/memory.max"),  # cgroup v2 (Kubernetes pods, docker --memory)
    Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"),  # cgroup v1
)


def host_memory_bytes() -> int:
    """Physical RAM, or the container's memory limit where that is lower."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for path in _CGROUP_LIMITS:
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isdigit():  # "max" means no limit
            total = min(total, int(text))
    return total


def memory_budget_bytes() -> int:
    """A quarter of host memory, and of GPU memory where a GPU is present.

    The dataset is decoded in host memory and then copied to the training device,
    so it has to fit both.
    """
    import torch

    available = host_memory_bytes()
    if torch.cuda.is_available():
        available = min(available, torch.cuda.get_device_properties(0).total_memory)
    return int(available * BUDGET_SHARE)


def decoded_bytes(n_images: int, channels: int, size: int) -> int:
    """Bytes of ``n_images`` decoded as uint8 ``[channels, size, size]``."""
    return n_images * channels * size * size


def hold_in_memory(setting: str | bool, n_bytes: int) -> bool:
    """``data.in_memory``: true, false, or auto (within :func:`memory_budget_bytes`)."""
    if setting == "auto":
        return n_bytes <= memory_budget_bytes()
    return bool(setting)
