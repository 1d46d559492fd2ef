"""Every check a search config must pass before anything touches the storage.

The pydantic models already reject unknown keys, impossible ranges, unknown
samplers, pruners and metrics; this module adds what needs the whole config:
does each value of the space make a valid config, is the grid finite, do the
enqueued points lie inside the space. Torch-free: the operator calls it too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    IntDistribution,
    check_distribution_compatibility,
)
from optuna.trial import FrozenTrial, TrialState

from kubetune.config.loader import with_overrides
from kubetune.config.schema import Config
from kubetune.config.search_schema import ParamSpec, SearchConfig
from kubetune.errors import ConfigError
from kubetune.search.attributes import FIXED_PARAMS_ATTR, TRIAL_STEPS_ATTR
from kubetune.search.objectives import check_objectives
from kubetune.search.pruners import trial_steps
from kubetune.search.space import contains, distributions, grid_values

_FLOAT_TYPES = ("uniform", "loguniform", "float")


def require_search(config: Config) -> SearchConfig:
    """The ``search`` section, or a ConfigError saying how to get one."""
    if config.search is None:
        raise ConfigError(
            "`search` is required for a search, but the config has no search section "
            "(ml-init-config <data> --optuna writes one)",
            path="search",
        )
    return config.search


def get_value(config: Config, key: str) -> Any:
    """The value at dotted ``key`` of ``config``."""
    node: Any = config
    for part in key.split("."):
        node = node[part] if isinstance(node, dict) else getattr(node, part)  # model.kwargs.<name>
    return node


def _field_annotation(key: str) -> Any:
    model: Any = Config
    annotation: Any = None
    for part in key.split("."):
        if not hasattr(model, "model_fields"):
            return Any  # below a free-keyed field (model.kwargs.<name>): any type
        annotation = model.model_fields[part].annotation
        model = annotation
    return annotation


def _probe_values(spec: ParamSpec) -> list[Any]:
    if spec.type == "categorical":
        return list(spec.choices or [])
    if spec.type == "int":
        return [int(spec.low), int(spec.high)]  # type: ignore[arg-type]
    return [spec.low, spec.high]


def _check_param(base: Config, key: str, spec: ParamSpec) -> None:
    path = f"search.search_space.{key}"
    if spec.type in _FLOAT_TYPES and _field_annotation(key) is int:
        raise ConfigError(
            f"`{path}` must be an int or categorical parameter because `{key}` is a whole "
            f"number, but got type {spec.type!r}",
            path=path,
        )
    for value in _probe_values(spec):
        try:
            with_overrides(base, {key: value})
        except ConfigError as exc:
            raise ConfigError(
                f"`{path}` must only produce valid values of `{key}`, but {value!r} is not: {exc}",
                path=path,
            ) from None


def check_enqueued(search: SearchConfig) -> None:
    """``search.enqueue_trials``: each a mapping of space keys to values inside the space."""
    dists = distributions(search.search_space)
    for index, point in enumerate(search.enqueue_trials):
        path = f"search.enqueue_trials[{index}]"
        for key, value in point.items():
            if key not in dists:
                raise ConfigError(
                    f"`{path}` must only name search-space keys ({', '.join(dists)}), but got `{key}`",
                    path=path,
                )
            if not contains({key: search.search_space[key]}, {key: value}):
                raise ConfigError(
                    f"`{path}.{key}` must lie inside the search space, but got {value!r}", path=path
                )
    if search.sampler.type == "GridSampler" and search.enqueue_trials:
        raise ConfigError(
            "`search.enqueue_trials` does not apply to GridSampler, which runs every grid point once",
            path="search.enqueue_trials",
        )


def check_search(config: Config) -> SearchConfig:
    """Validate the search section against the rest of ``config``; return it."""
    search = require_search(config)
    if not search.search_space:
        raise ConfigError(
            "`search.search_space` must name at least one config key to search, but it is empty",
            path="search.search_space",
        )
    check_objectives(search)
    expected = "minimize" if search.metric.endswith("loss") else "maximize"
    if search.objectives is None and search.direction != expected:
        raise ConfigError(
            f"`search.direction` must be '{expected}' for metric {search.metric}, "
            f"but got '{search.direction}'",
            path="search.direction",
        )
    base = config.model_copy(update={"search": None})
    for key, spec in search.search_space.items():
        _check_param(base, key, spec)
    if search.trial_epochs is not None and "training.num_epochs" in search.search_space:
        raise ConfigError(
            "`search.trial_epochs` cannot be set while `training.num_epochs` is searched",
            path="search.trial_epochs",
        )
    if search.trial_train_fraction < 1.0 and "data.train_fraction" in search.search_space:
        raise ConfigError(
            "`search.trial_train_fraction` cannot be below 1 while `data.train_fraction` is searched",
            path="search.trial_train_fraction",
        )
    if search.sampler.type == "GridSampler":
        grid_values(search.search_space)  # raises for a continuous range
    check_enqueued(search)
    points = initial_points(config)
    if len(points) > search.n_trials:
        raise ConfigError(
            f"`search.n_trials` must be at least the {len(points)} enqueued trials, "
            f"but got {search.n_trials}",
            path="search.n_trials",
        )
    return search


def config_point(config: Config) -> dict[str, Any]:
    """The config's own values of the searched keys."""
    return {key: get_value(config, key) for key in require_search(config).search_space}


def initial_points(config: Config) -> list[dict[str, Any]]:
    """Points a new study starts with: the config's own values (when inside the space) and
    ``search.enqueue_trials``. GridSampler takes none: its grid already covers the space."""
    search = require_search(config)
    if search.sampler.type == "GridSampler":
        return []
    points: list[dict[str, Any]] = []
    own = config_point(config)
    if search.enqueue_config and contains(search.search_space, own):
        points.append(own)
    for point in search.enqueue_trials:
        if point not in points:
            points.append(dict(point))
    return points


def grid_size(search: SearchConfig) -> int | None:
    """How many points GridSampler's grid has (None for other samplers)."""
    if search.sampler.type != "GridSampler":
        return None
    size = 1
    for values in grid_values(search.search_space).values():
        size *= len(values)
    return size


def cap_to_grid(search: SearchConfig, n_trials: int) -> int:
    """``n_trials``, but never more than GridSampler's grid has points."""
    size = grid_size(search)
    return n_trials if size is None else min(n_trials, size)


def overrides_for_trial(search: SearchConfig, base: Config, params: Mapping[str, Any]) -> dict[str, Any]:
    """Dotted overrides a trial trains with: its params plus the trial-only shortcuts."""
    overrides: dict[str, Any] = dict(params)
    if search.trial_epochs is not None:
        overrides["training.num_epochs"] = search.trial_epochs
    if search.trial_train_fraction < 1.0:
        overrides["data.train_fraction"] = base.data.train_fraction * search.trial_train_fraction
    return overrides


def changed_length(study: optuna.Study, config: Config) -> str | None:
    """Why resuming ``study`` with trials of another length misleads its pruner; None when
    the lengths agree, are unknown, or ``training.num_epochs`` is searched."""
    search = require_search(config)
    if "training.num_epochs" in search.search_space:
        return None
    steps = trial_steps(search, search.trial_epochs or config.training.num_epochs)
    finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    before = {length for t in finished if (length := t.user_attrs.get(TRIAL_STEPS_ATTR)) is not None}
    if not before or steps in before:
        return None
    unit = "steps (epochs x folds)" if search.cross_validation.enabled else "epochs"
    return (f"study `{study.study_name}`'s trials ran {', '.join(map(str, sorted(before)))} {unit}, "
            f"this search's run {steps}: the pruner compares trials step by step, so the new "
            "ones are judged against the old ones' early epochs; resume with the old length, or "
            "start a new study (--study-name)")


def _describe(dist: BaseDistribution) -> str:
    if isinstance(dist, CategoricalDistribution):
        return f"categorical {list(dist.choices)}"
    kind = "int" if isinstance(dist, IntDistribution) else "float"
    return f"{'log-scale ' if dist.log else ''}{kind} {dist.low}..{dist.high}"  # type: ignore[attr-defined]


def changed_param(study: optuna.Study, search: SearchConfig,
                  trials: Sequence[FrozenTrial] | None = None) -> tuple[str, str] | None:
    """The first ``search_space`` entry the study's trials cannot be continued with, and
    why; None when every entry fits them. ``trials``: the study's, if already loaded.

    Optuna samples a parameter again only from a distribution of the kind its trials
    used: the same choices for a categorical, the same log scale for a range, int stays
    int. Ranges may widen or narrow. A queued trial's categorical value must still be
    one of the choices.
    """
    new = distributions(search.search_space)
    trials = study.get_trials(deepcopy=False) if trials is None else trials
    seen: set[str] = set()
    for trial in trials:
        for key, old in trial.distributions.items():
            if key in seen or key not in new:
                continue
            seen.add(key)
            try:
                check_distribution_compatibility(old, new[key])
            except ValueError:
                return key, (f"is {_describe(new[key])}, but study `{study.study_name}` sampled it "
                             f"as {_describe(old)}; a study can widen or narrow a range, not change "
                             "a parameter's kind, choices or log scale")
    for trial in trials:
        if trial.state != TrialState.WAITING:
            continue
        for key, value in trial.system_attrs.get(FIXED_PARAMS_ATTR, {}).items():
            dist = new.get(key)
            if isinstance(dist, CategoricalDistribution) and value not in dist.choices:
                return key, (f"is {_describe(dist)}, but trial {trial.number} of study "
                             f"`{study.study_name}` is queued with {value!r}")
    return None
