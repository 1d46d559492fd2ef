"""The non-dominated halving rule, constraints and goals on synthetic values."""

from __future__ import annotations

import optuna
import pytest
from optuna.study import StudyDirection

from kubetune.config.search_schema import BoundConfig, SearchConfig
from kubetune.search.objectives import (
    Objective,
    RunningValues,
    goal_reached,
    record_constraints,
    violations,
)
from kubetune.search.pareto_pruner import ParetoHalvingPruner, dominates, out_of_reach, survives

MAX_MIN = [StudyDirection.MAXIMIZE, StudyDirection.MINIMIZE]


def test_dominates_respects_directions():
    assert dominates([0.9, 1.0], [0.8, 2.0], MAX_MIN)
    assert dominates([0.9, 1.0], [0.9, 2.0], MAX_MIN)  # equal on one, better on the other
    assert not dominates([0.9, 1.0], [0.9, 1.0], MAX_MIN)  # equal is no domination
    assert not dominates([0.9, 3.0], [0.8, 2.0], MAX_MIN)  # a trade-off


def test_front_trials_always_survive_and_the_dominated_share_is_pruned():
    others = [[0.9, 1.0], [0.8, 0.5], [0.95, 4.0], [0.7, 0.4], [0.6, 3.0]]
    # On the front (a trade-off with every other): continues whatever the rung's size.
    assert survives([0.99, 5.0], others, MAX_MIN, reduction_factor=3)
    # 6 trials at the rung, a third of them (2) may dominate it: dominated by 1, continues.
    assert survives([0.85, 1.5], others, MAX_MIN, reduction_factor=3)
    # Dominated by 3 of them: pruned.
    assert not survives([0.5, 4.5], others, MAX_MIN, reduction_factor=3)


def test_one_objective_is_successive_halving():
    others = [[0.9], [0.8], [0.7], [0.6], [0.5]]
    maximize = [StudyDirection.MAXIMIZE]
    assert survives([0.85], others, maximize, reduction_factor=3)  # 1 ahead of 2 places
    assert not survives([0.75], others, maximize, reduction_factor=3)  # 2 ahead


def test_rungs_follow_the_trial_length():
    pruner = ParetoHalvingPruner(reduction_factor=3)
    assert [s for s in range(1, 21) if pruner.rung_at(s, 20) is not None] == [2, 6, 18]
    assert [s for s in range(1, 11) if ParetoHalvingPruner(min_resource=1).rung_at(s, 10) is not None] == [1, 3, 9]


def _study_with_rung(values: list[list[float]], pruner: ParetoHalvingPruner) -> optuna.Study:
    study = optuna.create_study(directions=["maximize", "minimize"], pruner=pruner)
    for v in values:
        trial = study.ask()
        assert not pruner.judge(study, trial, 2, 20, v)
    return study


def test_judge_records_the_rung_and_never_prunes_at_the_last_step():
    pruner = ParetoHalvingPruner(reduction_factor=2)
    study = _study_with_rung([[0.9, 1.0], [0.95, 0.5]], pruner)
    trial = study.ask()
    assert pruner.judge(study, trial, 2, 20, [0.1, 9.0])  # dominated by both of 3: pruned
    assert not pruner.judge(study, trial, 3, 20, [0.1, 9.0])  # step 3 is no rung
    assert not pruner.judge(study, study.ask(), 2, 2, [0.1, 9.0])  # its last step
    assert study.trials[2].system_attrs["kubetune.pareto_rung_0"] == {"values": [0.1, 9.0], "feasible": True,
                                                                 "steps": 20}


def test_out_of_reach_adds_the_largest_gain_a_completed_trial_made_after_the_rung():
    # Completed trials: (values at the rung, final values). The most gained: 0.3 of accuracy; costs fixed.
    completed = [([0.6, 1.0], [0.9, 1.0]), ([0.5, 2.0], [0.7, 2.0])]
    assert out_of_reach([0.55, 1.5], completed, MAX_MIN)  # 0.85 at a cost of 1.5: 0.9 at 1.0 dominates it
    assert not out_of_reach([0.65, 1.5], completed, MAX_MIN)  # could still reach 0.95: beyond the front
    assert not out_of_reach([0.2, 0.5], completed, MAX_MIN)  # cheaper than every completed trial
    assert not out_of_reach([0.1, 9.0], [], MAX_MIN)  # nothing completed: nothing to measure the gain on
    # A cost that fell after the rung in a completed trial counts as a gain too.
    assert not out_of_reach([0.55, 1.5], [([0.6, 3.0], [0.9, 1.0])], MAX_MIN)


def _completed(study: optuna.Study, pruner: ParetoHalvingPruner, at_rung: list[float], final: list[float],
               latency_ms: float = 1.0) -> None:
    trial = study.ask()
    assert not pruner.judge(study, trial, 2, 20, at_rung)
    record_constraints(trial, {"latency_ms": BoundConfig(max=5)}, {"latency_ms": latency_ms})
    study.tell(trial, final)


@pytest.mark.parametrize("latency_ms, pruned", [(1.0, True), (9.0, False)])
def test_judge_stops_a_surviving_trial_that_cannot_catch_up_with_a_completed_one(latency_ms, pruned):
    pruner = ParetoHalvingPruner(reduction_factor=2)
    # Two running trials, cheaper and worse than what follows: they dominate no one.
    study = _study_with_rung([[0.3, 0.2], [0.35, 0.3]], pruner)
    _completed(study, pruner, [0.5, 1.0], [0.6, 1.0], latency_ms)  # gained 0.1 after its rung
    # Dominated by 1 of the 4 trials at the rung, which half of 4 allows: the rung alone lets it go
    # on. But 0.4 + 0.1 stays below the completed 0.6, at a higher cost: out of reach, unless that
    # trial broke a constraint (a latency of 9 ms against 5), as infeasible trials measure no one.
    assert pruner.judge(study, study.ask(), 2, 20, [0.4, 2.0]) is pruned
    assert not pruner.judge(study, study.ask(), 2, 20, [0.45, 0.5])  # cheaper: may join the front
    # A longer trial (24 epochs, its rung also at epoch 2) has more epochs left than the completed
    # one had to gain in: that one's gain says nothing of it.
    assert not pruner.judge(study, study.ask(), 2, 24, [0.4, 2.0])


def test_a_broken_fixed_cost_is_pruned_at_the_first_rung_and_dominates_no_one():
    pruner = ParetoHalvingPruner(reduction_factor=2)
    study = optuna.create_study(directions=["maximize", "minimize"], pruner=pruner)
    assert pruner.judge(study, study.ask(), 2, 20, [0.99, 0.1], feasible=False, fixed_infeasible=True)
    # The infeasible trial's better values do not count against a feasible one.
    assert not pruner.judge(study, study.ask(), 2, 20, [0.5, 5.0])


def test_running_values_keep_the_best_metric_the_latest_cost_and_project_times():
    running = RunningValues([Objective("val_acc", "maximize"), Objective("params", "minimize"),
                             Objective("train_seconds", "minimize")], epochs=10)
    assert running.update(1, {"val_acc": 0.8, "params": 100.0, "train_seconds": 2.0}) == [0.8, 100.0, 20.0]
    assert running.update(2, {"val_acc": 0.7, "params": 100.0, "train_seconds": 5.0}) == [0.8, 100.0, 25.0]


def test_constraint_values_follow_optunas_sign():
    bounds = {"latency_ms": BoundConfig(max=5), "val_acc": BoundConfig(min=0.9)}
    assert violations(bounds, {"latency_ms": 4.0, "val_acc": 0.95}) == pytest.approx(
        {"latency_ms.max": -1.0, "val_acc.min": -0.05})
    assert violations(bounds, {"latency_ms": 6.0})["latency_ms.max"] == pytest.approx(1.0)


def test_goal_needs_every_objective_at_once():
    search = SearchConfig(study_name="g", objectives=[{"metric": "val_acc", "direction": "maximize"},
                                                      {"metric": "params", "direction": "minimize"}],
                          goal={"val_acc": 0.9, "params": 1000})
    assert goal_reached(search, [0.95, 900])
    assert not goal_reached(search, [0.95, 1100])
    assert not goal_reached(search, [0.85, 900])


def test_a_resumed_trial_records_its_earlier_epochs_once_the_costs_come():
    from kubetune.search.objectives_reporter import ObjectivesReporter

    search = SearchConfig(study_name="r", objectives=[{"metric": "val_acc", "direction": "maximize"},
                                                      {"metric": "params", "direction": "minimize"}])
    study = optuna.create_study(directions=["maximize", "minimize"], pruner=ParetoHalvingPruner())
    trial = study.ask()
    reporter = ObjectivesReporter(trial, search, epochs=4)
    reporter.catch_up([{"epoch": 1, "val_acc": 0.5}, {"epoch": 2, "val_acc": 0.7}], {})
    reporter(3, {"val_acc": 0.6, "params": 100.0, "train_seconds": 3.0})
    attrs = study.trials[0].system_attrs
    assert [attrs[f"kubetune.values_{e}"] for e in (1, 2, 3)] == [[0.5, 100.0], [0.7, 100.0], [0.7, 100.0]]
    assert attrs["kubetune.pareto_rung_0"]["values"] == [0.5, 100.0]  # the first rung (epoch 1) was judged
    assert reporter.finish() == [0.7, 100.0]
