"""Where a trial continues from: its own ``last.pt``, or that of a trial it retries.

A trial pod that was stopped (SIGTERM) leaves its trial RUNNING and a ``last.pt``
in ``<output_dir>/<study>/trial-<number>``; the next pod for that number continues
from it. An ml-search retry (``RetryHeartbeatStaleTrialCallback``, or a Ctrl-C
requeue) is a new trial with the same params; it continues from the ``last.pt`` of
the trial it retries, into its own folder. A checkpoint counts only when it has the
trial's resolved config and was written by that very trial (``run_id``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from kubetune.config.schema import Config
from kubetune.search.attributes import RETRY_HISTORY_ATTR
from kubetune.search.results import trial_run_dir
from kubetune.training.checkpoint import resumable


@dataclass(frozen=True)
class ResumePoint:
    """A checkpoint to continue from and what its trial reported."""

    path: Path
    source: int  # the number of the trial that wrote it
    epoch: int
    history: list[dict[str, float]]
    values: dict[int, float]  # the source trial's intermediate values


def trial_run_id(study_name: str, trial: FrozenTrial) -> str:
    """What a trial's checkpoints carry as ``run_id``: study, number and start time."""
    started = trial.datetime_start.isoformat(timespec="seconds") if trial.datetime_start else "-"
    return f"{study_name}:{trial.number}@{started}"


def find_resume_point(config: Config, study: optuna.Study, study_name: str, trial: FrozenTrial,
                      trial_config: dict[str, Any]) -> ResumePoint | None:
    """The latest checkpoint of ``trial`` or of a trial it retries, for ``trial_config``."""
    retried = trial.system_attrs.get(RETRY_HISTORY_ATTR, [])
    sources = {trial.number: trial}
    if retried:
        sources.update((t.number, t) for t in study.get_trials(deepcopy=False) if t.number in retried)
    best: ResumePoint | None = None
    for number in [trial.number, *reversed(retried)]:
        source = sources.get(number)
        if source is None:
            continue
        path = trial_run_dir(config, study_name, number) / "last.pt"
        checkpoint = resumable(path, trial_config, trial_run_id(study_name, source))
        if checkpoint is not None and (best is None or checkpoint["epoch"] > best.epoch):
            best = ResumePoint(path, number, checkpoint["epoch"], checkpoint["history"],
                               dict(source.intermediate_values))
    return best
