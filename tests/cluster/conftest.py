"""Fixtures on the real control plane: the cluster (once per session), a namespace per test,
the operator as installed, and the digits data on a claim.

Without Go (to build the binaries) these tests skip locally with one line saying how to
get them, and fail where CI promised them (``KUBETUNE_REQUIRE_SERVICES=1``).
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.cluster import Cluster, InstalledOperator, install_operator, namespace
from tests.cluster.controlplane import ControlPlane, build_binaries, environment_ok
from tests.cluster.kubelet import NodeSpec, TestKubelet
from tests.cluster.kueue import Kueue, build_kueue
from tests.conftest import missing_service
from tests.search.own_postgres import OwnPostgres, missing_binaries, own_postgres_server

NODES = [
    NodeSpec("node-a"),
    NodeSpec("node-b"),
    NodeSpec("gpu-1", gpus=1, labels={"nvidia.com/gpu.present": "true"}),
]


@pytest.fixture(scope="session")
def cluster_workdir() -> Iterator[Path]:
    # Not under /tmp: containers get a /tmp of their own, mounted over the host's.
    folder = Path(tempfile.mkdtemp(prefix="kubetune-cluster-", dir="/var/tmp"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def control_plane(cluster_workdir: Path) -> Iterator[ControlPlane]:
    """etcd, kube-apiserver, kube-controller-manager and kube-scheduler, built from source."""
    reason = environment_ok()
    if reason:
        missing_service(f"{reason}; `make test` builds the control plane with scripts/build-kube")
    try:
        binaries = build_binaries()
    except RuntimeError as exc:
        missing_service(str(exc).splitlines()[0])
    plane = ControlPlane(cluster_workdir / "plane", binaries)
    try:
        plane.start()
        yield plane
    finally:
        plane.stop()


@pytest.fixture(scope="session")
def kubelet(control_plane: ControlPlane, cluster_workdir: Path) -> Iterator[TestKubelet]:
    """Three Ready nodes (one with an nvidia.com/gpu) whose pods run as local processes."""
    kubelet = TestKubelet(control_plane, cluster_workdir / "kubelet", NODES).start()
    yield kubelet
    kubelet.stop()


@pytest.fixture(scope="session")
def kueue(control_plane: ControlPlane, cluster_workdir: Path) -> Iterator[Kueue]:
    """Kueue's controller-manager, built from source, with its CRDs and webhooks."""
    if shutil.which("unshare") is None:
        missing_service("unshare (util-linux) is not installed; Kueue runs in a mount namespace of its own")
    try:
        built = build_kueue()
    except RuntimeError as exc:
        missing_service(str(exc).splitlines()[0])
    controller = Kueue(control_plane, cluster_workdir / "kueue", built)
    try:
        controller.start()
        yield controller
    finally:
        controller.stop()


@pytest.fixture
def kube(control_plane: ControlPlane, kubelet: TestKubelet) -> Iterator[Cluster]:
    """A fresh namespace that enforces Pod Security "restricted", with nodes to run on.
    Deleted afterwards: the namespace controller removes what is left, the kubelet stops it."""
    cluster = namespace(control_plane, f"kt-{uuid.uuid4().hex[:8]}")
    yield cluster
    kubelet.hold(lambda job: False)
    kubelet.unpullable.clear()
    control_plane.admin.request("DELETE", f"/api/v1/namespaces/{cluster.namespace}")


@pytest.fixture
def start_operator(control_plane: ControlPlane, kube: Cluster) -> Iterator[Callable[..., InstalledOperator]]:
    """``start_operator(**options)``: the operator as the chart installs it, serving the
    test's namespace; every one started is stopped at the end."""
    credentials = install_operator(control_plane, [kube.namespace])
    started: list[InstalledOperator] = []

    def start(**options: Any) -> InstalledOperator:
        options.setdefault("resync_seconds", 2.0)
        running = InstalledOperator(control_plane, credentials, [kube.namespace], **options).start()
        started.append(running)
        return running

    yield start
    for running in started:
        if running.thread.is_alive():
            running.stop()


@pytest.fixture
def operator(start_operator: Callable[..., InstalledOperator]) -> InstalledOperator:
    """One running operator (see ``start_operator``)."""
    return start_operator()


@pytest.fixture
def digits_claims(kube: Cluster, digits_dir: Path) -> Iterator[dict[str, Path]]:
    """Claims ``datasets`` (holding ``digits/``) and ``results``, as PersistentVolumes."""
    base = Path("/var/tmp") / f"kubetune-claims-{kube.namespace}"
    datasets = kube.claim("datasets", base / "datasets", access_mode="ReadOnlyMany")
    shutil.copytree(digits_dir, datasets / "digits")
    results = kube.claim("results", base / "results", access_mode="ReadWriteMany")
    yield {"datasets": datasets, "results": results}
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def storage(kube: Cluster, postgres_url: str) -> str:
    """Secret ``kubetune-postgres`` (key ``url``) naming a fresh PostgreSQL database."""
    kube.secret("kubetune-postgres", {"url": postgres_url})
    return postgres_url


@pytest.fixture
def own_storage(kube: Cluster) -> Iterator[OwnPostgres]:
    """Secret ``kubetune-postgres`` (key ``url``) naming a PostgreSQL server of the test's own,
    which the test may stop and start (``storage`` names the shared one)."""
    reason = missing_binaries()
    if reason:
        missing_service(f"{reason}; install the postgresql package")
    with own_postgres_server() as server:
        kube.secret("kubetune-postgres", {"url": server.url})
        yield server
