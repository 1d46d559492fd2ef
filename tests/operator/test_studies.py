"""The operator's ask path (StudyHandle) with every sampler a config can name."""

from __future__ import annotations

import copy
import re

import pytest
from optuna.trial import TrialState

from kubetune.config import validate_config
from kubetune.search.attributes import AHEAD_ATTR, FAIL_REASON_ATTR, OWNER_ATTR
from kubetune.search.checks import cap_to_grid
from kubetune.search.ledger import ledger
from kubetune.search.storage import make_storage
from kubetune_operator.failures import Failure
from kubetune_operator.studies import StudyHandle
from tests.operator.conftest import DIGITS_CONFIG

OWNER = "kt/samplers"
GRID_SPACE = {
    "optimizer.lr": {"type": "categorical", "choices": [0.01, 0.05, 0.1]},
    "training.batch_size": {"type": "int", "low": 32, "high": 64, "step": 32},
}


def _config(sampler: dict, space: dict | None = None):
    raw = copy.deepcopy(DIGITS_CONFIG)
    raw["data"]["path"] = "/data"
    raw["search"]["n_trials"] = 8
    raw["search"]["sampler"] = sampler
    if space is not None:
        raw["search"]["search_space"] = space
    return validate_config(raw)


@pytest.mark.parametrize("sampler", [
    {"type": "TPESampler", "n_startup_trials": 2},
    {"type": "RandomSampler"},
    {"type": "CmaEsSampler"},
    {"type": "GridSampler"},
])
def test_every_sampler_gives_owned_trials_with_every_param(tmp_path, sampler):
    config = _config({**sampler, "seed": 0}, GRID_SPACE if sampler["type"] == "GridSampler" else None)
    handle = StudyHandle(make_storage(f"sqlite:///{tmp_path}/s.db", heartbeat=False), config, owner=OWNER)
    keys = set(config.search.search_space)
    seen = []
    for number in range(cap_to_grid(config.search, config.search.n_trials)):
        waiting = any(t.state == TrialState.WAITING for t in handle.trials())
        trial = handle.ask(waiting=waiting)
        assert trial is not None and trial.number == number
        assert set(trial.params) == keys, trial.params
        assert trial.user_attrs[OWNER_ATTR] == OWNER
        seen.append(tuple(sorted(trial.params.items())))
        handle.study.tell(trial, 0.5 + number / 100)
    if sampler["type"] == "GridSampler":
        assert len(set(seen)) == len(seen) == 6  # the whole grid, each point once
        assert handle.ask(waiting=False) is None
    else:
        assert seen[0] == (("model.dropout", 0.1), ("optimizer.lr", 0.05))  # the config's own point first


def test_a_restarted_operator_does_not_repeat_the_seeded_draws(tmp_path):
    import optuna

    from kubetune.search.attributes import SAMPLER_SESSIONS_ATTR
    from kubetune.search.space import distributions

    config = _config({"type": "RandomSampler", "seed": 0})
    url = f"sqlite:///{tmp_path}/s.db"
    points = []
    for restart in range(2):  # the operator, then the same operator after a restart
        handle = StudyHandle(make_storage(url, heartbeat=False), config, owner=OWNER)
        assert handle.study.user_attrs[SAMPLER_SESSIONS_ATTR] == restart + 1
        for _ in range(3):
            waiting = any(t.state == TrialState.WAITING for t in handle.trials())
            trial = handle.ask(waiting=waiting)
            points.append(tuple(sorted(trial.params.items())))
            handle.study.tell(trial, 0.5)
    assert len(set(points)) == len(points) == 6, points
    # The first operator drew what the seed itself draws (after the config's own point).
    plain = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    dists = distributions(config.search.search_space)
    assert points[1:3] == [tuple(sorted(plain.ask(dists).params.items())) for _ in range(2)]


def test_a_study_belongs_to_one_studyjob_until_it_lets_go(tmp_path):
    import optuna

    from kubetune_operator.spec import SpecError
    from kubetune_operator.studies import delete_study, release_study

    config = _config({"type": "RandomSampler", "seed": 0})
    storage = make_storage(f"sqlite:///{tmp_path}/s.db", heartbeat=False)
    StudyHandle(storage, config, owner="ml/first")
    StudyHandle(storage, config, owner="ml/first")  # the same StudyJob again (a restart)
    with pytest.raises(SpecError) as info:  # a second StudyJob naming the same study
        StudyHandle(storage, config, owner="ml/copy")
    assert info.value.field == "spec.config.search.study_name"
    assert f"study `{config.search.study_name}` belongs to StudyJob `ml/first`" in str(info.value)
    # Deleting the copy (cleanup.deleteStudy) must not delete the first one's study.
    assert delete_study(storage, config.search.study_name, "ml/copy") is False
    optuna.load_study(study_name=config.search.study_name, storage=storage)
    # The first StudyJob deleted without deleteStudy: its study is free to continue.
    release_study(storage, config.search.study_name, "ml/first")
    StudyHandle(storage, config, owner="ml/copy")
    assert delete_study(storage, config.search.study_name, "ml/copy") is True


def test_a_study_deleted_from_under_its_handle_is_study_lost(tmp_path):
    from types import SimpleNamespace

    import optuna

    from kubetune_operator.failures import Failure
    from kubetune_operator.studies import StudyLost

    config = _config({"type": "RandomSampler", "seed": 0})
    storage = make_storage(f"sqlite:///{tmp_path}/s.db", heartbeat=False)
    with pytest.raises(StudyLost, match="study `digits-op` is no longer in the storage"):
        StudyHandle(storage, config, owner=OWNER, started=True)  # after a restart: ran trials, now gone
    handle = StudyHandle(storage, config, owner=OWNER)
    trial = handle.ask(waiting=True)
    frozen = handle.trials()[0]
    optuna.delete_study(study_name=config.search.study_name, storage=storage)
    for call in (handle.trials, lambda: handle.ask(waiting=False), lambda: handle.mark_job(trial, "j"),
                 lambda: handle.tell_fail(frozen, Failure("X", "y"))):
        with pytest.raises(StudyLost):
            call()
    # Deleted and made again under its name (another study keeps SQLite from reusing the id).
    handle = StudyHandle(storage, config, owner=OWNER)
    optuna.create_study(study_name="other", storage=storage)
    optuna.delete_study(study_name=config.search.study_name, storage=storage)
    optuna.create_study(study_name=config.search.study_name, storage=storage, direction="maximize")
    with pytest.raises(StudyLost):
        handle.trials()
    # A KeyError while the study is there is a bug, and stays a KeyError.
    other = StudyHandle(storage, config, owner=OWNER)
    with pytest.raises(KeyError):
        other.mark_job(SimpleNamespace(_trial_id=10**6), "j")  # no such trial


@pytest.mark.parametrize("space, field, says", [
    ({"optimizer.lr": {"type": "uniform", "low": 1e-4, "high": 0.3}}, "optimizer.lr",
     "is float 0.0001..0.3, but study `digits-op` sampled it as log-scale float 0.0001..0.3"),
    ({"model.dropout": {"type": "categorical", "choices": [0.0, 0.5]}}, "model.dropout",
     "is categorical [0.0, 0.5], but study `digits-op` sampled it as float 0.0..0.5"),
])
def test_a_spec_edited_into_a_space_its_trials_cannot_continue_is_refused(tmp_path, space, field, says):
    from kubetune_operator.spec import SpecError

    config = _config({"type": "RandomSampler", "seed": 0})
    storage = make_storage(f"sqlite:///{tmp_path}/s.db", heartbeat=False)
    handle = StudyHandle(storage, config, owner=OWNER)
    handle.study.tell(handle.ask(waiting=True), 0.5)
    raw = config.model_dump(mode="json")
    raw["search"]["search_space"].update(space)
    with pytest.raises(SpecError, match=re.escape(says)) as caught:
        StudyHandle(storage, validate_config(raw), owner=OWNER)
    assert caught.value.field == f"spec.config.search.search_space.{field}"
    assert len(handle.trials()) == 1
    # A range may widen: the same trials continue.
    raw["search"]["search_space"] = {**config.model_dump(mode="json")["search"]["search_space"],
                                     "optimizer.lr": {"type": "loguniform", "low": 1e-5, "high": 0.5}}
    StudyHandle(storage, validate_config(raw), owner=OWNER)


def test_a_study_of_several_objectives_has_their_directions_and_names_and_keeps_them(tmp_path):
    from kubetune_operator.spec import SpecError

    raw = copy.deepcopy(DIGITS_CONFIG)
    raw["data"]["path"] = "/data"
    search = raw["search"]
    search.pop("metric"), search.pop("direction")
    search.update(objectives=[{"metric": "val_acc", "direction": "maximize"},
                              {"metric": "params", "direction": "minimize"}],
                  pruner={"type": "SuccessiveHalvingPruner"})
    storage = make_storage(f"sqlite:///{tmp_path}/s.db", heartbeat=False)
    handle = StudyHandle(storage, validate_config(raw), owner=OWNER)
    assert [d.name for d in handle.study.directions] == ["MAXIMIZE", "MINIMIZE"]
    assert handle.study.metric_names == ["val_acc", "params"] and handle.maximize
    assert handle.ask(waiting=False) is not None
    # The same study asked for with one objective: refused, naming the key, before any write.
    with pytest.raises(SpecError) as info:
        StudyHandle(storage, _config({"type": "RandomSampler"}), owner=OWNER)
    assert info.value.field == "spec.config.search.objectives"
    assert str(info.value).startswith("`spec.config.search.objectives` must have the directions "
                                      "['maximize', 'minimize'] of study"), str(info.value)


def test_a_trial_asked_ahead_carries_its_mark_and_a_released_one_costs_no_trial(tmp_path):
    config = _config({"type": "TPESampler", "seed": 0})
    handle = StudyHandle(make_storage(f"sqlite:///{tmp_path}/s.db", heartbeat=False), config, owner=OWNER)
    first = handle.ask(waiting=True)  # the config's own point
    assert first is not None and not first.user_attrs.get(AHEAD_ATTR)
    ahead = handle.ask(waiting=False, ahead=True)
    assert ahead is not None and ahead.user_attrs[AHEAD_ATTR] is True and ahead.user_attrs[OWNER_ATTR] == OWNER
    handle.mark_launched(ahead, 1234.5)
    assert handle.study.trials[ahead.number].user_attrs[AHEAD_ATTR] == 1234.5
    again = handle.ask(waiting=False, ahead=True)
    assert again is not None
    stored = handle.study.trials[again.number]
    handle.release_ahead(stored, Failure("NotStarted", "the StudyJob was suspended"), requeue=True)
    trials = handle.trials()
    assert trials[again.number].state == TrialState.FAIL
    assert trials[again.number].user_attrs[FAIL_REASON_ATTR] == "NotStarted: the StudyJob was suspended"
    retry = trials[-1]
    assert retry.state == TrialState.WAITING and retry.params == again.params
    assert not retry.user_attrs.get(AHEAD_ATTR) and not retry.user_attrs.get(OWNER_ATTR)
    books = ledger(trials)
    assert books.counted == 3 and books.failed - books.retried == 0  # two asked, one queued again
    popped = handle.ask(waiting=True)
    assert popped is not None and popped.params == again.params and popped.user_attrs[OWNER_ATTR] == OWNER
