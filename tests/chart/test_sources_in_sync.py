"""One source each: the CRD (manifests/crd/) and the objects (the chart) stay in sync."""

from __future__ import annotations

import importlib.util
import subprocess

import pytest
import yaml

from tests.chart.helpers import CRD_CHART, CRD_SOURCE, MANIFESTS, ROOT, manifest_objects


def crd_source_bytes() -> bytes:
    if not CRD_SOURCE.exists():
        pytest.fail(f"{CRD_SOURCE.relative_to(ROOT)} does not exist yet (the operator issue writes it)")
    return CRD_SOURCE.read_bytes()


def test_chart_crd_is_the_same_bytes_as_manifests():
    source = crd_source_bytes()
    assert CRD_CHART.exists(), "run scripts/sync-crd to copy the CRD into the chart"
    assert CRD_CHART.read_bytes() == source, "the chart's CRD differs: run scripts/sync-crd"


def test_sync_crd_check_mode_agrees():
    crd_source_bytes()
    result = subprocess.run([str(ROOT / "scripts" / "sync-crd"), "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_chart_crd_is_a_studyjob_crd():
    crd = yaml.safe_load(crd_source_bytes())
    assert crd["kind"] == "CustomResourceDefinition"
    assert crd["metadata"]["name"] == "studyjobs.kubetune.dev"
    assert crd["spec"]["names"]["kind"] == "StudyJob"


def load_render_manifests():
    spec = importlib.util.spec_from_file_location("render_manifests", ROOT / "scripts" / "render_manifests.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_manifests_are_the_chart_rendered_with_defaults():
    generated = load_render_manifests().manifest_files()
    stale = [
        name for name, text in generated.items()
        if not (MANIFESTS / name).exists() or (MANIFESTS / name).read_text(encoding="utf-8") != text
    ]
    assert not stale, f"manifests/ is stale ({stale}): run .venv/bin/python scripts/render_manifests.py"


def test_kustomization_lists_every_manifest_except_examples():
    kustomization = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text(encoding="utf-8"))
    listed = set(kustomization["resources"])
    on_disk = {
        str(p.relative_to(MANIFESTS)) for p in MANIFESTS.rglob("*.yaml")
        if p.name != "kustomization.yaml" and "examples" not in p.relative_to(MANIFESTS).parts
    }
    assert listed == on_disk | {"crd/studyjobs.kubetune.dev.yaml"}
    missing = [name for name in listed if not (MANIFESTS / name).exists()]
    assert not missing, f"kustomization.yaml lists missing files: {missing}"


def test_manifests_ship_no_password_and_generate_the_secret_from_the_users_file():
    """No password is committed: kustomize builds the Secret from postgres.env, git-ignored."""
    assert not [obj for _, obj in manifest_objects() if obj.get("kind") == "Secret"]
    text = (MANIFESTS / "kustomization.yaml").read_text(encoding="utf-8")
    (generator,) = yaml.safe_load(text)["secretGenerator"]
    assert generator["name"] == "kubetune-postgres" and generator["envs"] == ["postgres.env"]
    assert generator["options"]["disableNameSuffixHash"] is True  # the StatefulSet names it
    assert "openssl rand" in text
    ignored = subprocess.run(["git", "check-ignore", "-q", str(MANIFESTS / "postgres.env")], cwd=ROOT)
    assert ignored.returncode == 0, "manifests/postgres.env must be git-ignored"
