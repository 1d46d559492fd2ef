"""Pruning for ``search.objectives``: successive halving by non-dominated sorting.

Optuna cannot prune a multi-objective trial (``Trial.report`` and ``should_prune``
raise), so kubetune's objective keeps every epoch's values of every objective in the
trial's own system attributes and asks :class:`ParetoHalvingPruner` directly.

The rule. Rungs come where successive halving's do (the first at half the square root
of the trial's epochs, or ``search.pruner.min_resource``; then every
``reduction_factor`` times further). At a rung the trial records its objectives'
running values there; it continues while fewer than ``places`` of the other trials
that reached the rung *dominate* it (at least as good on every objective, better on
one), where ``places`` is the rung's share, ``max(1, (n + 1) // reduction_factor)`` of
its ``n + 1`` trials. So every trial on the rung's Pareto front continues, and a trial
behind many others on every objective stops: with one objective this is successive
halving itself.

A trial that survives its rung still stops there when it is out of reach: if it gained
from the rung to its end, on every objective, the most that any completed trial (at
least as long) gained from that rung to its end, a completed feasible trial would
still dominate it. Such a trial could join the front only by learning faster than
every trial that finished.

Cost objectives (size, FLOPs, latency) are fixed from the first epoch,
so they weigh from the first rung; times are projected to the trial's length. A
trial that breaks a constraint on a fixed cost (``latency_ms: {max: 5}``) can never
become feasible and is pruned at its first rung; infeasible trials dominate no one.
As kubetune's other pruners, it never prunes at the trial's last step.

Stricter rules (the best third by non-dominated rank and crowding, or the rung's front
alone) stop good trials whose learning curves rise late; bench/multi_objective.py
compares them (``--rule``), docs/concepts/multi-objective.md says why this one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from kubetune.search.attributes import pareto_rung
from kubetune.search.objectives import trial_feasible
from kubetune.search.optuna_internals import set_trial_system_attr
from kubetune.search.pruners import first_rung


def dominates(a: Sequence[float], b: Sequence[float], directions: Sequence[StudyDirection]) -> bool:
    """Whether values ``a`` dominate ``b``: no worse on every objective, better on one."""
    better = False
    for x, y, direction in zip(a, b, directions, strict=True):
        if direction == StudyDirection.MAXIMIZE:
            x, y = -x, -y
        if x > y:
            return False
        better = better or x < y
    return better


def places(trials_at_rung: int, reduction_factor: int) -> int:
    """How many dominating trials a trial may have at a rung of ``trials_at_rung`` trials."""
    return max(1, trials_at_rung // reduction_factor)


def survives(values: Sequence[float], others: Sequence[Sequence[float]], directions: Sequence[StudyDirection],
             reduction_factor: int) -> bool:
    """Whether a trial with ``values`` continues among ``others`` recorded at the same rung."""
    ahead = sum(dominates(other, values, directions) for other in others)
    return ahead < places(len(others) + 1, reduction_factor)


def out_of_reach(values: Sequence[float], completed: Sequence[tuple[Sequence[float], Sequence[float]]],
                 directions: Sequence[StudyDirection]) -> bool:
    """Whether a trial with ``values`` at a rung stays dominated by a ``completed`` trial's
    final values even if it gains, on every objective, the most that any of them gained
    from that rung to its end. ``completed``: (values at the rung, final values) pairs."""
    if not completed:
        return False
    signs = [1.0 if d == StudyDirection.MAXIMIZE else -1.0 for d in directions]
    reach = [value + sign * max(0.0, *(sign * (final[k] - at[k]) for at, final in completed))
             for k, (value, sign) in enumerate(zip(values, signs, strict=True))]
    return any(dominates(final, reach, directions) for _, final in completed)


class ParetoHalvingPruner(optuna.pruners.BasePruner):
    """Non-dominated successive halving (the module's rule); kubetune's objective asks
    :meth:`judge` each epoch. Optuna never asks it: :meth:`prune` says False."""

    def __init__(self, *, reduction_factor: int = 3, min_resource: int | None = None,
                 min_early_stopping_rate: int = 0) -> None:
        self.reduction_factor, self.min_resource = reduction_factor, min_resource
        self.min_early_stopping_rate = min_early_stopping_rate

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        return False

    def rung_at(self, step: int, steps: int) -> int | None:
        """The rung judged at ``step`` of a ``steps``-step trial; None between rungs."""
        rung_step = (self.min_resource or first_rung(steps)) * self.reduction_factor ** self.min_early_stopping_rate
        rung = 0
        while rung_step < step:
            rung, rung_step = rung + 1, rung_step * self.reduction_factor
        return rung if rung_step == step else None

    def judge(self, study: optuna.Study, trial: Any, step: int, steps: int, values: Sequence[float], *,
              feasible: bool = True, fixed_infeasible: bool = False) -> bool:
        """Record ``trial``'s ``values`` at its rung (if ``step`` is one); True to prune it.

        ``fixed_infeasible``: a constraint on a cost that training does not change is
        broken, so the trial is pruned at its first rung.
        """
        rung = self.rung_at(step, steps)
        if rung is None or step >= steps:
            return False
        key = pareto_rung(rung)
        set_trial_system_attr(study, trial, key, {"values": list(values), "feasible": feasible, "steps": steps})
        if fixed_infeasible:
            return True
        at_rung = [t for t in study.get_trials(deepcopy=False)
                   if t.number != trial.number and key in t.system_attrs and t.system_attrs[key].get("feasible", True)]
        if not self.continues(values, [t.system_attrs[key]["values"] for t in at_rung], study.directions):
            return True
        # A shorter trial gained over fewer epochs than this one has left: it measures no gain.
        completed = [(t.system_attrs[key]["values"], t.values) for t in at_rung
                     if t.state == TrialState.COMPLETE and trial_feasible(t)
                     and t.system_attrs[key].get("steps", steps) >= steps]
        return self.out_of_reach(values, completed, study.directions)

    def continues(self, values: Sequence[float], others: Sequence[Sequence[float]],
                  directions: Sequence[StudyDirection]) -> bool:
        """The rung's rule: :func:`survives` (bench/multi_objective.py compares others by overriding it)."""
        return survives(values, others, directions, self.reduction_factor)

    def out_of_reach(self, values: Sequence[float], completed: Sequence[tuple[Sequence[float], Sequence[float]]],
                     directions: Sequence[StudyDirection]) -> bool:
        """The out-of-reach check: :func:`out_of_reach` (the bench turns it off by overriding it)."""
        return out_of_reach(values, completed, directions)

