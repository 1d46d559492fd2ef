"""What a study optimises: one metric, or several (``search.objectives``), with
constraints, a pick rule and a goal.

Torch-free: the operator validates configs with :func:`check_objectives`.

- ``search.objectives`` replaces ``search.metric``/``search.direction``; the study is
  created with one direction per objective and names them (Optuna's plots and
  optuna-dashboard read the names).
- A trial's value of a training metric (``val_acc``...) is its best so far, as for one
  objective; a cost metric (``params``, ``latency_ms``...) is its latest value, and the
  times (``train_seconds``, ``gpu_seconds``) are projected to the trial's whole length
  (time so far / epochs so far x epochs), so at every epoch the value is the trial's
  expected final cost.
- ``search.constraints: {latency_ms: {max: 5}}`` records Optuna's constraint values on
  the trial (``Trial.set_constraint``: feasible when every value is <= 0), which
  Optuna's samplers and ``study.best_trials`` read.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from kubetune.config.search_schema import (
    COST_METRICS,
    METRICS,
    TRAINING_METRICS,
    BoundConfig,
    SearchConfig,
)
from kubetune.errors import ConfigError

# Cumulative over the run: projected to the trial's length while it trains.
CUMULATIVE_METRICS = ("train_seconds", "gpu_seconds")
# Known from the first epoch and unchanged by training.
FIXED_METRICS = tuple(m for m in COST_METRICS if m not in CUMULATIVE_METRICS)
MULTI_OBJECTIVE_SAMPLERS = ("TPESampler", "NSGAIISampler", "RandomSampler", "GridSampler")
MULTI_OBJECTIVE_PRUNERS = ("SuccessiveHalvingPruner", "none")


@dataclass(frozen=True)
class Objective:
    metric: str
    direction: str

    @property
    def maximize(self) -> bool:
        return self.direction == "maximize"


def expected_direction(metric: str) -> str:
    """Accuracies are maximised; losses and costs minimised."""
    return "maximize" if metric.endswith("_acc") else "minimize"


def objectives_of(search: SearchConfig) -> list[Objective]:
    """The study's objectives in order: ``search.objectives``, else ``search.metric``."""
    if search.objectives:
        return [Objective(o.metric, o.direction) for o in search.objectives]
    return [Objective(search.metric, search.direction)]


def directions_of(search: SearchConfig) -> list[StudyDirection]:
    return [StudyDirection.MAXIMIZE if o.maximize else StudyDirection.MINIMIZE for o in objectives_of(search)]


def metric_names(search: SearchConfig) -> list[str]:
    return [o.metric for o in objectives_of(search)]


def checkpoint_metric(search: SearchConfig) -> str:
    """The training metric a trial's ``best.pt`` is chosen by: the first objective that is one."""
    return next((o.metric for o in objectives_of(search) if o.metric in TRAINING_METRICS), "val_loss")


def check_objectives(search: SearchConfig) -> None:
    """Refuse, naming the key, what several objectives, constraints, pick and goal cannot do."""
    if search.objectives is not None:
        _check_objective_list(search)
    names = metric_names(search)
    if search.constraints and search.objectives is None:
        raise ConfigError("`search.constraints` needs `search.objectives` (one or several)",
                          path="search.constraints")
    for metric in search.constraints:
        if metric not in METRICS:
            raise ConfigError(f"`search.constraints.{metric}` must name a measured metric "
                              f"({', '.join(METRICS)}), but got `{metric}`", path=f"search.constraints.{metric}")
    if search.pick is not None and search.pick not in names:
        raise ConfigError(f"`search.pick` must be one of the objectives ({', '.join(names)}), "
                          f"but got `{search.pick}`", path="search.pick")
    for metric in search.goal:
        if metric not in names:
            raise ConfigError(f"`search.goal.{metric}` must name an objective ({', '.join(names)}), "
                              f"but got `{metric}`", path=f"search.goal.{metric}")


def _check_objective_list(search: SearchConfig) -> None:
    assert search.objectives is not None
    both = sorted({"metric", "direction"} & search.model_fields_set)
    if both:
        raise ConfigError(f"`search.objectives` replaces `search.{both[0]}`: give one or the other",
                          path="search.objectives")
    if not search.objectives:
        raise ConfigError("`search.objectives` must name at least one metric, but it is empty",
                          path="search.objectives")
    seen: set[str] = set()
    for index, objective in enumerate(search.objectives):
        path = f"search.objectives[{index}]"
        if objective.metric in seen:
            raise ConfigError(f"`{path}.metric` repeats `{objective.metric}`", path=path)
        seen.add(objective.metric)
        expected = expected_direction(objective.metric)
        if objective.direction != expected:
            raise ConfigError(f"`{path}.direction` must be '{expected}' for metric {objective.metric}, "
                              f"but got '{objective.direction}'", path=f"{path}.direction")
    if len(search.objectives) > 1 and search.sampler.type not in MULTI_OBJECTIVE_SAMPLERS:
        raise ConfigError(f"`search.sampler.type` {search.sampler.type} cannot search several objectives; "
                          f"use one of {', '.join(MULTI_OBJECTIVE_SAMPLERS)}", path="search.sampler.type")
    if search.pruner.type not in MULTI_OBJECTIVE_PRUNERS:
        raise ConfigError(f"`search.pruner.type` {search.pruner.type} cannot judge `search.objectives`; "
                          f"use {' or '.join(MULTI_OBJECTIVE_PRUNERS)}", path="search.pruner.type")
    if search.cross_validation.enabled:
        raise ConfigError("`search.cross_validation` does not apply to `search.objectives`: cross-validate "
                          "one `search.metric`, or set `search.cross_validation.enabled: false`",
                          path="search.cross_validation.enabled")


def violations(bounds: Mapping[str, BoundConfig], metrics: Mapping[str, float]) -> dict[str, float]:
    """Optuna's constraint values (<= 0: satisfied) for the bounded metrics ``metrics`` holds."""
    out: dict[str, float] = {}
    for metric, bound in bounds.items():
        if metric not in metrics:
            continue
        if bound.max is not None:
            out[f"{metric}.max"] = float(metrics[metric]) - bound.max
        if bound.min is not None:
            out[f"{metric}.min"] = bound.min - float(metrics[metric])
    return out


def feasible(bounds: Mapping[str, BoundConfig], metrics: Mapping[str, float]) -> bool:
    return all(v <= 0 for v in violations(bounds, metrics).values())


def trial_feasible(trial: FrozenTrial) -> bool:
    """Optuna's test of a finished trial: every constraint value it carries is <= 0."""
    return all(v <= 0 for v in trial.constraints.values())


def goal_reached(search: SearchConfig, values: Sequence[float]) -> bool:
    """Whether a trial's final ``values`` reach every objective's goal at once."""
    if not search.goal:
        return False
    by_metric = dict(zip(metric_names(search), values, strict=True))
    return all((by_metric[m] >= g) if expected_direction(m) == "maximize" else (by_metric[m] <= g)
               for m, g in search.goal.items())


def goal_trial(study: optuna.Study, search: SearchConfig) -> FrozenTrial | None:
    """The first feasible COMPLETE trial that reached ``search.goal``; None if none has."""
    if not search.goal:
        return None
    return first_goal_trial(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), search)


def first_goal_trial(trials: Sequence[FrozenTrial], search: SearchConfig) -> FrozenTrial | None:
    """:func:`goal_trial` over trials already read (the operator's snapshot)."""
    if not search.goal:
        return None
    for trial in sorted(trials, key=lambda t: t.number):
        if trial.state == TrialState.COMPLETE and trial_feasible(trial) and goal_reached(search, trial.values):
            return trial
    return None


class RunningValues:
    """A trial's running value of every objective after each epoch."""

    def __init__(self, objectives: Sequence[Objective], epochs: int) -> None:
        self.objectives, self.epochs = list(objectives), epochs
        self.best: dict[str, float] = {}
        self.latest: dict[str, float] = {}

    def update(self, epoch: int, metrics: Mapping[str, float]) -> list[float]:
        """Take one epoch's metrics; return the objectives' running values."""
        for o in self.objectives:
            if o.metric not in metrics:  # a resumed run's history holds no costs
                continue
            value = float(metrics[o.metric])
            if o.metric in CUMULATIVE_METRICS:
                value = value / max(epoch, 1) * self.epochs
            self.latest[o.metric] = value
            if o.metric in COST_METRICS:
                self.best[o.metric] = value
            elif o.metric not in self.best or (value > self.best[o.metric] if o.maximize
                                                else value < self.best[o.metric]):
                self.best[o.metric] = value
        for metric, value in metrics.items():  # constraints may bound any measured metric
            if metric not in self.best and isinstance(value, int | float) and math.isfinite(value):
                self.latest[metric] = float(value)
        return self.values()

    def values(self) -> list[float]:
        return [self.best[o.metric] for o in self.objectives]

    def complete(self) -> bool:
        """Whether every objective has a value yet."""
        return all(o.metric in self.best for o in self.objectives)

    def measured(self) -> dict[str, float]:
        """Every metric's value for constraints: the objectives' running values win."""
        return {**self.latest, **self.best}


def record_constraints(trial: optuna.Trial, bounds: Mapping[str, BoundConfig],
                       metrics: Mapping[str, float]) -> None:
    """Write Optuna's constraint values on ``trial`` (Optuna keeps the first it gets)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a resumed trial's are already set
        for key, value in violations(bounds, metrics).items():
            trial.set_constraint(key, value)
