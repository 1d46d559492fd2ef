"""Operator-wide state: the API client, options, shared caches and one state per StudyJob.

Nothing here is needed for correctness after a restart: caches refill from the
API and the storage. The per-StudyJob lock serialises reconcile passes, which
kopf may start concurrently from a StudyJob event, Job events and the timer.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import optuna

from kubetune import __version__
from kubetune.config import Config, config_to_yaml
from kubetune.search.storage import make_storage, mask_url
from kubetune_operator.failures import may_be_lost
from kubetune_operator.kube import Kube
from kubetune_operator.names import MAX_JOBS, WORKERS
from kubetune_operator.spec import Defaults, ResolvedConfig, StudyJobSpec, resolve_config
from kubetune_operator.studies import StudyHandle, search_fingerprint

logger = logging.getLogger("kubetune_operator")

# The chart and manifests/ always set KUBETUNE_TRIAL_IMAGE; the fallback is the CPU trainer
# image of this very version (the chart's appVersion), never "latest".
DEFAULT_TRIAL_IMAGE = os.environ.get("KUBETUNE_TRIAL_IMAGE", f"kubetune-trainer-cpu:{__version__}")
SECRET_TTL = 30.0  # seconds a storage URL read from a Secret is reused


class StorageProblem(Exception):
    """The storage cannot be reached or named; ``reason`` is the condition's reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass
class Options:
    trial_image: str = DEFAULT_TRIAL_IMAGE  # trial Jobs, unless spec.trials.image
    cpu_image: str | None = None  # the visualisation Job (needs no GPU); default: trial_image
    resync_seconds: float = 60.0  # the safety-net timer; events drive everything else
    retry_seconds: float = 15.0  # back-off while the storage or a Secret is missing
    workers: int = WORKERS  # handler threads: the storage pool holds one connection for each
    max_jobs: int = MAX_JOBS  # trial Jobs one StudyJob may have at once, whatever its parallelism
    defaults: Defaults = field(default_factory=Defaults)


EventSink = Callable[[Mapping[str, Any], str, str, str], None]


def kopf_event(body: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
    """Post through kopf's event queue; outside a running operator, log instead."""
    import kopf

    try:
        kopf.event(kopf.Body(cast(kopf.RawBody, dict(body))), type=type_, reason=reason, message=message)
    except LookupError:
        logger.info("event %s %s: %s", type_, reason, message)


@dataclass
class StudyJobState:
    """What this process holds for one StudyJob, dropped whole when the StudyJob is deleted.

    Caches that save a read or a write, and what was only news once (events); a
    restarted operator starts with a fresh one and refills it from the API and storage."""

    lock: threading.Lock = field(default_factory=threading.Lock)  # serialises the StudyJob's passes
    study: tuple[str, str, StudyHandle] | None = None  # (storage URL, search fingerprint, handle)
    resolved: tuple[str, ResolvedConfig, str] | None = None  # (spec fingerprint, config, its YAML)
    last_status: dict[str, Any] | None = None  # the status last written
    config_written: str | None = None  # the YAML in <name>-config
    best_written: dict[str, str] | None = None  # the data of <name>-best-config
    jobs_checked: str | None = None  # the trial Job body the API server took in a dry run
    trials_seen: bool = False  # a pass looked at the trials: what ends from now on is news
    announced: set[int] = field(default_factory=set)  # trials whose end had its event
    warned: set[str] = field(default_factory=set)  # the once-only events posted
    ready_jobs: set[str] = field(default_factory=set)  # trial Jobs seen with a ready pod

    def note_readiness(self, job: Mapping[str, Any]) -> bool:
        """Remember a Job seen ready; True when a Job seen ready (or any Job) has a pod
        that may be stuck on a lost node (see :func:`~kubetune_operator.failures.may_be_lost`)."""
        name, status = job["metadata"]["name"], job.get("status") or {}
        if status.get("ready"):
            self.ready_jobs.add(name)
        return may_be_lost(job) and (bool(status.get("terminating")) or name in self.ready_jobs)

    def warn_once(self, tag: str) -> bool:
        """True the first time ``tag`` is seen for this StudyJob in this process."""
        if tag in self.warned:
            return False
        self.warned.add(tag)
        return True

    def resolve(self, spec: StudyJobSpec, raw: Mapping[str, Any]) -> tuple[ResolvedConfig, str]:
        """The validated config and its YAML, recomputed only when spec or config change."""
        fingerprint = json.dumps([raw, spec.model_dump(mode="json", exclude={"config"})],
                                 sort_keys=True, default=str)
        if self.resolved and self.resolved[0] == fingerprint:
            return self.resolved[1], self.resolved[2]
        resolved = resolve_config(raw, spec)
        text = config_to_yaml(resolved.config)
        self.resolved = (fingerprint, resolved, text)
        return resolved, text


@dataclass
class Runtime:
    kube: Kube
    options: Options = field(default_factory=Options)
    post_event: EventSink = kopf_event

    def __post_init__(self) -> None:
        self._guard = threading.Lock()
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="kubetune-io")
        self._studyjobs: dict[str, StudyJobState] = {}
        self._storages: dict[str, optuna.storages.BaseStorage] = {}
        self._secrets: dict[tuple[str, str, str], tuple[str, float]] = {}

    def _state(self, key: str) -> StudyJobState:
        with self._guard:
            return self._studyjobs.setdefault(key, StudyJobState())

    @contextlib.contextmanager
    def lock(self, key: str) -> Iterator[StudyJobState]:
        """Hold the StudyJob's lock and yield its state. A pass that waited while the
        StudyJob was forgotten takes the new state's lock: passes stay serialised."""
        while True:
            state = self._state(key)
            with state.lock:
                if self._studyjobs.get(key) is state:
                    yield state
                    return

    def studyjob_state(self, key: str) -> StudyJobState:
        """The StudyJob's state, outside its lock: for what a Job event notes in passing."""
        return self._state(key)

    def forget(self, key: str) -> None:
        """Drop everything held for a deleted StudyJob."""
        with self._guard:
            self._studyjobs.pop(key, None)

    # Storage ---------------------------------------------------------------
    def storage_url(self, namespace: str, spec: StudyJobSpec) -> str:
        ref = spec.storage.secret_ref
        cache_key = (namespace, ref.name, ref.key)
        cached = self._secrets.get(cache_key)
        if cached and time.monotonic() - cached[1] < SECRET_TTL:
            return cached[0]
        url = self.kube.read_secret(namespace, ref.name, ref.key)
        if not url:
            raise StorageProblem(
                "SecretNotFound",
                f"Secret `{ref.name}` with key `{ref.key}` not found in namespace `{namespace}` "
                "(spec.storage.secretRef)",
            )
        self._secrets[cache_key] = (url, time.monotonic())
        return url

    def storage(self, url: str) -> optuna.storages.BaseStorage:
        with self._guard:
            storage = self._storages.get(url)
        if storage is None:
            try:
                # One connection per handler thread, shared by every StudyJob on this storage.
                storage = make_storage(url, heartbeat=False, pool_size=self.options.workers, max_overflow=0)
            except Exception as exc:  # KubetuneError, sqlalchemy: already masked by make_storage
                raise StorageProblem("StorageUnavailable", redact(str(exc), url)) from None
            with self._guard:
                storage = self._storages.setdefault(url, storage)
        return storage

    def study(self, state: StudyJobState, key: str, url: str, config: Config, *,
              started: Callable[[], bool] = lambda: False) -> StudyHandle:
        """The StudyJob ``key``'s cached handle, rebuilt when the storage or the search section changed.

        ``started()``, asked only to build a handle: has the StudyJob run trials in the
        study (see :class:`StudyHandle`)?"""
        fingerprint = search_fingerprint(config)
        cached = state.study
        if cached and cached[0] == url and cached[1] == fingerprint:
            return cached[2]
        handle = StudyHandle(self.storage(url), config, owner=key, started=started())
        state.study = (url, fingerprint, handle)
        return handle


def redact(text: str, url: str) -> str:
    """``text`` with the URL, and its password, masked."""
    masked = mask_url(url)
    text = text.replace(url, masked)
    try:
        from sqlalchemy.engine import make_url

        password = make_url(url).password
    except Exception:  # noqa: BLE001 - any unparsable URL has nothing more to hide
        password = None
    if password:
        text = text.replace(str(password), "***")
    return text


def describe_storage(url: str) -> str:
    """The storage's kind, host and database, without user or password (for status)."""
    try:
        from sqlalchemy.engine import URL, make_url

        parsed = make_url(url)
        bare = URL.create(parsed.drivername, host=parsed.host, port=parsed.port, database=parsed.database)
        return bare.render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not a URL sqlalchemy reads: say nothing about it
        return "the configured storage"
