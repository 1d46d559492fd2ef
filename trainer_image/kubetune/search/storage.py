"""Optuna storage URLs: where they come from, how they are logged, how they connect."""

from __future__ import annotations

import os
import re
import time
import warnings
from pathlib import Path
from typing import Any

import optuna
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DatabaseError, NoSuchModuleError

from kubetune.config.search_schema import DEFAULT_STORAGE, SearchConfig
from kubetune.errors import ConfigError, KubetuneError, UsageError
from kubetune.search.outage import RidingStorage, server_refusal

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


class StorageUrl(str):
    """A storage URL that remembers where it came from, so an error blames the right place.

    ``source`` is ``"--storage"``, ``"$KUBETUNE_STORAGE_URL"``, ``"search.storage"``, or
    ``None`` (the default, or a URL from elsewhere). It is a ``str`` everywhere else.
    """

    source: str | None

    def __new__(cls, value: str, source: str | None = None) -> StorageUrl:
        url = super().__new__(cls, value)
        url.source = source
        return url


def resolve_storage_url(cli_value: str | None = None, search: SearchConfig | None = None) -> StorageUrl:
    """``--storage`` > ``$KUBETUNE_STORAGE_URL`` > ``search.storage`` > the SQLite default."""
    candidates = (
        ("--storage", cli_value),
        (f"${STORAGE_ENV}", os.environ.get(STORAGE_ENV)),
        ("search.storage", search.storage if search else None),
    )
    for source, candidate in candidates:
        if candidate:
            return StorageUrl(candidate, source)
    return StorageUrl(DEFAULT_STORAGE)


def _bad_url(source: str | None, message: str) -> KubetuneError:
    """A storage URL the user must fix: ``--storage`` is usage, the others config (exit 2 both)."""
    # ``message`` starts with "{name}"; not str.format, which a URL's own braces would break.
    name = f"`{source}`" if source else "the storage URL"
    text = message.replace("{name}", name, 1)
    if source == "--storage":
        return UsageError(text)
    return ConfigError(text, path=source)


def mask_url(url: str) -> str:
    """The URL with any password replaced by ``***``: the only form that is ever logged."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):  # unparsable, or a port that is not a number
        return re.sub(r"(://[^:/@]*):[^@]*@", r"\1:***@", url)
    return parsed.render_as_string(hide_password=True)


def _normalise(url: str) -> str:
    # Plain postgresql:// would pick psycopg2; kubetune ships psycopg 3.
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def make_grpc_storage(url: str, source: str | None = None) -> optuna.storages.BaseStorage:
    """``grpc://host:port``: Optuna's gRPC storage proxy (``optuna.storages.run_grpc_proxy_server``
    in front of the database). It has no heartbeats: a worker killed outright leaves its
    trial RUNNING (the operator still fails it from its Job)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    source = source or getattr(url, "source", None)
    if not parts.hostname or port is None:
        raise _bad_url(source, f"{{name}} must be grpc://HOST:PORT, but got {mask_url(url)!r}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.GrpcStorageProxy(host=parts.hostname, port=port)
    except ImportError:
        raise _bad_url(source, "{name} is a grpc:// storage, which needs grpcio: pip install grpcio") from None


def sqlite_file(url: str | URL) -> Path | None:
    """The database file of a ``sqlite:///`` URL; ``None`` for other URLs and in-memory SQLite."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def _parse(url: str, source: str | None) -> URL:
    """The parsed URL, once SQLAlchemy knows its kind of database."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        raise _bad_url(source, (
            "{name} must be a database URL such as sqlite:///optuna_studies.db or "
            f"postgresql://USER:PASSWORD@HOST/DATABASE, but got {mask_url(url)!r}"
        )) from None
    try:
        parsed.get_dialect()
    except NoSuchModuleError:
        raise _bad_url(source, (
            "{name} must be a sqlite://, postgresql:// or grpc:// URL, but got "
            f"{mask_url(url)!r} (no database kind {parsed.drivername!r})"
        )) from None
    return parsed


def require_existing(url: str, source: str | None = None) -> None:
    """For reading: a SQLite file that does not exist, a SQLite file or a database server's
    database without Optuna's tables, is a :class:`UsageError`; none is made into a storage
    (Optuna creates its tables on first use), and a SQLite file is only read. Whether it
    holds a study is for the caller; a gRPC proxy is left to answer for itself.
    """
    source = source or getattr(url, "source", None)
    if url.startswith("grpc://"):
        return
    where = f"{mask_url(url)} from {source}" if source else mask_url(url)
    normal = _normalise(url)
    parsed = _parse(normal, source)
    db_file = sqlite_file(parsed)
    if db_file is not None:
        if not db_file.exists():
            raise UsageError(f"no Optuna storage at {db_file} ({where}): run ml-search first or pass --storage")
        if _sqlite_holds_optuna_tables(db_file) is False:
            raise UsageError(f"no Optuna storage in {db_file} ({where}): the file has no Optuna tables; "
                             "run ml-search first or pass --storage")
        return
    if not parsed.drivername.startswith("sqlite") and not _holds_optuna_tables(parsed, normal, source):
        raise UsageError(f"no Optuna storage in {where}: the database has no Optuna tables; "
                         "run ml-search first or pass --storage")


def _sqlite_holds_optuna_tables(db_file: Path) -> bool | None:
    """Whether the SQLite file holds Optuna's ``studies`` table, read without changing a byte
    (Optuna would create its tables in it); ``None`` when SQLite cannot tell (a folder, not a
    database, locked): make_storage then names the problem."""
    import sqlite3

    if not db_file.is_file():
        return None
    try:
        # mode=ro: SQLite neither creates nor writes the file (nor a journal next to it).
        conn = sqlite3.connect(f"{db_file.resolve().as_uri()}?mode=ro", uri=True, timeout=10)
    except (sqlite3.Error, OSError, ValueError):
        return None
    try:
        row = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'studies'").fetchone()
    except sqlite3.Error:
        return None
    finally:
        conn.close()
    return row is not None


def _holds_optuna_tables(parsed: URL, url: str, source: str | None = None) -> bool:
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    try:
        engine = sqlalchemy.create_engine(parsed, poolclass=NullPool)
    except (ImportError, ArgumentError, NoSuchModuleError):
        return True  # make_storage names the URL's problem
    try:
        return sqlalchemy.inspect(engine).has_table("studies")
    except Exception as exc:  # a server that does not answer, or refuses the URL's database or login
        raise (_refused(url, exc, source) or _unreachable(url, exc)) from None
    finally:
        engine.dispose()


def _server(parsed: URL) -> str:
    """Where libpq connects: ``host:port``, or the socket folder of ``?host=/run/postgresql``."""
    host = parsed.host or parsed.query.get("host") or "localhost"
    if not isinstance(host, str):  # ?host=a&host=b: libpq tries each
        host = ",".join(host)
    return host if host.startswith("/") else f"{host}:{parsed.port or 5432}"


def _refused(url: str, exc: BaseException, source: str | None) -> KubetuneError | None:
    """A PostgreSQL database that does not exist, or a login the server refuses: exit 2,
    blaming where the URL came from. None when the server did not refuse (exit 1 then)."""
    refusal = server_refusal(exc)
    if refusal is None:
        return None
    kind, reason = refusal
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return None
    server = _server(parsed)
    shown = mask_url(url)
    reason = reason.replace(url, shown)  # libpq's messages carry no password; a URL would
    if kind == "database":
        return _bad_url(source, (
            f"{{name}} names database {parsed.database!r}, which does not exist on the PostgreSQL "
            f"server at {server} ({shown}); create it or fix the URL"
        ))
    return _bad_url(source, (
        f"{{name}} names a login the PostgreSQL server at {server} refuses: user "
        f"{parsed.username!r} to database {parsed.database!r} ({shown}): {reason}"
    ))


def _check_sqlite_file(db_file: Path, url: str, source: str | None) -> None:
    # SQLite's own word for every one of these is "unable to open database file".
    if db_file.is_dir():
        raise _bad_url(source, f"{{name}} must name a SQLite database file, but {db_file} is a folder")
    folder = db_file.parent
    if not folder.is_dir():
        raise _bad_url(source, (
            f"{{name}} must name a SQLite file in an existing folder, but {folder} "
            f"does not exist ({mask_url(url)})"
        ))


def _sqlite_open_error(exc: DatabaseError, db_file: Path, source: str | None) -> KubetuneError | None:
    """A SQLite file that cannot be opened as a database is the user's to fix (exit 2)."""
    reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
    if "locked" in reason.lower():
        return None  # another process holds it: try again later, not a wrong URL
    if "not a database" in reason:
        return _bad_url(source, f"{{name}} must name a SQLite database, but {db_file} is not one ({reason})")
    return _bad_url(source, f"{{name}} must name a SQLite file kubetune can open, but {db_file}: {reason}")


def make_storage(url: str, *, heartbeat: bool = True, must_exist: bool = False,
                 source: str | None = None, pool_size: int = POOL_SIZE,
                 max_overflow: int = MAX_OVERFLOW) -> optuna.storages.BaseStorage:
    """An RDB storage with heartbeats, bounded retries of stale trials, and
    outages ridden out (:mod:`kubetune.search.outage`);
    or, for ``grpc://host:port``, Optuna's gRPC storage proxy. ``pool_size`` and
    ``max_overflow`` bound its PostgreSQL connections (the chart sizes max_connections on them).

    ``must_exist``: for commands that only read, a missing SQLite file is a
    :class:`UsageError` instead of a new, empty database. ``source`` names where the URL
    came from in errors (default: the :class:`StorageUrl`'s own). A URL the user must fix
    (unparsable, unknown kind, no such folder, not a database, a PostgreSQL database that
    does not exist or a login the server refuses) is a usage or config error (exit 2); a
    server that does not answer is a :class:`KubetuneError` (exit 1).
    """
    source = source or getattr(url, "source", None)
    if url.startswith("grpc://"):
        return make_grpc_storage(url, source)
    if must_exist:
        require_existing(url, source)  # Optuna's tables are there: no CREATE TABLE round trips
    url = _normalise(url)
    db_file = sqlite_file(_parse(url, source))
    if db_file is not None:
        _check_sqlite_file(db_file, url, source)
    if url.startswith("sqlite"):
        # Several local worker processes share the file: wait for the lock instead of failing.
        engine_kwargs: dict[str, Any] = {"connect_args": {"timeout": 60}}
    else:
        # No pool_pre_ping: it costs a transaction of its own on every checkout, and a
        # connection that died with the server fails its call, which is tried again on a
        # fresh one (the pool drops every connection older than the failure).
        engine_kwargs = {"pool_size": pool_size, "max_overflow": max_overflow}
    extra: dict[str, Any] = {"skip_table_creation": must_exist}
    interval, grace = heartbeat_settings() if heartbeat else (0, 0)
    try:
        with warnings.catch_warnings():
            # Heartbeats are "experimental" in Optuna 5 and warn on every storage.
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            if heartbeat:
                extra |= {
                    "heartbeat_interval": interval,
                    "grace_period": grace,
                    "heartbeat_stale_trial_callback": optuna.storages.RetryHeartbeatStaleTrialCallback(
                        max_retry=MAX_RETRIES
                    ),
                }
            # Opened once while the server answers (a wrong URL fails now); from here on
            # its calls ride out outages.
            return RidingStorage(_create_rdb(url, engine_kwargs, extra), mask_url(url))
    except ImportError:  # Optuna's "Failed to import DB access module": no driver installed
        raise _bad_url(source, (
            "{name} must be a sqlite://, postgresql:// or grpc:// URL (the drivers kubetune "
            f"ships), but got {mask_url(url)!r}, whose driver is not installed"
        )) from None
    except Exception as exc:  # a server that does not answer, a schema Optuna refuses, ...
        # Optuna wraps an error raised inside its sessions in StorageInternalError.
        cause = exc if isinstance(exc, DatabaseError) else exc.__cause__
        if isinstance(cause, DatabaseError):
            bad = _sqlite_open_error(cause, db_file, source) if db_file is not None else _refused(url, cause, source)
            if bad is not None:
                raise bad from None
        raise _unreachable(url, exc) from None


def open_before_work(url: str, source: str | None = None) -> optuna.storages.BaseStorage | None:
    """The storage, opened and checked before any slow work, so a wrong URL or a server
    that does not answer fails at once; None for a SQLite file that does not exist yet,
    whose URL and folder are checked instead (it is made only once the work can start,
    so a failed start leaves no file behind)."""
    source = source or getattr(url, "source", None)
    if not url.startswith("grpc://"):
        db_file = sqlite_file(_parse(_normalise(url), source))
        if db_file is not None and not db_file.exists():
            _check_sqlite_file(db_file, url, source)
            return None
    return make_storage(url, source=source)


def _unreachable(url: str, exc: Exception) -> KubetuneError:
    """Exit 1, one line, no password: not the user's typo (a server down, a lock held)."""
    reason = str(exc).splitlines()[0][:200].replace(url, mask_url(url)) if str(exc) else type(exc).__name__
    return KubetuneError(f"cannot open storage {mask_url(url)}: {reason}")


def _create_rdb(url: str, engine_kwargs: dict[str, Any], extra: dict[str, Any]) -> optuna.storages.RDBStorage:
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
