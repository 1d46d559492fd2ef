"""The operator's side of the Optuna study: create or load it, ask, fail, resume.

Every trial the operator starts is first enqueued with ``kubetune.owner`` in its
user attributes and then asked for, so the mark and the trial appear together:
after a crash, a RUNNING trial with the mark but no Job is the operator's own.
How trials count towards ``n_trials`` is :mod:`kubetune.search.ledger`'s, the same for ml-search and the operator.
A disrupted trial resumed in a new Job carries ``kubetune.preempted`` (the new Job's index).
A trial asked ahead (``ask(ahead=True)``) carries ``kubetune.ahead`` from the start, so the
mark is there before the trial is: it waits RUNNING, counted, for its StudyJob's next free
slot; one never launched is released (:meth:`StudyHandle.release_ahead`).
A study deleted from the storage while its StudyJob runs raises :class:`StudyLost`
rather than being made again empty under trial Jobs that still run.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import random
from collections.abc import Callable
from typing import Any, TypeVar

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial

from kubetune.config import Config
from kubetune.config.search_schema import SearchConfig
from kubetune.search.attributes import (
    AHEAD_ATTR,
    JOB_ATTR,
    KUEUE_EVICTIONS_ATTR,
    NODE_LOST_ATTR,
    OWNER_ATTR,
    PREEMPTED_ATTR,
    TARGET_ATTR,
)
from kubetune.search.checks import changed_param, initial_points
from kubetune.search.ledger import enqueue_retry, fail_trial
from kubetune.search.objectives import directions_of, metric_names
from kubetune.search.optuna_internals import (
    preload_trials,
    set_trial_user_attr,
    storage_of,
    study_id_of,
)
from kubetune.search.pruners import build_pruner
from kubetune.search.space import distributions, grid_values
from kubetune.search.study import direction_error, name_metrics, take_sampler_session
from kubetune_operator.failures import Failure
from kubetune_operator.spec import SpecError
from kubetune_operator.usage import UsageBook

optuna.logging.set_verbosity(optuna.logging.WARNING)

F = TypeVar("F", bound=Callable[..., Any])


class StudyLost(Exception):
    """The StudyJob's study is no longer in the storage (deleted while the StudyJob ran)."""

    def __init__(self, study_name: str) -> None:
        super().__init__(
            f"study `{study_name}` is no longer in the storage: it was deleted while this StudyJob used it; "
            "delete the StudyJob and create it again to start a new study")
        self.study_name = study_name


def study_id(storage: optuna.storages.BaseStorage, study_name: str) -> int | None:
    """The id of the study of that name now; None if there is none."""
    try:
        return storage.get_study_id_from_name(study_name)
    except KeyError:
        return None


def _lost_as_error(method: F) -> F:
    """Optuna's KeyError for a study that has gone (or was deleted and made again under
    its name) becomes StudyLost; other KeyErrors stay."""

    @functools.wraps(method)
    def wrapper(self: StudyHandle, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except KeyError:
            if study_id(storage_of(self.study), self.name) == study_id_of(self.study):
                raise
            raise StudyLost(self.name) from None

    return wrapper  # type: ignore[return-value]


def search_fingerprint(config: Config) -> str:
    """What a cached study depends on: everything in ``search`` but the trial count."""
    assert config.search is not None
    return json.dumps(config.search.model_dump(mode="json", exclude={"n_trials"}), sort_keys=True)


class StudyHandle:
    """One StudyJob's handle on its study; lives as long as the search section is unchanged."""

    def __init__(self, storage: optuna.storages.BaseStorage, config: Config, owner: str, *,
                 started: bool = False) -> None:
        """``started``: the StudyJob has run trials in this study, so it must exist (else StudyLost)."""
        search = config.search
        assert search is not None
        if started and study_id(storage, search.study_name) is None:
            raise StudyLost(search.study_name)
        self.owner = owner
        self.fingerprint = search_fingerprint(config)
        self.distributions = distributions(search.search_space)
        self.study = optuna.create_study(
            storage=storage,
            study_name=search.study_name,
            directions=directions_of(search),
            pruner=build_pruner(search),
            load_if_exists=True,
        )
        preload_trials(self.study)  # a restart's first read of a large study, without the ORM
        trials = self.study.get_trials(deepcopy=False)
        if changed := changed_param(self.study, search, trials):  # before anything is written
            key, why = changed
            raise SpecError(f"`spec.config.search.search_space.{key}` {why}: put the old entry "
                            "back, or give the study another name",
                            field=f"spec.config.search.search_space.{key}")
        claim_study(self.study, owner)
        # Optuna's plots and optuna-dashboard name the objectives (val_acc, params).
        name_metrics(self.study, metric_names(search))
        if self.study.directions != directions_of(search):
            error = direction_error(self.study, search)
            raise SpecError(f"`spec.config.{error.path}`" + str(error).removeprefix(f"`{error.path}`"),
                            field=f"spec.config.{error.path}")
        self.grid = grid_points(search) if search.sampler.type == "GridSampler" else None
        self.usage = UsageBook(self.study)  # what the trials' pods held
        self._target: int | None = None
        if not trials:
            self._enqueue_initial(config)
        # Last, once nothing above can fail; no lock: the operator is its studies' only sampler.
        take_sampler_session(self.study, search)  # after a restart: its own seed, not the first draws again

    @property
    def name(self) -> str:
        return self.study.study_name

    @property
    def maximize(self) -> bool:
        """The (first) objective is maximised."""
        return self.study.directions[0] == optuna.study.StudyDirection.MAXIMIZE

    def _enqueue_initial(self, config: Config) -> None:
        """The points ml-search starts a new study with (none for a grid)."""
        for point in initial_points(config):
            self.study.enqueue_trial(point, user_attrs=self._attrs())

    def _attrs(self, ahead: bool = False) -> dict[str, Any]:
        return {OWNER_ATTR: self.owner, AHEAD_ATTR: True} if ahead else {OWNER_ATTR: self.owner}

    @_lost_as_error
    def trials(self) -> list[FrozenTrial]:
        return self.study.get_trials(deepcopy=False)

    @_lost_as_error
    def ask(self, *, waiting: bool, ahead: bool = False) -> optuna.Trial | None:
        """A new RUNNING trial with its params chosen, marked as this StudyJob's.

        A WAITING trial (the config's point, a retry) goes first; without one
        (``waiting`` is False) an empty one carrying the mark is queued and popped at
        once, and the sampler fills it in. A grid's next point is queued whole instead
        (GridSampler does not fill in queued trials); None once every point is taken.
        ``ahead``: the trial is asked ahead of its Job (see AHEAD_ATTR), never from a
        WAITING one.
        """
        if not waiting:
            point = self._next_grid_point() if self.grid is not None else {}
            if point is None:
                return None
            self.study.enqueue_trial(point, user_attrs=self._attrs(ahead))
        trial = self.study.ask(self.distributions)
        for key, value in self._attrs(ahead and not waiting).items():
            if trial.user_attrs.get(key) != value:
                # Someone else enqueued it; whoever pops a trial runs it.
                trial.set_user_attr(key, value)
        return trial

    def _next_grid_point(self) -> dict[str, Any] | None:
        assert self.grid is not None
        taken = {point_key(t.params) for t in self.trials()}
        return next((p for p in self.grid if point_key(p) not in taken), None)

    @_lost_as_error
    def mark_job(self, trial: optuna.Trial | FrozenTrial, job_name: str) -> None:
        """Record that the trial's Job exists (a missing Job then means a lost one); a trial
        that finished meanwhile keeps what it has."""
        with contextlib.suppress(UpdateFinishedTrialError):
            set_trial_user_attr(self.study, trial, JOB_ATTR, job_name)

    @_lost_as_error
    def mark_launched(self, trial: optuna.Trial | FrozenTrial, when: float) -> None:
        """Record when an asked-ahead trial's Job was made: its deadline counts from then."""
        with contextlib.suppress(UpdateFinishedTrialError):
            set_trial_user_attr(self.study, trial, AHEAD_ATTR, when)

    @_lost_as_error
    def release_ahead(self, trial: FrozenTrial, failure: Failure, *, requeue: bool) -> None:
        """Close an asked-ahead trial whose Job was never made: FAIL it with ``failure`` and,
        with ``requeue``, queue its point again as a retry, so that it costs no trial."""
        if fail_trial(self.study, trial, str(failure)) and requeue:
            enqueue_retry(self.study, trial, user_attrs={})  # unmarked, like a deleted StudyJob's

    @_lost_as_error
    def mark_preempted(self, trial: FrozenTrial, count: int) -> bool:
        """Record the ``count``-th resume of a disrupted trial before its new Job exists;
        False if the trial finished meanwhile."""
        try:
            set_trial_user_attr(self.study, trial, PREEMPTED_ATTR, count)
        except UpdateFinishedTrialError:
            return False
        return True

    @_lost_as_error
    def mark_node_lost(self, trial: FrozenTrial, job: str, node: str) -> None:
        """Record that ``job``'s pod is stuck on ``node``, which stopped answering."""
        with contextlib.suppress(UpdateFinishedTrialError):
            set_trial_user_attr(self.study, trial, NODE_LOST_ATTR, [job, node])

    @_lost_as_error
    def mark_evicted(self, trial: FrozenTrial, job: str, count: int) -> None:
        """Record that Kueue evicted ``job`` ``count`` times."""
        evictions = {**kueue_evictions(trial), job: count}
        with contextlib.suppress(UpdateFinishedTrialError):
            set_trial_user_attr(self.study, trial, KUEUE_EVICTIONS_ATTR, evictions)

    @_lost_as_error
    def tell_fail(self, trial: optuna.Trial | FrozenTrial, failure: Failure) -> bool:
        """Fail a RUNNING trial with its reason; False if it finished meanwhile."""
        return fail_trial(self.study, trial, str(failure))

    @_lost_as_error
    def sync_target(self, n_trials: int) -> None:
        """Keep the study's ``n_trials`` user attribute (what ml-search reads) at the spec's."""
        if self._target != n_trials:
            if self.study.user_attrs.get(TARGET_ATTR) != n_trials:
                self.study.set_user_attr(TARGET_ATTR, n_trials)
            self._target = n_trials


def grid_points(search: SearchConfig) -> list[dict[str, Any]]:
    """Every point of the grid, in an order fixed by ``search.sampler.seed``.

    The operator hands out grid points itself, by params: GridSampler's own grid ids
    index an order that a re-seeded sampler (after a restart) would shuffle anew.
    """
    values = grid_values(search.search_space)
    points = [dict(zip(values, combo, strict=True)) for combo in itertools.product(*values.values())]
    random.Random(search.sampler.seed or 0).shuffle(points)
    return points


def point_key(params: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted(params.items()))


def preempted(trial: FrozenTrial | optuna.Trial) -> int:
    """How many times the trial was disrupted and resumed: the index of its current Job."""
    return int(trial.user_attrs.get(PREEMPTED_ATTR, 0))


def kueue_evictions(trial: FrozenTrial | optuna.Trial) -> dict[str, int]:
    """How many times Kueue evicted each of the trial's Jobs (see KUEUE_EVICTIONS_ATTR)."""
    found = trial.user_attrs.get(KUEUE_EVICTIONS_ATTR)
    return {str(k): int(v) for k, v in found.items()} if isinstance(found, dict) else {}


def study_holder(study: optuna.Study) -> str | None:
    """The StudyJob (``namespace/name``) that holds the study; None when free."""
    return study.user_attrs.get(OWNER_ATTR) or None


def claim_study(study: optuna.Study, owner: str) -> None:
    """Hold the study for StudyJob ``owner``; SpecError if another StudyJob holds it.

    Two StudyJobs naming one study would count, ask and clean up each other's trials.
    A study nobody holds (one ``ml-search`` made, or a deleted StudyJob's) is taken.
    """
    holder = study_holder(study)
    if holder is None:
        study.set_user_attr(OWNER_ATTR, owner)
    elif holder != owner:
        raise SpecError(
            f"`spec.config.search.study_name`: study `{study.study_name}` belongs to StudyJob "
            f"`{holder}`; choose another study_name (or delete that StudyJob)",
            field="spec.config.search.study_name",
        )


def _existing(storage: optuna.storages.BaseStorage, study_name: str) -> optuna.Study | None:
    """The study of that name; None if the storage has none."""
    try:
        return optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        return None


def release_study(storage: optuna.storages.BaseStorage, study_name: str, owner: str) -> optuna.Study | None:
    """Let go of ``owner``'s hold on the study, which stays; None if it is not there."""
    study = _existing(storage, study_name)
    if study is not None and study_holder(study) == owner:
        study.set_user_attr(OWNER_ATTR, "")
    return study


def delete_study(storage: optuna.storages.BaseStorage, study_name: str, owner: str) -> bool:
    """Delete the study if ``owner`` holds it (or nobody does); False if it was not deleted."""
    study = _existing(storage, study_name)
    if study is None:
        return False
    if study_holder(study) not in (None, owner):
        return False  # another StudyJob's now: deleting it would pull the study from under it
    optuna.delete_study(study_name=study_name, storage=storage)
    return True
