"""A trial stopped from outside (SIGTERM: eviction, preemption, node drain, Job deletion).

The trial stays RUNNING with its user attribute ``kubetune.interrupted`` saying where
it stopped (:data:`kubetune.search.attributes.INTERRUPTED_ATTR`, which the operator
reads), and the process exits with :data:`TERMINATED_EXIT`; a new pod for the same
trial number resumes it from its ``last.pt`` and sets the attribute to "" once it
trains (Optuna cannot delete one), so readers treat a falsy value as absent. Torch-free.
"""

from __future__ import annotations

import signal
from typing import Any

TERMINATED_EXIT = 128 + signal.SIGTERM  # 143, what a shell reports for a SIGTERMed process

__all__ = ["TERMINATED_EXIT", "SigtermGuard", "Terminated"]


class Terminated(KeyboardInterrupt):
    """SIGTERM turned into an interrupt, so training stops between two Python steps."""


class SigtermGuard:
    """``with SigtermGuard() as guard:`` SIGTERM raises :class:`Terminated` until
    ``guard.disarm()``; after that it is only noted (``guard.received``), so the
    outcome of a trial that already stopped training is still told. The previous
    handler comes back on exit. Outside the main thread it does nothing.
    """

    def __init__(self) -> None:
        self.armed = False
        self.received = False
        self._previous: Any = None

    def _handle(self, signum: int, frame: Any) -> None:
        self.received = True
        if self.armed:
            raise Terminated()

    def disarm(self) -> None:
        self.armed = False

    def __enter__(self) -> SigtermGuard:
        self.armed = True  # before the handler, so no SIGTERM slips through unarmed
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread
            self.armed, self._previous = False, None
        return self

    def __exit__(self, *exc: object) -> None:
        self.armed = False
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
