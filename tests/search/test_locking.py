"""The SQLite study lock: held on the database file itself, so nothing is left beside it."""

from __future__ import annotations

import subprocess
import sys

import optuna

from kubetune.search.locking import StudyLock

TRY_LOCK = """
import fcntl, sys
with open(sys.argv[1], "rb") as handle:
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        sys.exit(3)
"""

USE_STUDY = """
import optuna, sys
optuna.logging.set_verbosity(optuna.logging.ERROR)
study = optuna.load_study(study_name="s", storage=sys.argv[1])
trial = study.ask()
study.tell(trial, 1.0)
print(len(study.trials))
"""


def test_the_lock_excludes_other_processes_leaves_no_file_and_sqlite_keeps_working(tmp_path):
    db = tmp_path / "optuna_studies.db"
    url = f"sqlite:///{db}"
    optuna.create_study(study_name="s", storage=url)
    lock = StudyLock(url, "s")
    with lock:
        held = subprocess.run([sys.executable, "-c", TRY_LOCK, str(db)])
        assert held.returncode == 3, "another process took the lock while it was held"
        used = subprocess.run([sys.executable, "-c", USE_STUDY, url], capture_output=True, text=True, timeout=60)
        assert used.returncode == 0 and used.stdout.strip() == "1", used.stderr
    assert subprocess.run([sys.executable, "-c", TRY_LOCK, str(db)]).returncode == 0
    lock.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["optuna_studies.db"]


def test_the_postgres_lock_excludes_other_holders_and_outlives_a_lost_connection(postgres_url):
    import threading

    import sqlalchemy

    first, second = StudyLock(postgres_url, "s"), StudyLock(postgres_url, "s")
    taken = threading.Event()

    def take() -> None:
        with second:
            taken.set()

    first.acquire()
    waiter = threading.Thread(target=take)
    waiter.start()
    assert not taken.wait(1.0), "a second holder took the lock while it was held"
    first.release()
    assert taken.wait(30), "the lock was not released"
    waiter.join()
    # The lock keeps its connection between uses; one the server ended is replaced.
    admin = sqlalchemy.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        ended = conn.execute(sqlalchemy.text(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()")).scalar_one()
    admin.dispose()
    assert ended >= 2  # both locks' connections
    with first:
        assert first.held
    first.close()
    second.close()
