"""decide() for a StudyJob of several objectives: the front, the picked trial, constraints, the goal."""

from __future__ import annotations

from optuna.trial import TrialState

from kubetune.search.attributes import AHEAD_ATTR, JOB_ATTR
from kubetune_operator import status as st
from kubetune_operator.decide import decide
from tests.operator.snapshots import job, snapshot, trial

ACC_PARAMS = {"metric": None, "direction": None, "pruner": {"type": "SuccessiveHalvingPruner"},
              "objectives": [{"metric": "val_acc", "direction": "maximize"},
                             {"metric": "params", "direction": "minimize"}]}


def _search(**more: object) -> dict:
    return {**ACC_PARAMS, **more}


def _trials() -> list:
    # 0 and 1 trade accuracy for size; 2 is beaten by 0 on both; 3 still runs.
    return [trial(0, TrialState.COMPLETE, [0.90, 5000.0]), trial(1, TrialState.COMPLETE, [0.95, 9000.0]),
            trial(2, TrialState.COMPLETE, [0.85, 8000.0]), trial(3)]


def _done(plan) -> st.Condition:
    return next(c for c in plan.conditions if c.type == st.TRIALS_DONE)


def test_status_has_the_front_and_the_picked_trial_as_best():
    plan = decide(snapshot(_trials(), {3: job(3)}, n_trials=4, search=_search()))
    assert plan.status["front"] == {"size": 2, "best": {"val_acc": {"trial": 1, "value": 0.95},
                                                        "params": {"trial": 0, "value": 5000.0}}}
    # The picked trial: the front's best on the first objective; value is that objective's.
    assert plan.status["best"] == {"trial": 1, "value": 0.95, "values": {"val_acc": 0.95, "params": 9000.0},
                                   "params": {"optimizer.lr": 0.01}}
    assert "picked trial 1: val_acc=0.95 params=9000 (front of 2)" in plan.message
    assert any(e.reason == "TrialComplete" and e.message == "trial 2 complete: val_acc=0.85 params=8000"
               for e in plan.events)
    picked = decide(snapshot(_trials(), {3: job(3)}, n_trials=4, search=_search(pick="params")))
    assert picked.status["best"]["trial"] == 0 and picked.status["best"]["value"] == 0.90


def test_a_finished_study_writes_the_picked_config_and_the_front_best_first():
    trials = [t for t in _trials() if t.state == TrialState.COMPLETE]
    plan = decide(snapshot(trials, n_trials=3, modes=frozenset(), search=_search(pick="params")))
    assert plan.phase == st.SUCCEEDED and plan.best_config is trials[0]
    assert [t.number for t in plan.front] == [0, 1]  # best on params first
    with_output = decide(snapshot(trials, n_trials=3, output=True, search=_search()))
    assert with_output.phase == st.VISUALISING


def test_infeasible_trials_stay_off_the_front_and_a_study_without_a_feasible_one_fails():
    bound = _search(constraints={"latency_ms": {"max": 5}})
    trials = [trial(0, TrialState.COMPLETE, [0.90, 5000.0], constraints={"latency_ms.max": 1.0}),
              trial(1, TrialState.COMPLETE, [0.80, 9000.0], constraints={"latency_ms.max": -1.0})]
    plan = decide(snapshot(trials, n_trials=2, modes=frozenset(), search=bound))
    assert plan.status["front"]["size"] == 1 and plan.best_config is trials[1]
    infeasible = [trial(0, TrialState.COMPLETE, [0.90, 5000.0], constraints={"latency_ms.max": 1.0})]
    failed = decide(snapshot(infeasible, n_trials=1, modes=frozenset(), search=bound))
    assert failed.phase == st.FAILED and failed.best_config is None
    assert any(c.reason == "NoFeasibleTrial" for c in failed.conditions)


def test_once_a_trial_reaches_every_goal_no_trial_starts_and_the_study_ends_when_the_running_ones_finish():
    goal = _search(goal={"val_acc": 0.9, "params": 6000})
    trials = [trial(0, TrialState.COMPLETE, [0.95, 9000.0]),  # reaches one goal of two
              trial(1, TrialState.COMPLETE, [0.91, 5500.0]), trial(2)]
    plan = decide(snapshot(trials, {2: job(2)}, n_trials=10, parallelism=4, search=goal))
    assert plan.launch == 0 and plan.phase == st.RUNNING
    assert _done(plan).reason == "GoalReached" and not _done(plan).status
    assert "trial 1 reached search.goal" in _done(plan).message
    trials[2] = trial(2, TrialState.COMPLETE, [0.5, 100.0])
    ended = decide(snapshot(trials, n_trials=10, parallelism=4, modes=frozenset(), search=goal))
    assert ended.phase == st.SUCCEEDED and _done(ended).reason == "GoalReached" and _done(ended).status
    assert ended.status["progress"] == "3/10"


def test_a_goal_reached_only_by_an_infeasible_trial_does_not_stop_the_study():
    goal = _search(goal={"val_acc": 0.9}, constraints={"latency_ms": {"max": 5}})
    trials = [trial(0, TrialState.COMPLETE, [0.95, 9000.0], constraints={"latency_ms.max": 2.0})]
    plan = decide(snapshot(trials, n_trials=4, parallelism=2, search=goal))
    assert plan.launch == 2 and _done(plan).reason == "TrialsRemaining"


def test_a_goal_on_one_metric_stops_a_single_objective_study_too():
    trials = [trial(0, TrialState.COMPLETE, 0.97), trial(1, TrialState.COMPLETE, 0.5)]
    plan = decide(snapshot(trials, n_trials=10, modes=frozenset(), search={"goal": {"val_acc": 0.96}}))
    assert plan.phase == st.SUCCEEDED and _done(plan).reason == "GoalReached"


def test_a_single_objective_status_has_no_front():
    trials = [trial(0, TrialState.COMPLETE, 0.5), trial(1, TrialState.COMPLETE, 0.8)]
    plan = decide(snapshot(trials, n_trials=2, modes=frozenset()))
    assert plan.status["front"] is None and plan.front == []
    assert plan.status["best"] == {"trial": 1, "value": 0.8, "params": {"optimizer.lr": 0.01}}


def test_a_trial_asked_ahead_when_the_goal_is_reached_is_released_without_a_retry():
    ahead = trial(2, **{AHEAD_ATTR: True})
    del ahead.user_attrs[JOB_ATTR]
    trials = [trial(0, TrialState.COMPLETE, 0.97), trial(1), ahead]
    plan = decide(snapshot(trials, {1: job(1)}, n_trials=10, parallelism=1, search={"goal": {"val_acc": 0.96}}))
    assert plan.phase == st.RUNNING and not plan.launch_ahead and not plan.ask_ahead
    assert [(r.trial.number, r.requeue) for r in plan.release] == [(2, False)]
    assert "search.goal was reached" in plan.release[0].failure.message
