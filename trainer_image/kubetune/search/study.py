"""Create, resume or load a study in its storage, after every check has passed.

Torch-free. The order matters: :func:`start_study` is the first thing that writes
to the storage, and it runs only after the config, the data and the space are known good.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import optuna

from kubetune.config.schema import Config
from kubetune.config.search_schema import SearchConfig
from kubetune.errors import ConfigError, UsageError
from kubetune.search.attributes import ENQUEUED, SAMPLER_SESSIONS_ATTR, SOURCE_ATTR, TARGET_ATTR
from kubetune.search.checks import (
    cap_to_grid,
    changed_length,
    changed_param,
    initial_points,
    require_search,
)
from kubetune.search.ledger import budget, stored_target
from kubetune.search.locking import StudyLock
from kubetune.search.objectives import directions_of, metric_names
from kubetune.search.pruners import build_pruner
from kubetune.search.samplers import build_sampler, session_seed
from kubetune.search.storage import make_storage, mask_url

log = logging.getLogger(__name__)


@dataclass
class StudyStart:
    study: optuna.Study
    target: int
    created: bool


def load_search_study(config: Config, url: str, study_name: str, *, heartbeat: bool = True) -> optuna.Study:
    """Load an existing study with the config's sampler and pruner (UsageError if missing)."""
    search = require_search(config)
    storage = make_storage(url, heartbeat=heartbeat, must_exist=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        try:
            return optuna.load_study(study_name=study_name, storage=storage,
                                     sampler=build_sampler(search), pruner=build_pruner(search))
        except KeyError:
            raise UsageError(f"no study `{study_name}` in {mask_url(url)}") from None


def take_sampler_session(study: optuna.Study, search: SearchConfig) -> int:
    """Count this process as the study's next sampler session and seed its sampler for it.

    Workers, resumes and operator restarts each get their own seed
    (:func:`~kubetune.search.samplers.session_seed`), so none repeats another's draws.
    Call it under the study lock where other processes may join at the same time (the
    operator, its studies' only sampler, needs none).
    """
    session = int(study.user_attrs.get(SAMPLER_SESSIONS_ATTR, 0))
    study.set_user_attr(SAMPLER_SESSIONS_ATTR, session + 1)
    seed = session_seed(search.sampler.seed, session)
    if seed != search.sampler.seed:
        search = search.model_copy(update={"sampler": search.sampler.model_copy(update={"seed": seed})})
    study.sampler = build_sampler(search)
    return session


def name_metric(study: optuna.Study, metric: str) -> None:
    """Record ``metric`` as the objective's name (Optuna's plots and optuna-dashboard read it)."""
    name_metrics(study, [metric])


def name_metrics(study: optuna.Study, metrics: list[str]) -> None:
    """Record the objectives' names (Optuna's plots and optuna-dashboard read them)."""
    if not study.metric_names:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(metrics)


def direction_error(study: optuna.Study, search: SearchConfig) -> ConfigError:
    """A resumed study's config asks for other directions than the study was created with."""
    stored = [d.name.lower() for d in study.directions]
    if search.objectives is None and len(stored) == 1:
        return ConfigError(f"`search.direction` must be '{stored[0]}' like study `{study.study_name}`, "
                           f"but got '{search.direction}'", path="search.direction")
    return ConfigError(f"`search.objectives` must have the directions {stored} of study `{study.study_name}`, "
                       f"but got {[d.name.lower() for d in directions_of(search)]}", path="search.objectives")


def _study_exists(storage: optuna.storages.BaseStorage, name: str) -> bool:
    try:
        storage.get_study_id_from_name(name)
    except KeyError:
        return False
    return True


def require_startable(storage: optuna.storages.BaseStorage, url: str, study_name: str, *,
                      resume: bool) -> None:
    """Refuse, before any work, a new study whose name is taken (it needs ``--resume``).

    :func:`start_study` checks again under the study lock: another process may start it
    in between.
    """
    if not resume and _study_exists(storage, study_name):
        raise _exists_error(url, study_name)


def _exists_error(url: str, study_name: str) -> UsageError:
    return UsageError(
        f"study `{study_name}` already exists in {mask_url(url)}; pass --resume to "
        "continue it, or choose another --study-name"
    )


def start_study(config: Config, url: str, study_name: str, *, resume: bool,
                n_trials: int | None, storage: optuna.storages.BaseStorage | None = None) -> StudyStart:
    """Create the study (new) or load it (``resume``) and set its total number of trials.

    New study: total = ``n_trials`` or ``search.n_trials``; the config's own point and
    ``search.enqueue_trials`` are queued first. Resumed: ``n_trials`` adds that many to
    the trials counted so far; without it the stored total stands (a study started with
    ``--n-trials 6`` resumes to 6), or ``search.n_trials`` for a study that stored none.
    GridSampler's total never exceeds its grid. ``storage``: one already opened from ``url``.
    """
    search = require_search(config)
    storage = storage if storage is not None else make_storage(url)
    lock = StudyLock(url, study_name)
    try:
        with lock:
            exists = _study_exists(storage, study_name)
            if exists and not resume:
                raise _exists_error(url, study_name)
            created = False
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                if not exists:
                    if resume:
                        log.warning("study %s is not in %s yet: starting it (--resume starts a "
                                    "missing study, so every worker can be started the same way)",
                                    study_name, mask_url(url))
                    study = optuna.create_study(
                        study_name=study_name, storage=storage, directions=directions_of(search),
                        sampler=build_sampler(search), pruner=build_pruner(search),
                    )
                    created = True
                else:
                    study = optuna.load_study(study_name=study_name, storage=storage,
                                              sampler=build_sampler(search), pruner=build_pruner(search))
            if not created and study.directions != directions_of(search):
                raise direction_error(study, search)
            if not created and (changed := changed_param(study, search)):
                key, why = changed
                raise ConfigError(
                    f"`search.search_space.{key}` {why}: put the old entry back, or start a new "
                    "study (--study-name)", path=f"search.search_space.{key}")
            if not created and (length_warning := changed_length(study, config)):
                log.warning(length_warning)
            name_metrics(study, metric_names(search))
            if created:
                target = n_trials or search.n_trials
                for point in initial_points(config)[:target]:
                    study.enqueue_trial(point, user_attrs={SOURCE_ATTR: ENQUEUED})
            elif n_trials is not None:
                target = budget(study, 0).counted + n_trials
            else:
                target = stored_target(study) or search.n_trials
            capped = cap_to_grid(search, target)
            if capped < target:
                log.info("GridSampler: the grid has %d points, so the study runs at most %d trials",
                         capped, capped)
                target = capped
            study.set_user_attr(TARGET_ATTR, target)
    finally:
        lock.close()
    return StudyStart(study=study, target=target, created=created)
