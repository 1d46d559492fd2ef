"""Search-space entries as Optuna distributions (no torch: the operator imports this)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from kubetune.config.search_schema import ParamSpec
from kubetune.errors import ConfigError
from kubetune.search import optuna_internals


def to_distribution(spec: ParamSpec) -> BaseDistribution:
    """One ``search_space`` entry as the Optuna distribution it describes."""
    if spec.type == "categorical":
        return CategoricalDistribution(list(spec.choices or []))
    if spec.type == "int":
        step = int(spec.step) if spec.step is not None else 1
        return IntDistribution(int(spec.low), int(spec.high), log=spec.log, step=step)  # type: ignore[arg-type]
    log = spec.type == "loguniform" or spec.log
    return FloatDistribution(float(spec.low), float(spec.high), log=log, step=spec.step)  # type: ignore[arg-type]


def distributions(space: Mapping[str, ParamSpec]) -> dict[str, BaseDistribution]:
    """The whole ``search_space`` as ``{dotted key: distribution}``."""
    return {key: to_distribution(spec) for key, spec in space.items()}


def grid_values(space: Mapping[str, ParamSpec]) -> dict[str, list[Any]]:
    """GridSampler's grid: categorical choices and every value of int ranges.

    A continuous range has no finite grid unless it gives ``step``.
    """
    grid: dict[str, list[Any]] = {}
    for key, spec in space.items():
        if spec.type == "categorical":
            grid[key] = list(spec.choices or [])
        elif spec.type == "int":
            step = int(spec.step or 1)
            grid[key] = list(range(int(spec.low), int(spec.high) + 1, step))  # type: ignore[arg-type]
        elif spec.step is not None and not spec.log and spec.type != "loguniform":
            count = int(round((spec.high - spec.low) / spec.step)) + 1  # type: ignore[operator]
            grid[key] = [round(spec.low + i * spec.step, 12) for i in range(count)]  # type: ignore[operator]
        else:
            raise ConfigError(
                f"`search.search_space.{key}` is a continuous {spec.type} range, which GridSampler "
                "cannot enumerate; use a categorical list of values or give a step",
                path=f"search.search_space.{key}",
            )
    return grid


def value_range(spec: ParamSpec) -> tuple[Any, Any]:
    """The lowest and highest value one ``search_space`` entry can pick."""
    if spec.type == "categorical":
        return min(spec.choices or []), max(spec.choices or [])
    return spec.low, spec.high


def contains(space: Mapping[str, ParamSpec], values: Mapping[str, Any]) -> bool:
    """Whether ``values`` (dotted key -> value) lie inside ``space``."""
    dists = distributions(space)
    for key, dist in dists.items():
        if key not in values:
            return False
        try:
            internal = dist.to_internal_repr(values[key])
        except (ValueError, TypeError):
            return False
        if not optuna_internals.contains(dist, internal):
            return False
    return True
