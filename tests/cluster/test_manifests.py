"""What kubetune ships and writes, as the real API server takes it.

The CRD's schema, defaulting and pruning are the API server's: every example, every
config kubetune writes (``ml-init-config``'s, a ``best_config.yaml``, a config with
``channels: null``) must be accepted as a StudyJob and come back unchanged; the
manifests (``kubectl apply -k``) and the rendered chart must pass validation and
admission (server-side dry run, after their namespaces exist).
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from kubetune.config import config_to_dict, validate_config
from kubetune.search.results import best_config_dict
from kubetune_operator import names
from tests.cluster.cluster import CHART_CRD, Cluster, render_chart
from tests.conftest import run_cli
from tests.operator.conftest import DIGITS_CONFIG

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "manifests" / "examples").glob("*.yaml"))
STUDYJOB = (names.API_VERSION, names.KIND)


def studyjob(name: str, config: dict) -> dict:
    return {"apiVersion": names.API_VERSION, "kind": names.KIND, "metadata": {"name": name},
            "spec": {"config": config, "storage": {"secretRef": {"name": "kubetune-postgres", "key": "url"}}}}


def round_trip(kube: Cluster, body: dict) -> dict:
    """Create the StudyJob for real and read it back (what the API server kept)."""
    kube.create(body)
    stored = kube.get(STUDYJOB, body["metadata"]["name"])
    assert stored is not None
    return stored


@pytest.fixture
def crd(control_plane, kube: Cluster):
    kube.apply(yaml.safe_load(CHART_CRD.read_text()))
    return kube


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_every_example_is_accepted_unchanged(crd: Cluster, example: Path):
    for doc in yaml.safe_load_all(example.read_text()):
        if doc and doc.get("kind") == names.KIND:
            stored = round_trip(crd, copy.deepcopy(doc))
            assert stored["spec"] == doc["spec"], "the API server pruned or changed the example"


def test_configs_kubetune_writes_are_accepted_unchanged(crd: Cluster, tmp_path: Path):
    result = run_cli("ml-init-config", "--sample", "digits", str(tmp_path / "digits"), "--optuna", "--yes",
                     "--output", str(tmp_path / "config.yaml"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    written = yaml.safe_load((tmp_path / "config.yaml").read_text())
    stored = round_trip(crd, studyjob("init-config", copy.deepcopy(written)))
    assert stored["spec"]["config"] == written

    config = validate_config(DIGITS_CONFIG)
    best = best_config_dict(config, {"optimizer.lr": 0.01, "model.dropout": 0.2})
    pasted = {**copy.deepcopy(best), "search": copy.deepcopy(DIGITS_CONFIG["search"])}
    stored = round_trip(crd, studyjob("best-config", pasted))
    assert stored["spec"]["config"] == pasted

    full = config_to_dict(config)  # every field, channels: null included where unset
    stored = round_trip(crd, studyjob("full", copy.deepcopy(full)))
    assert stored["spec"]["config"] == full


def test_kubectl_apply_k_manifests_passes_admission(crd: Cluster):
    namespace = yaml.safe_load((ROOT / "manifests" / "namespace.yaml").read_text())
    crd.kubectl("apply", "-f", str(ROOT / "manifests" / "namespace.yaml"))
    result = crd.kubectl("apply", "--dry-run=server", "-k", str(ROOT / "manifests"))
    assert "created (server dry run)" in result.stdout or "configured (server dry run)" in result.stdout
    assert "Warning" not in result.stderr, result.stderr
    crd.kubectl("delete", "namespace", namespace["metadata"]["name"], "--wait=false")


@pytest.mark.parametrize("values", [{}, {"rbac": {"namespaced": True}}], ids=["default", "namespaced"])
def test_rendered_chart_passes_validation_and_admission(crd: Cluster, tmp_path: Path, values: dict):
    target = f"chart-{crd.namespace}"
    crd.kubectl("create", "namespace", target)
    crd.kubectl("label", "namespace", target, "pod-security.kubernetes.io/enforce=restricted")
    rendered = tmp_path / "chart.yaml"
    rendered.write_text(yaml.safe_dump_all(render_chart(values, namespace=target)))
    result = crd.kubectl("apply", "--dry-run=server", "-n", target, "-f", str(rendered))
    assert "(server dry run)" in result.stdout
    assert "would violate PodSecurity" not in result.stderr, result.stderr
    crd.kubectl("delete", "namespace", target, "--wait=false")
