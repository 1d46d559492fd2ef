"""A storage outage is ridden out: nothing failed, lost, left RUNNING or written twice."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from sqlalchemy.exc import OperationalError

from kubetune.search.attributes import FAIL_REASON_ATTR
from kubetune.search.outage import RidingStorage, StorageUnreachable, server_refusal
from kubetune.search.storage import make_storage
from tests.conftest import BIN
from tests.polling import wait_until
from tests.search.conftest import (
    CLEAN_ENV,
    search_section,
    small_base,
    start_search,
    trials_now,
    write_config,
)
from tests.search.own_postgres import OwnPostgres


def _dropped_after_commit(monkeypatch, storage: RidingStorage, method: str) -> list[int]:
    """``method`` commits, then its connection drops before the answer comes back (once)."""
    real = getattr(storage.inner, method)
    calls: list[int] = []

    def commit_then_drop(*args, **kwargs):
        result = real(*args, **kwargs)
        calls.append(1)
        if len(calls) == 1:
            raise OperationalError("COMMIT", {}, Exception("server closed the connection unexpectedly"))
        return result
    monkeypatch.setattr(storage.inner, method, commit_then_drop)
    return calls


@pytest.fixture
def riding(tmp_path) -> RidingStorage:
    storage = make_storage(f"sqlite:///{tmp_path / 's.db'}", heartbeat=False)
    assert isinstance(storage, RidingStorage)
    return storage


def test_a_trial_whose_creation_landed_is_not_created_again(monkeypatch, riding):
    study = optuna.create_study(storage=riding, study_name="s")
    calls = _dropped_after_commit(monkeypatch, riding, "create_new_trial")
    trial = study.ask()
    assert len(calls) == 1  # looked for, found, not asked again
    assert [t.number for t in study.get_trials()] == [trial.number]


def test_a_tell_whose_commit_landed_is_not_told_again(monkeypatch, riding):
    study = optuna.create_study(storage=riding, study_name="s")
    trial = study.ask()
    trial.report(0.5, 1)
    calls = _dropped_after_commit(monkeypatch, riding, "set_trial_state_values")
    study.tell(trial, 0.9)  # Optuna would raise UpdateFinishedTrialError on a blind repeat
    assert len(calls) == 1
    (told,) = study.get_trials()
    assert told.state == TrialState.COMPLETE and told.value == 0.9


def _function_dropped(monkeypatch, name: str, after_commit: bool) -> list[int]:
    """``kubetune.search.outage.<name>`` loses its connection once, before or after its commit."""
    import kubetune.search.outage as outage

    real = getattr(outage, name)
    calls: list[int] = []

    def dropped(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1 and not after_commit:
            raise OperationalError("INSERT", {}, Exception("server closed the connection unexpectedly"))
        result = real(*args, **kwargs)
        if len(calls) == 1:
            raise OperationalError("COMMIT", {}, Exception("server closed the connection unexpectedly"))
        return result
    monkeypatch.setattr(outage, name, dropped)
    return calls


@pytest.mark.parametrize("after_commit", [True, False])
def test_params_written_together_are_written_once(monkeypatch, riding, after_commit):
    from kubetune.search.optuna_internals import writes_together

    study = optuna.create_study(storage=riding, study_name="s")
    trial = study.ask()
    calls = _function_dropped(monkeypatch, "write_params_and_attrs", after_commit)
    with writes_together(trial):
        x = trial.suggest_float("x", 0, 1)
        trial.set_user_attr("worker", "w1")
    assert len(calls) == (1 if after_commit else 2)  # a commit that landed is found, not repeated
    (stored,) = study.get_trials()
    assert stored.params == {"x": x} and stored.user_attrs == {"worker": "w1"}


@pytest.mark.parametrize("after_commit", [True, False])
def test_attributes_told_with_the_outcome_are_written_once(monkeypatch, riding, after_commit):
    from kubetune.search.optuna_internals import set_trial_user_attrs

    study = optuna.create_study(storage=riding, study_name="s")
    trial = study.ask()
    set_trial_user_attrs(study, trial, {"usage": {"wall_seconds": 3.0}}, with_outcome=True)
    calls = _function_dropped(monkeypatch, "write_outcome", after_commit)
    study.tell(trial, 0.9)
    assert len(calls) == (1 if after_commit else 2)
    (told,) = study.get_trials()
    assert told.state == TrialState.COMPLETE and told.user_attrs == {"usage": {"wall_seconds": 3.0}}


def test_stale_trials_are_looked_for_once_a_heartbeat_interval(monkeypatch, tmp_path):
    import kubetune.search.outage as outage

    monkeypatch.setenv("KUBETUNE_HEARTBEAT_INTERVAL", "5")
    storage = make_storage(f"sqlite:///{tmp_path / 's.db'}")
    study = optuna.create_study(storage=storage, study_name="s")
    looks: list[int] = []
    real = outage.stale_trial_ids
    monkeypatch.setattr(outage, "stale_trial_ids", lambda rdb, sid: looks.append(sid) or real(rdb, sid))
    now = [100.0]
    monkeypatch.setattr(outage.time, "monotonic", lambda: now[0])
    for _ in range(3):  # Optuna asks before every trial
        optuna.storages.fail_stale_trials(study)
    assert len(looks) == 1
    now[0] += 5
    optuna.storages.fail_stale_trials(study)
    assert len(looks) == 2


def test_an_outage_past_the_bound_is_one_error(monkeypatch, riding):
    monkeypatch.setattr(riding.outage, "limit", 0.3)

    def down(*args, **kwargs):
        raise OperationalError("SELECT", {}, Exception("connection refused"))
    monkeypatch.setattr(riding.inner, "get_all_studies", down)
    with pytest.raises(StorageUnreachable, match=r"unreachable for \d+ s .*connection refused"):
        riding.get_all_studies()


@pytest.mark.postgres
def test_a_database_dropped_under_a_storage_is_no_outage(postgres_server_url, postgres_url):
    # The server answers and refuses the database: the user's to fix, not waited out for
    # the outage bound (an operator pass would hold its thread, and its shutdown, that long).
    import sqlalchemy

    storage = make_storage(postgres_url, heartbeat=False)
    assert isinstance(storage, RidingStorage) and storage.outage.limit >= 60
    storage.rdb.engine.dispose()
    admin = sqlalchemy.create_engine(postgres_server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        database = sqlalchemy.engine.make_url(postgres_url).database
        conn.execute(sqlalchemy.text(f'DROP DATABASE "{database}" WITH (FORCE)'))
    admin.dispose()
    began = time.monotonic()
    with pytest.raises(Exception) as raised:  # noqa: B017 (Optuna wraps it; the cause names it)
        storage.get_all_studies()
    assert time.monotonic() - began < storage.outage.limit / 4
    assert server_refusal(raised.value) == ("database", f'database "{database}" does not exist')


@pytest.fixture
def own_postgres():
    # Not under tmp_path: the server runs as the postgres user, which may not enter it.
    folder = Path(tempfile.mkdtemp(prefix="kubetune-pg-"))
    server = OwnPostgres(folder)
    server.start()
    yield server
    server.close()
    shutil.rmtree(folder, ignore_errors=True)


def _assert_exact(url: str, study: str, n_trials: int, err: str) -> None:
    trials = trials_now(url, study)
    states = [t.state for t in trials]
    assert len(trials) == n_trials, (states, err[-3000:])
    assert states.count(TrialState.FAIL) == 0, ([t.user_attrs.get(FAIL_REASON_ATTR) for t in trials], err[-3000:])
    assert TrialState.RUNNING not in states and TrialState.WAITING not in states, states


def test_a_database_restart_and_a_stop_mid_search_are_ridden_out(fast_config, tmp_path, own_postgres):
    """A fast restart while trials run, then the server down for a few seconds: exactly
    n_trials, none failed, none left RUNNING, and one line each way per worker."""
    url = own_postgres.url
    config = write_config(tmp_path / "c.yaml", small_base(fast_config, epochs=4, fraction=0.2),
                          search_section(study_name="outage", n_trials=8))
    proc = start_search(config, "--n-jobs", "2", cwd=tmp_path, env={"KUBETUNE_STORAGE_URL": url})
    try:
        wait_until(lambda: any(t.intermediate_values for t in trials_now(url, "outage")), timeout=300,
                   what="a first epoch")
        own_postgres.restart()
        finished = len([t for t in trials_now(url, "outage") if t.state.is_finished()])
        wait_until(lambda: len([t for t in trials_now(url, "outage") if t.state.is_finished()]) > finished,
                   timeout=300, what="a trial to finish after the restart")
        own_postgres.stop()
        time.sleep(5)
        own_postgres.start()
        _, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    assert "is unreachable" in err and "is back after" in err, err[-3000:]
    _assert_exact(url, "outage", 8, err)


def test_an_outage_past_the_bound_stops_with_one_line_and_resume_finishes(fast_config, tmp_path, own_postgres):
    url = own_postgres.url
    config = write_config(tmp_path / "c.yaml", small_base(fast_config, epochs=3, fraction=0.2),
                          search_section(study_name="long-outage", n_trials=4))
    env = {"KUBETUNE_STORAGE_URL": url, "KUBETUNE_STORAGE_OUTAGE": "2",
           "KUBETUNE_HEARTBEAT_INTERVAL": "1", "KUBETUNE_HEARTBEAT_GRACE": "2"}
    proc = start_search(config, cwd=tmp_path, env=env)
    try:
        wait_until(lambda: any(t.intermediate_values for t in trials_now(url, "long-outage")), timeout=300,
                   what="a first epoch")
        own_postgres.stop()
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    errors = [line for line in err.splitlines() if line.startswith("ml-search: error:")]
    assert len(errors) == 1 and "unreachable for" in errors[0], err[-3000:]
    own_postgres.start()
    code = subprocess.run([str(BIN / "ml-search"), "--config", str(config), "--resume"], cwd=tmp_path,
                          env={**os.environ, **CLEAN_ENV, **env}, capture_output=True, text=True, timeout=600)
    assert code.returncode == 0, code.stderr[-3000:]
    trials = trials_now(url, "long-outage")
    retried = {n for t in trials for n in t.system_attrs.get("retry_history", ())}
    counted = [t for t in trials if t.number not in retried]
    assert len(counted) == 4 and all(t.state != TrialState.RUNNING for t in trials)


@pytest.fixture
def beating(monkeypatch, tmp_path) -> tuple[RidingStorage, list[int]]:
    """A storage with heartbeats; the trial ids Optuna's own ``record_heartbeat`` beat for."""
    monkeypatch.setenv("KUBETUNE_HEARTBEAT_INTERVAL", "5")
    storage = make_storage(f"sqlite:///{tmp_path / 's.db'}")
    assert isinstance(storage, RidingStorage)
    beats: list[int] = []
    real = storage.rdb.record_heartbeat
    monkeypatch.setattr(storage.rdb, "record_heartbeat", lambda trial_id: beats.append(trial_id) or real(trial_id))
    return storage, beats


def test_a_new_trials_first_heartbeat_rides_with_its_params(beating):
    from kubetune.search.optuna_internals import stale_trial_ids, trial_id_of, writes_together

    storage, beats = beating
    study = optuna.create_study(storage=storage, study_name="s")
    trial = study.ask()
    beat = threading.Thread(target=storage.record_heartbeat, args=(trial_id_of(trial),))
    beat.start()  # as Optuna's heartbeat thread does when the trial starts
    with writes_together(trial):
        trial.suggest_float("x", 0, 1)
    beat.join(timeout=5)
    assert beats == []  # the params' transaction beat for it
    assert stale_trial_ids(storage.rdb, study._study_id) == []
    storage.record_heartbeat(trial_id_of(trial))  # the next beats are Optuna's own
    assert beats == [trial_id_of(trial)]


def test_a_first_heartbeat_without_params_in_time_beats_on_its_own(monkeypatch, beating):
    import kubetune.search.outage as outage
    from kubetune.search.optuna_internals import trial_id_of

    monkeypatch.setattr(outage, "FIRST_BEAT_WAIT", 0.05)
    storage, beats = beating
    study = optuna.create_study(storage=storage, study_name="s")
    trial = study.ask()
    storage.record_heartbeat(trial_id_of(trial))  # a sampler slower than the wait
    assert beats == [trial_id_of(trial)]

    monkeypatch.setattr(outage, "FIRST_BEAT_WAIT", 30)
    study.enqueue_trial({"x": 0.5})  # a queued trial claimed here is started here as well
    queued = study.ask()
    beat = threading.Thread(target=storage.record_heartbeat, args=(trial_id_of(queued),))
    beat.start()
    study.tell(queued, 0.5)  # it ends (its objective failed) before its params were written
    beat.join(timeout=10)
    assert not beat.is_alive() and beats == [trial_id_of(trial)]
