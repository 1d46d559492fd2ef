"""Kueue's controller-manager against the test control plane, with its CRDs and webhooks.

The binary and the CRDs come from ``scripts/build-kueue`` (built from the Go module
``sigs.k8s.io/kueue``, cached outside the checkout). Kueue runs as Kueue's own
manifests install it, minus the cluster around it: its CRDs as they ship; its admission
webhooks for its own objects and for ``batch/v1`` Jobs (the integration kubetune uses),
from the module's ``config/components/webhook/manifests.yaml``, called at
``https://127.0.0.1:<port>`` with a serving certificate from the test CA instead of a
Service and cert-manager. The manager reads its metrics certificate from a fixed path,
``/etc/kueue/metrics/certs``: it runs in a mount namespace of its own with a folder of
the test's bind-mounted there. The visibility API server (the ``VisibilityOnDemand``
feature, an aggregated API kubetune does not read) is off.
"""

from __future__ import annotations

import base64
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import yaml

from kubetune_operator.kube import ApiError
from tests.cluster.controlplane import ROOT, ControlPlane, free_port

BUILD_SCRIPT = ROOT / "scripts" / "build-kueue"
NAMESPACE = "kueue-system"
ETC = "/etc/kueue"  # where the manager reads its metrics certificate (metrics/certs/tls.*)
KUEUE = "kueue.x-k8s.io/v1beta2"
WEBHOOK_GROUPS = {"kueue.x-k8s.io", "batch"}  # Kueue's objects and batch/v1 Jobs


def build_kueue() -> Path:
    """Build (or find in the cache) Kueue's controller-manager and CRDs; their folder."""
    result = subprocess.run([str(BUILD_SCRIPT)], capture_output=True, text=True)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"scripts/build-kueue failed ({result.returncode}): {last}\n{result.stderr[-3000:]}")
    return Path(result.stdout.strip().splitlines()[-1])


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


class Kueue:
    """Start with :meth:`start`, stop with :meth:`stop`."""

    def __init__(self, plane: ControlPlane, workdir: Path, built: Path) -> None:
        self.plane, self.workdir, self.built = plane, workdir, built
        self.process: subprocess.Popen | None = None
        self.webhook_port = free_port()
        self.start_seconds = 0.0

    @property
    def log(self) -> Path:
        return self.workdir / "kueue.log"

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:]) if self.log.exists() else ""

    def start(self, timeout: float = 120) -> Kueue:
        started = time.monotonic()
        assert self.plane.ca is not None and self.plane.admin is not None
        self.workdir.mkdir(parents=True, exist_ok=True)
        serving = self.plane.ca.issue("kueue-webhook", "/CN=kueue-webhook", server=True)
        etc = self.workdir / "etc-kueue"  # /etc/kueue in Kueue's mount namespace
        certs = etc / "metrics" / "certs"
        certs.mkdir(parents=True, exist_ok=True)
        assert serving.cert is not None and serving.key is not None
        shutil.copy(serving.cert, certs / "tls.crt")
        shutil.copy(serving.key, certs / "tls.key")
        self._install_crds()
        self.plane.admin.request("POST", "/api/v1/namespaces", body={
            "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
        config = self.workdir / "config.yaml"
        config.write_text(yaml.safe_dump({
            "apiVersion": "config.kueue.x-k8s.io/v1beta2", "kind": "Configuration",
            "namespace": NAMESPACE,
            "health": {"healthProbeBindAddress": f"127.0.0.1:{free_port()}"},
            "metrics": {"bindAddress": f"127.0.0.1:{free_port()}"},
            "webhook": {"port": self.webhook_port, "host": "127.0.0.1", "certDir": str(certs)},
            "leaderElection": {"leaderElect": False},
            "internalCertManagement": {"enable": False},
            "manageJobsWithoutQueueName": False,
            "integrations": {"frameworks": ["batch/job"]},
            # The on-demand visibility API server (an aggregated API, nothing kubetune reads)
            # wants a certificate at /visibility and an APIService in front of it: off.
            "featureGates": {"VisibilityOnDemand": False},
        }))
        kubeconfig = self.plane.kubeconfig("kueue", self.plane.admin_credentials)
        Path(ETC).mkdir(parents=True, exist_ok=True)  # the mount point, left empty on the host
        script = (f"mount --bind {etc} {ETC} && exec {self.built / 'kueue'} --config {config} "
                  f"--kubeconfig {kubeconfig} --zap-log-level=2")
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                                            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self._install_webhooks()
        self._wait_ready(started + timeout)
        self.start_seconds = time.monotonic() - started
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()

    def _install_crds(self, timeout: float = 60) -> None:
        """Create Kueue's CRDs and wait until the API server serves them all."""
        assert self.plane.admin is not None
        path = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
        made = []
        for file in sorted((self.built / "crd").glob("*.yaml")):
            for crd in _documents(file):
                made.append(crd["metadata"]["name"])
                try:
                    self.plane.admin.request("POST", path, body=crd)
                except ApiError as exc:
                    if exc.status != 409:
                        raise
        deadline = time.monotonic() + timeout
        for name in made:
            while not any(c.get("type") == "Established" and c.get("status") == "True" for c in
                          ((self.plane.admin.request("GET", f"{path}/{name}") or {}).get("status") or {})
                          .get("conditions") or []):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"CRD {name} was not established after {timeout:.0f}s")
                time.sleep(0.2)

    def _install_webhooks(self) -> None:
        """Kueue's webhook configurations for its objects and batch/v1 Jobs, at 127.0.0.1."""
        assert self.plane.admin is not None and self.plane.ca is not None
        bundle = base64.b64encode(self.plane.ca.cert.read_bytes()).decode()
        for config in _documents(self.built / "webhook" / "manifests.yaml"):
            plural = "mutatingwebhookconfigurations" if config["kind"].startswith("Mutating") else \
                "validatingwebhookconfigurations"
            config["metadata"]["name"] = f"kueue-{config['metadata']['name']}"
            hooks = []
            for hook in config["webhooks"]:
                if not {g for rule in hook.get("rules") or [] for g in rule.get("apiGroups") or []} <= WEBHOOK_GROUPS:
                    continue
                path = hook["clientConfig"]["service"]["path"]
                hook["clientConfig"] = {"url": f"https://127.0.0.1:{self.webhook_port}{path}", "caBundle": bundle}
                hooks.append(hook)
            config["webhooks"] = hooks
            self.plane.admin.request("POST", f"/apis/admissionregistration.k8s.io/v1/{plural}", body=config)

    def _wait_ready(self, deadline: float) -> None:
        """Ready once its webhook admits a ResourceFlavor (a dry run: nothing is kept)."""
        assert self.plane.admin is not None
        flavor = {"apiVersion": KUEUE, "kind": "ResourceFlavor", "metadata": {"name": "readiness-probe"}}
        while True:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"kueue exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                self.plane.admin.request("POST", f"/apis/{KUEUE}/resourceflavors", body=flavor,
                                         query=[("dryRun", "All")])
                return
            except ApiError as exc:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"kueue's webhook did not answer: {exc}\n{self.log_tail()}") from exc
            time.sleep(0.3)
