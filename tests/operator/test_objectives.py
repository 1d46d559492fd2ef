"""A StudyJob of several objectives through the operator: the study's directions and
names, status.front, the picked trial, the best-config ConfigMap, search.goal.

Jobs ``tell`` each objective's value from the trial's params (standing in for training:
what is under test is the operator's side; tests/cluster/test_objectives.py trains).
"""

from __future__ import annotations

import json

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from kubetune.config import validate_config
from kubetune.search.checks import check_search
from kubetune.search.pareto import front, picked_trial
from kubetune_operator import names
from tests.operator.conftest import digits_spec
from tests.polling import wait_for
from tests.visualise.test_dashboard import call

OBJECTIVES = [{"metric": "val_acc", "direction": "maximize"}, {"metric": "params", "direction": "minimize"}]


def _spec(n_trials: int, **search: object) -> dict:
    spec = digits_spec(n_trials=n_trials, parallelism=2)
    found = spec["config"]["search"]
    found.pop("metric", None), found.pop("direction", None)
    found.update(objectives=OBJECTIVES, pruner={"type": "SuccessiveHalvingPruner"}, **search)
    return spec


def _study(url: str) -> optuna.Study:
    return optuna.load_study(study_name="digits-op", storage=url)


@pytest.mark.asyncio
async def test_a_two_objective_studyjob_leaves_its_front_in_status_and_config_map(
        cluster, storage_secret, start_operator, make_kubelet):
    await start_operator()
    async with make_kubelet(lambda job: "tell"):
        await cluster.create_studyjob("mo", _spec(6, pick="params"))
        status = await cluster.wait_phase("mo", "Succeeded")
    study = _study(storage_secret)
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    assert study.metric_names == ["val_acc", "params"]
    assert len(study.trials) == 6 and all(t.state == TrialState.COMPLETE for t in study.trials)

    optimal = front(study)
    picked = picked_trial(study, "params")
    assert picked is not None and optimal
    assert status["front"]["size"] == len(optimal)
    for index, name in enumerate(["val_acc", "params"]):
        best = picked_trial(study, name)
        assert status["front"]["best"][name] == {"trial": best.number, "value": best.values[index]}
    assert status["best"]["trial"] == picked.number and status["best"]["value"] == picked.values[0]
    assert status["best"]["values"] == {"val_acc": picked.values[0], "params": picked.values[1]}
    assert "paretoPath" not in status["bestConfig"]  # no results volume: only the ConfigMap

    # What every pod mounts: a config the trial pods' own checks accept.
    mounted = cluster.get("v1/configmaps", names.config_map_name("mo"))["data"][names.CONFIG_KEY]
    check_search(validate_config(yaml.safe_load(mounted)))

    config_map = cluster.get("v1/configmaps", names.best_config_map_name("mo"))
    data = config_map["data"]
    assert sorted(data) == sorted([names.BEST_CONFIG_KEY, *(names.front_config_key(t.number) for t in optimal)])
    assert config_map["metadata"]["annotations"][names.ANNOTATION_FRONT_CONFIGS] == f"{len(optimal)}/{len(optimal)}"
    for trial in optimal:
        config = validate_config(yaml.safe_load(data[names.front_config_key(trial.number)]))
        assert config.search is None and config.optimizer.lr == pytest.approx(trial.params["optimizer.lr"])
    best = validate_config(yaml.safe_load(data[names.BEST_CONFIG_KEY]))
    assert best.optimizer.lr == pytest.approx(picked.params["optimizer.lr"])
    assert data[names.BEST_CONFIG_KEY].startswith(f"# Picked (best params on the Pareto front) trial {picked.number}")

    # optuna-dashboard names the objectives and shows the same front.
    from optuna_dashboard import wsgi

    app = wsgi(storage_secret)
    (summary,) = json.loads(call(app, "/api/studies")[1])["study_summaries"]
    detail = json.loads(call(app, f"/api/studies/{summary['study_id']}")[1])
    assert detail["objective_names"] == ["val_acc", "params"]
    assert sorted(t["number"] for t in detail["best_trials"]) == [t.number for t in optimal]


@pytest.mark.asyncio
async def test_a_trial_that_reaches_the_goal_ends_the_studyjob_once_the_running_trials_finish(
        cluster, storage_secret, start_operator, make_kubelet):
    await start_operator()
    async with make_kubelet(lambda job: "hold") as kubelet:
        # Every told val_acc is at least 0.5 and params at most 10000: the first trial reaches both.
        await cluster.create_studyjob("goal", _spec(10, goal={"val_acc": 0.5, "params": 10000}))
        await wait_for(lambda: len(cluster.jobs("goal")) == 2, 30, "two trial Jobs")
        kubelet.release("goal-trial-0")

        def goal_said() -> bool:
            done = [c for c in cluster.status("goal").get("conditions") or [] if c["type"] == "TrialsDone"]
            return bool(done) and done[0]["reason"] == "GoalReached"

        await wait_for(goal_said, 30, "TrialsDone: GoalReached")
        status = cluster.status("goal")
        assert status["phase"] == "Running" and status["trials"]["running"] == 1
        kubelet.release("goal-trial-1")
        status = await cluster.wait_phase("goal", "Succeeded")
    assert sorted(cluster.created_jobs()) == ["goal-trial-0", "goal-trial-1"]  # none after the goal
    assert status["progress"] == "2/10"
    (done,) = [c for c in status["conditions"] if c["type"] == "TrialsDone"]
    assert done["status"] == "True" and "trial 0 reached search.goal" in done["message"]
