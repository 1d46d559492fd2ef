"""Ride out a storage outage: a database restart or a rescheduled PostgreSQL pod.

Every call into the storage that fails because the connection did (the server went
away, restarts, refuses connections while it starts) is tried again with backoff for
up to ``$KUBETUNE_STORAGE_OUTAGE`` seconds (:data:`DEFAULT_OUTAGE` by default). One
line says the storage is unreachable, one that it is back; past the bound,
:class:`StorageUnreachable` ends the command with one line (exit 1), and the study
is left for ``--resume``.

Nothing is written twice. Optuna's writes are upserts (params, attributes,
intermediate values, heartbeats) except three, each checked before it is repeated,
since its commit may have landed before the connection dropped:

- a new trial carries a one-off mark (:data:`~kubetune.search.attributes.ASK_MARK_ATTR`),
  looked for before asking again;
- a state change (a trial claimed or told) counts as done if the trial is in that
  state now;
- a new study counts as made if its name is there.

Writes a process makes together share a transaction: an ask's params with the trial's
first attributes and its first heartbeat
(:func:`~kubetune.search.optuna_internals.writes_together`; counted as landed if the
params are there), and the attributes a trial ends with (its ``usage``) with the state
it is told. Optuna's heartbeat thread waits up to :data:`FIRST_BEAT_WAIT` for that
transaction to carry the first beat of a trial started here, and beats itself when it
does not.

A heartbeat that could not beat during an outage is not a dead worker: a trial is
stale only if it is still stale a heartbeat interval after it was first seen so.
Torch-free: the operator uses it through ``make_storage``.
"""

from __future__ import annotations

import logging
import math
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Container, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

import optuna
from optuna.distributions import BaseDistribution
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from kubetune.errors import ConfigError, KubetuneError
from kubetune.search.attributes import ASK_MARK_ATTR
from kubetune.search.optuna_internals import (
    HeartbeatStorage,
    cached_storage,
    cached_trials,
    can_upsert,
    read_trials,
    stale_trial_ids,
    trial_id_of,
    write_outcome,
    write_params_and_attrs,
    write_user_attrs,
)

log = logging.getLogger(__name__)

OUTAGE_ENV = "KUBETUNE_STORAGE_OUTAGE"
DEFAULT_OUTAGE = 120  # seconds a storage may be unreachable before a command gives up
MAX_BACKOFF = 2.0  # seconds between two tries, at most
FIRST_BEAT_WAIT = 1.0  # seconds a new trial's first heartbeat waits to share its params' transaction

T = TypeVar("T")


def outage_limit() -> float:
    """Seconds to ride out: ``$KUBETUNE_STORAGE_OUTAGE`` or :data:`DEFAULT_OUTAGE`."""
    raw = os.environ.get(OUTAGE_ENV)
    if raw is None or raw == "":
        return DEFAULT_OUTAGE
    try:
        value = float(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise ConfigError(f"${OUTAGE_ENV} must be a number of seconds (0 or more), but got {raw!r}")
    return value


class StorageUnreachable(KubetuneError):
    """The storage did not answer for longer than the outage bound."""


def unreachable_in(exc: BaseException) -> StorageUnreachable | None:
    """The :class:`StorageUnreachable` behind ``exc``: Optuna's ``optimize`` may replace it
    with an error of its own (an ``UnboundLocalError`` while it cleans up a trial)."""
    seen: list[BaseException] = []
    error: BaseException | None = exc
    while error is not None and all(error is not e for e in seen):
        if isinstance(error, StorageUnreachable):
            return error
        seen.append(error)
        error = error.__cause__ or error.__context__
    return None


def is_connection_error(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) is a lost or refused database connection; a
    server that answered and refused the URL's database or login is the user's to fix."""
    from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

    if server_refusal(exc) is not None:
        return False
    seen: list[BaseException] = []
    error: BaseException | None = exc
    while error is not None and all(error is not e for e in seen):
        seen.append(error)
        if isinstance(error, OperationalError | InterfaceError):
            return True
        if isinstance(error, DBAPIError) and error.connection_invalidated:
            return True
        if type(error).__module__.startswith("psycopg") and type(error).__name__ in ("OperationalError",
                                                                                    "InterfaceError"):
            return True
        error = error.__cause__ or error.__context__
    return False


# SQLSTATEs of a server that answered and refused what the URL asks for: the user's to fix.
_NO_DATABASE = "3D000"  # invalid_catalog_name
_LOGIN_CLASS = "28"  # invalid_authorization_specification (28000), invalid_password (28P01)
# libpq keeps no SQLSTATE for an error during connection start-up (psycopg's ``sqlstate`` is
# None there), so for those the server's own wording is the only evidence left; these are its
# messages for 3D000 and class 28 (postinit.c, auth.c). A server that words them in another
# language (lc_messages) is reported as not answering, as before.
_NO_DATABASE_TEXT = re.compile(r'FATAL:\s+database "[^"]*" does not exist')
_LOGIN_TEXT = re.compile(
    r'FATAL:\s+(\w+ authentication failed for user|role "[^"]*" (does not exist|is not permitted to log in)'
    r"|no pg_hba\.conf entry|pg_hba\.conf rejects)"
)


def server_refusal(exc: BaseException) -> tuple[str, str] | None:
    """``("database" | "login", server's reason)`` when a PostgreSQL server refused the URL's
    database or login; None for everything else (no answer, timeouts, a full server)."""
    chain: list[BaseException] = []
    error: BaseException | None = exc
    while error is not None and all(error is not seen for seen in chain):
        chain.append(error)
        error = getattr(error, "orig", None) or error.__cause__ or error.__context__
    text = next((str(e) for e in reversed(chain) if "FATAL:" in str(e)), "")
    reason = text.split("FATAL:", 1)[1].strip().splitlines()[0] if text else ""
    sqlstate = next((s for e in chain if isinstance(s := getattr(e, "sqlstate", None), str) and s), None)
    if sqlstate is not None:
        kind = "database" if sqlstate == _NO_DATABASE else "login" if sqlstate.startswith(_LOGIN_CLASS) else None
    else:
        kind = "database" if _NO_DATABASE_TEXT.search(text) else "login" if _LOGIN_TEXT.search(text) else None
    return (kind, reason) if kind else None


class Outage:
    """One process's view of the storage's outages: the retry loop and its two lines."""

    def __init__(self, where: str, limit: float | None = None) -> None:
        self.where = where
        self.limit = outage_limit() if limit is None else limit
        self._lock = threading.Lock()
        self._since: float | None = None  # when this outage began (None: no outage)

    def run(self, call: Callable[[], T], settled: Callable[[], tuple[bool, T]] | None = None) -> T:
        """``call()``, tried again on connection errors; ``settled()`` first on every
        retry: ``(True, result)`` when the failed try's commit landed after all."""
        delay, began, tried = 0.1, None, False
        while True:
            try:
                if tried and settled is not None:
                    done, value = settled()
                    if done:
                        self._back()
                        return value
                result = call()
            except Exception as exc:
                if not is_connection_error(exc):
                    raise
                now = time.monotonic()
                began = began if began is not None else now
                self._down(exc)
                if now - began >= self.limit:
                    raise StorageUnreachable(
                        f"storage {self.where} unreachable for {now - began:.0f} s "
                        f"(${OUTAGE_ENV}={self.limit:g}): {_first_line(exc)}"
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF)
                tried = True
                continue
            self._back()
            return result

    def _down(self, exc: BaseException) -> None:
        with self._lock:
            if self._since is None:
                self._since = time.monotonic()
                log.warning("storage %s is unreachable (%s); retrying for up to %g s",
                            self.where, _first_line(exc), self.limit)

    def _back(self) -> None:
        if self._since is None:
            return
        with self._lock:
            if self._since is not None:
                log.warning("storage %s is back after %.1f s", self.where, time.monotonic() - self._since)
                self._since = None


def _first_line(exc: BaseException) -> str:
    cause = exc
    while cause.__cause__ is not None:
        cause = cause.__cause__
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[0][:200]}" if text else type(cause).__name__


@dataclass
class _Held:
    """A trial's writes held back to share one transaction."""

    study_id: int
    params: list[tuple[str, float, BaseDistribution]] = field(default_factory=list)
    attrs: dict[str, Any] = field(default_factory=dict)


@dataclass
class _FirstBeat:
    """A trial started here whose first heartbeat may ride with its params."""

    settled: threading.Event = field(default_factory=threading.Event)  # set once it is written or needless
    needed: bool = True  # False once written with the params, or once the trial ended


class RidingStorage(HeartbeatStorage):
    """An RDB storage (with Optuna's cache in front) whose calls ride out outages."""

    def __init__(self, rdb: optuna.storages.RDBStorage, where: str, limit: float | None = None) -> None:
        self.rdb = rdb
        self.inner = cached_storage(rdb)
        self.outage = Outage(where, limit)
        self._suspects: dict[int, float] = {}  # stale trial id -> when first seen stale
        self._looked: dict[int, float] = {}  # study id -> when its stale trials were last looked for
        self._reuse: set[int] = set()  # studies whose next trials read is served by the last one
        self._held: dict[int, _Held] = {}  # trial id -> its writes waiting for the end of writes_held
        self._with_outcome: dict[int, dict[str, Any]] = {}  # trial id -> user attrs written when it is told
        self._param_dists: dict[int, dict[str, BaseDistribution]] = {}  # study id -> its params' distributions
        self._first_beats: dict[int, _FirstBeat] = {}  # trial id -> its first heartbeat, while pending
        self._beats_ride = rdb.get_heartbeat_interval() is not None and can_upsert(rdb)  # with the params

    def reuse_next_read(self, study_id: int) -> None:
        """Serve the study's next ``get_all_trials`` from the trials just read, unless a trial
        is created or changes state here first: an ``ask`` right after a count of the trials."""
        self._reuse.add(study_id)

    def _ride(self, call: Callable[[], T], settled: Callable[[], tuple[bool, T]] | None = None) -> T:
        return self.outage.run(call, settled)

    # Writes that are checked before they are repeated -------------------------------

    def create_new_study(self, directions: Sequence[StudyDirection], study_name: str | None = None) -> int:
        def settled() -> tuple[bool, int]:
            if study_name is None:
                return False, 0
            try:
                return True, self.inner.get_study_id_from_name(study_name)
            except KeyError:
                return False, 0
        return self._ride(lambda: self.inner.create_new_study(directions, study_name), settled)

    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        self._reuse.clear()
        mark = uuid.uuid4().hex
        template = _marked(template_trial, mark)

        def settled() -> tuple[bool, int]:
            for trial in self.inner.get_all_trials(study_id, deepcopy=False):
                if trial.system_attrs.get(ASK_MARK_ATTR) == mark:
                    return True, trial_id_of(trial)
            return False, 0
        trial_id = self._ride(lambda: self.inner.create_new_trial(study_id, template), settled)
        if template.state == TrialState.RUNNING:
            self._started(trial_id)
        return trial_id

    def set_trial_state_values(self, trial_id: int, state: TrialState,
                               values: Sequence[float] | None = None) -> bool:
        self._reuse.clear()
        attrs = self._with_outcome.pop(trial_id, None) if state.is_finished() else None

        def settled() -> tuple[bool, bool]:
            return self.inner.get_trial(trial_id).state == state, True
        if attrs:
            changed = self._ride(lambda: write_outcome(self.rdb, self.inner, trial_id, state, values, attrs), settled)
        else:
            changed = self._ride(lambda: self.inner.set_trial_state_values(trial_id, state, values), settled)
        if state == TrialState.RUNNING and changed:  # a WAITING trial claimed here
            self._started(trial_id)
        elif state.is_finished() and (first := self._first_beats.pop(trial_id, None)) is not None:
            first.needed = False
            first.settled.set()
        return changed

    def _started(self, trial_id: int) -> None:
        """A trial starts running here: its first heartbeat may ride with its params."""
        if self._beats_ride:
            self._first_beats[trial_id] = _FirstBeat()

    @contextmanager
    def writes_held(self, trial_id: int, study_id: int) -> Iterator[None]:
        """Hold the trial's param and user-attribute writes made in the block; write them in
        one transaction as it ends (also when it raises: a trial that fails keeps what it had)."""
        held = self._held[trial_id] = _Held(study_id)
        try:
            yield
        except BaseException:
            del self._held[trial_id]
            try:
                self._write_held(trial_id, held)
            except Exception:  # the block's own error is the one to see
                log.debug("writing trial %d's held params failed", trial_id, exc_info=True)
            raise
        del self._held[trial_id]
        self._write_held(trial_id, held)

    def _write_held(self, trial_id: int, held: _Held) -> None:
        first = self._first_beats.get(trial_id)
        beat = first is not None and first.needed
        names = {name for name, _, _ in held.params}

        def settled() -> tuple[bool, None]:  # the params are not an upsert: landed if they are there
            return bool(names) and names <= set(self.inner.get_trial(trial_id).params), None
        known = self._param_dists.setdefault(held.study_id, {})
        try:
            if held.params or held.attrs:
                self._ride(lambda: write_params_and_attrs(self.rdb, trial_id, held.params, held.attrs, known,
                                                          heartbeat=beat), settled)
                if first is not None:
                    first.needed = False
        finally:
            if first is not None:  # the heartbeat thread beats on its own if this did not
                first.settled.set()

    def set_trial_user_attrs_with_outcome(self, trial_id: int, attrs: dict[str, Any]) -> None:
        """Write ``attrs`` in the transaction that tells the trial's outcome, which this
        process does next."""
        self._with_outcome.setdefault(trial_id, {}).update(attrs)

    # Upserts and reads: tried again as they are ------------------------------------

    def delete_study(self, study_id: int) -> None:
        self._ride(lambda: self.inner.delete_study(study_id))

    def set_study_user_attr(self, study_id: int, key: str, value: Any) -> None:
        self._ride(lambda: self.inner.set_study_user_attr(study_id, key, value))

    def set_study_system_attr(self, study_id: int, key: str, value: Any) -> None:
        self._ride(lambda: self.inner.set_study_system_attr(study_id, key, value))

    def get_study_id_from_name(self, study_name: str) -> int:
        return self._ride(lambda: self.inner.get_study_id_from_name(study_name))

    def get_study_name_from_id(self, study_id: int) -> str:
        return self._ride(lambda: self.inner.get_study_name_from_id(study_id))

    def get_study_directions(self, study_id: int) -> list[StudyDirection]:
        return self._ride(lambda: self.inner.get_study_directions(study_id))

    def get_study_user_attrs(self, study_id: int) -> dict[str, Any]:
        return self._ride(lambda: self.inner.get_study_user_attrs(study_id))

    def get_study_system_attrs(self, study_id: int) -> dict[str, Any]:
        return self._ride(lambda: self.inner.get_study_system_attrs(study_id))

    def get_all_studies(self) -> list[Any]:
        return self._ride(self.inner.get_all_studies)

    def set_trial_param(self, trial_id: int, param_name: str, param_value_internal: float,
                        distribution: BaseDistribution) -> None:
        if (held := self._held.get(trial_id)) is not None:
            held.params.append((param_name, param_value_internal, distribution))
            return
        self._ride(lambda: self.inner.set_trial_param(trial_id, param_name, param_value_internal, distribution))

    def get_trial_id_from_study_id_trial_number(self, study_id: int, trial_number: int) -> int:
        return self._ride(lambda: self.inner.get_trial_id_from_study_id_trial_number(study_id, trial_number))

    def set_trial_intermediate_value(self, trial_id: int, step: int, intermediate_value: float) -> None:
        self._ride(lambda: self.inner.set_trial_intermediate_value(trial_id, step, intermediate_value))

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        self.set_trial_user_attrs(trial_id, {key: value})

    def set_trial_user_attrs(self, trial_id: int, attrs: dict[str, Any]) -> None:
        """Several user attributes in one transaction (an upsert, tried again as it is)."""
        if (held := self._held.get(trial_id)) is not None:
            held.attrs.update(attrs)
            return
        self._ride(lambda: write_user_attrs(self.rdb, trial_id, attrs))

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        self._ride(lambda: self.inner.set_trial_system_attr(trial_id, key, value))

    def get_trial(self, trial_id: int) -> FrozenTrial:
        return self._ride(lambda: self.inner.get_trial(trial_id))

    def get_all_trials(self, study_id: int, deepcopy: bool = True,
                       states: Container[TrialState] | None = None) -> list[FrozenTrial]:
        if study_id in self._reuse:
            self._reuse.discard(study_id)
            if (trials := cached_trials(self.inner, study_id, deepcopy, states)) is not None:
                return trials
        return self._ride(lambda: read_trials(self.inner, study_id, deepcopy, states))

    def get_best_trial(self, study_id: int) -> FrozenTrial:
        return self._ride(lambda: self.inner.get_best_trial(study_id))

    def remove_session(self) -> None:
        self.inner.remove_session()

    # Heartbeats ---------------------------------------------------------------------

    def record_heartbeat(self, trial_id: int) -> None:
        first = self._first_beats.get(trial_id)
        if first is not None:  # a trial just started here: its params' transaction may carry the beat
            first.settled.wait(FIRST_BEAT_WAIT)
            self._first_beats.pop(trial_id, None)
            if not first.needed:
                return
        try:
            self._ride(lambda: self.rdb.record_heartbeat(trial_id))
        except StorageUnreachable:
            pass  # the heartbeat thread ends quietly; the trial's own thread says it, once

    def get_heartbeat_interval(self) -> int | None:
        return self.rdb.get_heartbeat_interval()

    def get_heartbeat_stale_trial_callback(self) -> Callable[[optuna.Study, FrozenTrial], None] | None:
        return self.rdb.get_heartbeat_stale_trial_callback()

    def stale_trials(self, study_id: int) -> list[int]:
        """Trials stale now and at a look at least a heartbeat interval (and a retry) ago:
        a live worker's heartbeat lands by then, even right after an outage.

        The storage is looked at once a heartbeat interval at most (Optuna asks before
        every trial): heartbeats move no faster, and in between nothing is found."""
        interval = self.get_heartbeat_interval() or 0
        now = time.monotonic()
        if now - self._looked.get(study_id, -math.inf) < interval:
            return []
        self._looked[study_id] = now
        stale = self._ride(lambda: stale_trial_ids(self.rdb, study_id))
        now = time.monotonic()
        settle = interval + MAX_BACKOFF
        self._suspects = {t: self._suspects.get(t, now) for t in stale}
        return [t for t, first in self._suspects.items() if now - first >= settle]


def _marked(template: FrozenTrial | None, mark: str) -> FrozenTrial:
    """``template`` (or a fresh RUNNING trial, what ``create_new_trial`` makes without one)
    with the one-off mark that tells whether its creation landed."""
    if template is None:
        return FrozenTrial(number=-1, state=TrialState.RUNNING, value=None, datetime_start=datetime.now(),
                           datetime_complete=None, params={}, distributions={}, user_attrs={},
                           system_attrs={ASK_MARK_ATTR: mark}, intermediate_values={}, trial_id=-1)
    copy = FrozenTrial(number=template.number, state=template.state, value=None, values=template.values,
                       datetime_start=template.datetime_start, datetime_complete=template.datetime_complete,
                       params=template.params, distributions=template.distributions,
                       user_attrs=template.user_attrs, system_attrs={**template.system_attrs, ASK_MARK_ATTR: mark},
                       intermediate_values=template.intermediate_values, trial_id=trial_id_of(template))
    return copy
