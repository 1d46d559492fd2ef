"""The epoch callback of a trial under ``search.objectives``: record, then ask the pruner.

After every epoch the trial stores its objectives' running values
(:class:`~kubetune.search.objectives.RunningValues`) in its system attribute
``kubetune.values_<epoch>``. Not as Optuna's intermediate values: ``Trial.report``
refuses a multi-objective study, and Optuna's samplers rank a pruned multi-objective
trial as one without them. Then :class:`~kubetune.search.pareto_pruner.ParetoHalvingPruner`
judges it. Constraint values are written when the trial ends, pruned or complete.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import optuna

from kubetune.config.search_schema import SearchConfig
from kubetune.search.attributes import epoch_values
from kubetune.search.objectives import (
    FIXED_METRICS,
    RunningValues,
    feasible,
    objectives_of,
    record_constraints,
)
from kubetune.search.optuna_internals import set_trial_system_attr
from kubetune.search.pareto_pruner import ParetoHalvingPruner


class ObjectivesReporter:
    """Keeps a trial's objective values per epoch and prunes it by the Pareto rule."""

    def __init__(self, trial: optuna.Trial, search: SearchConfig, epochs: int, reported: Iterable[int] = ()) -> None:
        self.trial, self.search, self.epochs = trial, search, epochs
        self.running = RunningValues(objectives_of(search), epochs)
        pruner = trial.study.pruner
        self.pruner = pruner if isinstance(pruner, ParetoHalvingPruner) else None
        self.fixed_bounds = {m: b for m, b in search.constraints.items() if m in FIXED_METRICS}
        self.reported = set(reported)
        self.where: str | None = None
        self.pending: list[dict[str, float]] = []  # a resumed run's epochs, until costs come

    def __call__(self, epoch: int, metrics: dict[str, float]) -> None:
        if self.pending:
            # A resumed run's history holds no costs; the fixed ones are the same every epoch.
            fixed = {k: v for k, v in metrics.items() if k in FIXED_METRICS}
            pending, self.pending = self.pending, []
            for entry in pending:  # judged at their rungs, as a live run is
                self._update(int(entry["epoch"]), {**entry, **fixed})
                self._prune(int(entry["epoch"]))
        self._update(epoch, metrics)
        self._prune(epoch)

    def _update(self, epoch: int, metrics: Mapping[str, float]) -> None:
        values = self.running.update(epoch, metrics)
        self.where = f"epoch {epoch}"
        if epoch not in self.reported and self.running.complete():
            study = self.trial.study
            set_trial_system_attr(study, self.trial, epoch_values(epoch), values)
            self.reported.add(epoch)

    def _prune(self, step: int) -> None:
        if self.pruner is None or not self.running.complete():
            return
        measured = self.running.measured()
        if self.pruner.judge(self.trial.study, self.trial, step, self.epochs, self.running.values(),
                             feasible=feasible(self.search.constraints, measured),
                             fixed_infeasible=not feasible(self.fixed_bounds, measured)):
            record_constraints(self.trial, self.search.constraints, measured)
            shown = ", ".join(f"{o.metric}={v:.4g}" for o, v in zip(self.running.objectives,
                                                                     self.running.values(), strict=True))
            raise optuna.TrialPruned(f"pruned at {self.where} with {shown}")

    def catch_up(self, history: list[dict[str, float]], values: Mapping[int, float]) -> None:
        """Take over a resumed run's epochs (``values``: unused, every objective is recomputed
        from ``history``) when the first epoch trained here brings the model's costs."""
        self.pending = list(history)

    def finish(self) -> list[float]:
        """The trial's final values; its constraint values are written."""
        record_constraints(self.trial, self.search.constraints, self.running.measured())
        return self.running.values()
