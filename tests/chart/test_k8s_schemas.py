"""Every rendered object and every file in manifests/ is valid Kubernetes, strictly.

Validated against the schemas kubernetes-validate bundles for the oldest and the
newest Kubernetes versions kubetune claims (helpers.KUBERNETES_VERSIONS). StudyJobs
are custom resources: they are validated against the CRD's own openAPIV3Schema.
"""

from __future__ import annotations

import jsonschema
import pytest

from tests.chart.helpers import (
    CRD_SOURCE,
    KUBERNETES_VERSIONS,
    MANIFESTS,
    SCENARIOS,
    crd_schema,
    k8s_validate,
    kustomize_only,
    manifest_objects,
    render,
    strict,
    studyjob_objects,
)

kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="part of the [dev] extra")


def describe(obj: dict) -> str:
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"


def validation_errors(objects: list[tuple[str, dict]], version: str) -> list[str]:
    errors = []
    for where, obj in objects:
        try:
            k8s_validate(obj, version)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            errors.append(f"{where} {describe(obj)}: {path}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            errors.append(f"{where} {describe(obj)}: {exc.message}")
    return errors


def test_claimed_versions_are_bundled_by_kubernetes_validate():
    from kubernetes_validate.utils import all_versions

    bundled = all_versions()
    for version in KUBERNETES_VERSIONS:
        assert any(v.startswith(f"{version}.") for v in bundled), (version, bundled)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_rendered_chart_validates(scenario, version):
    objects = [(scenario, obj) for obj in render(scenario)]
    assert objects
    assert not validation_errors(objects, version)


def core_manifests() -> list[tuple[str, dict]]:
    return [
        (str(path.relative_to(MANIFESTS)), obj)
        for path, obj in manifest_objects()
        if not kustomize_only(obj) and obj.get("kind") != "StudyJob"
    ]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_manifests_validate(version):
    objects = core_manifests()
    kinds = {obj["kind"] for _, obj in objects}
    assert {"Namespace", "ServiceAccount", "ClusterRole", "Deployment", "StatefulSet"} <= kinds
    assert not validation_errors(objects, version)


def test_manifests_include_the_crd():
    if not CRD_SOURCE.exists():
        pytest.fail(f"{CRD_SOURCE.relative_to(MANIFESTS.parent)} does not exist yet (operator issue)")
    kinds = [obj["kind"] for path, obj in manifest_objects() if path == CRD_SOURCE]
    assert kinds == ["CustomResourceDefinition"]


def test_validation_catches_a_typo():
    # The strict schemas reject unknown fields: this is what makes the tests above bite.
    (deployment,) = [o for o in render("default") if o["kind"] == "Deployment"
                     and o["metadata"]["name"] == "kubetune-operator"]
    broken = {**deployment, "spec": {**deployment["spec"], "replicaz": 1}}
    with pytest.raises(kubernetes_validate.ValidationError):
        k8s_validate(broken, KUBERNETES_VERSIONS[0])


def example_studyjobs() -> list[tuple[str, dict]]:
    return [
        (str(path.relative_to(MANIFESTS)), obj)
        for path, obj in manifest_objects()
        if obj.get("kind") == "StudyJob"
    ]


def test_examples_validate_against_the_crd_schema():
    if not CRD_SOURCE.exists():
        pytest.fail(f"{CRD_SOURCE} does not exist yet (operator issue)")
    import yaml

    crd = yaml.safe_load(CRD_SOURCE.read_text(encoding="utf-8"))
    examples = example_studyjobs()
    assert examples, "manifests/examples/ holds no StudyJob"
    assert len(studyjob_objects([o for _, o in examples])) >= 3  # digits CPU, GPU, external PostgreSQL
    group = crd["spec"]["group"]
    served = {v["name"] for v in crd["spec"]["versions"] if v.get("served")}
    for where, example in examples:
        api_group, _, version = example["apiVersion"].partition("/")
        assert api_group == group and version in served, f"{where}: {example['apiVersion']}"
        # OpenAPI v3.0 schemas use draft-4 semantics (boolean exclusiveMaximum); the
        # x-kubernetes-* extensions and CEL rules are the API server's to check.
        schema = strict(crd_schema(crd, version))
        jsonschema.validate(example, schema, cls=jsonschema.Draft4Validator)


def test_crd_check_rejects_unknown_fields_like_kubectl():
    if not CRD_SOURCE.exists():
        pytest.fail(f"{CRD_SOURCE} does not exist yet (operator issue)")
    import yaml

    crd = yaml.safe_load(CRD_SOURCE.read_text(encoding="utf-8"))
    (_, example), *_ = example_studyjobs()
    broken = {**example, "spec": {**example["spec"], "trails": {"parallelism": 2}}}
    with pytest.raises(jsonschema.ValidationError, match="trails"):
        jsonschema.validate(broken, strict(crd_schema(crd)), cls=jsonschema.Draft4Validator)
