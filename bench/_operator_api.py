"""The API server under the operator benches (``--api``): kmock's emulator, or a real kube-apiserver.

- ``kmock``: the emulator (tests/operator/emulator.py) in a process of its own, as an
  API server would be; it notes when each object is created.
- ``kube``: etcd and kube-apiserver built from k8s.io/kubernetes (tests/cluster/
  controlplane.py: TLS, client-certificate and service-account authentication,
  ``Node,RBAC`` authorization, the same admission plugins as the cluster tests), with
  the chart's StudyJob CRD; the operator authenticates as the chart's ServiceAccount
  with the chart's (namespaced) RBAC, as in the cluster tests; the bench's own calls
  go as the admin. No controller-manager and no scheduler: the bench's kubelet stand-in
  writes each Job's status itself, standing in for the Job controller (which would
  fight it over that status), and nothing garbage-collects. Job creation times come
  from the API server's audit log (create requests on Jobs only, at their
  ResponseComplete stage, to the microsecond).

Both serve namespace :data:`NAMESPACE`.
"""

from __future__ import annotations

import argparse
import base64
import json
import ssl
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from kubetune_operator import names
from kubetune_operator.kube import ApiError, Kube
from tests.kopf_thread import KopfThread
from tests.polling import wait_until

NAMESPACE = "kt"
API_CHOICES = ("kmock", "kube")
AUDIT_POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived, ResponseStarted]
rules:
  - level: Metadata
    verbs: [create]
    resources: [{group: batch, resources: [jobs]}]
  - level: None
"""


def add_api_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--api", choices=API_CHOICES, default="kmock",
                        help="kmock: kmock's emulator (default, quick); kube: a real etcd + "
                             "kube-apiserver, the bench standing in for the Job controller")


def succeeded_status() -> dict[str, Any]:
    """A Job's status as the Job controller writes it once the Job's one pod succeeded. The
    API server (1.31+) refuses ``Complete`` without ``SuccessCriteriaMet``, ``startTime``
    and ``completionTime``; kmock takes it as it is."""
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    reached = {"status": "True", "reason": "CompletionsReached",
               "message": "Reached expected number of succeeded pods",
               "lastProbeTime": now, "lastTransitionTime": now}
    return {"startTime": now, "completionTime": now, "succeeded": 1, "active": 0, "ready": 0,
            "terminating": 0, "uncountedTerminatedPods": {},
            "conditions": [{"type": "SuccessCriteriaMet", **reached}, {"type": "Complete", **reached}]}


class BenchApi:
    """``with BenchApi(kind, workdir) as api``: the API server is up, namespace
    :data:`NAMESPACE` exists (and, for ``kube``, the CRD and the operator's RBAC)."""

    def __init__(self, kind: str, workdir: Path) -> None:
        if kind not in API_CHOICES:
            raise ValueError(f"kind must be one of {API_CHOICES}, but got {kind!r}")
        self.kind, self.workdir = kind, workdir
        self.url = ""
        self.admin: Kube | None = None  # the bench's own calls
        self.operator_kube: Kube | None = None  # the operator's identity
        self._created_log = workdir / "created.log"
        self._audit_log = workdir / "audit.log"
        self._emulator: Any = None
        self._plane: Any = None
        self._credentials: Any = None

    def __enter__(self) -> BenchApi:
        try:
            (self._start_kube if self.kind == "kube" else self._start_kmock)()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._emulator is not None:
            self._emulator.__exit__(*exc)
            self._emulator = None
        if self._plane is not None:
            self._plane.stop()
            self._plane = None

    def _start_kmock(self) -> None:
        from tests.operator.harness import EmulatorProcess

        emulator = EmulatorProcess(self._created_log)
        self.url = emulator.__enter__()
        self._emulator = emulator
        self.admin = self.operator_kube = Kube.from_host(self.url)

    def _start_kube(self) -> None:
        from tests.cluster.cluster import install_operator, namespace
        from tests.cluster.controlplane import ControlPlane, build_binaries, environment_ok

        reason = environment_ok()
        if reason:
            raise RuntimeError(f"--api kube: {reason}")
        policy = self.workdir / "audit-policy.yaml"
        policy.write_text(AUDIT_POLICY)
        self._plane = ControlPlane(self.workdir / "plane", build_binaries(), controllers=False, apiserver_args=[
            f"--audit-policy-file={policy}", f"--audit-log-path={self._audit_log}", "--audit-log-mode=blocking",
        ]).start()
        self.url, self.admin = self._plane.url, self._plane.admin
        namespace(self._plane, NAMESPACE)
        self._credentials = install_operator(self._plane, [NAMESPACE])
        self.operator_kube = self._plane.client(self._credentials)
        wait_until(self._serves_studyjobs, 30, "the API server to serve StudyJobs")

    def _serves_studyjobs(self) -> bool:
        """Lists answer 429 "storage is (re)initializing" for a moment after the CRD is
        established; the operator would start by retrying them."""
        assert self.operator_kube is not None
        try:
            self.operator_kube.request("GET", f"/apis/{names.GROUP}/{names.VERSION}/namespaces/{NAMESPACE}/"
                                              f"{names.PLURAL}")
        except ApiError as exc:
            if exc.status != 429:
                raise
            return False
        return True

    # What the benches do through it -----------------------------------------------------
    def secret(self, name: str, data: dict[str, str]) -> None:
        assert self.admin is not None
        self.admin.create({"apiVersion": "v1", "kind": "Secret",
                           "metadata": {"name": name, "namespace": NAMESPACE},
                           "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}},
                          NAMESPACE)

    def operator(self, **options: Any) -> KopfThread:
        """The real operator in a thread, watching :data:`NAMESPACE` (not started)."""
        if self.kind == "kmock":
            from tests.operator.harness import OperatorThread

            return OperatorThread(self.url, NAMESPACE, **options)
        from tests.cluster.cluster import InstalledOperator

        return InstalledOperator(self._plane, self._credentials, [NAMESPACE], **options)

    def ssl_context(self) -> ssl.SSLContext | None:
        """For an HTTP client of the bench's own (the admin's client certificate)."""
        if self.kind == "kmock":
            return None
        creds, ca = self._plane.admin_credentials, self._plane.ca
        context = ssl.create_default_context(cafile=str(ca.cert))
        context.load_cert_chain(str(creds.cert), str(creds.key))
        return context

    def created_jobs(self) -> dict[str, float]:
        """When each Job was created, on the :func:`time.perf_counter` clock."""
        if self.kind == "kmock":
            result = {}
            for line in self._created_log.read_text().splitlines() if self._created_log.exists() else []:
                plural, name, when = line.split()
                if plural == "jobs":
                    result[name] = float(when)
            return result
        offset = time.time() - time.perf_counter()  # the audit log's wall clock -> perf_counter
        result = {}
        for line in self._audit_log.read_text().splitlines() if self._audit_log.exists() else []:
            event = json.loads(line)
            name = (event.get("objectRef") or {}).get("name")
            if name and (event.get("responseStatus") or {}).get("code") == 201:
                result[name] = datetime.fromisoformat(event["stageTimestamp"].replace("Z", "+00:00")
                                                      ).timestamp() - offset
        return result
