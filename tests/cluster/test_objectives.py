"""A two-objective digits StudyJob (val_acc, params) on the real control plane.

Trial pods run ``ml-train --trial``: each reports both objectives every epoch for the
Pareto pruner, records its constraint values and tells both; the operator leaves the
front in ``status.front``, the picked trial in ``status.best`` and the front's configs
in the best-config ConfigMap; the visualisation Job writes ``pareto/`` on the claim.
"""

from __future__ import annotations

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from kubetune.config import validate_config
from kubetune.search.attributes import epoch_values
from kubetune.search.pareto import front, picked_trial
from kubetune_operator import names
from tests.operator.conftest import digits_spec

NAME = "mo"
STUDY = "digits-mo"
CONFIGMAP = ("v1", "ConfigMap")


@pytest.mark.slow
def test_a_two_objective_studyjob_succeeds_with_its_front(kube, operator, kubelet, digits_claims, storage,
                                                          chromium):
    spec = digits_spec(n_trials=3, parallelism=2, study=STUDY, output=True)
    search = spec["config"]["search"]
    search.pop("metric"), search.pop("direction")
    search.update(objectives=[{"metric": "val_acc", "direction": "maximize"},
                              {"metric": "params", "direction": "minimize"}],
                  pruner={"type": "SuccessiveHalvingPruner"}, constraints={"params": {"max": 10_000_000}})
    kube.create_studyjob(NAME, spec)
    final = kube.wait_succeeded(NAME, kubelet)

    study = optuna.load_study(study_name=STUDY, storage=storage)
    assert study.metric_names == ["val_acc", "params"]
    assert len(study.trials) == 3 and all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials)
    for trial in study.trials:  # what the Pareto pruner compares across pods, and Optuna's constraints
        assert epoch_values(1) in trial.system_attrs, trial.number
        assert set(trial.constraints) == {"params.max"} and trial.constraints["params.max"] < 0
    optimal, picked = front(study), picked_trial(study)
    assert optimal and picked is not None
    assert final["front"]["size"] == len(optimal)
    assert final["front"]["best"]["val_acc"]["trial"] == picked.number
    assert final["best"]["trial"] == picked.number and final["best"]["values"]["params"] == picked.values[1]

    # The ConfigMap: the picked config and one key per front trial, each a config ml-train accepts.
    data = kube.get(CONFIGMAP, names.best_config_map_name(NAME))["data"]
    assert set(data) == {names.BEST_CONFIG_KEY} | {names.front_config_key(t.number) for t in optimal}
    for key, text in data.items():
        assert validate_config(yaml.safe_load(text)).search is None, key
    # The results claim: pareto/ as ml-search writes it, and the same picked config.
    pareto = digits_claims["results"] / NAME / "pareto"
    assert sorted(p.name for p in pareto.glob("*.yaml")) == sorted(f"trial-{t.number}.yaml" for t in optimal)
    assert (digits_claims["results"] / NAME / "best_config.yaml").read_text() == data[names.BEST_CONFIG_KEY]
    assert final["bestConfig"]["paretoPath"] == f"/results/{NAME}/pareto"

    # kubectl get sj -o wide: Best is the picked trial's first objective, Front the front's size.
    table = kube.kubectl("get", "sj", NAME, "-n", kube.namespace, "-o", "wide").stdout.splitlines()
    row = dict(zip(table[0].split(), table[1].split(), strict=False))
    assert row["FRONT"] == str(len(optimal)) and float(row["BEST"]) == pytest.approx(picked.values[0], abs=1e-3)
