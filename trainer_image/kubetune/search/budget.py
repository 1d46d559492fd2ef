"""How many trials a study has used of its ``n_trials``, counted across all workers.

Optuna's ``MaxTrialsCallback`` counts COMPLETE trials only and checks after a
trial ends, so parallel workers overshoot and a study whose trials keep failing
never ends. kubetune counts instead every trial that spent (or will spend) a
point of the budget, and checks before each new trial under the study lock:

- COMPLETE, PRUNED and FAIL trials count: a failure is a result (a NaN learning
  rate is an answer), and a search whose every trial crashes must still end;
- RUNNING and WAITING trials count: they are being or will be evaluated;
- a FAIL trial that has been *retried* does not count (its retry does): a
  worker SIGKILLed mid-trial or a Ctrl-C does not cost the user a trial.

The study's total lives in the study's user attribute ``n_trials``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import optuna
from optuna.trial import FrozenTrial, TrialState

TARGET_ATTR = "n_trials"
WORKER_ATTR = "worker"  # set on trials an ml-search worker runs (they send heartbeats)


@dataclass(frozen=True)
class Budget:
    """A snapshot of the study against its total."""

    target: int
    counted: int  # trials charged to the budget (see the module docstring)
    finished: int  # counted trials that have ended
    waiting: int  # WAITING trials (enqueued points, retries)
    running_workers: int  # RUNNING trials of ml-search workers

    @property
    def has_room(self) -> bool:
        return self.counted < self.target

    @property
    def done(self) -> bool:
        """Nothing left to start and nothing of ours still running."""
        return not self.has_room and self.waiting == 0 and self.running_workers == 0


def retried_numbers(trials: Iterable[FrozenTrial]) -> set[int]:
    """Numbers of trials that a later trial re-runs with the same params."""
    numbers: set[int] = set()
    for trial in trials:
        numbers.update(trial.system_attrs.get("retry_history", ()))
    return numbers


def counted_trials(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """The trials charged to ``n_trials`` (see the module docstring)."""
    retried = retried_numbers(trials)
    return [t for t in trials if t.number not in retried]


def stored_target(study: optuna.Study) -> int | None:
    value = study.user_attrs.get(TARGET_ATTR)
    return int(value) if isinstance(value, int | float) else None


def budget(study: optuna.Study, target: int | None = None) -> Budget:
    """Count the study's trials against ``target`` (default: the stored total)."""
    trials = study.get_trials(deepcopy=False)
    counted = counted_trials(trials)
    total = target if target is not None else (stored_target(study) or 0)
    return Budget(
        target=total,
        counted=len(counted),
        finished=sum(t.state.is_finished() for t in counted),
        waiting=sum(t.state == TrialState.WAITING for t in counted),
        running_workers=sum(
            t.state == TrialState.RUNNING and WORKER_ATTR in t.user_attrs for t in counted
        ),
    )


def enqueue_retry(study: optuna.Study, trial: FrozenTrial, params: dict, distributions: dict) -> None:
    """Queue ``trial``'s params again, as Optuna's heartbeat retry does (same system attrs)."""
    system_attrs = {"failed_trial": trial.number, "retry_history": [], **trial.system_attrs}
    system_attrs["retry_history"] = [*system_attrs["retry_history"], trial.number]
    user_attrs = {k: v for k, v in trial.user_attrs.items() if k not in (WORKER_ATTR, "fail_reason")}
    study.add_trial(
        optuna.create_trial(
            state=TrialState.WAITING,
            params=params,
            distributions=distributions,
            user_attrs=user_attrs,
            system_attrs=system_attrs,
        )
    )
