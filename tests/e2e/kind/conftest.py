"""Fixtures for the kind end-to-end test: a cluster, the images, the chart installed.

Set KUBETUNE_E2E_KEEP=1 to keep the cluster afterwards (a cluster that existed before
the run is always kept), KUBETUNE_E2E_SKIP_BUILD=1 to reuse images already loaded.
"""

from __future__ import annotations

import os

import pytest
import yaml

from tests.e2e.kind import cluster

EXAMPLE = cluster.ROOT / "manifests" / "examples" / "digits-studyjob.yaml"


@pytest.fixture(scope="session")
def kind_cluster():
    reason = cluster.missing_tools()
    if reason:
        pytest.skip(reason)
    created = cluster.create_cluster()
    yield cluster.CLUSTER
    if created and os.environ.get("KUBETUNE_E2E_KEEP") != "1":
        cluster.delete_cluster()


def example_trainer_images() -> tuple[str, ...]:
    """Images the digits example names; the local CPU build is loaded under these names too."""
    documents = yaml.safe_load_all(EXAMPLE.read_text(encoding="utf-8"))
    named = {
        ((d.get("spec") or {}).get("trials") or {}).get("image")
        for d in documents if d and d.get("kind") == "StudyJob"
    }
    for image in named - {None}:
        tag = image.rsplit(":", 1)[-1] if ":" in image.rsplit("/", 1)[-1] else "latest"
        assert tag != "latest", f"{EXAMPLE.name}: pin {image} to a tag (latest is always pulled)"
    return tuple(sorted(named - {None, cluster.TRAINER_IMAGE}))


@pytest.fixture(scope="session")
def images(kind_cluster):
    if os.environ.get("KUBETUNE_E2E_SKIP_BUILD") != "1":
        cluster.build_and_load_images(example_trainer_images())
    return {"trainer": cluster.TRAINER_IMAGE, "operator": cluster.OPERATOR_IMAGE}


@pytest.fixture(scope="session")
def release(images):
    """`helm install` of charts/kubetune into a namespace that enforces Pod Security restricted."""
    ns = cluster.NAMESPACE
    cluster.kubectl("create", "namespace", ns, check=False)
    # Enforced before anything starts: a pod that is not "restricted" is refused.
    cluster.kubectl("label", "--overwrite", "namespace", ns,
                    "pod-security.kubernetes.io/enforce=restricted",
                    "pod-security.kubernetes.io/enforce-version=latest")
    operator_repo, operator_tag = images["operator"].split(":")
    trainer_repo, trainer_tag = images["trainer"].split(":")
    cluster.run(
        "helm", "upgrade", "--install", "kubetune", "charts/kubetune",
        "--kube-context", f"kind-{cluster.CLUSTER}", "-n", ns,
        "--set", f"operator.image.repository={operator_repo}",
        "--set", f"operator.image.tag={operator_tag}",
        "--set", f"trials.image.repository={trainer_repo}",
        "--set", f"trials.image.tag={trainer_tag}",
        "--set", f"trials.cpuImage.repository={trainer_repo}",
        "--set", f"trials.cpuImage.tag={trainer_tag}",
        # Required (the chart never generates one). Fixed: the throwaway cluster's database
        # must open again when a kept release (KUBETUNE_E2E_KEEP=1) is upgraded.
        "--set", "postgresql.auth.password=kubetune-e2e-throwaway",
        "--wait", "--timeout", "10m",
        timeout=900,
    )
    yield ns
    if os.environ.get("KUBETUNE_E2E_KEEP") != "1":
        cluster.run("helm", "uninstall", "kubetune", "--kube-context", f"kind-{cluster.CLUSTER}",
                    "-n", ns, "--wait", check=False)
