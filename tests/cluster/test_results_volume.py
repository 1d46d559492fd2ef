"""The results volume on several nodes: the real scheduler, the test kubelet's attach rules.

The test kubelet attaches a ReadWriteOnce volume to one node at a time (a pod on a
second node waits with a Multi-Attach FailedMount), as a block volume does. The
operator reads the output claim's access modes: on a single-node claim every pod that
mounts it requires the node of the others (podAffinity on kubetune.dev/results-claim),
so parallel trials, and the chart's TensorBoard, share the node the volume is on.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kubetune_operator import names
from tests.chart.helpers import render_objects
from tests.cluster.cluster import Cluster, wait_until
from tests.operator.conftest import digits_spec

CLAIM = "results-rwo"


@pytest.fixture
def claims(kube: Cluster, digits_dir: Path) -> Iterator[dict[str, Path]]:
    """``datasets`` (ReadOnlyMany, holding ``digits/``) and ``results-rwo`` (ReadWriteOnce)."""
    base = Path("/var/tmp") / f"kubetune-claims-{kube.namespace}"
    datasets = kube.claim("datasets", base / "datasets", access_mode="ReadOnlyMany")
    shutil.copytree(digits_dir, datasets / "digits")
    results = kube.claim(CLAIM, base / "results", access_mode="ReadWriteOnce")
    yield {"datasets": datasets, "results": results}
    shutil.rmtree(base, ignore_errors=True)


def _spec(claim: str = CLAIM, **trials: Any) -> dict[str, Any]:
    spec = digits_spec(n_trials=2, parallelism=2, study="digits-rv", **trials)
    spec["output"] = {"persistentVolumeClaim": claim}
    return spec


def _condition(kube: Cluster, name: str) -> dict[str, Any] | None:
    conditions = kube.status(name).get("conditions") or []
    return next((c for c in conditions if c["type"] == "ResultsVolume"), None)


def _trial_nodes(kube: Cluster, name: str) -> dict[str, str]:
    """Trial pod name -> the node the scheduler bound it to."""
    pods = kube.pods(f"{names.LABEL_STUDYJOB}={name},{names.LABEL_TRIAL}")
    return {p["metadata"]["name"]: p["spec"].get("nodeName", "") for p in pods}


def _run(kube: Cluster, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    kube.create_studyjob(name, spec)
    try:
        return kube.wait_phase(name, "Succeeded", 540)
    finally:
        for pod in kube.pods():
            print(pod["metadata"]["name"], pod["spec"].get("nodeName"), pod["status"].get("phase"))
        for event in kube.events("FailedMount"):
            print("FailedMount", event["involvedObject"]["name"], event["message"])


@pytest.mark.slow
def test_parallel_trials_share_the_node_of_a_read_write_once_claim(kube, operator, kubelet, claims, storage):
    final = _run(kube, "rwo", _spec())
    nodes = _trial_nodes(kube, "rwo")
    assert len(nodes) == 2 and len(set(nodes.values())) == 1, nodes
    assert final["trials"]["finished"] == 2
    condition = _condition(kube, "rwo")
    assert condition is not None and (condition["status"], condition["reason"]) == ("True", "SingleNode")
    assert CLAIM in condition["message"] and "ReadWriteMany" in condition["message"]
    assert len(kube.events("SingleNodeResults")) == 1
    job = next(iter(kube.trial_jobs("rwo").values()))
    term = job["spec"]["template"]["spec"]["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term == [{"labelSelector": {"matchLabels": {names.LABEL_RESULTS_CLAIM: CLAIM}},
                     "topologyKey": "kubernetes.io/hostname"}]
    assert (claims["results"] / "digits-rv" / "trial-0").is_dir()


def test_trials_on_a_read_write_many_claim_may_go_anywhere(kube, operator, kubelet, digits_claims, storage):
    kube.create_studyjob("rwx", _spec("results"))
    jobs = wait_until(lambda: len(kube.trial_jobs("rwx")) == 2 and kube.trial_jobs("rwx"), 120,
                      lambda: f"two trial Jobs (status: {kube.status('rwx')})")
    for job in jobs.values():
        template = job["spec"]["template"]
        assert template["metadata"]["labels"][names.LABEL_RESULTS_CLAIM] == "results"
        assert "affinity" not in template["spec"]
    condition = wait_until(lambda: _condition(kube, "rwx"), 30, "condition ResultsVolume")
    assert (condition["status"], condition["reason"]) == ("True", "ReadWriteMany")
    assert condition["message"] == "trials write to claim `results` from any node"
    assert not kube.events("SingleNodeResults")


def test_a_missing_claim_holds_trials_back_until_it_exists(kube, operator, kubelet, claims, storage):
    kube.create_studyjob("later", _spec("made-later"))
    condition = wait_until(lambda: _condition(kube, "later"), 60, "condition ResultsVolume")
    assert (condition["status"], condition["reason"]) == ("False", "ClaimNotFound")
    assert "made-later" in condition["message"]
    assert kube.status("later")["phase"] == "Pending" and not kube.trial_jobs("later")
    kube.claim("made-later", claims["results"].parent / "later", access_mode="ReadWriteOnce")
    wait_until(lambda: len(kube.trial_jobs("later")) == 2, 60,
               lambda: f"trial Jobs once the claim exists (status: {kube.status('later')})")
    # The pass that made the Jobs writes the status right after them.
    wait_until(lambda: (_condition(kube, "later") or {}).get("reason") == "SingleNode", 10,
               lambda: f"condition ResultsVolume SingleNode (status: {kube.status('later')})")


def test_a_missing_data_claim_holds_the_studyjob_in_pending_until_it_exists(kube, operator, kubelet, claims,
                                                                          digits_dir, storage):
    spec = _spec()
    spec["data"] = {"persistentVolumeClaim": "digits-later", "subPath": "digits"}
    kube.create_studyjob("nodata", spec)

    def data_condition() -> dict[str, Any] | None:
        return next((c for c in kube.status("nodata").get("conditions") or [] if c["type"] == "DataVolume"), None)

    condition = wait_until(data_condition, 60, "condition DataVolume")
    assert (condition["status"], condition["reason"]) == ("False", "ClaimNotFound")
    assert "`spec.data.persistentVolumeClaim`: PersistentVolumeClaim `digits-later` not found" in condition["message"]
    assert kube.status("nodata")["phase"] == "Pending" and not kube.trial_jobs("nodata")
    later = kube.claim("digits-later", claims["datasets"].parent / "later", access_mode="ReadOnlyMany")
    shutil.copytree(digits_dir, later / "digits")
    wait_until(lambda: len(kube.trial_jobs("nodata")) == 2, 60,
               lambda: f"trial Jobs once the claim exists (status: {kube.status('nodata')})")
    wait_until(lambda: data_condition() is None, 10, "condition DataVolume to go")


def _tensorboard(claim: str, node: str) -> dict[str, Any]:
    """The chart's TensorBoard Deployment on ``claim``, pinned to ``node``, running ``sleep``."""
    values = {"results": {"create": False, "existingClaim": claim}, "postgresql": {"enabled": False},
              "storage": {"existingSecret": "kubetune-postgres"}}
    (deployment,) = [o for o in render_objects(values) if o["kind"] == "Deployment"
                     and o["metadata"]["name"].endswith("-tensorboard")]
    del deployment["metadata"]["namespace"]
    pod = deployment["spec"]["template"]["spec"]
    (board,) = pod["containers"]
    board["command"], board["args"] = ["sleep", "900"], []
    board.pop("readinessProbe")
    pod["nodeSelector"] = {"kubernetes.io/hostname": node}
    return deployment


@pytest.mark.slow
def test_tensorboard_holding_the_claim_does_not_block_trials(kube, operator, kubelet, claims, storage):
    kube.create(_tensorboard(CLAIM, "node-b"))
    board = wait_until(lambda: next((p for p in kube.pods("app.kubernetes.io/component=tensorboard")
                                     if p["status"].get("phase") == "Running"), None), 60,
                       "the TensorBoard pod to run (it mounts the claim on node-b)")
    assert board["spec"]["nodeName"] == "node-b"
    _run(kube, "beside-board", _spec())
    assert set(_trial_nodes(kube, "beside-board").values()) == {"node-b"}
    assert not kube.events("FailedMount")
