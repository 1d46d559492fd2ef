"""The real-cluster test: helm install, the digits StudyJob to Succeeded, results on the volume.

Run with tests/e2e/kind/run.sh (or `pytest -m e2e tests/e2e/kind`). Skips, saying why,
where docker (with a reachable engine), kind, kubectl or helm are missing.
"""

from __future__ import annotations

import json
import os

import pytest
import yaml

from tests.e2e.kind import cluster

pytestmark = pytest.mark.e2e

EXAMPLE = cluster.ROOT / "manifests" / "examples" / "digits-studyjob.yaml"
SEED = cluster.ROOT / "tests" / "e2e" / "kind" / "seed-digits.yaml"
STUDY_TIMEOUT = float(os.environ.get("KUBETUNE_E2E_STUDY_TIMEOUT", "2400"))


def example_documents() -> list[dict]:
    return [d for d in yaml.safe_load_all(EXAMPLE.read_text(encoding="utf-8")) if d]


def seed_documents(claim: str, target: str) -> list[dict]:
    """seed-digits.yaml with the claim and the dataset folder the example expects."""
    pvc, job = [d for d in yaml.safe_load_all(SEED.read_text(encoding="utf-8")) if d]
    pvc["metadata"]["name"] = claim
    pod = job["spec"]["template"]["spec"]
    pod["volumes"][0]["persistentVolumeClaim"]["claimName"] = claim
    command = pod["containers"][0]["command"]
    command[command.index("/data/digits")] = target
    return [pvc, job]


def seed_data_volume(namespace: str, studyjob: dict, applied: set[str]) -> None:
    """Fill the example's data claim with the digits sample, unless the example brings it."""
    data = studyjob["spec"].get("data") or {}
    claim = data.get("persistentVolumeClaim")
    if not claim:
        return  # spec.data.sample: the operator writes the sample itself
    target = f"/data/{data['subPath']}" if data.get("subPath") else "/data/digits"
    documents = seed_documents(claim, target)
    if claim in applied:
        documents = documents[1:]  # the example creates the claim itself
    cluster.kubectl("-n", namespace, "apply", "-f", "-", input=yaml.safe_dump_all(documents))
    cluster.kubectl("-n", namespace, "wait", "--for=condition=complete", "job/seed-digits",
                    "--timeout=15m", timeout=1000)


@pytest.fixture(scope="module")
def finished_study(release):
    namespace = release
    documents = example_documents()
    (studyjob,) = [d for d in documents if d["kind"] == "StudyJob"]
    name = studyjob["metadata"]["name"]
    claims = {d["metadata"]["name"] for d in documents if d["kind"] == "PersistentVolumeClaim"}
    seed_data_volume(namespace, studyjob, claims)
    cluster.kubectl("-n", namespace, "apply", "-f", str(EXAMPLE))

    def finished():
        body = cluster.kubectl_json("-n", namespace, "get", "studyjob", name)
        phase = (body.get("status") or {}).get("phase")
        return body if phase in ("Succeeded", "Failed") else None

    try:
        body = cluster.wait_for(finished, timeout=STUDY_TIMEOUT, interval=15, what=f"StudyJob {name}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{cluster.diagnostics(namespace)}") from None
    if body["status"]["phase"] != "Succeeded":
        raise AssertionError(f"StudyJob {name} failed: {json.dumps(body['status'], indent=2)}\n"
                             f"{cluster.diagnostics(namespace)}")
    return {"namespace": namespace, "name": name, "body": body}


def in_tensorboard(namespace: str, script: str) -> str:
    """Run Python in the TensorBoard pod, which mounts the results volume at /results."""
    return cluster.kubectl("-n", namespace, "exec", "deployment/kubetune-tensorboard", "-c", "tensorboard",
                           "--", "python", "-c", script).stdout


def test_chart_brings_up_operator_postgres_and_tensorboard(release):
    for kind_name in ("deployment/kubetune-operator", "deployment/kubetune-tensorboard",
                      "statefulset/kubetune-postgres"):
        cluster.kubectl("-n", release, "rollout", "status", kind_name, "--timeout=5m", timeout=400)
    endpoints = cluster.kubectl_json("-n", release, "get", "endpoints", "kubetune-tensorboard")
    assert any(s.get("addresses") for s in endpoints.get("subsets", [])), endpoints


def test_digits_studyjob_succeeds(finished_study):
    status = finished_study["body"]["status"]
    assert status["phase"] == "Succeeded"
    assert status["trials"]["complete"] >= 1, status
    assert status.get("best", {}).get("value") is not None, status


def test_best_config_and_plots_are_on_the_results_volume(finished_study):
    listing = json.loads(in_tensorboard(finished_study["namespace"], (
        "import json, pathlib; root = pathlib.Path('/results'); "
        "print(json.dumps([str(p.relative_to(root)) for p in root.rglob('*') if p.is_file()]))"
    )))
    name = finished_study["name"]
    best = [p for p in listing if p.endswith("best_config.yaml") and name in p]
    assert best, f"no best_config.yaml for {name} among {len(listing)} files: {listing[:50]}"
    plots = [p for p in listing if name in p and "plots" in p and p.endswith((".png", ".html"))]
    assert any(p.endswith(".png") for p in plots), f"no PNG plots: {plots or listing[:50]}"
    text = in_tensorboard(finished_study["namespace"], f"print(open('/results/{best[0]}').read())")
    config = yaml.safe_load(text)
    assert {"model", "data", "training", "optimizer"} <= set(config), config
    params = finished_study["body"]["status"]["best"].get("params") or {}
    for dotted, value in params.items():
        node = config
        for part in dotted.split("."):
            node = node[part]
        expected = pytest.approx(value, rel=1e-9) if isinstance(value, float) else value
        assert node == expected, (dotted, node, value)


def test_best_config_configmap_exists(finished_study):
    configmap = cluster.kubectl_json("-n", finished_study["namespace"], "get", "configmap",
                                     f"{finished_study['name']}-best-config")
    assert "best_config.yaml" in configmap["data"]


def test_tensorboard_serves_the_trials(finished_study):
    page = in_tensorboard(finished_study["namespace"], (
        "import urllib.request; "
        "print(urllib.request.urlopen('http://127.0.0.1:6006/data/runs', timeout=30).read().decode())"
    ))
    runs = json.loads(page)
    assert any("trial" in run for run in runs), runs
