"""Config models, loading, overrides and error formatting (no torch)."""

from kubetune.config.architectures import COMMON_ARCHITECTURES
from kubetune.config.loader import (
    ALIASES,
    apply_override,
    config_to_dict,
    config_to_yaml,
    field_paths,
    leaf_paths,
    resolve_config,
    validate_config,
    with_overrides,
)
from kubetune.config.schema import METRICS, Config
from kubetune.config.search_schema import DEFAULT_STORAGE, ParamSpec, SearchConfig

__all__ = [
    "ALIASES",
    "COMMON_ARCHITECTURES",
    "Config",
    "DEFAULT_STORAGE",
    "METRICS",
    "ParamSpec",
    "SearchConfig",
    "apply_override",
    "config_to_dict",
    "config_to_yaml",
    "field_paths",
    "leaf_paths",
    "resolve_config",
    "validate_config",
    "with_overrides",
]
