"""The e2e test's own manifest is valid and restricted (runs without a cluster)."""

from __future__ import annotations

import pytest
import yaml

from tests.chart.helpers import KUBERNETES_VERSIONS, k8s_validate, pod_specs
from tests.chart.pss import restricted_violations
from tests.e2e.kind.test_kind import SEED, seed_documents


def documents() -> list[dict]:
    return [d for d in yaml.safe_load_all(SEED.read_text(encoding="utf-8")) if d]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_seed_manifest_validates(version):
    for document in documents():
        k8s_validate(document, version)


def test_seed_pod_is_restricted():
    pods = [pod for document in documents() for pod in pod_specs(document)]
    assert pods and not any(restricted_violations(spec) for _, spec in pods)


def test_seed_documents_follow_the_example():
    pvc, job = seed_documents("my-data", "/data/sets/digits")
    assert pvc["metadata"]["name"] == "my-data"
    pod = job["spec"]["template"]["spec"]
    assert pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == "my-data"
    command = pod["containers"][0]["command"]
    assert command[:4] == ["ml-init-config", "--sample", "digits", "/data/sets/digits"]
