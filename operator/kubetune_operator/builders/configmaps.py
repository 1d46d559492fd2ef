"""The config a trial pod mounts and the best config a finished study leaves behind."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

import kopf

from kubetune.config import Config, config_to_yaml
from kubetune.config.yaml_io import dump_yaml
from kubetune_operator import names

# The Pareto front's configs in <name>-best-config: at most this many bytes of the 1 MiB
# a ConfigMap may hold (a config is about 1 KiB, so some 500 trials); the rest are only
# on the results volume (pareto/trial-<n>.yaml).
FRONT_CONFIGS_BYTES = 512 * 1024


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
    owner: Mapping[str, Any], best_config: Mapping[str, Any] | str, trial: int, value: float,
    front: Sequence[tuple[int, str]] = (),
) -> dict[str, Any]:
    """ConfigMap ``<name>-best-config``: a complete config ``ml-train --config`` accepts.

    ``best_config``: the config, or its YAML. ``front``: (trial, its config's YAML) for the
    Pareto-optimal trials of ``search.objectives``, best first; each goes under
    ``pareto-trial-<n>.yaml`` while they fit in :data:`FRONT_CONFIGS_BYTES` (a ConfigMap
    holds at most 1 MiB), and the annotation ``kubetune.dev/pareto-configs`` says how many
    of the front's are there (``12/12``).
    """
    name = names.best_config_map_name(owner["metadata"]["name"])
    annotations = {names.ANNOTATION_BEST_TRIAL: str(trial), "kubetune.dev/best-value": repr(float(value))}
    text = best_config if isinstance(best_config, str) else dump_yaml(dict(best_config))
    data = {names.BEST_CONFIG_KEY: text}
    room = FRONT_CONFIGS_BYTES
    for number, config in front:
        size = len(config.encode())
        if size > room:
            break
        data[names.front_config_key(number)] = config
        room -= size
    if front:
        annotations[names.ANNOTATION_FRONT_CONFIGS] = f"{len(data) - 1}/{len(front)}"
    return _config_map(owner, name, "best-config", data, annotations)
