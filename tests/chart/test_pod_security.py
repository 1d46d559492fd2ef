"""Every pod template the chart renders, and every one in manifests/, meets "restricted"."""

from __future__ import annotations

import copy

import pytest

from tests.chart.helpers import SCENARIOS, find, manifest_objects, pod_specs, render
from tests.chart.pss import restricted_violations


def all_pods(objects: list[dict]) -> list[tuple[str, dict]]:
    return [pod for obj in objects for pod in pod_specs(obj)]


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_rendered_pods_are_restricted(scenario):
    pods = all_pods(render(scenario))
    assert pods
    problems = {label: restricted_violations(spec) for label, spec in pods}
    assert not any(problems.values()), problems


def test_every_pod_kind_is_covered():
    labels = {label for name in SCENARIOS for label, _ in all_pods(render(name))}
    assert {"Deployment/kubetune-operator", "StatefulSet/kubetune-postgres",
            "Deployment/kubetune-optuna-grpc"} <= labels


def test_manifest_pods_are_restricted():
    pods = [pod for _, obj in manifest_objects() for pod in pod_specs(obj)]
    assert pods
    problems = {label: restricted_violations(spec) for label, spec in pods}
    assert not any(problems.values()), problems


def test_manifests_namespace_enforces_restricted():
    (namespace,) = [o for _, o in manifest_objects() if o.get("kind") == "Namespace"]
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_operator_and_trainer_pods_run_as_the_images_numeric_user():
    (deployment,) = find(render("default"), "Deployment", "kubetune-operator")
    context = deployment["spec"]["template"]["spec"]["securityContext"]
    # trainer_image/Dockerfile and operator/Dockerfile create user 10001.
    assert context["runAsUser"] == 10001 and context["runAsNonRoot"] is True


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        (lambda s: s["containers"][0]["securityContext"].pop("allowPrivilegeEscalation"), "allowPrivilegeEscalation"),
        (lambda s: s["securityContext"].pop("runAsNonRoot"), "runAsNonRoot"),
        (lambda s: s["securityContext"].pop("seccompProfile"), "seccompProfile"),
        (lambda s: s["containers"][0]["securityContext"]["capabilities"].update(drop=[]), "drop must contain ALL"),
        (lambda s: s["containers"][0]["securityContext"]["capabilities"].update(add=["SYS_ADMIN"]), "capabilities"),
        (lambda s: s["volumes"].append({"name": "host", "hostPath": {"path": "/"}}), "hostPath"),
        (lambda s: s.update(hostNetwork=True), "hostNetwork"),
        (lambda s: s["containers"][0]["securityContext"].update(privileged=True), "privileged"),
        (lambda s: s["containers"][0]["securityContext"].update(runAsUser=0), "runAsUser"),
    ],
)
def test_the_check_catches_each_violation(breakage, message):
    (deployment,) = find(render("default"), "Deployment", "kubetune-operator")
    spec = copy.deepcopy(deployment["spec"]["template"]["spec"])
    assert restricted_violations(spec) == []
    breakage(spec)
    problems = restricted_violations(spec)
    assert any(message in p for p in problems), problems
