"""Load a config: defaults, then the file, then ``--set`` overrides, then short flags.

Every mistake becomes a one-line :class:`ConfigError` naming the dotted key.
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from kubetune.config.architectures import RESERVED_KWARGS, architecture_kind
from kubetune.config.schema import Config
from kubetune.config.search_schema import ParamSpec
from kubetune.config.yaml_io import dump_yaml, parse_yaml, read_yaml_file
from kubetune.errors import ConfigError

# The guide's short flags, each an alias of one dotted key.
ALIASES: dict[str, str] = {
    "lr": "optimizer.lr",
    "batch_size": "training.batch_size",
    "epochs": "training.num_epochs",
    "momentum": "optimizer.momentum",
    "weight_decay": "optimizer.weight_decay",
    "optimizer": "optimizer.type",
    "architecture": "model.architecture",
    "dropout": "model.dropout",
    "seed": "training.seed",
    "device": "training.device",
}

# Fields whose keys are user data (a search space names config fields as keys;
# model.kwargs names the model builder's arguments).
_FREE_KEYS = {"search.search_space", "search.enqueue_trials", "model.kwargs"}
MODEL_KWARGS = "model.kwargs"


def field_paths(model: type[BaseModel] = Config, prefix: str = "") -> list[str]:
    """Every dotted key a config can hold, sections included."""
    paths: list[str] = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        paths.append(path)
        sub = _section_type(field.annotation)
        if sub is not None and path not in _FREE_KEYS:
            paths.extend(field_paths(sub, f"{path}."))
    return paths


def leaf_paths(model: type[BaseModel] = Config) -> list[str]:
    """Dotted keys that hold values (not sections), outside ``search``."""
    all_paths = field_paths(model)
    sections = {p.rsplit(".", 1)[0] for p in all_paths if "." in p}
    return [p for p in all_paths if p not in sections and not p.startswith("search")]


def _section_type(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """`` (did you mean `x`?)`` for a close match, else an empty string."""
    match = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" (did you mean `{match[0]}`?)" if match else ""


def unknown_key_error(path: str) -> ConfigError:
    """The error for a dotted key that names no config field."""
    parent, _, leaf = path.rpartition(".")
    siblings = [p for p in field_paths() if p.rpartition(".")[0] == parent]
    hint = did_you_mean(path, siblings) or did_you_mean(path, field_paths())
    if not hint and leaf:
        leaves = [p for p in field_paths() if p.rpartition(".")[2] == leaf]
        hint = did_you_mean(path, leaves) if leaves else ""
    return ConfigError(f"unknown config key `{path}`{hint}", path=path)


def _format_input(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# pydantic's wording for a wrong type, in the config's terms
_PLAIN = {
    "int_parsing": "must be a whole number", "int_from_float": "must be a whole number",
    "int_type": "must be a whole number", "float_parsing": "must be a number",
    "float_type": "must be a number", "bool_parsing": "must be true or false",
    "bool_type": "must be true or false", "string_type": "must be text",
    "model_type": "must be a section (key: value pairs)", "model_attributes_type": "must be a section (key: value pairs)",
    "dict_type": "must be a mapping (key: value pairs)", "list_type": "must be a list",
}


_KEY_ERRORS = ("extra_forbidden", "invalid_key")


def format_validation_error(exc: ValidationError, prefix: str = "") -> ConfigError:
    """Turn pydantic's report into one line naming the first bad key."""
    errors = exc.errors()
    # A stray or misspelt key often explains a missing one: name it first.
    errors.sort(key=lambda error: error["type"] not in _KEY_ERRORS)
    first = errors[0]
    loc = [str(part) for part in first["loc"] if not str(part).startswith("function-")]
    # Drop union-branch tags pydantic inserts (e.g. 'int', 'literal['auto']').
    loc = [p for p in loc if not (p.startswith(("literal[", "constrained")) or p in {"int", "str"})]
    path = prefix + ".".join(loc)
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    kind = first["type"]
    if kind in _KEY_ERRORS:  # invalid_key: a key that is not text (`1: x`)
        return unknown_key_error(path) if not more else ConfigError(
            f"{unknown_key_error(path)}{more}", path=path
        )
    if kind == "missing":
        return ConfigError(f"`{path}` is required but missing{more}", path=path)
    message = _PLAIN.get(kind) or first["msg"]
    for lead in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(lead)
    message = message.replace("Input should be", "must be")
    if kind == "value_error":
        target = f"`{path}`: " if path else ""
        return ConfigError(f"{target}{message}{more}", path=path or None)
    if not message.startswith("must"):
        message = f"is invalid: {message}"
    if ", but got " not in message:  # a check that names the value itself (model.architecture)
        message = f"{message}, but got {_format_input(first['input'])}"
    return ConfigError(f"`{path}` {message}{more}", path=path)


def validate_config(data: Mapping[str, Any], source: str | None = None,
                    origins: Mapping[str, str] | None = None, *, searching: bool = False) -> Config:
    """Validate a plain mapping as a :class:`Config`.

    An error names where the bad value came from: the option in ``origins`` (dotted
    key -> ``--set optimizer.lr`` or ``--lr``) that set it, else the file ``source``.
    """
    try:
        config = Config.model_validate(dict(data))
        check_search_space_keys(config)
        check_normalize_channels(config)
        check_model(config)
        if searching:
            check_trial_epochs(config)
    except ValidationError as exc:
        error = format_validation_error(exc)
    except ConfigError as exc:
        error = exc
    else:
        return config
    origins = origins or {}
    where = _origin(error.path, origins) or _origin(_CHECKED_WITH.get(error.path or ""), origins) or source
    if where:
        error = ConfigError(f"{where}: {error}", path=error.path)
    raise error from None


# A check of two keys: where the first was not set by an option, the second's option is named.
_CHECKED_WITH = {"search.trial_epochs": "training.num_epochs", "data.normalize.mean": "data.channels"}


def _origin(path: str | None, origins: Mapping[str, str]) -> str | None:
    """The option that set ``path`` or a section holding it (the last one given wins).

    A check of a whole section (``optimizer``: nesterov needs momentum) is the file's,
    even when an option set one of its keys."""
    if path is None:
        return None
    for key, option in reversed(list(origins.items())):
        if path == key or path.startswith(f"{key}."):
            return option
    return None


def check_search_space_keys(config: Config) -> None:
    """Every search-space key must name a config value outside ``search``."""
    if config.search is None:
        return
    leaves = leaf_paths()
    for key in config.search.search_space:
        if key.startswith(f"{MODEL_KWARGS}."):
            check_searched_kwarg(config, key)
        elif key not in leaves:
            hint = did_you_mean(key, leaves)
            path = f"search.search_space.{key}"
            raise ConfigError(
                f"`{path}` does not name a config field{hint}", path=path
            )


def check_searched_kwarg(config: Config, key: str) -> None:
    """A searched ``model.kwargs.<name>`` needs the config's own value, which ml-train uses."""
    name = key[len(MODEL_KWARGS) + 1:]
    if name not in config.model.kwargs:
        path = f"search.search_space.{key}"
        hint = did_you_mean(name, config.model.kwargs)
        raise ConfigError(f"`{path}` must name a key of model.kwargs{hint}, but model.kwargs has no "
                          f"{name!r}; set model.kwargs.{name} to the value ml-train uses", path=path)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def check_normalize_channels(config: Config) -> None:
    """``data.normalize`` gives one value for all channels or one per channel."""
    channels = config.data.channels
    given = len(config.data.normalize.mean)
    if channels is not None and given not in (1, channels):
        path = "data.normalize.mean"
        either = "" if channels == 1 else ", or one for all channels"
        raise ConfigError(
            f"`{path}` must hold {_count(channels, 'value')} for the {_count(channels, 'channel')} "
            f"of `data.channels`{either}, but got {_count(given, 'value')}", path=path)


def check_model(config: Config) -> None:
    """``model.kwargs`` leave kubetune's own arguments alone; a factory owns dropout and weights."""
    model = config.model
    reserved = sorted(set(model.kwargs) & set(RESERVED_KWARGS))
    if reserved:
        path = f"model.kwargs.{reserved[0]}"
        raise ConfigError(f"`{path}` is set by kubetune (from the data and model.pretrained); remove it",
                          path=path)
    kind = architecture_kind(model.architecture)
    if kind == "small_cnn" and model.kwargs:
        raise ConfigError("`model.kwargs` must be empty for small_cnn, which takes none", path="model.kwargs")
    if kind == "factory":
        for path, value in (("model.dropout", model.dropout), ("model.pretrained", model.pretrained)):
            if value:
                raise ConfigError(f"`{path}` applies to torchvision and timm models, not to a factory; "
                                  "pass your factory what it needs through model.kwargs", path=path)


def check_trial_epochs(config: Config) -> None:
    """Trials train at most the final run's epochs."""
    search = config.search
    if search is not None and search.trial_epochs is not None \
            and "training.num_epochs" not in search.search_space \
            and search.trial_epochs > config.training.num_epochs:
        path = "search.trial_epochs"
        raise ConfigError(
            f"`{path}` must be at most `training.num_epochs` ({config.training.num_epochs}), "
            f"but got {search.trial_epochs}: trials train fewer epochs than the final run", path=path)


def parse_set_option(text: str) -> tuple[str, Any]:
    """Split ``a.b=value`` and parse the value as YAML (numbers, bools, lists)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set expects KEY=VALUE, but got {text!r}", path=None)
    value = parse_yaml(raw, f"--set {key}") if raw.strip() else ""
    return key, value


def apply_override(data: dict[str, Any], key: str, value: Any) -> None:
    """Set dotted ``key`` in the raw config mapping, checking the key exists.

    Below a free-keyed section (``search.search_space``) the rest of the key is
    one entry name, dots included: ``search.search_space.optimizer.lr``.
    """
    free = next((p for p in _FREE_KEYS if key.startswith(f"{p}.")), None)
    if free is None and key not in field_paths():
        raise unknown_key_error(key)
    if free == "search.search_space":
        entry, _, field = key[len(free) + 1:].rpartition(".")
        if entry in leaf_paths() and field in ParamSpec.model_fields:
            raise ConfigError(
                f"`{key}`: a search-space entry is set whole, e.g. "
                f"--set '{free}.{entry}={{type: uniform, low: 0.1, high: 0.5}}'", path=key)
    parts = free.split(".") + [key[len(free) + 1 :]] if free else key.split(".")
    node = data
    for depth, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"`{'.'.join(parts[: depth + 1])}` is not a section", path=key)
        node = child
    node[parts[-1]] = value


def resolve_config(
    path: str | Path | None = None,
    *,
    base: Mapping[str, Any] | None = None,
    sets: Iterable[str] = (),
    flags: Mapping[str, Any] | None = None,
    searching: bool = False,
) -> Config:
    """Defaults < file (or ``base``) < each ``--set`` in order < short flags.

    ``searching``: the config runs a search (``ml-search``), so its search section must
    also fit the training settings (``search.trial_epochs``)."""
    if path is not None:
        data = read_yaml_file(path)
        source = str(path)
    else:
        data = copy.deepcopy(dict(base or {}))
        source = None
    origins: dict[str, str] = {}
    for item in sets:
        key, value = parse_set_option(item)
        apply_override(data, key, value)
        origins.pop(key, None)
        origins[key] = f"--set {key}"
    for alias, value in (flags or {}).items():
        if value is not None:
            apply_override(data, ALIASES[alias], value)
            origins.pop(ALIASES[alias], None)
            origins[ALIASES[alias]] = f"--{alias}"
    return validate_config(data, source, origins, searching=searching)


def with_overrides(config: Config, overrides: Mapping[str, Any]) -> Config:
    """A validated copy of ``config`` with dotted-key ``overrides`` applied."""
    data = config.model_dump(mode="json")
    for key, value in overrides.items():
        apply_override(data, key, value)
    return validate_config(data)


def config_to_dict(config: Config, *, include_search: bool = True) -> dict[str, Any]:
    """Plain data, ready for YAML or JSON."""
    data = config.model_dump(mode="json", exclude_none=False)
    if not include_search or data.get("search") is None:
        data.pop("search", None)
    elif data["search"].get("objectives") is not None:
        # Replaced by search.objectives: giving them too is an error when the dump is read back.
        for key in ("metric", "direction"):
            data["search"].pop(key, None)
    return data


def config_to_yaml(config: Config, *, include_search: bool = True) -> str:
    """The resolved config as YAML that ``ml-train --config`` accepts."""
    return dump_yaml(config_to_dict(config, include_search=include_search))
