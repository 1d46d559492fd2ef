"""What kubetune ships and writes, as the real API server takes it.

The CRD's schema, defaulting and pruning are the API server's: every example, every
config kubetune writes (``ml-init-config``'s, a ``best_config.yaml``, a config with
``channels: null``) must be accepted as a StudyJob and come back with every field kept
(defaults may be added, nothing pruned or changed); the
manifests (``kubectl apply -k``) and the rendered chart must pass validation and
admission (server-side dry run, after their namespaces exist).
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import pytest
import yaml

from kubetune.config import config_to_dict, validate_config
from kubetune.search.results import best_config_dict
from kubetune_operator import names
from kubetune_operator.kube import ApiError
from tests.chart.helpers import render_objects
from tests.cluster.cluster import Cluster, apply_crd
from tests.conftest import run_cli
from tests.operator.conftest import DIGITS_CONFIG

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "manifests" / "examples").glob("*.yaml"))
STUDYJOB = (names.API_VERSION, names.KIND)


def studyjob(name: str, config: dict) -> dict:
    return {"apiVersion": names.API_VERSION, "kind": names.KIND, "metadata": {"name": name},
            "spec": {"config": config, "storage": {"secretRef": {"name": "kubetune-postgres", "key": "url"}}}}


def kept(stored, original, path: str = "spec") -> None:
    """Everything ``original`` says is in ``stored`` (the API server may add defaults, but
    must not prune or change a field kubetune writes)."""
    if isinstance(original, dict):
        assert isinstance(stored, dict), f"{path}: {stored!r}"
        for key, value in original.items():
            assert key in stored, f"the API server pruned `{path}.{key}`"
            kept(stored[key], value, f"{path}.{key}")
    else:
        assert stored == original, f"`{path}` came back as {stored!r}, not {original!r}"


def round_trip(kube: Cluster, body: dict) -> dict:
    """Create the StudyJob for real and read it back (what the API server kept)."""
    kube.create(body)
    stored = kube.get(STUDYJOB, body["metadata"]["name"])
    assert stored is not None
    return stored


@pytest.fixture
def crd(control_plane, kube: Cluster) -> Cluster:
    apply_crd(kube)
    return kube


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_every_example_is_accepted_and_kept(crd: Cluster, example: Path):
    for doc in yaml.safe_load_all(example.read_text()):
        if doc and doc.get("kind") == names.KIND:
            doc["metadata"].pop("namespace", None)  # the examples name the chart's; the test has its own
            stored = round_trip(crd, copy.deepcopy(doc))
            kept(stored["spec"], doc["spec"])


def test_configs_kubetune_writes_are_accepted_and_kept(crd: Cluster, tmp_path: Path):
    result = run_cli("ml-init-config", "--sample", "digits", str(tmp_path / "digits"), "--optuna", "--yes",
                     "--output", str(tmp_path / "config.yaml"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    written = yaml.safe_load((tmp_path / "config.yaml").read_text())
    stored = round_trip(crd, studyjob("init-config", copy.deepcopy(written)))
    kept(stored["spec"]["config"], written)

    digits = copy.deepcopy(DIGITS_CONFIG)
    digits["data"]["path"] = "/data/digits"  # the operator fills it in; a config file names it
    config = validate_config(digits)
    best = best_config_dict(config, {"optimizer.lr": 0.01, "model.dropout": 0.2})
    pasted = {**copy.deepcopy(best), "search": copy.deepcopy(digits["search"])}
    stored = round_trip(crd, studyjob("best-config", pasted))
    kept(stored["spec"]["config"], pasted)

    full = config_to_dict(config)  # every field, as kubetune writes it
    full["data"]["channels"] = None  # what a config without channels serialises to
    stored = round_trip(crd, studyjob("full", copy.deepcopy(full)))
    kept(stored["spec"]["config"], full)


def test_kubectl_apply_k_manifests_passes_admission(crd: Cluster, tmp_path: Path):
    namespace = yaml.safe_load((ROOT / "manifests" / "namespace.yaml").read_text())
    crd.kubectl("apply", "-f", str(ROOT / "manifests" / "namespace.yaml"))
    # The user's step before -k: postgres.env, from which kustomize generates the Secret.
    manifests = shutil.copytree(ROOT / "manifests", tmp_path / "manifests")
    (manifests / "postgres.env").write_text(
        "password=abc123\nurl=postgresql+psycopg://kubetune:abc123@kubetune-postgres.kubetune.svc:5432/optuna\n")
    result = crd.kubectl("apply", "--dry-run=server", "-k", str(manifests))
    assert "secret/kubetune-postgres" in result.stdout
    assert "created (server dry run)" in result.stdout or "configured (server dry run)" in result.stdout
    assert "would violate PodSecurity" not in result.stderr, result.stderr
    crd.kubectl("delete", "namespace", namespace["metadata"]["name"], "--wait=false")


@pytest.mark.parametrize("values", [{}, {"rbac": {"namespaced": True}}], ids=["default", "namespaced"])
def test_rendered_chart_passes_validation_and_admission(crd: Cluster, tmp_path: Path, values: dict):
    target = f"chart-{crd.namespace}"
    crd.kubectl("create", "namespace", target)
    crd.kubectl("label", "namespace", target, "pod-security.kubernetes.io/enforce=restricted")
    rendered = tmp_path / "chart.yaml"
    rendered.write_text(yaml.safe_dump_all(render_objects(values, namespace=target)))
    result = crd.kubectl("apply", "--dry-run=server", "-n", target, "-f", str(rendered))
    assert "(server dry run)" in result.stdout
    assert "would violate PodSecurity" not in result.stderr, result.stderr
    crd.kubectl("delete", "namespace", target, "--wait=false")


def test_in_memory_is_auto_or_a_bool_as_the_readme_says(crd: Cluster):
    for i, value in enumerate(["auto", True, False]):
        config = copy.deepcopy(DIGITS_CONFIG)
        config["data"]["in_memory"] = value
        stored = round_trip(crd, studyjob(f"in-memory-{i}", config))
        kept(stored["spec"]["config"], config)


def test_the_study_name_cannot_change_once_the_studyjob_exists(crd: Cluster):
    crd.create(studyjob("renamed", copy.deepcopy(DIGITS_CONFIG)))
    crd.patch(STUDYJOB, "renamed", {"spec": {"config": {"optimizer": {"lr": 0.02}}}})  # other edits pass
    with pytest.raises(ApiError) as raised:
        crd.patch(STUDYJOB, "renamed", {"spec": {"config": {"search": {"study_name": "another"}}}})
    assert raised.value.status == 422 and "spec.config.search.study_name" in str(raised.value), str(raised.value)
    assert "create a new StudyJob" in str(raised.value)


def test_trial_fields_kubernetes_would_refuse_later_are_refused_at_apply(crd: Cluster):
    good = studyjob("trials-ok", copy.deepcopy(DIGITS_CONFIG))
    good["spec"]["trials"] = {"image": "registry.example.com:5000/team/trainer:0.1.0",
                              "resources": {"limits": {"nvidia.com/gpu": 1, "memory": "4Gi", "cpu": "500m"}},
                              "env": [{"name": "OMP_NUM_THREADS", "value": "2"}]}
    kept(round_trip(crd, good)["spec"], good["spec"])
    for i, (trials, field) in enumerate([
        ({"image": "Not A Valid Image!!"}, "spec.trials.image"),
        ({"resources": {"limits": {"nvidia.com/gpu": "two"}}}, "spec.trials.resources.limits.nvidia.com/gpu"),
        ({"env": [{"name": "A=B"}]}, "spec.trials.env[0].name"),
    ]):
        bad = studyjob(f"trials-bad-{i}", copy.deepcopy(DIGITS_CONFIG))
        bad["spec"]["trials"] = trials
        with pytest.raises(ApiError) as raised:
            crd.create(bad)
        assert raised.value.status == 422 and field in str(raised.value), str(raised.value)


def test_channels_other_than_1_or_3_are_rejected(crd: Cluster):
    config = copy.deepcopy(DIGITS_CONFIG)
    config["data"]["channels"] = 2
    with pytest.raises(ApiError) as raised:
        crd.create(studyjob("two-channels", config))
    assert raised.value.status == 422 and "spec.config.data.channels" in str(raised.value)


def test_chart_rbac_lets_the_operator_set_block_owner_deletion(crd: Cluster, control_plane):
    """OwnerReferencesPermissionEnforcement: kopf.adopt's blockOwnerDeletion needs update on
    studyjobs/finalizers. With the chart's rules a child Job is created; without that one rule,
    the API server refuses it."""
    from tests.cluster.controlplane import Credentials

    owner = crd.create(studyjob("owner", {**copy.deepcopy(DIGITS_CONFIG)}))
    (role,) = [o for o in render_objects({"rbac": {"namespaced": True},
                                        "operator": {"watchNamespaces": [crd.namespace]}},
                                       namespace=crd.namespace) if o["kind"] == "Role"]
    crd.create({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "op"}})
    child = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {
        "name": "child", "ownerReferences": [{"apiVersion": names.API_VERSION, "kind": names.KIND, "name": "owner",
                                              "uid": owner["metadata"]["uid"], "controller": True,
                                              "blockOwnerDeletion": True}]},
        "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [
            {"name": "c", "image": "x", "command": ["true"]}]}}}}
    for name, keep_finalizers in (("without", False), ("with", True)):
        rules = [r for r in role["rules"] if keep_finalizers or "studyjobs/finalizers" not in r["resources"]]
        crd.create({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": name},
                    "rules": rules})
        crd.create({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                    "metadata": {"name": name},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
                    "subjects": [{"kind": "ServiceAccount", "name": "op", "namespace": crd.namespace}]})
        operator = control_plane.client(Credentials(token=control_plane.service_account_token(crd.namespace, "op")))
        if not keep_finalizers:
            with pytest.raises(ApiError) as raised:
                operator.request("POST", f"/apis/batch/v1/namespaces/{crd.namespace}/jobs", body=child,
                                 query=[("dryRun", "All")])
            assert raised.value.status == 403 and "blockOwnerDeletion" in str(raised.value)
            crd.delete(("rbac.authorization.k8s.io/v1", "RoleBinding"), name)
        else:
            operator.request("POST", f"/apis/batch/v1/namespaces/{crd.namespace}/jobs", body=child,
                             query=[("dryRun", "All")])
