"""kubetune's only door into Optuna's private API: one small function per use.

Optuna's public API works on the trial an ``optimize`` loop or ``ask`` hands out. The
operator and trial pods also act on trials they hold only by number or as a
:class:`~optuna.trial.FrozenTrial` (a pod loads the trial the operator asked; the
operator marks, fails and resumes trials whose ``Trial`` object is long gone), which
takes the study's storage and the ids it keys trials by. Nothing else in kubetune
touches an underscore attribute of an Optuna object.

``tests/search/test_optuna_internals.py`` runs each function against the installed
Optuna, so an upgrade that moves one of these fails there, naming the attribute.
Torch-free: the operator imports it.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
from collections import defaultdict
from collections.abc import Container, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.storages import BaseStorage, RDBStorage
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

__all__ = [
    "HeartbeatStorage",
    "cached_storage",
    "cached_trials",
    "can_upsert",
    "contains",
    "pareto_front",
    "preload_trials",
    "read_trials",
    "reuse_trials_read",
    "set_trial_system_attr",
    "set_trial_user_attr",
    "set_trial_user_attrs",
    "stale_trial_ids",
    "storage_of",
    "stored_trial",
    "study_id_of",
    "trial_id_by_number",
    "trial_id_of",
    "trial_view",
    "write_outcome",
    "write_params_and_attrs",
    "write_user_attrs",
    "writes_together",
]

AnyTrial = optuna.Trial | FrozenTrial


def storage_of(study: optuna.Study) -> BaseStorage:
    """The storage the study reads and writes through (``Study._storage``)."""
    return study._storage


def study_id_of(study: optuna.Study) -> int:
    """The storage's id of the study (``Study._study_id``)."""
    return study._study_id


def trial_id_of(trial: AnyTrial) -> int:
    """The storage's id of the trial (``Trial._trial_id``, ``FrozenTrial._trial_id``)."""
    return trial._trial_id


def trial_id_by_number(study: optuna.Study, number: int) -> int:
    """The storage's id of trial ``number`` of the study; KeyError if it has none."""
    return storage_of(study).get_trial_id_from_study_id_trial_number(study_id_of(study), number)


def stored_trial(study: optuna.Study, trial: AnyTrial) -> FrozenTrial:
    """The trial as the storage holds it now (what other processes wrote included)."""
    return storage_of(study).get_trial(trial_id_of(trial))


def set_trial_user_attr(study: optuna.Study, trial: AnyTrial, key: str, value: Any) -> None:
    """Write a user attribute on any of the study's trials, a FrozenTrial included.

    Raises :class:`optuna.exceptions.UpdateFinishedTrialError` once the trial has finished.
    """
    if isinstance(trial, optuna.Trial):
        trial.set_user_attr(key, value)  # keeps the Trial's own copy of its attributes current
    else:
        storage_of(study).set_trial_user_attr(trial_id_of(trial), key, value)


def set_trial_user_attrs(study: optuna.Study, trial: optuna.Trial, attrs: dict[str, Any], *,
                         with_outcome: bool = False) -> None:
    """Write several user attributes on the running ``trial``: one transaction where the
    storage offers it (kubetune's own RDB storage), else one call each. The Trial's own
    copy of its attributes (``Trial._cached_frozen_trial``) is kept current.

    ``with_outcome``: the trial is told next in this process; the storage may write the
    attributes in the transaction that records its state (they are lost if it is never told).
    """
    if not attrs:
        return
    storage = storage_of(study)
    later = getattr(storage, "set_trial_user_attrs_with_outcome", None) if with_outcome else None
    many = later or getattr(storage, "set_trial_user_attrs", None)
    if many is None:
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        return
    many(trial_id_of(trial), attrs)
    trial._cached_frozen_trial.user_attrs.update(attrs)


@contextmanager
def writes_together(trial: optuna.Trial) -> Iterator[None]:
    """The params and user attributes the block writes on ``trial`` reach the storage in one
    transaction as it ends (an ask's params with the trial's first attributes), where the
    storage can hold them (kubetune's RDB storage); elsewhere each as it is made. The Trial
    itself sees every write at once (Optuna keeps its own copy)."""
    hold = getattr(storage_of(trial.study), "writes_held", None)
    if hold is None:
        yield
        return
    with hold(trial_id_of(trial), study_id_of(trial.study)):
        yield


def write_params_and_attrs(rdb: RDBStorage, trial_id: int, params: Sequence[tuple[str, float, BaseDistribution]],
                           attrs: dict[str, Any], known: dict[str, BaseDistribution], *,
                           heartbeat: bool = False) -> None:
    """Store params (name, internal value, distribution) and upsert user attributes of a
    running trial in one transaction of three statements (four with ``heartbeat``: the
    trial's heartbeat upserted as ``RDBStorage.record_heartbeat`` records it; only where
    :func:`can_upsert`).

    Each param's distribution must fit the one the study's other trials hold under its name,
    as ``RDBStorage.set_trial_param`` checks; ``known``: those already looked up (it gains
    the ones looked up here)."""
    import sqlalchemy
    from optuna.distributions import (
        check_distribution_compatibility,
        distribution_to_json,
        json_to_distribution,
    )
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session

    with _create_scoped_session(rdb.scoped_session) as session:
        trial = models.TrialModel.find_or_raise_by_id(trial_id, session)
        rdb.check_trial_is_updatable(trial_id, trial.state)
        looked: dict[str, BaseDistribution] = {}
        for name, _, distribution in params:
            previous = known.get(name)
            if previous is None:
                stored = (session.query(models.TrialParamModel.distribution_json).join(models.TrialModel)
                          .filter(models.TrialModel.study_id == trial.study_id)
                          .filter(models.TrialParamModel.param_name == name).first())
                previous = looked[name] = json_to_distribution(stored[0]) if stored else distribution
            check_distribution_compatibility(previous, distribution)
        if params:
            session.execute(sqlalchemy.insert(models.TrialParamModel), [
                {"trial_id": trial_id, "param_name": name, "param_value": value,
                 "distribution_json": distribution_to_json(distribution)} for name, value, distribution in params])
        _upsert_user_attrs(rdb, session, trial_id, attrs)
        if heartbeat:
            _upsert_heartbeat(rdb, session, trial_id)
    known.update(looked)


def write_outcome(rdb: RDBStorage, storage: BaseStorage, trial_id: int, state: TrialState,
                  values: Sequence[float] | None, attrs: dict[str, Any]) -> bool:
    """``storage.set_trial_state_values`` (``storage``: ``rdb`` or Optuna's cache in front of
    it) with ``attrs`` upserted in the same transaction. They go first into the thread's
    session (``RDBStorage.scoped_session`` hands each thread one session), which the state's
    write then commits. The trial is checked first, its row locked: Optuna's own check
    reads a finished trial through that same session, which would commit the attributes."""
    from optuna.storages._rdb import models

    session = rdb.scoped_session()
    try:
        trial = models.TrialModel.find_or_raise_by_id(trial_id, session, for_update=True)
        rdb.check_trial_is_updatable(trial_id, trial.state)
        _upsert_user_attrs(rdb, session, trial_id, attrs)
    except BaseException:
        session.rollback()
        session.close()
        raise
    return storage.set_trial_state_values(trial_id, state, values)


def write_user_attrs(rdb: RDBStorage, trial_id: int, attrs: dict[str, Any]) -> None:
    """Upsert ``attrs`` as the running trial's user attributes in one transaction
    (``optuna.storages._rdb.storage._create_scoped_session``)."""
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session

    with _create_scoped_session(rdb.scoped_session, True) as session:
        trial = models.TrialModel.find_or_raise_by_id(trial_id, session)
        rdb.check_trial_is_updatable(trial_id, trial.state)
        _upsert_user_attrs(rdb, session, trial_id, attrs)


def can_upsert(rdb: RDBStorage) -> bool:
    """Whether the database has ``INSERT … ON CONFLICT`` (PostgreSQL, SQLite 3.24 and later)."""
    import sqlite3

    return rdb.engine.name == "postgresql" or (rdb.engine.name == "sqlite" and sqlite3.sqlite_version_info >= (3, 24))


def _insert(rdb: RDBStorage, table: Any) -> Any:
    """The dialect's INSERT, the one with ``on_conflict_do_update`` (where :func:`can_upsert`)."""
    from sqlalchemy.dialects import postgresql, sqlite

    return (postgresql if rdb.engine.name == "postgresql" else sqlite).insert(table)


def _upsert_heartbeat(rdb: RDBStorage, session: Any, trial_id: int) -> None:
    """The trial's heartbeat row, now (``TrialHeartbeatModel``, one row per trial)."""
    import sqlalchemy
    from optuna.storages._rdb import models

    table = models.TrialHeartbeatModel
    stmt = _insert(rdb, table).values(trial_id=trial_id, heartbeat=sqlalchemy.func.current_timestamp())
    session.execute(stmt.on_conflict_do_update(index_elements=[table.trial_id],
                                               set_={"heartbeat": stmt.excluded.heartbeat}))


def _upsert_user_attrs(rdb: RDBStorage, session: Any, trial_id: int, attrs: dict[str, Any]) -> None:
    """One statement for all of ``attrs`` where the database has ``ON CONFLICT`` (PostgreSQL,
    SQLite), else Optuna's own upsert per attribute (``RDBStorage._set_trial_attr_without_commit``)."""
    from optuna.storages._rdb import models

    if not attrs:
        return
    table = models.TrialUserAttributeModel
    if not can_upsert(rdb):
        for key, value in attrs.items():
            rdb._set_trial_attr_without_commit(session, table, trial_id, key, value)
        return
    stmt = _insert(rdb, table).values([{"trial_id": trial_id, "key": key, "value_json": json.dumps(value)}
                                         for key, value in attrs.items()])
    session.execute(stmt.on_conflict_do_update(index_elements=[table.trial_id, table.key],
                                               set_={"value_json": stmt.excluded.value_json}))


def trial_view(trial: optuna.Trial) -> FrozenTrial:
    """A copy of the trial as this process holds it: the storage's copy read when the Trial
    was made (``Trial._cached_frozen_trial``), with this process's writes since. What other
    processes write meanwhile is not in it; make the Trial just before it is used."""
    return copy.deepcopy(trial._cached_frozen_trial)


def set_trial_system_attr(study: optuna.Study, trial: AnyTrial, key: str, value: Any) -> None:
    """Write a system attribute on one of the study's trials (what a pruner keeps per trial)."""
    storage_of(study).set_trial_system_attr(trial_id_of(trial), key, value)


def pareto_front(trials: Sequence[FrozenTrial], directions: Sequence[StudyDirection]) -> list[FrozenTrial]:
    """``study.best_trials`` over trials already read (``_get_pareto_front_trials_by_trials``):
    the COMPLETE trials no other dominates, only feasible ones once any trial has constraint values."""
    from optuna.study._constrained_optimization import _is_constrained_optimization
    from optuna.study._multi_objective import _get_pareto_front_trials_by_trials

    return _get_pareto_front_trials_by_trials(trials, directions,
                                              consider_constraint=_is_constrained_optimization(trials))


def contains(dist: BaseDistribution, internal: float) -> bool:
    """Whether ``internal`` (a value in the distribution's internal representation) lies
    in ``dist`` (``BaseDistribution._contains``)."""
    return dist._contains(internal)


def cached_storage(rdb: RDBStorage) -> BaseStorage:
    """``rdb`` behind Optuna's cache of finished trials, as ``create_study`` would put it
    (``optuna.storages.get_storage``, documented for internal use)."""
    return optuna.storages.get_storage(rdb)


def cached_trials(storage: BaseStorage, study_id: int, deepcopy: bool,
                  states: Container[TrialState] | None) -> list[FrozenTrial] | None:
    """What ``storage.get_all_trials`` returns, from Optuna's cache as its last read left it,
    without reading the storage (``_CachedStorage._studies``, ``_lock``); None when the
    storage is not Optuna's cache or it has not read the study."""
    from optuna.storages._cached_storage import _CachedStorage

    if not isinstance(storage, _CachedStorage):
        return None
    with storage._lock:
        info = storage._studies.get(study_id)
        if info is None or not _has_read(info):
            return None
        trials = sorted((t for t in info.trials.values() if states is None or t.state in states),
                        key=lambda t: t.number)
    return copy.deepcopy(trials) if deepcopy else trials


def reuse_trials_read(study: optuna.Study) -> None:
    """Let the study's next read of its trials (``ask``'s look for WAITING trials) reuse the
    read just made, where the storage is kubetune's (``RidingStorage.reuse_next_read``)."""
    reuse = getattr(storage_of(study), "reuse_next_read", None)
    if reuse is not None:
        reuse(study_id_of(study))


def stale_trial_ids(rdb: RDBStorage, study_id: int) -> list[int]:
    """RUNNING trials of the study whose heartbeat is older than the grace period
    (``RDBStorage._get_stale_trial_ids``)."""
    return rdb._get_stale_trial_ids(study_id)


class HeartbeatStorage(BaseStorage, BaseHeartbeat):
    """A storage with heartbeats that Optuna's ``optimize`` and ``fail_stale_trials`` use
    (``BaseHeartbeat`` lives in a private module, and its stale-trial query has a private
    name): subclasses implement :meth:`stale_trials`."""

    def stale_trials(self, study_id: int) -> list[int]:
        raise NotImplementedError

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        return self.stale_trials(study_id)


def preload_trials(study: optuna.Study) -> bool:
    """Fill the trial cache of the study's storage with one plain read of its rows
    (:func:`read_trials`, as every later read).

    Optuna's first read of a study builds an ORM object for every row of every trial
    (params, values, attributes, each intermediate value); two plain SELECTs (the
    trials, then one UNION of their rows, see :func:`_read_trials`) build the same
    :class:`FrozenTrial` objects several times faster. False, reading nothing, when the
    storage is not Optuna's cached RDB storage or its cache already holds the study.
    """
    from optuna.storages._cached_storage import _CachedStorage

    storage = storage_of(study)
    storage = getattr(storage, "inner", storage)  # kubetune's outage wrapper holds the cache as `inner`
    study_id = study_id_of(study)
    if not isinstance(storage, _CachedStorage) or not isinstance(storage._backend, optuna.storages.RDBStorage):
        return False
    with storage._lock:
        if _has_read(storage._studies.get(study_id)):
            return False
    read_trials(storage, study_id, False, None)
    return True


def read_trials(storage: BaseStorage, study_id: int, deepcopy: bool,
                states: Container[TrialState] | None) -> list[FrozenTrial]:
    """What ``storage.get_all_trials`` returns, read as Optuna's cache reads it (the
    unfinished and the new trials; every trial the first time) but with two plain SELECTs
    instead of seven that build ORM objects; Optuna's own read where the storage is not its
    cached RDB storage. KeyError for a study that does not exist, as Optuna's."""
    from optuna.storages._cached_storage import _CachedStorage, _StudyInfo

    if not isinstance(storage, _CachedStorage) or not isinstance(storage._backend, optuna.storages.RDBStorage):
        return storage.get_all_trials(study_id, deepcopy=deepcopy, states=states)
    with storage._lock:  # held across the read, as Optuna's own read holds it
        info = storage._studies.setdefault(study_id, _StudyInfo())
        since = info.last_finished_trial_id
        unfinished = {t for t in info.unfinished_trial_ids if t <= since}
        _keep_read(storage, study_id, info, _read_trials(storage._backend, study_id, since, unfinished))
        trials = sorted((t for t in info.trials.values() if states is None or t.state in states),
                        key=lambda t: t.number)
    return copy.deepcopy(trials) if deepcopy else trials


def _keep_read(storage: Any, study_id: int, info: Any, trials: list[FrozenTrial]) -> None:
    """Put the trials just read into the cache, as Optuna's ``_read_trials_from_remote_storage``."""
    storage._add_trials_to_cache(study_id, trials)
    for trial in trials:
        if not trial.state.is_finished():
            info.unfinished_trial_ids.add(trial._trial_id)
            continue
        info.last_finished_trial_id = max(info.last_finished_trial_id, trial._trial_id)
        info.unfinished_trial_ids.discard(trial._trial_id)


def _has_read(info: Any) -> bool:
    """Whether the cache holds the study's trials (it may hold only its name and directions)."""
    return info is not None and bool(info.trials or info.unfinished_trial_ids or info.last_finished_trial_id >= 0)


def _read_trials(backend: optuna.storages.RDBStorage, study_id: int, since: int = -1,
                 unfinished: set[int] | frozenset[int] = frozenset()) -> list[FrozenTrial]:
    """The study's trials whose id is above ``since`` or in ``unfinished`` (every trial
    when ``since`` is -1): one SELECT of the trials, one of their rows, no ORM objects;
    child rows only of the trials the first SELECT saw (a trial made meanwhile is read
    later, as unfinished). KeyError when the study does not exist."""
    import sqlalchemy as sa
    from optuna.storages._rdb import models

    study_table, trial_table = models.StudyModel.__table__, models.TrialModel.__table__
    wanted = trial_table.c.study_id == study_id
    if since > -1:
        newer = trial_table.c.trial_id > since
        wanted = sa.and_(wanted, sa.or_(newer, trial_table.c.trial_id.in_(sorted(unfinished))) if unfinished
                         else newer)
    rows: dict[str, dict[int, list[Any]]] = defaultdict(lambda: defaultdict(list))
    with backend.engine.connect() as conn:
        # The study's row, outer-joined: no row at all means no study.
        found = conn.execute(
            sa.select(study_table.c.study_id, trial_table.c.trial_id, trial_table.c.number, trial_table.c.state,
                      trial_table.c.datetime_start, trial_table.c.datetime_complete)
            .select_from(study_table.outerjoin(trial_table, sa.and_(
                trial_table.c.study_id == study_table.c.study_id, wanted)))
            .where(study_table.c.study_id == study_id).order_by(trial_table.c.trial_id)).all()
        if not found:
            raise KeyError(f"No study with study_id {study_id} exists.")
        trials = [row[1:] for row in found if row.trial_id is not None]
        if trials:
            for row in conn.execute(_child_rows(trial_table, wanted)).all():
                rows[row.kind][row.trial_id].append(row)
    dists: dict[str, optuna.distributions.BaseDistribution] = {}
    value_type = models.TrialValueModel.TrialValueType
    value_of = models.TrialValueModel.stored_repr_to_value
    step_type = models.TrialIntermediateValueModel.TrialIntermediateValueType
    step_of = models.TrialIntermediateValueModel.stored_repr_to_intermediate_value
    built = []
    for trial_id, number, state, start, complete in trials:
        params = rows["p"][trial_id]
        for p in params:
            if p.text not in dists:
                dists[p.text] = optuna.distributions.json_to_distribution(p.text)
        built.append(FrozenTrial(
            number=number, state=state, value=None,
            values=[value_of(v.num, value_type[v.text]) for v in rows["v"][trial_id]] or None,
            datetime_start=_local(start), datetime_complete=_local(complete),
            params={p.key: dists[p.text].to_external_repr(p.num) for p in params},
            distributions={p.key: dists[p.text] for p in params},
            user_attrs={a.key: json.loads(a.text) for a in rows["u"][trial_id]},
            system_attrs={a.key: json.loads(a.text) for a in rows["s"][trial_id]},
            intermediate_values={v.pos: step_of(v.num, step_type[v.text]) for v in rows["i"][trial_id]},
            trial_id=trial_id,
        ))
    return built


def _child_rows(trial_table: Any, wanted: Any) -> Any:
    """One SELECT for the wanted trials' params (p), values (v), user (u) and system (s)
    attributes and intermediate values (i), as rows of (kind, trial_id, key, num, pos,
    text); ``pos`` orders them as Optuna does (params by id, values by objective)."""
    import sqlalchemy as sa
    from optuna.storages._rdb import models

    def part(kind: str, table: Any, key: Any, num: Any, pos: Any, text: Any) -> Any:
        return (sa.select(sa.literal(kind, sa.String(1)).label("kind"), table.c.trial_id, key.label("key"),
                          num.label("num"), pos.label("pos"), text.label("text"))
                .join(trial_table, table.c.trial_id == trial_table.c.trial_id).where(wanted))

    no_key, no_num = sa.cast(sa.null(), sa.String(512)), sa.cast(sa.null(), sa.Float(precision=53))
    p, v = models.TrialParamModel.__table__, models.TrialValueModel.__table__
    u, s = models.TrialUserAttributeModel.__table__, models.TrialSystemAttributeModel.__table__
    i = models.TrialIntermediateValueModel.__table__
    union = sa.union_all(
        part("p", p, p.c.param_name, p.c.param_value, p.c.param_id, p.c.distribution_json),
        part("v", v, no_key, v.c.value, v.c.objective, sa.cast(v.c.value_type, sa.Text)),
        part("u", u, u.c.key, no_num, u.c.trial_user_attribute_id, u.c.value_json),
        part("s", s, s.c.key, no_num, s.c.trial_system_attribute_id, s.c.value_json),
        part("i", i, no_key, i.c.intermediate_value, i.c.step, sa.cast(i.c.intermediate_value_type, sa.Text)),
    ).subquery()
    return sa.select(union).order_by(union.c.kind, union.c.trial_id, union.c.pos)


def _local(stored: dt.datetime | None) -> dt.datetime | None:
    """RDBStorage's naive UTC as the naive local time its FrozenTrials carry."""
    if stored is None:
        return None
    return stored.replace(tzinfo=dt.timezone.utc).astimezone().replace(tzinfo=None)
