"""The config a trial pod mounts and the best config a finished study leaves behind."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import kopf

from kubetune.config import Config, config_to_yaml
from kubetune.config.yaml_io import dump_yaml
from kubetune_operator import names


def _config_map(
    owner: Mapping[str, Any], name: str, component: str, data: dict[str, str],
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    studyjob = owner["metadata"]["name"]
    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "labels": names.child_labels(studyjob, component),
            "annotations": dict(annotations or {}),
        },
        "data": data,
    }
    kopf.adopt(body, owner=kopf.Body(cast(kopf.RawBody, dict(owner))))
    return body


def config_map(owner: Mapping[str, Any], config: Config) -> dict[str, Any]:
    """ConfigMap ``<name>-config``: the validated config every pod reads at /etc/kubetune."""
    name = names.config_map_name(owner["metadata"]["name"])
    return _config_map(owner, name, "config", {names.CONFIG_KEY: config_to_yaml(config)})


def best_config_map(
    owner: Mapping[str, Any], best_config: Mapping[str, Any], trial: int, value: float
) -> dict[str, Any]:
    """ConfigMap ``<name>-best-config``: a complete config ``ml-train --config`` accepts."""
    name = names.best_config_map_name(owner["metadata"]["name"])
    annotations = {names.ANNOTATION_BEST_TRIAL: str(trial), "kubetune.dev/best-value": repr(float(value))}
    return _config_map(
        owner, name, "best-config", {names.BEST_CONFIG_KEY: dump_yaml(dict(best_config))}, annotations
    )
