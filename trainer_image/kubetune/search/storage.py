"""Optuna storage URLs: where they come from, how they are logged, how they connect."""

from __future__ import annotations

import os
import time
import warnings

import optuna
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from kubetune.config.search_schema import DEFAULT_STORAGE, SearchConfig
from kubetune.errors import ConfigError

STORAGE_ENV = "KUBETUNE_STORAGE_URL"
HEARTBEAT_INTERVAL = 10  # seconds between a running trial's heartbeats
GRACE_PERIOD = 30  # a RUNNING trial without a heartbeat for this long is failed
# Connections one process holds to a database server: a trial needs two (its own thread and
# the heartbeat thread); busier processes (the operator) queue for the overflow. The chart
# sizes PostgreSQL's max_connections from POOL_SIZE + MAX_OVERFLOW per process.
POOL_SIZE = 2
MAX_OVERFLOW = 2
MAX_RETRIES = 2  # retries of a heartbeat-stale trial with the same params
# Tests (and impatient clusters) shorten the two timings without a config change.
HEARTBEAT_ENV = "KUBETUNE_HEARTBEAT_INTERVAL"
GRACE_ENV = "KUBETUNE_HEARTBEAT_GRACE"


def heartbeat_settings() -> tuple[int, int]:
    """(interval, grace period) in seconds: the defaults or ``$KUBETUNE_HEARTBEAT_*``."""
    values = []
    for env, default in ((HEARTBEAT_ENV, HEARTBEAT_INTERVAL), (GRACE_ENV, GRACE_PERIOD)):
        raw = os.environ.get(env)
        if raw is None or raw == "":
            values.append(default)
            continue
        try:
            value = int(raw)
        except ValueError:
            value = 0
        if value <= 0:
            raise ConfigError(f"${env} must be a positive whole number of seconds, but got {raw!r}")
        values.append(value)
    interval, grace = values
    return interval, max(grace, interval + 1)


def resolve_storage_url(cli_value: str | None = None, search: SearchConfig | None = None) -> str:
    """``--storage`` > ``$KUBETUNE_STORAGE_URL`` > ``search.storage`` > the SQLite default."""
    for candidate in (cli_value, os.environ.get(STORAGE_ENV), search.storage if search else None):
        if candidate:
            return candidate
    return DEFAULT_STORAGE


def mask_url(url: str) -> str:
    """The URL with any password replaced by ``***``: the only form that is ever logged."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return url.split("@")[-1] if "@" in url else url
    return parsed.render_as_string(hide_password=True)


def _normalise(url: str) -> str:
    # Plain postgresql:// would pick psycopg2; kubetune ships psycopg 3.
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def make_grpc_storage(url: str) -> optuna.storages.BaseStorage:
    """``grpc://host:port``: Optuna's gRPC storage proxy (``optuna.storages.run_grpc_proxy_server``
    in front of the database). It has no heartbeats: a worker killed outright leaves its
    trial RUNNING (the operator still fails it from its Job)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    if not parts.hostname or port is None:
        raise ConfigError(f"`search.storage` must be grpc://HOST:PORT, but got {url!r}", path="search.storage")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.GrpcStorageProxy(host=parts.hostname, port=port)
    except ImportError:
        raise ConfigError("a grpc:// storage needs grpcio: pip install grpcio", path="search.storage") from None


def make_storage(url: str, *, heartbeat: bool = True, pool_size: int = POOL_SIZE,
                 max_overflow: int = MAX_OVERFLOW) -> optuna.storages.BaseStorage:
    """An RDB storage with pre-ping, heartbeats and bounded retries of stale trials;
    or, for ``grpc://host:port``, Optuna's gRPC storage proxy. ``pool_size`` and
    ``max_overflow`` bound its PostgreSQL connections (the chart sizes max_connections on them)."""
    if url.startswith("grpc://"):
        return make_grpc_storage(url)
    url = _normalise(url)
    try:
        make_url(url)
    except ArgumentError:
        raise ConfigError(f"`search.storage` is not a database URL: {mask_url(url)!r}", path="search.storage") from None
    if url.startswith("sqlite"):
        # Several local worker processes share the file: wait for the lock instead of failing.
        engine_kwargs: dict = {"connect_args": {"timeout": 60}}
    else:
        engine_kwargs = {"pool_pre_ping": True, "pool_size": pool_size, "max_overflow": max_overflow}
    extra = {}
    interval, grace = heartbeat_settings() if heartbeat else (0, 0)
    try:
        with warnings.catch_warnings():
            # Heartbeats are "experimental" in Optuna 5 and warn on every storage.
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            if heartbeat:
                extra = {
                    "heartbeat_interval": interval,
                    "grace_period": grace,
                    "heartbeat_stale_trial_callback": optuna.storages.RetryHeartbeatStaleTrialCallback(
                        max_retry=MAX_RETRIES
                    ),
                }
            return _create_rdb(url, engine_kwargs, extra)
    except Exception as exc:  # sqlalchemy's OperationalError and friends
        from kubetune.errors import KubetuneError

        reason = str(exc).splitlines()[0][:200].replace(url, mask_url(url))
        raise KubetuneError(f"cannot open storage {mask_url(url)}: {reason}") from None


def _create_rdb(url: str, engine_kwargs: dict, extra: dict) -> optuna.storages.RDBStorage:
    # Workers that start together on a fresh database race to create Optuna's tables;
    # the loser sees a duplicate-key or already-exists error and simply tries again.
    from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

    for attempt in range(4):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, **extra)
        except (IntegrityError, ProgrammingError, OperationalError) as exc:
            racing = any(word in str(exc).lower() for word in ("duplicate", "already exists", "locked"))
            if not racing or attempt == 3:
                raise
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")
