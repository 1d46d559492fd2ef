"""The trial ledger: how a study's trials count towards ``n_trials``, for every worker.

``ml-search`` workers and the Kubernetes operator keep the same books, from the
storage alone. Optuna's ``MaxTrialsCallback`` counts COMPLETE trials only and checks
after a trial ends, so parallel workers overshoot and a study whose trials keep
failing never ends. kubetune charges instead every trial that spent (or will spend)
a point of the budget, and checks before each new trial:

- COMPLETE, PRUNED and FAIL trials count: a failure is a result (a NaN learning
  rate is an answer), and a search whose every trial crashes must still end;
- RUNNING and WAITING trials count: they are being or will be evaluated, and a
  WAITING trial (an enqueued point, a retry) is run before any new one is asked;
- a FAIL trial that has been *retried* does not count (its retry does): a worker
  SIGKILLed mid-trial, a Ctrl-C or an evicted pod does not cost the user a trial.
  A retry is a WAITING trial with the failed one's params and Optuna's own marks
  (``failed_trial``, ``retry_history`` in its system attributes);
- a FAIL trial that never ran (the operator asked it ahead and released it, reason
  ``NotStarted``) does not count either.

A study is done when nothing is left to start (no room, nothing WAITING) and
nothing of the caller's still runs. The study's total lives in its user attribute
``kubetune.n_trials``. A failed trial says why in its ``fail_reason``, whoever failed
it (:func:`fail_trial`). Torch-free: the operator imports it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from kubetune.search.attributes import (
    FAIL_REASON_ATTR,
    FAILED_TRIAL_ATTR,
    FINAL_VALUE_ATTR,
    INTERRUPTED_ATTR,
    PRUNED_ATTR,
    RETRY_HISTORY_ATTR,
    RUNG_ATTR_PREFIXES,
    TARGET_ATTR,
    WORKER_ATTR,
)
from kubetune.search.optuna_internals import set_trial_user_attr

NOT_STARTED = "NotStarted"  # the fail reason of a trial asked ahead and released before it ran


def never_ran(trial: FrozenTrial) -> bool:
    """A FAIL trial that was asked but released before anything ran it: it costs no trial."""
    return trial.state == TrialState.FAIL and str(trial.user_attrs.get(FAIL_REASON_ATTR) or "").startswith(
        f"{NOT_STARTED}: ")


def retried_numbers(trials: Iterable[FrozenTrial]) -> set[int]:
    """Numbers of trials that a later trial re-runs with the same params."""
    numbers: set[int] = set()
    for trial in trials:
        numbers.update(trial.system_attrs.get(RETRY_HISTORY_ATTR, ()))
    return numbers


def counted_trials(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    """The trials charged to ``n_trials`` (see the module docstring)."""
    retried = retried_numbers(trials)
    return [t for t in trials if t.number not in retried and not never_ran(t)]


@dataclass(frozen=True)
class Ledger:
    """A study's trials by state, as charged to its ``n_trials``."""

    complete: int = 0
    pruned: int = 0
    failed: int = 0  # every FAIL trial that ran, retried ones included
    retried: int = 0  # FAIL trials that ran and that a retry replaces
    released: int = 0  # FAIL trials released before they ran (:func:`never_ran`): no trial at all
    running: int = 0
    waiting: int = 0  # WAITING trials: enqueued points, retries
    best: FrozenTrial | None = None  # the best COMPLETE trial

    @property
    def finished(self) -> int:
        """Finished trials that count towards ``n_trials``."""
        return self.complete + self.pruned + self.failed - self.retried

    @property
    def counted(self) -> int:
        """Trials charged to ``n_trials``: finished, running and waiting."""
        return self.finished + self.running + self.waiting

    def has_room(self, target: int) -> bool:
        """A new trial may be asked for (WAITING ones go first regardless)."""
        return self.counted < target

    def done(self, target: int, still_running: int) -> bool:
        """Nothing left to start, and none of the caller's ``still_running`` trials runs."""
        return not self.has_room(target) and self.waiting == 0 and still_running == 0


def ledger(trials: Sequence[FrozenTrial], *, maximize: bool = True) -> Ledger:
    """Count ``trials`` (all of a study's) into a :class:`Ledger`."""
    retried = retried_numbers(trials)
    counts = {state: 0 for state in TrialState}
    best: FrozenTrial | None = None
    released = 0
    for trial in trials:
        if never_ran(trial):
            released += 1
            continue
        counts[trial.state] += 1
        # Under several objectives: the best on the first.
        if trial.state == TrialState.COMPLETE and trial.values and (
            best is None or (trial.values[0] > best.values[0] if maximize else trial.values[0] < best.values[0])
        ):
            best = trial
    return Ledger(
        complete=counts[TrialState.COMPLETE],
        pruned=counts[TrialState.PRUNED],
        failed=counts[TrialState.FAIL],
        retried=sum(t.state == TrialState.FAIL and t.number in retried and not never_ran(t) for t in trials),
        released=released,
        running=counts[TrialState.RUNNING],
        waiting=counts[TrialState.WAITING],
        best=best,
    )


def enqueue_retry(study: optuna.Study, trial: FrozenTrial, params: Mapping[str, Any] | None = None,
                  distributions: Mapping[str, Any] | None = None, *,
                  user_attrs: Mapping[str, Any] | None = None) -> None:
    """Queue ``trial``'s params again, with the marks Optuna's heartbeat retry sets.

    ``user_attrs`` default to the failed trial's, less its worker, its fail reason and
    where it was interrupted.
    """
    # Successive halving's per-rung values (and their tie-breaking losses) stay with the
    # failed trial: copied, they would count twice; the retry records its own as it
    # reports (or catches up) those epochs.
    kept = {k: v for k, v in trial.system_attrs.items()
            if not k.startswith(RUNG_ATTR_PREFIXES)}
    system_attrs = {**kept, FAILED_TRIAL_ATTR: trial.number,
                    RETRY_HISTORY_ATTR: [*trial.system_attrs.get(RETRY_HISTORY_ATTR, ()), trial.number]}
    if user_attrs is None:
        user_attrs = {k: v for k, v in trial.user_attrs.items()
                      if k not in (WORKER_ATTR, FAIL_REASON_ATTR, INTERRUPTED_ATTR, FINAL_VALUE_ATTR, PRUNED_ATTR)}
    study.add_trial(optuna.create_trial(
        state=TrialState.WAITING,
        params=dict(params if params is not None else trial.params),
        distributions=dict(distributions if distributions is not None else trial.distributions),
        user_attrs=dict(user_attrs),
        system_attrs=system_attrs,
    ))


def record_fail_reason(study: optuna.Study, trial: optuna.Trial | FrozenTrial, reason: str) -> bool:
    """Write why ``trial`` failed (its ``fail_reason``); False if it finished meanwhile."""
    try:
        set_trial_user_attr(study, trial, FAIL_REASON_ATTR, reason)
    except UpdateFinishedTrialError:
        return False
    return True


def fail_trial(study: optuna.Study, trial: optuna.Trial | FrozenTrial, reason: str) -> bool:
    """Fail a RUNNING trial with ``reason``; False if it finished meanwhile."""
    if not record_fail_reason(study, trial, reason):
        return False
    study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
    return True


# ml-search's view: the ledger of a whole study against its stored total ------------

@dataclass(frozen=True)
class Budget:
    """The study's :class:`Ledger` against its total, for ``ml-search`` workers."""

    target: int
    books: Ledger
    # Every RUNNING trial: a worker that died before writing its attributes leaves one
    # that the heartbeat check fails (and retries) only if someone stays to look.
    running_workers: int
    repeated_failure: str | None = None  # see :func:`repeated_failure`

    @property
    def counted(self) -> int:
        return self.books.counted

    @property
    def finished(self) -> int:
        return self.books.finished

    @property
    def waiting(self) -> int:
        return self.books.waiting

    @property
    def has_room(self) -> bool:
        return self.books.has_room(self.target)

    @property
    def done(self) -> bool:
        """Nothing left to start and nothing of ours still running."""
        return self.books.done(self.target, self.running_workers)


def stored_target(study: optuna.Study) -> int | None:
    value = study.user_attrs.get(TARGET_ATTR)
    return int(value) if isinstance(value, int | float) else None


def budget(study: optuna.Study, target: int | None = None) -> Budget:
    """Count the study's trials against ``target`` (default: the stored total)."""
    trials = study.get_trials(deepcopy=False)
    return Budget(
        target=target if target is not None else (stored_target(study) or 0),
        books=ledger(trials),
        running_workers=sum(t.state == TrialState.RUNNING for t in trials),
        repeated_failure=repeated_failure(trials),
    )


# An OSError's fail_reason: "OSError: [Errno 28] No space left on device: '/runs/...'".
_OS_ERROR = re.compile(r"^(\w+): \[Errno (\d+)\] ([^:']*)")
REPEATS_TO_STOP = 3  # trials in a row failing with the same OSError stop the search


def repeated_failure(trials: Sequence[FrozenTrial], times: int = REPEATS_TO_STOP) -> str | None:
    """The OSError (``"OSError: [Errno 28] No space left on device"``) that the last
    ``times`` finished trials all failed with, or None.

    A full disk, a read-only folder or a missing permission fails every trial the same
    way; going on only spends the budget. Other failures (a NaN loss, a crash of the
    trainer) belong to their params and never stop the search.
    """
    retried = retried_numbers(trials)
    finished = sorted((t for t in trials if t.state.is_finished() and t.number not in retried),
                      key=lambda t: (t.datetime_complete is None, t.datetime_complete, t.number))
    last = finished[-times:]
    if len(last) < times or any(t.state != TrialState.FAIL for t in last):
        return None
    kinds = {_os_error(str(t.user_attrs.get(FAIL_REASON_ATTR, ""))) for t in last}
    if len(kinds) != 1:
        return None
    return kinds.pop()


def _os_error(reason: str) -> str | None:
    match = _OS_ERROR.match(reason)
    return f"{match[1]}: [Errno {match[2]}] {match[3].strip()}" if match else None
