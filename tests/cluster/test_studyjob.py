"""A digits StudyJob on the real control plane, the operator installed as the chart installs it.

Trial pods run ``ml-train --trial`` as uid 10001 in a restricted namespace, on nodes
the real scheduler picked; the real Job controller ends their Jobs; the garbage
collector removes the children when the StudyJob goes.
"""

from __future__ import annotations

import time

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from kubetune.config import validate_config
from kubetune_operator import names
from tests.cluster.cluster import JOB, STUDYJOB, wait_until
from tests.operator.conftest import digits_spec

NAME = "digits"
CONFIGMAP = ("v1", "ConfigMap")


@pytest.mark.slow
def test_digits_studyjob_succeeds_on_a_real_cluster(kube, operator, kubelet, digits_claims, storage, chromium):
    postgres_url = storage
    spec = digits_spec(n_trials=4, parallelism=2, study="digits-real", output=True)
    started = time.monotonic()
    created = kube.create_studyjob(NAME, spec)
    try:
        final = kube.wait_phase(NAME, "Succeeded", 600)
    finally:
        for pod in kube.pods():
            print(pod["metadata"]["name"], pod["spec"].get("nodeName"), pod["status"].get("phase"))
            print(kubelet.logs(kube.namespace, pod["metadata"]["name"])[-2000:])
    elapsed = time.monotonic() - started
    print(f"digits StudyJob end to end on the real control plane: {elapsed:.1f} s")

    study = optuna.load_study(study_name="digits-real", storage=postgres_url)
    assert len(study.trials) == 4
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials)
    assert final["trials"]["finished"] == 4
    assert final["best"]["trial"] == study.best_trial.number
    assert study.metric_names == ["val_acc"]  # optuna-dashboard and Optuna's plots name it

    # Children: owned by the StudyJob (by uid), run by the real Job controller.
    uid = created["metadata"]["uid"]
    jobs = kube.list(JOB, f"{names.LABEL_STUDYJOB}={NAME}")
    assert {j["metadata"]["name"] for j in jobs} == {f"{NAME}-trial-{n}" for n in range(4)} | {f"{NAME}-visualise"}
    for job in jobs:
        assert [r["uid"] for r in job["metadata"]["ownerReferences"]] == [uid]
        assert any(c["type"] == "Complete" for c in job["status"]["conditions"])

    # Results on the claim: TensorBoard runs, best_config.yaml, plots; the best-config ConfigMap.
    results = digits_claims["results"]
    assert (results / "digits-real" / "trial-0").is_dir()
    best_config = yaml.safe_load((results / NAME / "best_config.yaml").read_text())
    validate_config(best_config)
    assert list((results / NAME / "plots").glob("*.html"))
    config_map = kube.get(CONFIGMAP, f"{NAME}-best-config")
    assert config_map is not None
    assert yaml.safe_load(config_map["data"]["best_config.yaml"]) == best_config

    # kubectl get sj prints the printer columns.
    table = kube.kubectl("get", "sj", "-n", kube.namespace).stdout
    header = table.splitlines()[0].split()
    assert header[:2] == ["NAME", "PHASE"] and "Succeeded" in table

    # Deleting the StudyJob lets the garbage collector remove every child; the study stays.
    kube.delete(STUDYJOB, NAME)
    wait_until(lambda: kube.get(STUDYJOB, NAME) is None, 60, "the StudyJob to go")
    wait_until(lambda: not kube.list(JOB, f"{names.LABEL_STUDYJOB}={NAME}"), 60, "the garbage collector")
    wait_until(lambda: kube.get(CONFIGMAP, f"{NAME}-best-config") is None, 60, "the ConfigMaps to go")
    assert len(optuna.load_study(study_name="digits-real", storage=postgres_url).trials) == 4
