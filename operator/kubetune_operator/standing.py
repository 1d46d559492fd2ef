"""Where a StudyJob's study stands: its best trial, its Pareto front, its goal.

Pure, from the snapshot's trials. One metric (``search.metric``): the best COMPLETE
trial, as the ledger finds it. ``search.objectives``: the Pareto front (Optuna's
``study.best_trials``: feasible trials only once any trial has constraint values) and
the *picked* trial, the front's best on ``search.pick`` (default: the first
objective), the trial ``status.best`` and the best-config ConfigMap follow, as
``best_config.yaml`` does for ``ml-search``. ``search.goal``: the first feasible
COMPLETE trial that reached every goal; no trial starts after it (running ones finish).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from optuna.study import StudyDirection
from optuna.trial import FrozenTrial

from kubetune.config.search_schema import SearchConfig
from kubetune.search.ledger import Ledger
from kubetune.search.objectives import directions_of, first_goal_trial, metric_names
from kubetune.search.pareto import format_values, front_of, pick_from, ranked


@dataclass(frozen=True)
class Standing:
    names: list[str]  # the objectives' metrics, in order
    directions: list[StudyDirection]
    several: bool  # search.objectives: a front and a picked trial
    best: FrozenTrial | None  # the best COMPLETE trial, or the picked one
    front: list[FrozenTrial] = field(default_factory=list)  # by trial number
    goal: FrozenTrial | None = None  # the trial that reached search.goal
    pick: str | None = None  # search.pick

    def values_text(self, trial: FrozenTrial) -> str:
        """``val_acc=0.9611`` or ``val_acc=0.9611 params=1.2e+04``."""
        return format_values(self.names, trial.values)

    def ranked_front(self) -> list[FrozenTrial]:
        """The front, best on ``search.pick`` first."""
        return ranked(self.front, self.names, self.directions, self.pick)


def standing(search: SearchConfig, trials: Sequence[FrozenTrial], books: Ledger) -> Standing:
    """The study's standing from all its ``trials`` (counted into ``books``)."""
    names, directions = metric_names(search), directions_of(search)
    goal = first_goal_trial(trials, search)
    if search.objectives is None:
        return Standing(names, directions, False, books.best, goal=goal)
    found = front_of(trials, directions)
    return Standing(names, directions, True, pick_from(found, names, directions, search.pick), found, goal,
                    search.pick)


def best_block(s: Standing) -> dict[str, Any] | None:
    """``status.best``: the trial, its value (the first objective's) and params; under
    ``search.objectives`` also every objective's value."""
    trial = s.best
    if trial is None:
        return None
    block: dict[str, Any] = {"trial": trial.number, "value": float(trial.values[0])}
    if s.several:
        block["values"] = {name: float(v) for name, v in zip(s.names, trial.values, strict=True)}
    block["params"] = dict(trial.params)
    return block


def front_block(s: Standing) -> dict[str, Any] | None:
    """``status.front``: the front's size and, per objective, its best trial there."""
    if not s.several:
        return None
    best: dict[str, Any] = {}
    for name in s.names:
        trial = pick_from(s.front, s.names, s.directions, name)
        if trial is not None:
            best[name] = {"trial": trial.number, "value": float(trial.values[s.names.index(name)])}
    return {"size": len(s.front), "best": best}
