"""RBAC grants exactly the API calls the operator makes: no more, no fewer.

The expected set is not copied from the YAML: it is the set of (verb, apiGroup,
resource) calls recorded from a real operator run against the API emulator
(tests/fixtures/operator_api_calls.json, written by the operator tests).
"""

from __future__ import annotations

import json

import pytest

from tests.chart.helpers import NAMESPACE, ROOT, find, manifest_objects, render

RECORDING = ROOT / "tests" / "fixtures" / "operator_api_calls.json"
# Resources that live outside namespaces: only a ClusterRole can grant them.
CLUSTER_SCOPED = {
    "customresourcedefinitions", "namespaces", "clusterkopfpeerings", "nodes",
    "persistentvolumes", "storageclasses", "clusterroles", "clusterrolebindings",
    "mutatingwebhookconfigurations", "validatingwebhookconfigurations",
}

Call = tuple[str, str, str]  # (verb, apiGroup, resource[/subresource])
# Granted for admission, not called: OwnerReferencesPermissionEnforcement checks that
# whoever sets blockOwnerDeletion may update the owner's finalizers. The real control
# plane (tests/cluster) runs with that plugin on, so dropping this rule fails there.
ADMISSION_ONLY: set[Call] = {("update", "kubetune.dev", "studyjobs/finalizers")}
# Called only where Kueue is installed (the API emulator has no Workloads): the real
# control plane with Kueue (tests/cluster/test_kueue.py) runs the operator under these rules.
KUEUE_ONLY: set[Call] = {("list", "kueue.x-k8s.io", "workloads")}


def _call(entry) -> Call:
    if isinstance(entry, (list, tuple)) and len(entry) == 3:
        verb, group, resource = entry
    elif isinstance(entry, dict):
        verb = entry["verb"]
        group = entry.get("apiGroup", entry.get("group", ""))
        resource = entry["resource"]
        if entry.get("subresource"):
            resource = f"{resource}/{entry['subresource']}"
    else:
        raise AssertionError(f"{RECORDING.name}: cannot read entry {entry!r}")
    group = "" if group in (None, "core", "v1") else group
    return str(verb), str(group), str(resource)


def recorded_calls() -> set[Call]:
    if not RECORDING.exists():
        pytest.fail(
            f"{RECORDING.relative_to(ROOT)} is missing: the operator tests record the API calls "
            "the operator makes; RBAC is checked against that recording"
        )
    data = json.loads(RECORDING.read_text(encoding="utf-8"))
    if isinstance(data, dict):
        data = data.get("calls", data.get("api_calls"))
    calls = {_call(entry) for entry in data}
    assert calls, f"{RECORDING.name} records no calls"
    return calls


def granted(roles: list[dict]) -> set[Call]:
    calls = set()
    for role in roles:
        for rule in role.get("rules") or []:
            assert "*" not in rule["verbs"] + rule["resources"] + rule.get("apiGroups", []), rule
            assert not rule.get("resourceNames") and not rule.get("nonResourceURLs"), rule
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    for verb in rule["verbs"]:
                        calls.add((verb, group, resource))
    return calls


def is_cluster_scoped(call: Call) -> bool:
    return call[2].split("/")[0] in CLUSTER_SCOPED


def test_cluster_wide_rbac_equals_the_recorded_calls():
    objects = render("default")
    assert not find(objects, "Role") and not find(objects, "RoleBinding")
    assert granted(find(objects, "ClusterRole")) == recorded_calls() | ADMISSION_ONLY | KUEUE_ONLY


@pytest.mark.parametrize("scenario", ["namespaced", "namespaced-two"])
def test_namespaced_rbac_equals_the_recorded_calls(scenario):
    expected = recorded_calls() | ADMISSION_ONLY | KUEUE_ONLY
    objects = render(scenario)
    roles = find(objects, "Role")
    assert roles
    cluster = granted(find(objects, "ClusterRole"))
    assert cluster == {c for c in expected if is_cluster_scoped(c)}
    for role in roles:
        # Each watched namespace gets the namespaced part, whole.
        assert granted([role]) == {c for c in expected if not is_cluster_scoped(c)}, role["metadata"]
    assert cluster | granted(roles) == expected


def test_manifests_rbac_equals_the_recorded_calls():
    roles = [o for _, o in manifest_objects() if o.get("kind") in ("ClusterRole", "Role")]
    assert roles
    assert granted(roles) == recorded_calls() | ADMISSION_ONLY | KUEUE_ONLY


@pytest.mark.parametrize("scenario", ["default", "namespaced-two"])
def test_bindings_give_the_roles_to_the_operators_service_account(scenario):
    objects = render(scenario)
    (deployment,) = find(objects, "Deployment", "kubetune-operator")
    account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
    assert find(objects, "ServiceAccount", account)
    bindings = find(objects, "ClusterRoleBinding") + find(objects, "RoleBinding")
    roles = {(r["kind"], r["metadata"]["name"], r["metadata"].get("namespace"))
             for r in find(objects, "ClusterRole") + find(objects, "Role")}
    assert bindings
    for binding in bindings:
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}]
        ref = binding["roleRef"]
        scope = binding["metadata"].get("namespace") if ref["kind"] == "Role" else None
        assert (ref["kind"], ref["name"], scope) in roles


def test_the_comparison_notices_an_extra_verb():
    objects = render("default")
    (role,) = find(objects, "ClusterRole")
    widened = {**role, "rules": role["rules"] + [{"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["update"]}]}
    assert granted([widened]) - granted([role]) == {("update", "batch", "jobs")}
