"""The CRD: generated from the config models, structural, and every example validates."""

from __future__ import annotations

import copy

import kubernetes_validate
import pytest

from kubetune.config import Config
from kubetune_operator.crd import render
from kubetune_operator.spec import config_from_configmap, parse_spec, resolve_config
from tests.conftest import run_cli
from tests.operator.schema_tools import (
    CRD_PATH,
    EXAMPLES,
    example_documents,
    load_crd,
    openapi_schema,
    validator,
)


def test_crd_file_is_the_generated_one():
    assert CRD_PATH.read_text() == render(), "run: python -m kubetune_operator.crd --write " + str(CRD_PATH)


def test_stale_crd_file_is_reported(tmp_path):
    stale = tmp_path / "crd.yaml"
    stale.write_text(render().replace("minimum: 1", "minimum: 2", 1))
    result = run_cli("python", "-m", "kubetune_operator.crd", "--check", str(stale))
    assert result.returncode == 1 and "is stale" in result.stderr


def test_crd_identity_and_printer_columns():
    crd = load_crd()
    spec = crd["spec"]
    assert crd["metadata"]["name"] == "studyjobs.kubetune.dev"
    assert spec["scope"] == "Namespaced" and spec["names"]["shortNames"] == ["sj"]
    version = spec["versions"][0]
    assert version["name"] == "v1alpha1" and version["subresources"] == {"status": {}}
    columns = {c["name"]: c for c in version["additionalPrinterColumns"] if not c.get("priority")}
    assert list(columns) == ["Phase", "Trials", "Best", "Queued", "Pending", "Age"]
    assert columns["Trials"]["jsonPath"] == ".status.progress"
    assert columns["Best"]["jsonPath"] == ".status.best.value"


def test_crd_is_a_valid_kubernetes_object():
    kubernetes_validate.validate(load_crd(), kubernetes_validate.latest_version(), strict=True)


def _walk(node, path="openAPIV3Schema"):
    yield path, node
    for key, child in (node.get("properties") or {}).items():
        yield from _walk(child, f"{path}.{key}")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _walk(node["additionalProperties"], f"{path}[*]")
    if isinstance(node.get("items"), dict):
        yield from _walk(node["items"], f"{path}[]")


def test_schema_is_structural():
    for path, node in _walk(openapi_schema()):
        free = node.get("x-kubernetes-preserve-unknown-fields") or node.get("x-kubernetes-int-or-string")
        assert "type" in node or free, f"{path} has no type"
        assert not ("properties" in node and "additionalProperties" in node), path
        assert "$ref" not in node and "allOf" not in node, path
        if "anyOf" in node:
            assert node.get("x-kubernetes-int-or-string"), f"{path}: anyOf only for int-or-string"


def _model_keys(model):
    return set(model.model_fields)


def test_config_schema_mirrors_the_config_models():
    config = openapi_schema()["properties"]["spec"]["properties"]["config"]
    assert set(config["properties"]) == _model_keys(Config)
    for section, field in Config.model_fields.items():
        annotation = field.annotation
        model = next((a for a in getattr(annotation, "__args__", (annotation,)) if hasattr(a, "model_fields")), None)
        if model is not None:
            assert set(config["properties"][section]["properties"]) == _model_keys(model), section


def _studyjobs(path):
    return [doc for doc in example_documents(path) if doc.get("kind") == "StudyJob"]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_validates_against_the_crd_schema(path):
    studyjobs = _studyjobs(path)
    assert studyjobs, f"{path.name} holds no StudyJob"
    for doc in studyjobs:
        errors = sorted(validator().iter_errors(doc), key=str)
        assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_passes_the_operators_own_checks(path):
    docs = example_documents(path)
    config_maps = {d["metadata"]["name"]: d for d in docs if d.get("kind") == "ConfigMap"}
    for doc in docs:
        if doc.get("kind") == "StudyJob":
            spec = parse_spec(doc["spec"], doc["metadata"]["name"])
            raw = spec.config
            if raw is None:
                raw = config_from_configmap(config_maps[spec.config_map_ref.name]["data"],
                                            spec.config_map_ref)
            resolve_config(raw, spec)
        else:
            kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)


def test_gpu_example_asks_for_gpus_and_tolerates_their_taint():
    doc = _studyjobs(next(p for p in EXAMPLES if p.name == "gpu-studyjob.yaml"))[0]
    trials = doc["spec"]["trials"]
    assert trials["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in trials["tolerations"]


@pytest.mark.parametrize(("change", "where"), [
    (lambda s: s["trials"].update(parallelism=0), "parallelism"),
    (lambda s: s["trials"].update(maxFailed=-1), "maxFailed"),
    (lambda s: s["config"]["search"].update(n_trials="ten"), "n_trials"),
    (lambda s: s["config"]["search"]["sampler"].update(type="GreedySampler"), "type"),
    (lambda s: s["config"]["optimizer"].update(lr=0), "lr"),
    (lambda s: s["config"]["search"]["search_space"]["optimizer.lr"].update(type="exp"), "type"),
    (lambda s: s["trials"].update(tolerations=[{"operator": "Maybe"}]), "operator"),
    # Counts far past any real cluster: a typo must not ask for a flood.
    (lambda s: s["trials"].update(parallelism=10**9), "parallelism"),
    (lambda s: s["trials"].update(maxFailed=2**63 - 1), "maxFailed"),
    (lambda s: s["trials"].update(retries=10**6), "retries"),
    (lambda s: s["trials"].update(activeDeadlineSeconds=10**12), "activeDeadlineSeconds"),
    (lambda s: s["config"]["search"].update(n_trials=2**63 - 1), "n_trials"),
    (lambda s: s["config"]["training"].update(num_epochs=10**12), "num_epochs"),
])
def test_schema_rejects_bad_values(change, where):
    doc = copy.deepcopy(_studyjobs(next(p for p in EXAMPLES if p.name == "digits-studyjob.yaml"))[0])
    change(doc["spec"])
    errors = list(validator().iter_errors(doc))
    assert errors and any(where in [str(p) for p in e.absolute_path] for e in errors), errors
