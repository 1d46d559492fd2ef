"""A digits StudyJob from creation to deletion, with real trial pods (``ml-train --trial``).

The fake kubelet runs each trial Job's argv on the real PostgreSQL: trials train the
small CNN on digits, report every epoch, get pruned, tell their result. One trial's
Job is OOM-killed before its trial could tell anything. Then ``n_trials`` is raised
on the finished StudyJob (it continues and re-visualises), and the StudyJob is
deleted (children go by their ownerReferences; the study stays).

The API calls the operator made over the whole run are the RBAC contract:
``tests/fixtures/operator_api_calls.json`` (regenerate with KUBETUNE_WRITE_API_CALLS=1).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from kubetune.config import validate_config
from kubetune.search.attributes import FAIL_REASON_ATTR
from kubetune_operator import names
from tests.operator.conftest import digits_spec
from tests.operator.harness import STUDYJOBS
from tests.polling import scaled, wait_for, wait_progressing

ROOT = Path(__file__).resolve().parents[2]
API_CALLS = ROOT / "tests" / "fixtures" / "operator_api_calls.json"
NAME = "digits-lr"
STUDY = "digits-e2e"
STARTUP = 300  # seconds for the first trial pod to start and report an epoch (times KUBETUNE_TEST_SLOWDOWN)
STALL_STEPS = 4  # waits fail after this many measured steps without any progress
MIN_STALL = 60  # seconds: the floor under that (a visualisation, a settling pass)


def _spec() -> dict:
    spec = digits_spec(n_trials=4, parallelism=2, study=STUDY, output=True, maxFailed=2, retries=1)
    search = spec["config"]["search"]
    # Trial 0 is the config's own point; 1 and 2 are queued: a good one, then an lr far
    # too small to learn in two epochs. Pruning waits for two completed trials, so 0 and
    # 1 (running side by side) never prune each other whichever finishes first; trial 2
    # is held until both have completed, then falls below their median at epoch 1.
    search["pruner"]["n_startup_trials"] = 2
    search["enqueue_trials"] = [
        {"optimizer.lr": 0.1, "model.dropout": 0.0},
        {"optimizer.lr": 1.0e-4, "model.dropout": 0.0},
    ]
    return spec


def _fate(job: dict) -> str:
    return {"2": "hold", "3": "oom"}.get(job["metadata"]["labels"].get(names.LABEL_TRIAL), "run")


def _completed(url: str, numbers: set[int]) -> bool:
    try:
        trials = _load_study(url).trials
    except KeyError:  # the operator has not created the study yet
        return False
    return numbers <= {t.number for t in trials if t.state == TrialState.COMPLETE}


def _progress(url: str) -> tuple[int, int]:
    """Epochs reported and trials finished so far: what moves while training goes on."""
    try:
        trials = _load_study(url).trials
    except KeyError:
        return 0, 0
    return sum(len(t.intermediate_values) for t in trials), sum(t.state.is_finished() for t in trials)


def _phase(cluster, phase: str) -> dict | None:
    status = cluster.status(NAME)
    return status if status.get("phase") == phase else None


def _load_study(url: str) -> optuna.Study:
    return optuna.load_study(study_name=STUDY, storage=url)


def _assert_owned(cluster, obj: dict, owner_uid: str) -> None:
    refs = obj["metadata"].get("ownerReferences") or []
    assert [(r["kind"], r["name"], r["uid"], r["controller"]) for r in refs] == [
        (names.KIND, NAME, owner_uid, True)
    ], obj["metadata"]["name"]


@pytest.mark.asyncio
@pytest.mark.slow
async def test_digits_studyjob_end_to_end(cluster, storage_secret, start_operator, make_kubelet,
                                          claims, chromium):
    await start_operator()
    # The operator reads the output claim's access modes (condition ResultsVolume).
    await cluster.create("v1/persistentvolumeclaims", {
        "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "results"},
        "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "1Gi"}}}})
    async with make_kubelet(_fate) as kubelet:
        created = await cluster.create_studyjob(NAME, _spec())
        uid = created["metadata"]["uid"]
        try:
            # The pace of this machine now: a trial pod's start and its first epoch. Every
            # later wait allows a few such steps without any progress, however long in all.
            started = time.monotonic()
            await wait_for(lambda: _progress(storage_secret)[0], scaled(STARTUP), "the first epoch reported")
            stall = max(STALL_STEPS * (time.monotonic() - started), scaled(MIN_STALL))
            await wait_progressing(lambda: _completed(storage_secret, {0, 1}), lambda: _progress(storage_secret),
                                   stall, "trials 0 and 1 to complete")
            kubelet.release(f"{NAME}-trial-2", "run")
            status = await wait_progressing(lambda: _phase(cluster, "Succeeded"),
                                            lambda: (_progress(storage_secret), cluster.status(NAME)), stall,
                                            "the StudyJob to succeed")
        finally:
            for job in cluster.jobs(NAME):
                print(job, kubelet.log(job)[-3000:])

        # Trials: trained, pruned, one failed by the operator with the OOM reason.
        study = _load_study(storage_secret)
        states = {t.number: t.state for t in study.trials}
        assert states == {0: TrialState.COMPLETE, 1: TrialState.COMPLETE,
                          2: TrialState.PRUNED, 3: TrialState.FAIL}
        assert study.trials[3].user_attrs[FAIL_REASON_ATTR].startswith("OOMKilled")
        assert study.trials[0].params == {"optimizer.lr": 0.05, "model.dropout": 0.1}
        assert all(study.trials[n].intermediate_values for n in (0, 1, 2))
        assert status["trials"] == {"running": 0, "pending": 0, "queued": 0, "waiting": 0, "complete": 2,
                                    "pruned": 1, "failed": 1, "retried": 0, "preempted": 0, "finished": 4,
                                    "total": 4, "inherited": 0}
        assert status["progress"] == "4/4"
        best = max((t for t in study.trials if t.state == TrialState.COMPLETE), key=lambda t: t.value)
        assert status["best"] == {"trial": best.number, "value": best.value, "params": best.params}
        conditions = {c["type"]: c for c in status["conditions"]}
        assert conditions["Visualised"]["status"] == "True", conditions["Visualised"]
        assert conditions["ResultsVolume"]["reason"] == "ReadWriteMany", conditions["ResultsVolume"]
        assert status["observedGeneration"] == 1

        # One Job per trial plus the visualisation, all owned by the StudyJob.
        jobs = cluster.jobs(NAME)
        assert set(jobs) == {f"{NAME}-trial-{n}" for n in range(4)} | {f"{NAME}-visualise"}
        for job in jobs.values():
            _assert_owned(cluster, job, uid)
        argv = jobs[f"{NAME}-trial-1"]["spec"]["template"]["spec"]["containers"][0]["command"]
        assert argv[:6] == ["ml-train", "--config", "/etc/kubetune/config.yaml",
                            "--trial", f"{STUDY}:1", "--no-progress"]

        # Results on the "PVC": TensorBoard runs, the export, the plots.
        results = claims["results"]
        assert (results / STUDY / "trial-0").is_dir()
        exported = yaml.safe_load((results / NAME / "best_config.yaml").read_text())
        assert (results / NAME / "trials.csv").is_file()
        assert list((results / NAME / "plots").glob("*.html"))

        # The best-config ConfigMap: a complete config ml-train accepts, with the best params.
        config_map = cluster.get("v1/configmaps", f"{NAME}-best-config")
        assert config_map is not None
        _assert_owned(cluster, config_map, uid)
        best_config = yaml.safe_load(config_map["data"]["best_config.yaml"])
        validate_config(best_config)
        assert best_config["optimizer"]["lr"] == pytest.approx(best.params["optimizer.lr"])
        assert "search" not in best_config
        assert best_config["optimizer"] == exported["optimizer"]
        assert status["bestConfig"]["configMap"] == f"{NAME}-best-config"
        _assert_owned(cluster, cluster.get("v1/configmaps", f"{NAME}-config"), uid)

        # Events at every step, none with the storage password or URL.
        await wait_for(lambda: cluster.events("Succeeded"), 10, "the Succeeded event")
        messages = {e["reason"]: e["message"] for e in cluster.events()}
        assert "trial 3 failed: OOMKilled" in " ".join(cluster.event_messages("TrialFailed"))
        assert cluster.event_messages("TrialPruned") == ["trial 2 pruned at epoch 1"]
        assert len(cluster.event_messages("TrialStarted")) == 4
        assert {"TrialComplete", "VisualisationStarted", "BestConfig", "Running"} <= set(messages)
        assert not any("postgres" in e["message"] for e in cluster.events())

        # Raising n_trials on the finished StudyJob continues the study.
        await cluster.patch(STUDYJOBS, NAME, {"spec": {"config": {"search": {"n_trials": 5}}}})
        status = await wait_progressing(
            lambda: cluster.status(NAME).get("progress") == "5/5" and _phase(cluster, "Succeeded"),
            lambda: (_progress(storage_secret), cluster.status(NAME)), stall, "the fifth trial and the new plots")
        assert len(_load_study(storage_secret).trials) == 5
        assert status["observedGeneration"] == 2
        assert cluster.created_jobs().count(f"{NAME}-visualise") == 2

        # Deletion: the finalizer lets the operator close the study, then children go.
        assert names.FINALIZER in cluster.studyjob(NAME)["metadata"]["finalizers"]
        await cluster.delete(STUDYJOBS, NAME)
        await wait_for(lambda: cluster.get(STUDYJOBS, NAME) is None, 30, "the StudyJob to go")
        assert cluster.jobs(NAME) == {}
        assert cluster.get("v1/configmaps", f"{NAME}-best-config") is None
        assert len(_load_study(storage_secret).trials) == 5  # the study stays

    _check_api_calls(cluster.emu.calls)


def _check_api_calls(calls: set[tuple[str, str, str]]) -> None:
    recorded = sorted(({"verb": v, "apiGroup": g, "resource": r} for v, g, r in calls),
                      key=lambda c: (c["apiGroup"], c["resource"], c["verb"]))
    if os.environ.get("KUBETUNE_WRITE_API_CALLS"):
        API_CALLS.write_text(json.dumps(recorded, indent=2) + "\n")
    expected = json.loads(API_CALLS.read_text())
    assert recorded == expected, (
        "the operator's API calls changed; update the chart's RBAC, then rerun with "
        f"KUBETUNE_WRITE_API_CALLS=1 to rewrite {API_CALLS.name}:\n{json.dumps(recorded, indent=2)}"
    )
