"""``ml-search``'s live progress line on a terminal.

One line at the bottom of the terminal, redrawn every second::

    12/30 trials · 1 running · 5 pruned · 0 failed · best val_acc=0.9611 (trial 7) · 2m10s · ETA 3m05s

Above it, one line per finished trial (``describe_trial``), whichever worker ran it.
Everything comes from the storage, read in a thread of its own with a study handle of
its own, so ``--n-jobs`` worker processes show as well as this one. Off a terminal
(a pipe, a file, CI) nothing is drawn and the workers print their trial lines
themselves.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

import optuna
from optuna.trial import FrozenTrial, TrialState

CLEAR = "\r\x1b[K"


@dataclass(frozen=True)
class Counts:
    finished: int
    target: int
    running: int
    pruned: int
    failed: int
    best: str | None  # "val_acc=0.9611 (trial 7)"


def duration(seconds: float) -> str:
    """``45s``, ``2m10s``, ``1h05m``."""
    seconds = int(max(seconds, 0))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def eta(counts: Counts, finished_at_start: int, elapsed: float) -> str:
    """Time left at this session's pace: its finished trials per second over what is left."""
    done_here = counts.finished - finished_at_start
    left = max(counts.target - counts.finished, 0)
    if left == 0:
        return "ETA 0s"
    if done_here <= 0 or elapsed <= 0:
        return "ETA –"
    return f"ETA {duration(left * elapsed / done_here)}"


def render(counts: Counts, finished_at_start: int, elapsed: float) -> str:
    parts = [f"{counts.finished}/{counts.target} trials", f"{counts.running} running",
             f"{counts.pruned} pruned", f"{counts.failed} failed"]
    if counts.best:
        parts.append(f"best {counts.best}")
    parts += [duration(elapsed), eta(counts, finished_at_start, elapsed)]
    return " · ".join(parts)


def count(trials: list[FrozenTrial], target: int, metric: str, direction: optuna.study.StudyDirection) -> Counts:
    states = [t.state for t in trials]
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.values]
    best = None
    if complete:  # under several objectives: the best on the first
        pick = max if direction == optuna.study.StudyDirection.MAXIMIZE else min
        top = pick(complete, key=lambda t: t.values[0])
        best = f"{metric}={top.values[0]:.4f} (trial {top.number})"
    finished = sum(s.is_finished() for s in states)
    return Counts(finished=finished, target=target, running=states.count(TrialState.RUNNING),
                  pruned=states.count(TrialState.PRUNED), failed=states.count(TrialState.FAIL), best=best)


class LiveProgress:
    """The live line and the finished trials' lines, drawn on ``stream`` from a thread.

    ``open_study`` is called in that thread (a storage handle of its own);
    ``describe(study, trial)`` gives a finished trial's line.
    """

    def __init__(self, open_study: Callable[[], optuna.Study], target: int, metric: str,
                 describe: Callable[[optuna.Study, FrozenTrial], str], stream: TextIO,
                 *, poll: float = 2.0, redraw: float = 1.0) -> None:
        self._open, self._target, self._metric, self._describe = open_study, target, metric, describe
        self._stream, self._poll, self._redraw = stream, poll, redraw
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ml-search-progress", daemon=True)
        self._started = time.monotonic()

    def __enter__(self) -> LiveProgress:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        study = self._open()
        seen: set[int] = set()
        first = True
        finished_at_start = 0
        counts: Counts | None = None
        last_poll = -self._poll
        while True:
            stopping = self._stop.is_set()
            now = time.monotonic()
            if stopping or now - last_poll >= self._poll:
                last_poll = now
                trials = study.get_trials(deepcopy=False)
                counts = count(trials, self._target, self._metric, study.directions[0])
                finished = [t for t in trials if t.state.is_finished() and t.number not in seen]
                if first:  # trials of earlier sessions are not news
                    seen.update(t.number for t in finished)
                    finished_at_start, first = counts.finished, False
                else:
                    for trial in sorted(finished, key=lambda t: t.number):
                        seen.add(trial.number)
                        self._stream.write(CLEAR + self._describe(study, trial) + "\n")
            assert counts is not None
            line = render(counts, finished_at_start, time.monotonic() - self._started)
            self._stream.write(CLEAR + line + ("\n" if stopping else ""))
            self._stream.flush()
            if stopping:
                return
            self._stop.wait(self._redraw)
