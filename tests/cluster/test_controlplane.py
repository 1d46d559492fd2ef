"""The test ground itself: a real API server, controllers, scheduler, and a kubelet with faults.

Each test states a cluster behaviour the operator depends on, observed on the real
components (the Job controller's conditions, admission, scheduling, eviction,
garbage collection), so the operator tests built on them stand on real ground.
"""

from __future__ import annotations

import pytest

from kubetune_operator.kube import ApiError
from tests.cluster.cluster import Cluster, wait_until
from tests.cluster.controlplane import ControlPlane
from tests.cluster.kubelet import TestKubelet

RESTRICTED = {
    "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001,
                        "seccompProfile": {"type": "RuntimeDefault"}},
}
CONTAINER_SECURITY = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


def job(name: str, script: str, *, image: str = "python:test", node_selector: dict | None = None,
        resources: dict | None = None, volumes: list | None = None, mounts: list | None = None,
        pod_failure_policy: dict | None = None) -> dict:
    """A one-pod Job running ``python -c script`` as a restricted pod."""
    container = {"name": "main", "image": image, "command": ["python", "-c", script],
                 "securityContext": CONTAINER_SECURITY, "volumeMounts": mounts or []}
    if resources:
        container["resources"] = resources
    pod = {"restartPolicy": "Never", **RESTRICTED, "containers": [container], "volumes": volumes or [],
           "terminationGracePeriodSeconds": 2}
    if node_selector:
        pod["nodeSelector"] = node_selector
    spec: dict = {"backoffLimit": 0, "template": {"spec": pod}}
    if pod_failure_policy:
        spec["podFailurePolicy"] = pod_failure_policy
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name}, "spec": spec}


def job_condition(kube: Cluster, name: str) -> dict | None:
    """The Job's terminal condition (Complete or Failed), once the Job controller sets it."""
    found = kube.get(("batch/v1", "Job"), name) or {}
    for condition in (found.get("status") or {}).get("conditions") or []:
        if condition["type"] in ("Complete", "Failed") and condition["status"] == "True":
            return condition
    return None


def the_pod(kube: Cluster, job_name: str, timeout: float = 30) -> dict:
    return wait_until(lambda: (kube.job_pods(job_name) or [None])[0], timeout, f"the pod of {job_name}")


def container_state(pod: dict) -> dict:
    statuses = (pod.get("status") or {}).get("containerStatuses") or [{}]
    return statuses[0].get("state") or {}


def test_control_plane_is_kubernetes_137(control_plane: ControlPlane):
    version = control_plane.admin.request("GET", "/version")
    assert version["gitVersion"] == "v1.37.2"
    print(f"control plane start-to-ready: {control_plane.start_seconds:.1f} s")


def test_job_runs_on_a_node_and_completes(kube: Cluster, tmp_path):
    data = kube.claim("data", tmp_path.parent / f"{kube.namespace}-data")
    kube.create(job("hello", "import os; open('/data/out.txt', 'w').write(str(os.getuid()))",
                    volumes=[{"name": "d", "persistentVolumeClaim": {"claimName": "data"}}],
                    mounts=[{"name": "d", "mountPath": "/data"}]))
    condition = wait_until(lambda: job_condition(kube, "hello"), 60, "Job hello to end")
    assert condition["type"] == "Complete"
    pod = kube.job_pods("hello")[0]
    assert pod["status"]["phase"] == "Succeeded"
    assert container_state(pod)["terminated"]["reason"] == "Completed"
    assert pod["spec"]["nodeName"] in ("node-a", "node-b", "gpu-1")
    assert (data / "out.txt").read_text() in ("10001", "0")  # the pod's user, where the checkout allows


def test_failing_container_fails_the_job_with_its_exit_code(kube: Cluster):
    kube.create(job("boom", "raise SystemExit(3)"))
    condition = wait_until(lambda: job_condition(kube, "boom"), 60, "Job boom to end")
    assert condition["type"] == "Failed" and condition["reason"] == "BackoffLimitExceeded"
    pod = kube.job_pods("boom")[0]
    assert container_state(pod)["terminated"]["exitCode"] == 3


def test_pod_security_restricted_rejects_a_root_pod(kube: Cluster):
    with pytest.raises(ApiError) as raised:
        kube.create({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "root"},
                     "spec": {"containers": [{"name": "c", "image": "x", "command": ["true"]}]}})
    assert raised.value.status == 403 and "restricted" in str(raised.value)


def test_crd_schema_is_enforced(kube: Cluster, operator):
    with pytest.raises(ApiError) as raised:
        kube.create({"apiVersion": "kubetune.dev/v1alpha1", "kind": "StudyJob", "metadata": {"name": "bad"},
                     "spec": {"trials": {"parallelism": "four"}}})
    assert raised.value.status == 422


def test_oom_kill_reports_oomkilled(kube: Cluster, kubelet: TestKubelet):
    kube.create(job("hog", "import time; time.sleep(60)"))
    pod = wait_until(lambda: next((p for p in kube.job_pods("hog") if p["status"].get("phase") == "Running"),
                                  None), 30, "hog to run")
    kubelet.oom_kill(kube.namespace, pod["metadata"]["name"])
    wait_until(lambda: job_condition(kube, "hog"), 30, "Job hog to fail")
    terminated = container_state(kube.job_pods("hog")[0])["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (137, "OOMKilled")


def test_eviction_marks_disruption_and_pod_failure_policy_keeps_it(kube: Cluster):
    policy = {"rules": [{"action": "FailJob", "onPodConditions": [{"type": "DisruptionTarget"}]}]}
    kube.create(job("victim", "import time; time.sleep(60)", pod_failure_policy=policy))
    pod = wait_until(lambda: next((p for p in kube.job_pods("victim") if p["status"].get("phase") == "Running"),
                                  None), 30, "victim to run")
    kube.evict(pod["metadata"]["name"])
    condition = wait_until(lambda: job_condition(kube, "victim"), 30, "Job victim to fail")
    assert condition["reason"] == "PodFailurePolicy"
    assert "DisruptionTarget" in condition["message"]


def test_unpullable_image_waits_in_image_pull_backoff(kube: Cluster, kubelet: TestKubelet):
    kubelet.unpullable.add("registry.invalid/nope:1")
    kube.create(job("pull", "pass", image="registry.invalid/nope:1"))
    wait_until(lambda: container_state(the_pod(kube, "pull")).get("waiting", {}).get("reason")
               == "ImagePullBackOff", 30, "ImagePullBackOff")
    assert kube.events("Failed")


def test_gpu_request_without_a_free_gpu_is_unschedulable(kube: Cluster):
    kube.create(job("greedy", "pass", resources={"limits": {"nvidia.com/gpu": 2}}))

    def unschedulable() -> bool:
        conditions = (the_pod(kube, "greedy").get("status") or {}).get("conditions") or []
        return any(c["type"] == "PodScheduled" and c.get("reason") == "Unschedulable" for c in conditions)

    wait_until(unschedulable, 30, "the scheduler to give up on the pod")


def test_readwriteonce_claim_attaches_to_one_node(kube: Cluster, tmp_path):
    kube.claim("rwo", tmp_path.parent / f"{kube.namespace}-rwo")
    mount = {"volumes": [{"name": "r", "persistentVolumeClaim": {"claimName": "rwo"}}],
             "mounts": [{"name": "r", "mountPath": "/results"}]}
    kube.create(job("first", "import time; time.sleep(60)", node_selector={"kubernetes.io/hostname": "node-a"},
                    **mount))
    wait_until(lambda: (the_pod(kube, "first").get("status") or {}).get("phase") == "Running", 30, "first")
    kube.create(job("second", "pass", node_selector={"kubernetes.io/hostname": "node-b"}, **mount))
    wait_until(lambda: any("Multi-Attach" in e.get("message", "") for e in kube.events("FailedMount")),
               30, "a Multi-Attach FailedMount event")
    assert (the_pod(kube, "second").get("status") or {}).get("phase") == "Pending"


def test_deleting_the_owner_garbage_collects_children(kube: Cluster):
    owner = kube.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "owner"}})
    child = job("child", "import time; time.sleep(60)")
    child["metadata"]["ownerReferences"] = [{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner",
                                             "uid": owner["metadata"]["uid"]}]
    kube.create(child)
    the_pod(kube, "child")
    kube.delete(("v1", "ConfigMap"), "owner")
    wait_until(lambda: kube.get(("batch/v1", "Job"), "child") is None, 60, "the garbage collector")
    wait_until(lambda: not kube.job_pods("child"), 60, "the Job's pod to go")


def test_lost_node_goes_not_ready_and_its_pods_stay_terminating(kube: Cluster, kubelet: TestKubelet):
    kube.create(job("stranded", "import time; time.sleep(120)", node_selector={"kubernetes.io/hostname": "node-b"}))
    wait_until(lambda: (the_pod(kube, "stranded").get("status") or {}).get("phase") == "Running", 30, "running")
    kubelet.lose_node("node-b")
    try:
        def not_ready() -> bool:
            node = kube.api.request("GET", "/api/v1/nodes/node-b") or {}
            return any(c["type"] == "Ready" and c["status"] == "Unknown"
                       for c in node.get("status", {}).get("conditions", []))

        wait_until(not_ready, 60, "node-b to go NotReady")
        wait_until(lambda: the_pod(kube, "stranded")["metadata"].get("deletionTimestamp"), 60,
                   "the taint manager to evict the pod")
        assert the_pod(kube, "stranded")["status"]["phase"] == "Running"  # nobody confirms its end
    finally:
        kubelet.restore_node("node-b")
    # Back, the node re-syncs what it holds, as a restarted kubelet does: the pod is gone.
    wait_until(lambda: not kube.job_pods("stranded"), 30, lambda: f"the pod to go: {kube.job_pods('stranded')}")
