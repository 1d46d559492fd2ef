"""One lock per study, shared by every worker that asks for trials.

Optuna's RDB storage hands out trial numbers atomically but has no notion of a
budget: two workers that both see "9 of 10 trials" would both start one more.
Workers therefore take this lock around "count the trials, ask for a new one,
sample its parameters", which makes ``n_trials`` exact across processes and
machines. The lock dies with its holder (a closed connection, a closed file), so
a SIGKILLed worker never blocks the others; taking it rides out a storage outage.

- PostgreSQL: a transaction-level advisory lock keyed by the study name, on a
  connection the lock keeps: taking and releasing it is one transaction.
- SQLite: ``flock`` on the database file itself, so no lock file is left beside it.
  SQLite's own locks are POSIX record locks, which ``flock`` does not touch on a local
  filesystem (SQLite is local by nature).
- In-memory and other databases: a process-local lock (no cross-process guarantee).
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from kubetune.search.outage import Outage, is_connection_error
from kubetune.search.storage import mask_url, sqlite_file


def _advisory_key(study_name: str) -> int:
    digest = hashlib.sha256(f"kubetune:{study_name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _sql(text: str) -> Any:
    import sqlalchemy

    return sqlalchemy.text(text)


class StudyLock:
    """A re-usable, non-reentrant lock; ``release`` is a no-op when not held."""

    def __init__(self, url: str, study_name: str) -> None:
        self._url = make_url(url)
        self._key = _advisory_key(study_name)
        self._held = False
        self._local = threading.Lock()
        self._engine: Any = None
        self._conn: Any = None
        self._file: Any = None
        self._outage = Outage(mask_url(url))

    @property
    def held(self) -> bool:
        return self._held

    def acquire(self) -> None:
        self._local.acquire()
        try:
            db_file = sqlite_file(self._url)
            if self._url.get_backend_name() == "postgresql":
                self._outage.run(self._acquire_postgres)
            elif db_file is not None:
                self._acquire_file(db_file)
        except BaseException:
            self._local.release()
            raise
        self._held = True

    def release(self) -> None:
        if not self._held:
            return
        self._held = False
        try:
            if self._conn is not None:
                try:
                    self._conn.commit()  # ends the transaction, and the lock with it
                except Exception as exc:
                    self._drop_connection()
                    if not is_connection_error(exc):
                        raise  # a lost connection took the lock with it
            if self._file is not None:
                import fcntl

                handle, self._file = self._file, None
                fcntl.flock(handle, fcntl.LOCK_UN)
                handle.close()
        finally:
            self._local.release()

    def close(self) -> None:
        self.release()
        self._drop_connection()
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def __enter__(self) -> StudyLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def _acquire_postgres(self) -> None:
        import sqlalchemy

        if self._engine is None:
            url = self._url
            if url.drivername == "postgresql":
                url = url.set(drivername="postgresql+psycopg")
            self._engine = sqlalchemy.create_engine(url, pool_size=1)
        if self._conn is None:
            self._conn = self._engine.connect()
        try:
            # A connection that died meanwhile fails here; the outage retry reconnects.
            self._conn.execute(_sql("SELECT pg_advisory_xact_lock(:key)"), {"key": self._key})
        except BaseException:
            self._drop_connection()
            raise

    def _drop_connection(self) -> None:
        """Close the lock's connection (a transaction still open ends, its lock too)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def _acquire_file(self, path: Path) -> None:
        import fcntl

        handle = open(path, "rb")  # noqa: SIM115 - held until release(); never written
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
        except BaseException:
            handle.close()
            raise
        self._file = handle
