"""Read the CRD and the examples; check objects against the CRD's openAPIV3Schema.

The API server validates custom resources against their CRD; kmock does not, so the
tests do it here with jsonschema. OpenAPI v3.0 is JSON Schema draft 4 plus
``nullable`` (and Kubernetes' ``x-kubernetes-*`` extensions, which jsonschema ignores).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from kubetune.config.yaml_io import parse_yaml

ROOT = Path(__file__).resolve().parents[2]
CRD_PATH = ROOT / "manifests" / "crd" / "studyjobs.kubetune.dev.yaml"
EXAMPLES = sorted((ROOT / "manifests" / "examples").glob("*.yaml"))


def load_crd() -> dict[str, Any]:
    return yaml.safe_load(CRD_PATH.read_text())


def openapi_schema() -> dict[str, Any]:
    return load_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def _to_json_schema(node: Any) -> Any:
    if isinstance(node, list):
        return [_to_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    result = {key: _to_json_schema(value) for key, value in node.items()
              if key not in ("properties", "additionalProperties", "items")}
    if "properties" in node:
        result["properties"] = {k: _to_json_schema(v) for k, v in node["properties"].items()}
    if isinstance(node.get("additionalProperties"), dict):
        result["additionalProperties"] = _to_json_schema(node["additionalProperties"])
    if "items" in node:
        result["items"] = _to_json_schema(node["items"])
    if node.get("nullable") and "type" in node:
        result["type"] = [node["type"], "null"]
        if "enum" in result:
            result["enum"] = [*result["enum"], None]
    if node.get("x-kubernetes-int-or-string"):
        result.pop("type", None)
        result["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    return result


def validator() -> jsonschema.Draft4Validator:
    return jsonschema.Draft4Validator(_to_json_schema(copy.deepcopy(openapi_schema())))


def example_documents(path: Path) -> list[dict[str, Any]]:
    """Every document of an example file, parsed as kubectl would (YAML 1.2 numbers)."""
    return [parse_yaml(text, str(path)) for text in path.read_text().split("\n---\n") if text.strip()]
