"""Operator-wide state: the API client, options, caches and one lock per StudyJob.

Nothing here is needed for correctness after a restart: caches refill from the
API and the storage. The per-StudyJob lock serialises reconcile passes, which
kopf may start concurrently from a StudyJob event, Job events and the timer.
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import optuna

from kubetune.config import Config, config_to_yaml
from kubetune.search.storage import make_storage, mask_url
from kubetune_operator.kube import Kube
from kubetune_operator.names import WORKERS
from kubetune_operator.spec import Defaults, ResolvedConfig, StudyJobSpec, resolve_config
from kubetune_operator.studies import StudyHandle, search_fingerprint

logger = logging.getLogger("kubetune_operator")

DEFAULT_TRIAL_IMAGE = os.environ.get(
    "KUBETUNE_TRIAL_IMAGE", "kubetune-trainer:cpu"
)
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
    defaults: Defaults = field(default_factory=Defaults)


EventSink = Callable[[Mapping[str, Any], str, str, str], None]


def kopf_event(body: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
    """Post through kopf's event queue; outside a running operator, log instead."""
    import kopf

    try:
        kopf.event(dict(body), type=type_, reason=reason, message=message)
    except LookupError:
        logger.info("event %s %s: %s", type_, reason, message)


@dataclass
class Runtime:
    kube: Kube
    options: Options = field(default_factory=Options)
    post_event: EventSink = kopf_event

    def __post_init__(self) -> None:
        self._guard = threading.Lock()
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="kubetune-io")
        self._locks: dict[str, threading.Lock] = {}
        self._storages: dict[str, optuna.storages.BaseStorage] = {}
        self._secrets: dict[tuple[str, str, str], tuple[str, float]] = {}
        self._studies: dict[str, tuple[str, str, StudyHandle]] = {}
        self._resolved: dict[str, tuple[str, ResolvedConfig, str]] = {}
        # What this process last wrote or announced, per StudyJob (refilled after a restart).
        self.last_status: dict[str, dict[str, Any]] = {}
        self.config_written: dict[str, str] = {}
        self.best_written: dict[str, str] = {}
        self.announced: dict[str, set[int]] = {}  # trials whose end was announced
        self.examined: dict[str, set[int]] = {}  # FAIL trials whose failed Job was read
        self.warned: dict[str, set[str]] = {}
        self.jobs_checked: dict[str, str] = {}  # the trial Job body the API server took in a dry run

    def lock(self, key: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    def drop_study(self, key: str) -> None:
        """Forget the StudyJob's handle: the next pass opens its study again."""
        self._studies.pop(key, None)

    def forget(self, key: str) -> None:
        """Drop everything cached for a deleted StudyJob."""
        for cache in (self._studies, self._resolved, self.last_status, self.config_written, self.best_written,
                      self.announced, self.examined, self.warned, self.jobs_checked):
            cache.pop(key, None)

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

    def study(self, key: str, url: str, config: Config, *,
              started: Callable[[], bool] = lambda: False) -> StudyHandle:
        """The cached handle, rebuilt when the storage or the search section changed.

        ``started()``, asked only to build a handle: has the StudyJob run trials in the
        study (see :class:`StudyHandle`)?"""
        fingerprint = search_fingerprint(config)
        cached = self._studies.get(key)
        if cached and cached[0] == url and cached[1] == fingerprint:
            return cached[2]
        handle = StudyHandle(self.storage(url), config, owner=key, started=started())
        self._studies[key] = (url, fingerprint, handle)
        return handle

    def resolve(self, key: str, spec: StudyJobSpec, raw: Mapping[str, Any]) -> tuple[ResolvedConfig, str]:
        """The validated config and its YAML, recomputed only when spec or config change."""
        fingerprint = json.dumps([raw, spec.model_dump(mode="json", exclude={"config"})],
                                 sort_keys=True, default=str)
        cached = self._resolved.get(key)
        if cached and cached[0] == fingerprint:
            return cached[1], cached[2]
        resolved = resolve_config(raw, spec)
        text = config_to_yaml(resolved.config)
        self._resolved[key] = (fingerprint, resolved, text)
        return resolved, text

    def warn_once(self, key: str, tag: str) -> bool:
        """True the first time ``tag`` is seen for this StudyJob in this process."""
        seen = self.warned.setdefault(key, set())
        if tag in seen:
            return False
        seen.add(tag)
        return True


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
