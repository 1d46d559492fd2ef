"""Render the chart in-process, read manifests/, validate objects against Kubernetes schemas."""

from __future__ import annotations

import copy
import functools
from collections.abc import Iterator
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "kubetune"
MANIFESTS = ROOT / "manifests"
CRD_SOURCE = MANIFESTS / "crd" / "studyjobs.kubetune.dev.yaml"
CRD_CHART = CHART / "crds" / "studyjobs.kubetune.dev.yaml"
RELEASE = "kubetune"
NAMESPACE = "kubetune"

# The Kubernetes versions kubetune claims (docs/kubernetes/install.md): the oldest and the newest, both
# validated in strict mode. 1.37 is the newest schema set kubernetes-validate bundles.
KUBERNETES_VERSIONS = ("1.29", "1.37")


def gpu_values() -> dict:
    return yaml.safe_load((CHART / "values-gpu.yaml").read_text(encoding="utf-8"))


def kueue_values() -> dict:
    return yaml.safe_load((CHART / "values-kueue.yaml").read_text(encoding="utf-8"))


# Value sets the chart must render for; the install commands of docs/kubernetes/install.md map onto these.
SCENARIOS: dict[str, dict] = {
    "default": {},
    "gpu": gpu_values(),
    "kueue": {**gpu_values(), "trials": {**gpu_values()["trials"], **kueue_values()["trials"],
                                         "workloadPriorityClassName": "research"}},
    "external-postgres": {"postgresql": {"enabled": False}, "storage": {"existingSecret": "my-pg"}},
    "namespaced": {"rbac": {"namespaced": True}},
    "namespaced-two": {"rbac": {"namespaced": True}, "operator": {"watchNamespaces": ["ml-a", "ml-b"]}},
    "no-tensorboard": {"tensorboard": {"enabled": False}},
    "grpc-proxy": {"grpcProxy": {"enabled": True}},
    "dashboard": {"dashboard": {"enabled": True}},
}


# The chart requires a database password (or an existing Secret); renders get this one.
TEST_PASSWORD = "8b1e6c2f0d9a47e3b5c1f4a2"


def with_password(values: dict | None, password: str | None = TEST_PASSWORD) -> dict:
    """``values`` plus ``postgresql.auth.password`` unless they name a password or Secret."""
    values = copy.deepcopy(values or {})
    auth = values.setdefault("postgresql", {}).setdefault("auth", {})
    if password is not None and not (auth.get("password") or auth.get("existingSecret")):
        auth["password"] = password
    return values


def render_files(values: dict | None = None, *, namespace: str = NAMESPACE,
                 password: str | None = TEST_PASSWORD) -> dict[str, str]:
    """Template path -> rendered text, by Helm's own engine (no helm binary, no cluster).

    ``password=None`` renders ``values`` without the test password.
    """
    import helm_python as helm

    with helm.Chart.load(CHART) as chart:
        return chart.render(with_password(values, password), name=RELEASE, namespace=namespace)


def render_objects(values: dict | None = None, *, namespace: str = NAMESPACE,
                   password: str | None = TEST_PASSWORD) -> list[dict]:
    """The rendered chart's objects, in template order (NOTES.txt left out)."""
    files = render_files(values, namespace=namespace, password=password)
    objects = []
    for path in sorted(files):
        if path.endswith(".txt"):
            continue
        objects.extend(doc for doc in yaml.safe_load_all(files[path]) if doc)
    return objects


@functools.cache
def _render_scenario(name: str) -> tuple[dict, ...]:
    return tuple(render_objects(SCENARIOS[name]))


def render(name: str) -> list[dict]:
    """The objects of one scenario (rendered once per session)."""
    return list(_render_scenario(name))


def manifest_objects() -> list[tuple[Path, dict]]:
    """(file, object) for every YAML document under manifests/, examples included."""
    found = []
    for path in sorted(MANIFESTS.rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc:
                found.append((path, doc))
    return found


def find(objects: list[dict], kind: str, name: str | None = None) -> list[dict]:
    return [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]


def pod_specs(obj: dict) -> Iterator[tuple[str, dict]]:
    """(label, pod spec) of every pod template an object carries."""
    kind, spec = obj.get("kind"), obj.get("spec") or {}
    label = f"{kind}/{obj.get('metadata', {}).get('name')}"
    if kind == "Pod":
        yield label, spec
    elif kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
        yield label, spec["template"]["spec"]
    elif kind == "CronJob":
        yield label, spec["jobTemplate"]["spec"]["template"]["spec"]


def kustomize_only(obj: dict) -> bool:
    """kustomization.yaml: a kustomize input, not an API object."""
    return str(obj.get("apiVersion", "")).startswith("kustomize.config.k8s.io/")


def studyjob_objects(objects: list[dict]) -> list[dict]:
    return [o for o in objects if o.get("kind") == "StudyJob"]


@functools.lru_cache(maxsize=1)
def _patch_schema_cache() -> None:
    # kubernetes-validate re-reads its (large) JSON schemas on every call; cache them.
    import kubernetes_validate.utils as kv_utils

    kv_utils.schema_contents = functools.lru_cache(maxsize=None)(kv_utils.schema_contents)


def k8s_validate(obj: dict, version: str) -> None:
    """Validate against the bundled Kubernetes schemas for ``version``, strict mode.

    Raises ``kubernetes_validate.ValidationError`` (bad object) or
    ``SchemaNotFoundError`` (a kind this Kubernetes version does not serve).
    """
    import kubernetes_validate

    _patch_schema_cache()
    kubernetes_validate.validate(obj, version, strict=True)


def crd_schema(crd: dict, version: str | None = None) -> dict:
    """The openAPIV3Schema of the CRD's served version (the storage one by default)."""
    versions = crd["spec"]["versions"]
    chosen = next(v for v in versions if (v["name"] == version if version else v.get("storage")))
    return chosen["schema"]["openAPIV3Schema"]


def strict(schema: dict) -> dict:
    """The CRD schema as kubectl's default strict field validation applies it.

    Kubernetes rejects fields a structural schema does not declare (unless the node
    preserves unknown fields); JSON Schema allows them unless told otherwise.
    """
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) if isinstance(v, dict) else v for k, v in schema.items()}
    if "properties" in schema:
        out["properties"] = {k: strict(v) for k, v in schema["properties"].items()}
        if not schema.get("x-kubernetes-preserve-unknown-fields") and "additionalProperties" not in schema:
            out["additionalProperties"] = False
    if isinstance(schema.get("items"), dict):
        out["items"] = strict(schema["items"])
    for key in ("allOf", "anyOf", "oneOf"):
        if key in schema:
            out[key] = [strict(s) for s in schema[key]]
    return out

