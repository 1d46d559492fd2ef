"""Find a study by name in a storage, and summarise it for the report."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from kubetune.errors import UsageError
from kubetune.search.results import usage_line
from kubetune.search.storage import make_storage, mask_url
from kubetune.search.usage import Usage, record_of, study_records, totals

STATE_ORDER = ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")
_STATE_WORDS = {"FAIL": "failed"}  # "2 failed", not "2 fail"; the other names read as they are


def metric_name(study: optuna.Study, default: str = "value") -> str:
    """The objective's name: Optuna's metric name, else ``default``."""
    names = study.metric_names
    return names[0] if names and names[0] else default


def state_counts(trials: list[FrozenTrial]) -> dict[str, int]:
    """``{state: count}`` in STATE_ORDER, states without trials left out."""
    counts = Counter(t.state.name for t in trials)
    return {s: counts[s] for s in STATE_ORDER if counts.get(s)}


def counts_text(counts: dict[str, int]) -> str:
    """``3 complete, 2 pruned, 1 failed``, or ``no trials at all``."""
    return ", ".join(f"{n} {_STATE_WORDS.get(s, s.lower())}" for s, n in counts.items()) or "no trials at all"


def open_study(url: str, study_name: str) -> optuna.Study:
    """Load ``study_name`` from the storage at ``url``, without creating anything.

    A missing SQLite file is a :class:`UsageError` (reading must not create an empty
    database); so is a study the storage does not hold, with the names it does hold.
    """
    storage = make_storage(url, heartbeat=False, must_exist=True)
    names = optuna.study.get_all_study_names(storage)
    if study_name not in names:
        held = ", ".join(f"`{n}`" for n in sorted(names)) if names else "none"
        raise UsageError(
            f"`--study-name` must name a study in {mask_url(url)}, but got `{study_name}`; "
            f"studies there: {held}"
        )
    return optuna.load_study(study_name=study_name, storage=storage)


@dataclass
class StudySummary:
    """What the report says about a study besides its plots."""

    name: str
    direction: str
    metric: str
    counts: dict[str, int]
    best_trial: FrozenTrial | None  # None until a trial completes
    top_trials: list[FrozenTrial]
    param_names: list[str]
    # Several objectives: their names, and the Pareto-optimal trials (no best trial, no top).
    objectives: list[str] = field(default_factory=list)
    front: list[FrozenTrial] | None = None
    usage_line: str | None = None  # kubetune.search.results.usage_line
    usage: dict[int, Usage] = field(default_factory=dict)  # trial number -> what it held

    @property
    def n_trials(self) -> int:
        return sum(self.counts.values())


def summarise(study: optuna.Study, top: int = 10, default_metric: str = "value") -> StudySummary:
    """Counts by state, the best trial and the ``top`` completed trials, best first.

    A study without a completed trial (all pruned, failed or still running) has no
    best trial; the report says so and draws what it can. A study of several objectives
    has its Pareto front instead of a best trial and a top.
    """
    trials = study.get_trials(deepcopy=False)
    param_names = sorted({name for t in trials for name in t.params})
    records = study_records(study.user_attrs)
    line, usage = usage_line(study), {t.number: totals(record_of(t, records)) for t in trials}
    if len(study.directions) > 1:
        from kubetune.search import pareto

        names = pareto.objective_names(study)
        return StudySummary(
            name=study.study_name, direction=", ".join(d.name.lower() for d in study.directions),
            metric=", ".join(names), counts=state_counts(trials), best_trial=None, top_trials=[],
            param_names=param_names, objectives=names,
            front=pareto.front(study), usage_line=line, usage=usage)
    complete = [
        t for t in trials if t.state == TrialState.COMPLETE and t.value is not None and math.isfinite(t.value)
    ]
    maximise = study.direction == StudyDirection.MAXIMIZE
    ranked = sorted(complete, key=lambda t: t.value, reverse=maximise)  # type: ignore[arg-type, return-value]
    return StudySummary(
        name=study.study_name,
        direction="maximize" if maximise else "minimize",
        metric=metric_name(study, default_metric),
        counts=state_counts(trials),
        best_trial=ranked[0] if ranked else None,
        top_trials=ranked[:top],
        param_names=param_names,
        objectives=[metric_name(study, default_metric)],
        usage_line=line,
        usage=usage,
    )


def trial_row(trial: FrozenTrial) -> dict[str, Any]:
    """One row of the trials table: number, value, state, duration, params."""
    duration = trial.duration.total_seconds() if trial.duration is not None else None
    return {
        "number": trial.number,
        "value": trial.value,
        "state": trial.state.name,
        "duration_s": duration,
        "params": dict(trial.params),
    }
