"""A test kubelet: Node objects kept Ready, and the pods bound to them run as local processes.

Each node authenticates as itself (``system:node:<name>`` in ``system:nodes``), so the
API server's Node authorizer and NodeRestriction admission apply to what it does: it
reads only the Secrets, ConfigMaps and claims of its own pods. Per pod it does what
the kubelet does: mounts volumes (a claim's PersistentVolume folder, ``emptyDir``,
ConfigMap and Secret files), runs init containers in order and then the containers
(see :mod:`tests.cluster.containers`), and reports status: ``Pending`` → ``Running``
→ ``Succeeded``/``Failed`` with each container's exit code and reason. A pod that
is being deleted gets SIGTERM, then SIGKILL after its grace period, and the kubelet
confirms the deletion.

ReadWriteOnce claims attach to one node at a time: a pod on a second node stays
``ContainerCreating`` with a ``FailedMount`` (Multi-Attach) event until the first
node's pods are gone, as with a real block volume.

Holding pods back: :meth:`TestKubelet.hold` keeps the pods of chosen Jobs in
``ContainerCreating`` (a slow image pull) until :meth:`TestKubelet.release`.

Faults, on request: :meth:`TestKubelet.oom_kill` (exit 137, reason OOMKilled),
images listed in :attr:`TestKubelet.unpullable` (ErrImagePull, then
ImagePullBackOff), :meth:`TestKubelet.lose_node` (heartbeats stop, processes die,
nothing more is reported: the node goes NotReady and its pods stay Terminating) and
:meth:`TestKubelet.restore_node` (the node re-syncs the pods it lost, as a restarted kubelet does).
Evictions go through the API (:meth:`tests.cluster.cluster.Cluster.evict`); unschedulable
pods are the scheduler's own verdict.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import os
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubetune_operator.kube import ApiError, Kube
from tests.cluster import containers
from tests.cluster.controlplane import ControlPlane

logger = logging.getLogger("tests.kubelet")
LEASE_SECONDS = 1.0
# What the kubelet reports for a container of a deleted pod that it never ran.
UNKNOWN = {"terminated": {"exitCode": 137, "reason": "ContainerStatusUnknown",
                          "message": "The container could not be located when the pod was terminated"}}


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_micro() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class NodeSpec:
    name: str
    cpu: str = "4"
    memory: str = "16Gi"
    gpus: int = 0
    labels: dict[str, str] = field(default_factory=dict)


class PodGone(Exception):
    """The pod was deleted or its node lost while the kubelet worked on it."""


class Node:
    """One node: its client, heartbeat and pod workers."""

    def __init__(self, kubelet: TestKubelet, spec: NodeSpec, client: Kube) -> None:
        self.kubelet, self.spec, self.client = kubelet, spec, client
        self.name = spec.name
        self.alive = True
        self.workers: dict[str, PodWorker] = {}
        self.orphans: set[str] = set()  # pods whose processes died with the node (lose_node)
        self.lock = threading.Lock()

    # Registration and heartbeat ----------------------------------------------------
    def register(self) -> None:
        capacity = {"cpu": self.spec.cpu, "memory": self.spec.memory, "pods": "110",
                    "ephemeral-storage": "100Gi"}
        if self.spec.gpus:
            capacity["nvidia.com/gpu"] = str(self.spec.gpus)
        labels = {"kubernetes.io/hostname": self.name, "kubernetes.io/os": "linux",
                  "kubernetes.io/arch": "amd64", **self.spec.labels}
        try:
            self.client.request("POST", "/api/v1/nodes", body={
                "apiVersion": "v1", "kind": "Node", "metadata": {"name": self.name, "labels": labels},
            })
        except ApiError as exc:
            if exc.status != 409:
                raise
        self.client.request("PATCH", f"/api/v1/nodes/{self.name}/status", body={"status": {
            "capacity": capacity, "allocatable": capacity,
            "conditions": self._conditions(),
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"},
                          {"type": "Hostname", "address": self.name}],
            "nodeInfo": {"kubeletVersion": "v1.37.2-test", "containerRuntimeVersion": "local://1",
                         "operatingSystem": "linux", "architecture": "amd64", "machineID": "",
                         "systemUUID": "", "bootID": "", "kernelVersion": "", "osImage": "",
                         "kubeProxyVersion": ""},
        }}, content_type="application/strategic-merge-patch+json")

    def _conditions(self) -> list[dict[str, Any]]:
        stamp = now()
        ok = {"lastHeartbeatTime": stamp, "lastTransitionTime": stamp}
        return [
            {"type": "Ready", "status": "True", "reason": "KubeletReady",
             "message": "test kubelet is posting ready status", **ok},
            *({"type": t, "status": "False", "reason": f"KubeletHas{r}", **ok} for t, r in (
                ("MemoryPressure", "SufficientMemory"), ("DiskPressure", "NoDiskPressure"),
                ("PIDPressure", "SufficientPID"))),
        ]

    def heartbeat(self) -> None:
        """Renew the node's Lease (what the node lifecycle controller watches)."""
        path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{self.name}"
        spec = {"holderIdentity": self.name, "leaseDurationSeconds": 40, "renewTime": now_micro()}
        if self.client.request("GET", path) is None:
            node = self.client.request("GET", f"/api/v1/nodes/{self.name}") or {}
            owner = [{"apiVersion": "v1", "kind": "Node", "name": self.name,
                      "uid": node.get("metadata", {}).get("uid", "")}]
            try:
                self.client.request("POST", path.rsplit("/", 1)[0], body={
                    "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": self.name, "ownerReferences": owner}, "spec": spec})
            except ApiError as exc:
                if exc.status != 409:
                    raise
        else:
            self.client.request("PATCH", path, body={"spec": spec},
                                content_type="application/merge-patch+json")

    def set_ready(self) -> None:
        self.client.request("PATCH", f"/api/v1/nodes/{self.name}/status",
                            body={"status": {"conditions": self._conditions()}},
                            content_type="application/strategic-merge-patch+json")

    # Pods ------------------------------------------------------------------------
    def sync(self, pod: dict[str, Any]) -> None:
        """React to the latest copy of one of this node's pods."""
        if not self.alive:
            return
        uid = pod["metadata"]["uid"]
        with self.lock:
            worker = self.workers.get(uid)
            if uid in self.orphans:
                if pod["metadata"].get("deletionTimestamp"):
                    self.kubelet.confirm_deletion(self, pod)
                return  # never started again: restore_node reports how it ended
            if worker is None:
                if pod["metadata"].get("deletionTimestamp"):
                    self.kubelet.confirm_deletion(self, pod)
                    return
                if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                    return
                worker = self.workers[uid] = PodWorker(self, pod)
                worker.start()
            elif pod["metadata"].get("deletionTimestamp"):
                worker.terminate(pod)

    def forget(self, uid: str) -> None:
        with self.lock:
            worker = self.workers.pop(uid, None)
        if worker is not None:
            worker.kill()


class PodWorker(threading.Thread):
    """Everything the kubelet does for one pod, start to end."""

    def __init__(self, node: Node, pod: dict[str, Any]) -> None:
        super().__init__(name=f"pod-{pod['metadata']['name']}", daemon=True)
        self.node, self.pod = node, pod
        self.kubelet = node.kubelet
        meta = pod["metadata"]
        self.name, self.namespace, self.uid = meta["name"], meta["namespace"], meta["uid"]
        self.dir = self.kubelet.workdir / "pods" / f"{self.namespace}_{self.name}_{self.uid[:8]}"
        self.processes: dict[str, subprocess.Popen] = {}
        self.terminating = threading.Event()
        self.grace = float(pod["spec"].get("terminationGracePeriodSeconds", 30))
        self.oom = False
        self.started_at = now()  # the pod's startTime: the node took it
        self.container_started: dict[str, str] = {}  # container -> when it started running
        self.attached: list[str] = []
        self.envs: dict[str, dict[str, str]] = {}

    @property
    def path(self) -> str:
        return f"/api/v1/namespaces/{self.namespace}/pods/{self.name}"

    # Status ------------------------------------------------------------------------
    def patch_status(self, status: dict[str, Any]) -> None:
        if not self.node.alive:
            raise PodGone(self.name)
        status = {**status, "hostIP": "127.0.0.1", "hostIPs": [{"ip": "127.0.0.1"}]}
        try:
            answer = self.node.client.request(
                "PATCH", self.path + "/status", body={"metadata": {"uid": self.uid}, "status": status},
                content_type="application/strategic-merge-patch+json")
        except ApiError as exc:
            if exc.status in (404, 409):
                raise PodGone(self.name) from None
            raise
        if answer is None:
            raise PodGone(self.name)

    def event(self, type_: str, reason: str, message: str) -> None:
        self.kubelet.event(self.node, self.pod, type_, reason, message)

    def conditions(self, ready: bool, initialized: bool = True) -> list[dict[str, Any]]:
        stamp = now()
        values = {"Initialized": initialized, "ContainersReady": ready, "Ready": ready,
                  "PodReadyToStartContainers": True}
        # The kubelet says why a pod is not ready; the node controller, marking the pods
        # of a node that stopped answering, leaves the reason as it was (empty).
        # (A strategic merge keeps a field the patch leaves out: None removes a stale reason.)
        return [{"type": k, "status": "True" if v else "False", "lastTransitionTime": stamp,
                 "reason": None if v else "ContainersNotReady"} for k, v in values.items()]

    def container_status(self, container: dict[str, Any], state: dict[str, Any]) -> dict[str, Any]:
        running = "running" in state
        return {"name": container["name"], "image": container["image"], "imageID": "",
                "containerID": f"local://{self.uid[:8]}-{container['name']}",
                "ready": running, "started": running, "restartCount": 0, "state": state}

    # The pod's life ----------------------------------------------------------------
    def run(self) -> None:
        try:
            self._run()
        except PodGone:
            pass
        except Exception:  # noqa: BLE001 - a kubelet bug must not kill the others
            logger.exception("test kubelet: pod %s", self.name)
        finally:
            self.kubelet.detach(self)

    def _run(self) -> None:
        spec = self.pod["spec"]
        inits, mains = spec.get("initContainers") or [], spec["containers"]
        waiting = {"waiting": {"reason": "ContainerCreating"}}
        self.patch_status({"phase": "Pending", "startTime": self.started_at,
                           "conditions": self.conditions(False, not inits),
                           "containerStatuses": [self.container_status(c, waiting) for c in mains]})
        while self.kubelet.is_held(self.pod):  # a slow image pull, until the test lets it go
            if self.terminating.wait(0.05):
                self._end_unstarted(inits, mains)
                return
        bad = [c for c in [*inits, *mains] if c["image"] in self.kubelet.unpullable]
        if bad:
            self._fail_to_pull(bad[0], inits, mains)
            return
        mounts = self._mount_volumes()
        if mounts is None:
            self._end_unstarted(inits, mains)
            return
        for index, container in enumerate(inits):
            self.container_started[container["name"]] = now()
            self.patch_status({"initContainerStatuses": [
                self.container_status(c, {"running": {"startedAt": self.container_started[c["name"]]}} if i == index else
                                      {"waiting": {"reason": "PodInitializing"}})
                for i, c in enumerate(inits)]})
            code = self._wait([container], mounts)[container["name"]]
            terminated = self._terminated(code, container["name"])
            if code != 0:
                self._finish(mains, {container["name"]: code}, inits, failed_init=True)
                return
            self.patch_status({"initContainerStatuses": [
                self.container_status(c, {"terminated": terminated} if i <= index else
                                      {"waiting": {"reason": "PodInitializing"}})
                for i, c in enumerate(inits)]})
        if self.terminating.is_set():
            self._finish(mains, {}, inits)
            return
        self.container_started.update({c["name"]: now() for c in mains})
        self._start(mains, mounts)  # running before it is reported as Running
        self.patch_status({"phase": "Running", "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}],
                           "conditions": self.conditions(True),
                           "containerStatuses": [
                               self.container_status(c, {"running": {"startedAt": self.container_started[c["name"]]}})
                               for c in mains]})
        codes = self._wait(mains)
        self._finish(mains, codes, inits)

    def _terminated(self, code: int, container: str) -> dict[str, Any]:
        """A container's end as a kubelet reports it: from when it started running until now."""
        if self.oom and code != 0:
            reason = "OOMKilled"
        else:
            reason = "Completed" if code == 0 else "Error"
        return {"exitCode": code, "reason": reason, "startedAt": self.container_started.get(container, self.started_at),
                "finishedAt": now()}

    def _finish(self, mains: list[dict[str, Any]], codes: dict[str, int], inits: list[dict[str, Any]],
                failed_init: bool = False) -> None:
        # A container that never ran: its pod was deleted first, or an init container failed.
        never_ran = UNKNOWN if self.terminating.is_set() else {"waiting": {"reason": "PodInitializing"}}
        statuses = [self.container_status(c, {"terminated": self._terminated(codes[c["name"]], c["name"])}
                                          if c["name"] in codes else never_ran) for c in mains]
        ok = not failed_init and len(codes) == len(mains) and all(code == 0 for code in codes.values())
        status: dict[str, Any] = {"phase": "Succeeded" if ok else "Failed",
                                  "conditions": self.conditions(False), "containerStatuses": statuses}
        if failed_init:
            status["initContainerStatuses"] = [
                self.container_status(c, {"terminated": self._terminated(codes[c["name"]], c["name"])})
                for c in inits if c["name"] in codes]
        self.patch_status(status)
        if self.terminating.is_set():
            self.kubelet.confirm_deletion(self.node, self.pod)

    def _fail_to_pull(self, container: dict[str, Any], inits: list, mains: list) -> None:
        image = container["image"]
        reason = "ErrImagePull"
        message = f'Failed to pull image "{image}": rpc error: code = NotFound desc = not found'
        self.event("Warning", "Failed", message)
        while not self.terminating.wait(1.0 if reason == "ErrImagePull" else 5.0):
            waiting = {"waiting": {"reason": reason, "message": message}}
            key = "initContainerStatuses" if container in inits else "containerStatuses"
            group = inits if container in inits else mains
            self.patch_status({key: [self.container_status(c, waiting if c is container else
                                                           {"waiting": {"reason": "ContainerCreating"}})
                                     for c in group]})
            if reason == "ErrImagePull":
                reason = "ImagePullBackOff"
                message = f'Back-off pulling image "{image}"'
                self.event("Normal", "BackOff", message)
        self._end_unstarted(inits, mains)

    # Volumes -------------------------------------------------------------------------
    def _mount_volumes(self) -> dict[str, Path] | None:
        """Volume name -> local folder; None when the pod was deleted while waiting to mount."""
        while True:
            try:
                volumes = self._try_mount()
                spec = self.pod["spec"]
                self.envs = {c["name"]: self._env(c) for c in [*(spec.get("initContainers") or []),
                                                               *spec["containers"]]}
                return volumes
            except MountError as exc:
                self.event("Warning", "FailedMount", str(exc))
                if self.terminating.wait(2.0):
                    return None

    def _end_unstarted(self, inits: list[dict[str, Any]], mains: list[dict[str, Any]]) -> None:
        """A pod deleted before its containers ran: Failed, as the kubelet reports it (the Job
        controller's finalizer stays until the pod is terminal), then the deletion is confirmed."""
        status: dict[str, Any] = {"phase": "Failed", "conditions": self.conditions(False, False),
                                  "containerStatuses": [self.container_status(c, UNKNOWN) for c in mains]}
        if inits:
            status["initContainerStatuses"] = [self.container_status(c, UNKNOWN) for c in inits]
        self.patch_status(status)
        self.kubelet.confirm_deletion(self.node, self.pod)

    def _try_mount(self) -> dict[str, Path]:
        spec = self.pod["spec"]
        fs_group = (spec.get("securityContext") or {}).get("fsGroup")
        result: dict[str, Path] = {}
        for volume in spec.get("volumes") or []:
            name = volume["name"]
            local = self.dir / "volumes" / name
            if "persistentVolumeClaim" in volume:
                local = self.kubelet.claim_folder(self, volume["persistentVolumeClaim"]["claimName"])
            elif "configMap" in volume or "secret" in volume:
                self._write_keys(volume, local)
            else:  # emptyDir, projected tokens: an empty folder of the pod's own
                local.mkdir(parents=True, exist_ok=True)
            if fs_group is not None and "configMap" not in volume and "secret" not in volume:
                containers.share_with_group(local, int(fs_group))
            result[name] = local
        return result

    def _write_keys(self, volume: dict[str, Any], local: Path) -> None:
        kind, ref = ("configmaps", volume["configMap"]) if "configMap" in volume else ("secrets", volume["secret"])
        name = ref.get("name") or ref.get("secretName")
        obj = self._get(kind, name)
        if obj is None:
            if ref.get("optional"):
                local.mkdir(parents=True, exist_ok=True)
                return
            raise MountError(f'MountVolume.SetUp failed for volume "{volume["name"]}" : '
                             f'{kind[:-1]} "{name}" not found')
        local.mkdir(parents=True, exist_ok=True)
        data = {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()} if kind == "secrets" \
            else {k: v.encode() for k, v in (obj.get("data") or {}).items()}
        items = ref.get("items")
        for key, value in data.items():
            paths = [i["path"] for i in items if i["key"] == key] if items else [key]
            for path in paths:
                target = local / path
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(value)
                target.chmod(0o644)

    # Processes -------------------------------------------------------------------------
    def _start(self, group: list[dict[str, Any]], volumes: dict[str, Path]) -> None:
        for container in group:
            self.processes[container["name"]] = containers.start(
                self._process(container, volumes), self.kubelet.log_path(self.pod, container["name"]))
        if self.oom or self.terminating.is_set():  # the fault or the deletion came first
            self._signal(signal.SIGKILL)

    def _wait(self, group: list[dict[str, Any]], volumes: dict[str, Path] | None = None) -> dict[str, int]:
        if volumes is not None:
            self._start(group, volumes)
        codes = {}
        for container in group:
            process = self.processes[container["name"]]
            code = process.wait()
            codes[container["name"]] = 128 - code if code < 0 else code  # -9 -> 137 as a runtime reports
        if not self.node.alive:
            raise PodGone(self.name)
        return codes

    def _process(self, container: dict[str, Any], volumes: dict[str, Path]) -> containers.Process:
        pod_security = self.pod["spec"].get("securityContext") or {}
        security = {**pod_security, **(container.get("securityContext") or {})}
        uid = security.get("runAsUser")
        if uid is not None and not self.kubelet.may_switch_user:
            uid = None
        mounts = []
        for mount in container.get("volumeMounts") or []:
            source = volumes[mount["name"]]
            if mount.get("subPath"):
                source = source / mount["subPath"]
                source.mkdir(parents=True, exist_ok=True)
            mounts.append(containers.Mount(source, mount["mountPath"], bool(mount.get("readOnly"))))
        fs_group = pod_security.get("fsGroup")
        return containers.Process(
            argv=[*container.get("command", []), *container.get("args", [])],
            env=self.envs[container["name"]], mounts=mounts, uid=uid, gid=security.get("runAsGroup"),
            groups=[g for g in (security.get("runAsGroup"), fs_group) if g is not None],
            workdir=container.get("workingDir") or "/",
        )

    def _env(self, container: dict[str, Any]) -> dict[str, str]:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/",
               "HOSTNAME": self.name, "LANG": "C.UTF-8",
               "OMP_NUM_THREADS": "1",  # the node's share of a 2-core machine
               "KUBETUNE_TEST_KUBELET_NODE": self.node.name}
        if os.environ.get("PYTHONPATH"):  # the "image" is the code under test (a worktree's included)
            env["PYTHONPATH"] = os.environ["PYTHONPATH"]
        for source in container.get("envFrom") or []:
            for kind, key in (("configMapRef", "configmaps"), ("secretRef", "secrets")):
                if kind in source:
                    env.update(self._read_all(key, source[kind]["name"]))
        for var in container.get("env") or []:
            if "value" in var:
                env[var["name"]] = var["value"]
                continue
            ref = var.get("valueFrom") or {}
            if "secretKeyRef" in ref or "configMapKeyRef" in ref:
                kind = "secrets" if "secretKeyRef" in ref else "configmaps"
                key_ref = ref.get("secretKeyRef") or ref["configMapKeyRef"]
                values = self._read_all(kind, key_ref["name"])
                if key_ref["key"] in values:
                    env[var["name"]] = values[key_ref["key"]]
                elif not key_ref.get("optional"):
                    raise MountError(f'couldn\'t find key {key_ref["key"]} in {kind[:-1]} '
                                     f'{self.namespace}/{key_ref["name"]}')
            elif "fieldRef" in ref:
                field_path = ref["fieldRef"]["fieldPath"]
                meta = self.pod["metadata"]
                env[var["name"]] = {"metadata.name": meta["name"], "metadata.namespace": self.namespace,
                                    "metadata.uid": self.uid, "spec.nodeName": self.node.name,
                                    }.get(field_path, "")
        return env

    def _get(self, kind: str, name: str) -> dict[str, Any] | None:
        """A ConfigMap or Secret as this node may read it. The Node authorizer learns of the pod's
        binding a moment after the scheduler writes it, so a refusal is retried as the kubelet does."""
        try:
            return self.node.client.request("GET", f"/api/v1/namespaces/{self.namespace}/{kind}/{name}")
        except ApiError as exc:
            raise MountError(f"{kind[:-1]} {self.namespace}/{name}: {exc}") from exc

    def _read_all(self, kind: str, name: str) -> dict[str, str]:
        obj = self._get(kind, name) or {}
        data = obj.get("data") or {}
        if kind == "secrets":
            return {k: base64.b64decode(v).decode() for k, v in data.items()}
        return dict(data)

    # Signals -------------------------------------------------------------------------
    def terminate(self, pod: dict[str, Any]) -> None:
        """The pod is being deleted: SIGTERM now, SIGKILL after its grace period."""
        if self.terminating.is_set():
            return
        grace = pod["metadata"].get("deletionGracePeriodSeconds")
        self.grace = float(grace if grace is not None else self.grace)
        self.terminating.set()
        self._signal(signal.SIGTERM)
        threading.Timer(max(self.grace, 0.0), self._signal, args=(signal.SIGKILL,)).start()

    def kill(self) -> None:
        self.terminating.set()
        self._signal(signal.SIGKILL)

    def oom_kill(self) -> None:
        self.oom = True
        self._signal(signal.SIGKILL)

    def _signal(self, sig: int) -> None:
        for process in list(self.processes.values()):
            if process.poll() is None:
                try:
                    os.killpg(process.pid, sig)
                except ProcessLookupError:
                    pass


class MountError(Exception):
    pass


class TestKubelet:
    """Nodes and their pods; start with :meth:`start`, stop with :meth:`stop`."""

    __test__ = False  # not a pytest class

    def __init__(self, plane: ControlPlane, workdir: Path, nodes: list[NodeSpec]) -> None:
        assert plane.ca is not None
        self.plane, self.workdir = plane, workdir
        workdir.mkdir(parents=True, exist_ok=True)
        workdir.chmod(0o755)
        self.nodes: dict[str, Node] = {}
        for spec in nodes:
            credentials = plane.ca.issue(f"node-{spec.name}", f"/CN=system:node:{spec.name}/O=system:nodes")
            self.nodes[spec.name] = Node(self, spec, plane.client(credentials))
        self.unpullable: set[str] = set()
        self.hold_jobs: Callable[[str], bool] = lambda job: False
        self.released: set[str] = set()
        self.attachments: dict[str, tuple[str, set[str]]] = {}  # PV -> (node, pod uids)
        self.attach_lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []
        self.may_switch_user = containers.can_run_as(10001)
        if not self.may_switch_user:
            logger.warning("test kubelet: uid 10001 cannot run %s; containers run as root",
                           containers.BIN)

    def start(self) -> TestKubelet:
        for node in self.nodes.values():
            node.register()
            node.heartbeat()
        self._thread(self._heartbeats, "kubelet-heartbeat")
        self._thread(self._watch_pods, "kubelet-pods")
        return self

    def stop(self) -> None:
        self.stopping.set()
        for node in self.nodes.values():
            for uid in list(node.workers):
                node.forget(uid)

    def _thread(self, target: Any, name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self.threads.append(thread)

    def _heartbeats(self) -> None:
        ticks = 0
        while not self.stopping.wait(LEASE_SECONDS):
            ticks += 1
            for node in self.nodes.values():
                if not node.alive:
                    continue
                try:
                    node.heartbeat()
                    if ticks % 10 == 0:
                        node.set_ready()
                except Exception:  # noqa: BLE001 - keep beating
                    logger.exception("test kubelet: heartbeat of %s", node.name)

    def _watch_pods(self) -> None:
        """One watch over every pod bound to a node (the node authorizer allows it per node,
        the admin lists them all at once; each node then acts with its own credentials)."""
        admin = self.plane.admin
        assert admin is not None
        version = ""
        while not self.stopping.is_set():
            try:
                if not version:
                    listing = admin.request("GET", "/api/v1/pods", query=[("fieldSelector", "spec.nodeName!=")])
                    assert listing is not None
                    version = listing["metadata"]["resourceVersion"]
                    for pod in listing.get("items") or []:
                        self._dispatch("ADDED", pod)
                for kind, pod in watch(admin, "/api/v1/pods", [
                        ("fieldSelector", "spec.nodeName!="), ("resourceVersion", version),
                        ("allowWatchBookmarks", "true"), ("timeoutSeconds", "30")]):
                    if self.stopping.is_set():
                        return
                    if kind == "ERROR":
                        version = ""
                        break
                    version = pod["metadata"]["resourceVersion"]
                    if kind != "BOOKMARK":
                        self._dispatch(kind, pod)
            except Exception:  # noqa: BLE001 - reconnect, as a kubelet does
                if not self.stopping.is_set():
                    logger.exception("test kubelet: pod watch")
                version = ""
                time.sleep(0.5)

    def _dispatch(self, kind: str, pod: dict[str, Any]) -> None:
        node = self.nodes.get(pod["spec"].get("nodeName", ""))
        if node is None:
            return
        if kind == "DELETED":
            node.forget(pod["metadata"]["uid"])
            node.orphans.discard(pod["metadata"]["uid"])
        else:
            node.sync(pod)

    # Shared by pod workers --------------------------------------------------------------
    def confirm_deletion(self, node: Node, pod: dict[str, Any]) -> None:
        """The kubelet's last word on a terminated pod: delete it with grace 0."""
        if not node.alive:
            return
        meta = pod["metadata"]
        try:
            node.client.request(
                "DELETE", f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}",
                body={"gracePeriodSeconds": 0, "preconditions": {"uid": meta["uid"]}})
        except ApiError as exc:
            if exc.status not in (404, 409):
                raise

    def event(self, node: Node, pod: dict[str, Any], type_: str, reason: str, message: str) -> None:
        meta = pod["metadata"]
        try:
            node.client.request("POST", f"/api/v1/namespaces/{meta['namespace']}/events", body={
                "apiVersion": "v1", "kind": "Event",
                "metadata": {"name": f"{meta['name']}.{uuid.uuid4().hex[:12]}"},
                "involvedObject": {"apiVersion": "v1", "kind": "Pod", "name": meta["name"],
                                   "namespace": meta["namespace"], "uid": meta["uid"]},
                "type": type_, "reason": reason, "message": message,
                "source": {"component": "kubelet", "host": node.name},
                "firstTimestamp": now(), "lastTimestamp": now(), "count": 1,
                "reportingComponent": "kubelet", "reportingInstance": node.name,
            })
        except ApiError:
            logger.exception("test kubelet: event %s", reason)

    def log_path(self, pod: dict[str, Any], container: str) -> Path:
        meta = pod["metadata"]
        return self.workdir / "logs" / meta["namespace"] / f"{meta['name']}_{container}.log"

    def logs(self, namespace: str, pod: str, container: str | None = None) -> str:
        """What ``kubectl logs`` would show for a pod this kubelet ran."""
        folder = self.workdir / "logs" / namespace
        files = sorted(folder.glob(f"{pod}_{container or '*'}.log"))
        return "".join(f.read_text(errors="replace") for f in files)

    def claim_folder(self, worker: PodWorker, claim: str) -> Path:
        """The PersistentVolume folder behind ``claim``, attached to the worker's node."""
        client = worker.node.client
        pvc = client.request("GET", f"/api/v1/namespaces/{worker.namespace}/persistentvolumeclaims/{claim}")
        if pvc is None or (pvc.get("status") or {}).get("phase") != "Bound":
            raise MountError(f'persistentvolumeclaim "{claim}" not found or not bound')
        pv_name = pvc["spec"]["volumeName"]
        pv = client.request("GET", f"/api/v1/persistentvolumes/{pv_name}")
        if pv is None:
            raise MountError(f'persistentvolume "{pv_name}" not found')
        modes = set(pv["spec"].get("accessModes") or [])
        if "ReadWriteMany" not in modes and "ReadOnlyMany" not in modes:
            with self.attach_lock:
                node, users = self.attachments.get(pv_name, (worker.node.name, set()))
                if node != worker.node.name and users:
                    raise MountError(
                        f'Multi-Attach error for volume "{pv_name}" Volume is already used by '
                        f"{len(users)} pod(s) on node {node}")
                users.add(worker.uid)
                self.attachments[pv_name] = (worker.node.name, users)
                worker.attached.append(pv_name)
        path = Path(pv["spec"]["hostPath"]["path"])
        path.mkdir(parents=True, exist_ok=True)
        return path

    def detach(self, worker: PodWorker) -> None:
        with self.attach_lock:
            for pv in worker.attached:
                node, users = self.attachments.get(pv, ("", set()))
                users.discard(worker.uid)
                if not users:
                    self.attachments.pop(pv, None)

    # Holding pods back -----------------------------------------------------------------
    def is_held(self, pod: dict[str, Any]) -> bool:
        job = (pod["metadata"].get("labels") or {}).get("job-name", "")
        return bool(job) and job not in self.released and self.hold_jobs(job)

    def hold(self, predicate: Callable[[str], bool]) -> None:
        """Keep the pods of Jobs whose name matches ``predicate`` in ContainerCreating."""
        self.released.clear()
        self.hold_jobs = predicate

    def release(self, *jobs: str) -> None:
        """Let these Jobs' pods start (all of them when none is named)."""
        if jobs:
            self.released.update(jobs)
        else:
            self.hold_jobs = lambda job: False

    # Faults ------------------------------------------------------------------------------
    def worker(self, namespace: str, pod: str) -> PodWorker:
        for node in self.nodes.values():
            for worker in list(node.workers.values()):
                if worker.name == pod and worker.namespace == namespace:
                    return worker
        raise KeyError(f"no running pod {namespace}/{pod}")

    def oom_kill(self, namespace: str, pod: str) -> None:
        """The container hits its memory limit: SIGKILL, exit 137, reason OOMKilled."""
        self.worker(namespace, pod).oom_kill()

    def lose_node(self, name: str) -> None:
        """The node drops off the network: its processes die and nothing more is reported."""
        node = self.nodes[name]
        node.alive = False
        node.orphans.update(node.workers)
        for uid in list(node.workers):
            node.forget(uid)

    def restore_node(self, name: str) -> None:
        """The node answers again. Like a kubelet after a restart, it re-syncs the pods bound
        to it: those whose processes died with the node end Failed with
        ContainerStatusUnknown (exit 137), as a real one reports, and those being deleted
        it then confirms gone."""
        node = self.nodes[name]
        node.alive = True
        node.set_ready()
        node.heartbeat()
        admin = self.plane.admin
        assert admin is not None
        listing = admin.request("GET", "/api/v1/pods", query=[("fieldSelector", f"spec.nodeName={name}")]) or {}
        for pod in listing.get("items") or []:
            if pod["metadata"]["uid"] not in node.orphans:
                continue
            if (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed"):
                self._lost_with_node(node, pod)
            if pod["metadata"].get("deletionTimestamp"):
                self.confirm_deletion(node, pod)

    def _lost_with_node(self, node: Node, pod: dict[str, Any]) -> None:
        meta, containers_ = pod["metadata"], pod["spec"].get("containers") or []
        statuses = [{"name": c["name"], "image": c["image"], "imageID": "", "ready": False, "started": False,
                     "restartCount": 0, "state": UNKNOWN} for c in containers_]
        try:
            node.client.request(
                "PATCH", f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/status",
                body={"status": {"phase": "Failed", "containerStatuses": statuses}},
                content_type="application/strategic-merge-patch+json")
        except ApiError as exc:
            if exc.status != 404:
                raise


def watch(kube: Kube, path: str, query: list[tuple[str, str]]):
    """Yield ``(type, object)`` from a watch until the server closes it."""
    client = kube.api_client
    method, url, headers, body, post = client.param_serialize(
        "GET", path, query_params=[*query, ("watch", "true")],
        header_params={"Accept": "application/json"}, auth_settings=["BearerToken"])
    response = client.call_api(method, url, headers, body, post, _request_timeout=(5.0, 60.0))
    if response.status != 200:
        response.read()
        raise ApiError(response.status, response.data.decode(errors="replace")[:300])
    buffer = b""
    for chunk in response.response.stream(4096, decode_content=True):
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            if line.strip():
                event = json.loads(line)
                yield event["type"], event["object"]
