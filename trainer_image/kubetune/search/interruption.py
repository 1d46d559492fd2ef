"""A trial stopped from outside (SIGTERM: eviction, preemption, node drain, Job deletion).

Torch-free: the operator reads :data:`INTERRUPTED_ATTR`. The trial stays RUNNING
with this user attribute, and the process exits with :data:`TERMINATED_EXIT`; a
new pod for the same trial number resumes it from its ``last.pt``.
"""

from __future__ import annotations

import signal
from typing import Any

INTERRUPTED_ATTR = "kubetune.interrupted"  # e.g. "terminated (SIGTERM) after epoch 4"
TERMINATED_EXIT = 128 + signal.SIGTERM  # 143, what a shell reports for a SIGTERMed process

__all__ = ["INTERRUPTED_ATTR", "TERMINATED_EXIT", "Terminated", "raise_terminated"]


class Terminated(KeyboardInterrupt):
    """SIGTERM turned into an interrupt, so training stops between two Python steps."""


def raise_terminated(signum: int, frame: Any) -> None:
    """A SIGTERM handler."""
    raise Terminated()
