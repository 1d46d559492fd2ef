"""Signals that stop a trial: noted by their handler, acted on where training checks.

A handler that raises lands wherever the main thread happens to be, a garbage
collector's callback included, where Python prints "Exception ignored" and drops
it: the trial would train on. So the handlers here only note the signal, and
:func:`check_stop` (which training calls between batches and after every epoch,
and ``ml-search`` between trials) raises at a point that can take it.

- Ctrl-C (:func:`watch_interrupts`): :class:`Interrupted` from the next check.
  A second Ctrl-C raises at once, for a user who will not wait.
- SIGTERM (eviction, preemption, node drain, Job deletion; :class:`SigtermGuard`):
  :class:`Terminated` from the next check while armed. The trial stays RUNNING with
  its user attribute ``kubetune.interrupted`` saying where it stopped
  (:data:`kubetune.search.attributes.INTERRUPTED_ATTR`, which the operator reads), and
  the process exits with :data:`TERMINATED_EXIT`; a new pod for the same trial number
  resumes it from its ``last.pt`` and sets the attribute to "" once it trains (Optuna
  cannot delete one), so readers treat a falsy value as absent.

Outside the main thread nothing is installed. Torch-free.
"""

from __future__ import annotations

import signal
from typing import Any

TERMINATED_EXIT = 128 + signal.SIGTERM  # 143, what a shell reports for a SIGTERMed process
INTERRUPTED_EXIT = 128 + signal.SIGINT  # 130

__all__ = [
    "INTERRUPTED_EXIT",
    "TERMINATED_EXIT",
    "Interrupted",
    "SigtermGuard",
    "Terminated",
    "check_stop",
    "interrupt_requested",
    "watch_interrupts",
]


class Terminated(KeyboardInterrupt):
    """SIGTERM seen at a check: training stops between two batches."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C seen at a check: training stops between two batches."""


class _Interrupts:
    """Ctrl-C, noted: ``requested`` after the first, KeyboardInterrupt on the second."""

    def __init__(self) -> None:
        self.requested = False
        self.installed = False

    def handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True


_interrupts = _Interrupts()
_guards: list[SigtermGuard] = []


def watch_interrupts() -> bool:
    """Note Ctrl-C from now on instead of raising; False outside the main thread."""
    if _interrupts.installed:
        return True
    try:
        signal.signal(signal.SIGINT, _interrupts.handle)
    except ValueError:  # not the main thread
        return False
    _interrupts.installed = True
    return True


def interrupt_requested() -> bool:
    """Whether Ctrl-C (SIGINT) arrived since :func:`watch_interrupts`."""
    return _interrupts.requested


def check_stop() -> None:
    """Raise :class:`Terminated` or :class:`Interrupted` if such a signal is pending."""
    if any(guard.armed and guard.received for guard in _guards):
        raise Terminated()
    if _interrupts.requested:
        raise Interrupted()


class SigtermGuard:
    """``with SigtermGuard() as guard:`` a SIGTERM makes :func:`check_stop` raise
    :class:`Terminated` until ``guard.disarm()``; after that it is only noted
    (``guard.received``), so the outcome of a trial that already stopped training is
    still told. The previous handler comes back on exit. Outside the main thread it
    does nothing.
    """

    def __init__(self) -> None:
        self.armed = False
        self.received = False
        self._previous: Any = None

    def _handle(self, signum: int, frame: Any) -> None:
        self.received = True

    def disarm(self) -> None:
        self.armed = False

    def __enter__(self) -> SigtermGuard:
        self.armed = True
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread
            self.armed, self._previous = False, None
        _guards.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        self.armed = False
        _guards.remove(self)
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
