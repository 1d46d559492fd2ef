"""Fixtures on the real control plane: the cluster (once per session), a namespace per test,
the operator as installed, and the digits data on a claim.

Without Go (to build the binaries) these tests skip locally with one line saying how to
get them, and fail where CI promised them (``KUBETUNE_REQUIRE_SERVICES=1``).
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster.cluster import Cluster, InstalledOperator, install_operator, namespace
from tests.cluster.controlplane import ControlPlane, build_binaries, environment_ok
from tests.cluster.kubelet import NodeSpec, TestKubelet
from tests.conftest import missing_service

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


@pytest.fixture
def kube(control_plane: ControlPlane, kubelet: TestKubelet) -> Cluster:
    """A fresh namespace that enforces Pod Security "restricted", with nodes to run on."""
    return namespace(control_plane, f"kt-{uuid.uuid4().hex[:8]}")


@pytest.fixture
def operator(control_plane: ControlPlane, kube: Cluster) -> Iterator[InstalledOperator]:
    """The operator as the chart installs it, serving the test's namespace."""
    credentials = install_operator(control_plane, [kube.namespace])
    running = InstalledOperator(control_plane, credentials, [kube.namespace]).start()
    yield running
    if running.thread.is_alive():
        running.stop()
