"""Each private piece of Optuna that kubetune uses, against the installed Optuna.

An Optuna upgrade that removes or changes one fails here, naming it, instead of in a
trial pod or the operator. The fix goes in ``kubetune/search/optuna_internals.py`` (or
``kubetune/search/attributes.py`` for Optuna's attribute names).
"""

from __future__ import annotations

from typing import Any

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import BaseStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from kubetune.search import optuna_internals as internals
from kubetune.search.attributes import (
    FAILED_TRIAL_ATTR,
    FIXED_PARAMS_ATTR,
    RETRY_HISTORY_ATTR,
    completed_rung,
)

DIST = FloatDistribution(0.0, 1.0)


def _private(obj: Any, name: str) -> Any:
    """``obj.<name>``, or a failure that says what Optuna moved."""
    if not hasattr(obj, name):
        pytest.fail(f"optuna {optuna.__version__}: {type(obj).__name__}.{name} is gone; "
                    "kubetune/search/optuna_internals.py needs another way to it", pytrace=False)
    return getattr(obj, name)


def _expect(condition: bool, what: str) -> None:
    if not condition:
        pytest.fail(f"optuna {optuna.__version__}: {what} changed; update "
                    "kubetune/search/optuna_internals.py", pytrace=False)


@pytest.fixture
def study(tmp_path):
    """An RDB study, as ml-search and the operator use (Optuna caches RDB storages)."""
    return optuna.create_study(study_name="s", storage=f"sqlite:///{tmp_path / 's.db'}")


def test_storage_of_is_study_storage(study):
    storage = _private(study, "_storage")
    _expect(isinstance(storage, BaseStorage), "Study._storage (no longer a BaseStorage)")
    assert internals.storage_of(study) is storage
    assert internals.storage_of(study).get_study_id_from_name("s") is not None


def test_study_id_of_is_study_study_id(study):
    _private(study, "_study_id")
    _expect(internals.study_id_of(study) == study._storage.get_study_id_from_name("s"),
            "Study._study_id (no longer the storage's id of the study)")


def test_trial_id_of_is_trial_trial_id_for_trials_and_frozen_trials(study):
    trial = study.ask({"x": DIST})
    frozen = study.get_trials(deepcopy=False)[0]
    _private(trial, "_trial_id")
    _private(frozen, "_trial_id")
    stored_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, trial.number)
    _expect(internals.trial_id_of(trial) == stored_id, "Trial._trial_id (no longer the storage's id)")
    _expect(internals.trial_id_of(frozen) == stored_id, "FrozenTrial._trial_id (no longer the storage's id)")


def test_trial_id_by_number_finds_a_trial_and_raises_key_error_without_one(study):
    trial = study.ask({"x": DIST})
    assert internals.trial_id_by_number(study, trial.number) == internals.trial_id_of(trial)
    with pytest.raises(KeyError):  # single_trial turns it into "the study has no trial N"
        internals.trial_id_by_number(study, 99)


def test_stored_trial_reads_what_another_process_wrote(study, tmp_path):
    trial = study.ask({"x": DIST})
    other = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 's.db'}")
    other.tell(trial.number, state=TrialState.FAIL)
    assert internals.stored_trial(study, trial).state == TrialState.FAIL


def test_set_trial_user_attr_writes_through_the_storage(study):
    trial = study.ask({"x": DIST})
    frozen = study.get_trials(deepcopy=False)[0]
    internals.set_trial_user_attr(study, frozen, "a", 1)  # a FrozenTrial: straight to the storage
    internals.set_trial_user_attr(study, trial, "b", 2)  # a Trial: its own copy too
    assert trial.user_attrs["b"] == 2
    assert study.get_trials(deepcopy=False)[0].user_attrs == {"a": 1, "b": 2}
    study.tell(trial, 0.5)
    # The ledger reads this error as "it finished meanwhile".
    with pytest.raises(UpdateFinishedTrialError):
        internals.set_trial_user_attr(study, frozen, "c", 3)


def test_set_trial_user_attrs_writes_them_in_one_transaction(tmp_path):
    from sqlalchemy import event

    from kubetune.search.storage import make_storage

    storage = make_storage(f"sqlite:///{tmp_path / 'm.db'}", heartbeat=False)
    study = optuna.create_study(study_name="m", storage=storage)
    trial = study.ask({"x": DIST})
    _private(trial, "_cached_frozen_trial")
    commits = []
    event.listen(storage.rdb.engine, "commit", lambda conn: commits.append(1))
    internals.set_trial_user_attrs(study, trial, {"a": 1, "b": [2, 3]})
    assert len(commits) == 1
    assert trial.user_attrs == {"a": 1, "b": [2, 3]}  # the Trial's own copy too
    assert internals.stored_trial(study, trial).user_attrs == {"a": 1, "b": [2, 3]}
    _expect(internals.trial_view(trial).user_attrs == {"a": 1, "b": [2, 3]},
            "Trial._cached_frozen_trial (no longer the Trial's view of itself)")
    study.tell(trial, 0.5)
    with pytest.raises(UpdateFinishedTrialError):
        internals.set_trial_user_attrs(study, trial, {"c": 3})


def _commits(storage) -> list[int]:
    from sqlalchemy import event

    commits: list[int] = []
    event.listen(storage.rdb.engine, "commit", lambda conn: commits.append(1))
    return commits


def test_writes_together_stores_an_asks_params_and_attributes_in_one_transaction(tmp_path):
    from kubetune.search.storage import make_storage

    storage = make_storage(f"sqlite:///{tmp_path / 'w.db'}", heartbeat=False)
    study = optuna.create_study(study_name="w", storage=storage)
    trial = study.ask()
    commits = _commits(storage)
    with internals.writes_together(trial):
        x = trial.suggest_float("x", 0, 1)
        n = trial.suggest_int("n", 1, 8)
        internals.set_trial_user_attrs(study, trial, {"steps": 10})
        trial.set_user_attr("worker", "w1")
        assert trial.params == {"x": x, "n": n} and trial.user_attrs == {"steps": 10, "worker": "w1"}
        assert internals.stored_trial(study, trial).params == {}  # held until the block ends
        commits.clear()  # the read's
    assert len(commits) == 1
    trial.set_user_attr("after", 1)  # writes after the block go as they are made
    assert len(commits) == 2
    stored = internals.stored_trial(study, trial)
    assert stored.params == {"x": x, "n": n} and stored.user_attrs == {"steps": 10, "worker": "w1", "after": 1}


def test_writes_together_keeps_the_params_of_a_block_that_raises(tmp_path):
    from kubetune.search.storage import make_storage

    storage = make_storage(f"sqlite:///{tmp_path / 'r.db'}", heartbeat=False)
    study = optuna.create_study(study_name="r", storage=storage)
    trial = study.ask()
    with pytest.raises(RuntimeError), internals.writes_together(trial):
        trial.suggest_float("x", 0, 1)
        raise RuntimeError("the sampler failed")
    assert set(internals.stored_trial(study, trial).params) == {"x"}


def test_writes_together_is_a_no_op_where_the_storage_cannot_hold(study):
    trial = study.ask()
    with internals.writes_together(trial):
        trial.suggest_float("x", 0, 1)
        assert set(internals.stored_trial(study, trial).params) == {"x"}


def test_attributes_written_with_the_outcome_share_its_transaction(tmp_path):
    from kubetune.search.storage import make_storage

    storage = make_storage(f"sqlite:///{tmp_path / 'o.db'}", heartbeat=False)
    study = optuna.create_study(study_name="o", storage=storage)
    trial, other = study.ask(), study.ask()
    commits = _commits(storage)
    internals.set_trial_user_attrs(study, trial, {"usage": {"wall_seconds": 1.5}}, with_outcome=True)
    assert trial.user_attrs == {"usage": {"wall_seconds": 1.5}} and commits == []
    assert internals.stored_trial(study, trial).user_attrs == {}
    study.tell(trial, 0.5)
    stored = internals.stored_trial(study, trial)
    assert stored.state == TrialState.COMPLETE and stored.user_attrs == {"usage": {"wall_seconds": 1.5}}
    # A trial finished elsewhere meanwhile: the tell fails as Optuna's does, nothing half-written.
    internals.set_trial_user_attrs(study, other, {"usage": {"wall_seconds": 2}}, with_outcome=True)
    optuna.load_study(study_name="o", storage=f"sqlite:///{tmp_path / 'o.db'}").tell(other.number, state=TrialState.FAIL)
    with pytest.raises(UpdateFinishedTrialError):
        storage.set_trial_state_values(internals.trial_id_of(other), TrialState.COMPLETE, [1.0])
    assert internals.stored_trial(study, other).user_attrs == {}


def test_write_outcome_commits_the_attributes_with_the_state_it_sets(tmp_path):
    """RDBStorage.scoped_session hands the state's write the session the attributes are in."""
    from kubetune.search.storage import make_storage

    storage = make_storage(f"sqlite:///{tmp_path / 'x.db'}", heartbeat=False)
    study = optuna.create_study(study_name="x", storage=storage)
    trial = study.ask()
    rdb = storage.rdb
    _private(rdb, "scoped_session")
    _private(rdb, "_set_trial_attr_without_commit")
    commits = _commits(storage)
    told = internals.write_outcome(rdb, rdb, internals.trial_id_of(trial), TrialState.PRUNED, None, {"a": 1})
    assert told and len(commits) == 1
    stored = internals.stored_trial(study, trial)
    _expect(stored.state == TrialState.PRUNED and stored.user_attrs == {"a": 1},
            "RDBStorage.scoped_session (no longer one session per thread)")


def test_write_params_and_attrs_checks_each_param_as_optuna_does(tmp_path):
    from kubetune.search.storage import make_storage

    storage = make_storage(f"sqlite:///{tmp_path / 'p.db'}", heartbeat=False)
    study = optuna.create_study(study_name="p", storage=storage)
    study.ask({"x": DIST})
    trial = study.ask()
    _private(storage.rdb, "_set_trial_param_without_commit")
    with pytest.raises(ValueError):  # x is a float in the study: not a categorical here
        internals.write_params_and_attrs(storage.rdb, internals.trial_id_of(trial),
                                         [("y", 0.5, DIST), ("x", 0, CategoricalDistribution(["a"]))], {"k": 1}, {})
    stored = internals.stored_trial(study, trial)
    assert stored.params == {} and stored.user_attrs == {}
    known: dict = {}
    internals.write_params_and_attrs(storage.rdb, internals.trial_id_of(trial), [("x", 0.25, DIST), ("y", 0.5, DIST)],
                                     {"k": 1}, known)
    assert known == {"x": DIST, "y": DIST}  # looked up once, then taken as known
    stored = internals.stored_trial(study, trial)
    assert stored.params == {"x": 0.25, "y": 0.5} and stored.user_attrs == {"k": 1}
    with pytest.raises(ValueError):  # checked against the known one, without a look
        internals.write_params_and_attrs(storage.rdb, internals.trial_id_of(study.ask()),
                                         [("y", 0, CategoricalDistribution(["a"]))], {}, {"y": DIST})


def test_set_trial_user_attrs_without_the_batch_writes_each(study):
    trial = study.ask({"x": DIST})
    internals.set_trial_user_attrs(study, trial, {"a": 1, "b": 2})
    assert internals.stored_trial(study, trial).user_attrs == {"a": 1, "b": 2}


def test_trial_view_is_a_copy_with_this_processs_writes(study):
    trial = study.ask({"x": DIST})
    trial.report(0.5, 1)
    view = internals.trial_view(trial)
    assert view.intermediate_values == {1: 0.5} and view.params == trial.params
    view.user_attrs["z"] = 1
    assert "z" not in trial.user_attrs


def test_set_trial_system_attr_writes_through_the_storage(study):
    study.ask({"x": DIST})
    frozen = study.get_trials(deepcopy=False)[0]
    internals.set_trial_system_attr(study, frozen, "k", 0.25)
    assert study.get_trials(deepcopy=False)[0].system_attrs["k"] == 0.25


@pytest.mark.parametrize(("dist", "inside", "outside"), [
    (FloatDistribution(0.1, 1.0, log=True), 0.5, 2.0),
    (IntDistribution(1, 9, step=2), 3, 4),
    (CategoricalDistribution([16, 32]), 1, 2),  # the index of a choice
])
def test_contains_is_distribution_contains(dist, inside, outside):
    _private(dist, "_contains")
    _expect(internals.contains(dist, inside) is True, f"{type(dist).__name__}._contains({inside})")
    _expect(internals.contains(dist, outside) is False, f"{type(dist).__name__}._contains({outside})")


# Optuna's attribute names that kubetune reads and writes as Optuna does ------------------

def test_successive_halving_records_completed_rung():
    study = optuna.create_study(pruner=optuna.pruners.SuccessiveHalvingPruner(min_resource=1))
    trial = study.ask({"x": DIST})
    trial.report(0.5, 1)
    trial.should_prune()
    _expect(completed_rung(0) in study.trials[0].system_attrs,
            f"SuccessiveHalvingPruner's system attribute {completed_rung(0)!r}")


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_heartbeat_retries_mark_failed_trial_and_retry_history():
    study = optuna.create_study()
    study.add_trial(optuna.create_trial(state=TrialState.FAIL, params={"x": 0.5}, distributions={"x": DIST}))
    RetryHeartbeatStaleTrialCallback()(study, study.trials[0])
    retry = study.trials[-1].system_attrs
    _expect(retry.get(FAILED_TRIAL_ATTR) == 0, f"RetryHeartbeatStaleTrialCallback's {FAILED_TRIAL_ATTR!r}")
    _expect(retry.get(RETRY_HISTORY_ATTR) == [0], f"RetryHeartbeatStaleTrialCallback's {RETRY_HISTORY_ATTR!r}")


def test_enqueue_trial_records_fixed_params():
    study = optuna.create_study()
    study.enqueue_trial({"x": 0.5})
    _expect(study.trials[0].system_attrs.get(FIXED_PARAMS_ATTR) == {"x": 0.5},
            f"Study.enqueue_trial's system attribute {FIXED_PARAMS_ATTR!r}")


def _heartbeat_rdb(tmp_path, interval: int = 1, grace: int = 2) -> optuna.storages.RDBStorage:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'hb.db'}", heartbeat_interval=interval,
                                          grace_period=grace)


def test_cached_storage_is_optunas_cache_in_front_of_the_rdb(tmp_path):
    rdb = _heartbeat_rdb(tmp_path)
    cached = internals.cached_storage(rdb)
    _expect(cached is not rdb and _private(cached, "_backend") is rdb, "optuna.storages.get_storage(RDBStorage)")


def test_stale_trial_ids_lists_running_trials_without_a_recent_heartbeat(tmp_path):
    rdb = _heartbeat_rdb(tmp_path)
    _private(rdb, "_get_stale_trial_ids")
    study = optuna.create_study(storage=rdb)
    trial = study.ask()
    rdb.record_heartbeat(internals.trial_id_of(trial))
    assert internals.stale_trial_ids(rdb, internals.study_id_of(study)) == []
    import time

    time.sleep(3)
    assert internals.stale_trial_ids(rdb, internals.study_id_of(study)) == [internals.trial_id_of(trial)]


def test_a_heartbeat_storage_is_what_fail_stale_trials_asks():
    from optuna.storages._heartbeat import BaseHeartbeat

    _expect("_get_stale_trial_ids" in BaseHeartbeat.__abstractmethods__, "BaseHeartbeat's abstract methods")

    from types import SimpleNamespace

    probe = SimpleNamespace(stale_trials=lambda study_id: [study_id])
    assert internals.HeartbeatStorage._get_stale_trial_ids(probe, 7) == [7]  # type: ignore[arg-type]


def _assorted_trials(study: optuna.Study) -> None:
    """Trials of every state, with every kind of row the RDB storage keeps."""
    dists = {"x": DIST, "n": IntDistribution(1, 9, log=True), "c": CategoricalDistribution(["a", None, 2.5])}
    study.add_trials([
        optuna.trial.create_trial(state=TrialState.COMPLETE, params={"x": 0.5, "n": 3, "c": None}, distributions=dists,
                                  value=float("inf"), intermediate_values={1: float("nan"), 2: float("-inf"), 3: 0.25},
                                  user_attrs={"u": [1, "two"]}, system_attrs={"s": {"k": None}}),
        optuna.trial.create_trial(state=TrialState.PRUNED, params={"x": 0.1}, distributions={"x": DIST},
                                  intermediate_values={1: 0.1}),
        optuna.trial.create_trial(state=TrialState.FAIL, user_attrs={"why": "OOMKilled"}),
    ])
    study.enqueue_trial({"x": 0.75}, user_attrs={"queued": True})
    running = study.ask({"x": DIST})
    running.report(0.5, 1)
    running.set_user_attr("job", "j-0")


def _reprs(trials: list[optuna.trial.FrozenTrial]) -> list[tuple[Any, ...]]:
    """Every field of each trial; intermediate values by repr, since NaN != NaN."""
    return [(t.number, t.state, t.values, t.datetime_start, t.datetime_complete, t.params, t.distributions,
             t.user_attrs, t.system_attrs, {k: repr(v) for k, v in t.intermediate_values.items()},
             internals.trial_id_of(t)) for t in trials]


@pytest.mark.parametrize("where", ["sqlite", "postgresql"])
def test_preload_trials_fills_the_cache_as_optunas_own_read(tmp_path, request, where):
    url = f"sqlite:///{tmp_path / 's.db'}" if where == "sqlite" else request.getfixturevalue("postgres_url")
    writer = optuna.create_study(study_name="s", storage=url, direction="maximize")
    _assorted_trials(writer)
    expected = optuna.load_study(study_name="s", storage=url).get_trials(deepcopy=False)

    reader = optuna.load_study(study_name="s", storage=url)
    cache = _private(internals.storage_of(reader), "_studies")
    assert internals.preload_trials(reader) is True
    _expect(internals.study_id_of(reader) in cache, "_CachedStorage._studies (not keyed by study id)")
    assert _reprs(reader.get_trials(deepcopy=False)) == _reprs(expected)
    assert internals.preload_trials(reader) is False  # read once

    # Later reads are Optuna's own, incremental: what changed since the preload shows.
    running = next(t for t in expected if t.state == TrialState.RUNNING)
    writer.tell(running.number, 0.9)
    writer.add_trial(optuna.trial.create_trial(state=TrialState.COMPLETE, params={"x": 0.2},
                                               distributions={"x": DIST}, value=0.2))
    assert _reprs(reader.get_trials(deepcopy=False)) == _reprs(
        optuna.load_study(study_name="s", storage=url).get_trials(deepcopy=False))
    assert reader.trials[running.number].state == TrialState.COMPLETE


def test_preload_trials_reaches_the_cache_behind_kubetunes_storage(tmp_path):
    # What the operator opens: make_storage's outage-riding storage, Optuna's cache inside.
    from kubetune.search.storage import make_storage

    url = f"sqlite:///{tmp_path / 's.db'}"
    _assorted_trials(optuna.create_study(study_name="s", storage=url, direction="maximize"))
    reader = optuna.load_study(study_name="s", storage=make_storage(url, heartbeat=False))
    assert internals.preload_trials(reader) is True
    assert _reprs(reader.get_trials(deepcopy=False)) == _reprs(
        optuna.load_study(study_name="s", storage=url).get_trials(deepcopy=False))


@pytest.mark.parametrize("where", ["sqlite", "postgresql"])
def test_kubetunes_reads_of_the_trials_are_optunas_own_first_and_after_every_change(tmp_path, request, where):
    from kubetune.search.storage import make_storage

    url = f"sqlite:///{tmp_path / 's.db'}" if where == "sqlite" else request.getfixturevalue("postgres_url")
    writer = optuna.create_study(study_name="s", storage=url, directions=["maximize", "minimize"])
    reader = optuna.load_study(study_name="s", storage=make_storage(url, heartbeat=False))
    assert reader.get_trials(deepcopy=False) == []  # no trials yet: an empty read, not an error

    def optunas() -> list[tuple[Any, ...]]:
        return _reprs(optuna.load_study(study_name="s", storage=url).get_trials(deepcopy=False))

    dists = {"x": DIST, "n": IntDistribution(1, 9, log=True), "c": CategoricalDistribution(["a", None, 2.5])}
    writer.add_trial(optuna.trial.create_trial(
        state=TrialState.COMPLETE, params={"x": 0.5, "n": 3, "c": None}, distributions=dists,
        values=[float("inf"), float("-inf")], intermediate_values={1: float("nan"), 3: 0.25},
        user_attrs={"u": [1, "two"]}, system_attrs={"s": {"k": None}}))
    running = writer.ask(dists)
    writer.enqueue_trial({"x": 0.75}, user_attrs={"queued": True})
    assert _reprs(reader.get_trials(deepcopy=False)) == optunas()
    # What changes on an unfinished trial, and trials that come after a finished one.
    running.set_user_attr("job", "j-0")  # (a multi-objective trial reports no steps)
    running.storage.set_trial_system_attr(running._trial_id, "rung", 1)
    writer.tell(running, [0.9, 2.0])
    writer.add_trial(optuna.trial.create_trial(state=TrialState.PRUNED, params={"x": 0.1},
                                               distributions={"x": DIST}, intermediate_values={2: 0.1}))
    writer.ask()  # pops the queued trial
    assert _reprs(reader.get_trials(deepcopy=False)) == optunas()
    assert [t.number for t in reader.get_trials(states=(TrialState.RUNNING,))] == [2]

    optuna.delete_study(study_name="s", storage=url)
    with pytest.raises(KeyError):  # what the operator's StudyLost looks for
        reader.get_trials(deepcopy=False)


def test_pareto_front_is_study_best_trials_constraints_included():
    study = optuna.create_study(directions=["maximize", "minimize"])
    for values, violation in [([0.9, 5.0], -1.0), ([0.95, 9.0], -1.0), ([0.8, 8.0], -1.0), ([0.99, 1.0], 2.0)]:
        trial = study.ask()
        trial.set_constraint("latency_ms.max", violation)
        study.tell(trial, values)
    found = internals.pareto_front(study.get_trials(deepcopy=False), study.directions)
    # Trial 3 beats every other but breaks its constraint.
    assert sorted(t.number for t in found) == sorted(t.number for t in study.best_trials) == [0, 1]


def test_a_count_then_an_ask_read_the_trials_once(tmp_path):
    # ml-search counts the trials, then asks: ask's look for WAITING trials reuses the count's read.
    from sqlalchemy import event

    from kubetune.search.storage import make_storage

    storage = make_storage(f"sqlite:///{tmp_path / 's.db'}", heartbeat=False)
    study = optuna.create_study(study_name="s", storage=storage)
    reads: list[str] = []
    event.listen(storage.rdb.engine, "before_cursor_execute",
                 lambda conn, cursor, sql, *rest: reads.append(sql) if "JOIN trials" in sql or "FROM trials" in sql else None)

    def count_then_ask(reuse: bool) -> tuple[optuna.Trial, int]:
        study.enqueue_trial({"x": 0.25})
        study.get_trials(deepcopy=False)
        waiting = internals.cached_trials(internals.storage_of(study).inner, internals.study_id_of(study),
                                          False, (TrialState.WAITING,))
        _expect(waiting == study.get_trials(deepcopy=False, states=(TrialState.WAITING,)),
                "_CachedStorage._studies (no longer what get_all_trials returns)")
        if reuse:
            internals.reuse_trials_read(study)
        reads.clear()
        trial = study.ask({"x": DIST})
        return trial, len(reads)

    plain, plain_reads = count_then_ask(reuse=False)
    reused, reused_reads = count_then_ask(reuse=True)
    assert plain.params["x"] == reused.params["x"] == 0.25  # the queued trial, found both times
    assert reused_reads < plain_reads


def _heartbeat_of(rdb: optuna.storages.RDBStorage, trial_id: int) -> Any:
    from optuna.storages._rdb import models

    with _private(rdb, "scoped_session")() as session:
        row = models.TrialHeartbeatModel.where_trial_id(trial_id, session)
        return None if row is None else row.heartbeat


@pytest.mark.parametrize("where", ["sqlite", "postgresql"])
def test_write_params_and_attrs_carries_a_heartbeat_as_optuna_records_it(tmp_path, request, where):
    url = f"sqlite:///{tmp_path / 's.db'}" if where == "sqlite" else request.getfixturevalue("postgres_url")
    rdb = optuna.storages.RDBStorage(url, heartbeat_interval=60, grace_period=120)
    assert internals.can_upsert(rdb)
    study = optuna.create_study(storage=rdb)
    first, second = study.ask(), study.ask()
    first_id = internals.trial_id_of(first)
    internals.write_params_and_attrs(rdb, first_id, [("x", 0.5, DIST)], {"u": 1}, {}, heartbeat=True)
    beat = _heartbeat_of(rdb, first_id)
    assert beat is not None and _heartbeat_of(rdb, internals.trial_id_of(second)) is None
    rdb.record_heartbeat(first_id)  # Optuna's own beat finds the row and moves it on
    assert _heartbeat_of(rdb, first_id) >= beat
    internals.write_params_and_attrs(rdb, internals.trial_id_of(second), [("x", 0.25, DIST)], {}, {},
                                     heartbeat=True)
    rdb.record_heartbeat(internals.trial_id_of(second))
    internals.write_params_and_attrs(rdb, first_id, [], {"u": 2}, {}, heartbeat=True)  # a row there: updated
    assert internals.stale_trial_ids(rdb, internals.study_id_of(study)) == []
