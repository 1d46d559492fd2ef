"""How trials are charged to n_trials (the ledger), and best_config_dict."""

from __future__ import annotations

import optuna
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from kubetune.config import validate_config
from kubetune.search.attributes import (
    FAIL_REASON_ATTR,
    FAILED_TRIAL_ATTR,
    RETRY_HISTORY_ATTR,
    RUNG_ATTR_PREFIXES,
    WORKER_ATTR,
    completed_rung,
    tie_break_rung,
)
from kubetune.search.checks import check_search, initial_points
from kubetune.search.ledger import budget, counted_trials, enqueue_retry
from kubetune.search.optuna_internals import storage_of, trial_id_of
from kubetune.search.results import best_config_dict, trials_csv_text
from tests.search.conftest import search_section, small_base

DIST = {"x": FloatDistribution(0, 1)}


def _add(study, state, value=None, **attrs):
    study.add_trial(create_trial(state=state, value=value, params={"x": 0.5}, distributions=DIST,
                                 **attrs))
    return study.get_trials(deepcopy=False)[-1]


def test_every_state_counts_until_retried():
    study = optuna.create_study()
    _add(study, TrialState.COMPLETE, 1.0)
    _add(study, TrialState.PRUNED, 2.0)
    _add(study, TrialState.FAIL)
    lost = _add(study, TrialState.FAIL)  # e.g. a worker SIGKILLed mid-trial
    _add(study, TrialState.RUNNING, user_attrs={WORKER_ATTR: "host:1"})
    assert budget(study, 10).counted == 5
    enqueue_retry(study, lost, lost.params, DIST)
    state = budget(study, 10)
    # The lost trial is replaced by its retry: still 5, one of them waiting.
    assert (state.counted, state.finished, state.waiting, state.running_workers) == (5, 3, 1, 1)
    retry = study.get_trials(deepcopy=False)[-1]
    assert retry.state == TrialState.WAITING
    assert retry.params == lost.params
    assert retry.system_attrs[RETRY_HISTORY_ATTR] == [lost.number]
    assert lost.number not in [t.number for t in counted_trials(study.get_trials())]
    assert not state.done and state.has_room


def test_a_retry_of_a_retry_keeps_the_history():
    study = optuna.create_study()
    first = _add(study, TrialState.FAIL)
    enqueue_retry(study, first, first.params, DIST)
    second = study.get_trials(deepcopy=False)[-1]
    for state in (TrialState.RUNNING, TrialState.FAIL):  # popped, then lost again
        storage_of(study).set_trial_state_values(trial_id_of(second), state)
    enqueue_retry(study, second, second.params, DIST)
    assert study.get_trials(deepcopy=False)[-1].system_attrs[RETRY_HISTORY_ATTR] == [0, 1]
    assert budget(study, 1).counted == 1


def test_a_retry_leaves_the_pruners_rung_values_with_the_failed_trial():
    study = optuna.create_study()
    lost = _add(study, TrialState.FAIL, system_attrs={completed_rung(0): 0.4, completed_rung(1): 0.6,
                                                          tie_break_rung(0): 2.1})
    enqueue_retry(study, lost, lost.params, DIST)
    retry = study.get_trials(deepcopy=False)[-1]
    assert not any(k.startswith(RUNG_ATTR_PREFIXES) for k in retry.system_attrs)  # or they would count twice
    assert retry.system_attrs[FAILED_TRIAL_ATTR] == lost.number


def test_budget_done_only_when_nothing_is_left():
    study = optuna.create_study()
    _add(study, TrialState.COMPLETE, 1.0)
    assert budget(study, 1).done
    _add(study, TrialState.RUNNING, user_attrs={WORKER_ATTR: "h:2"})
    assert not budget(study, 1).done  # wait for the other worker's trial


def test_best_config_keeps_full_settings_and_drops_search(fast_config):
    base = small_base(fast_config, epochs=12, fraction=0.8)
    config = validate_config({**base, "search": search_section(trial_epochs=2, trial_train_fraction=0.25)})
    best = best_config_dict(config, {"optimizer.lr": 0.123, "training.batch_size": 32})
    assert "search" not in best
    assert best["optimizer"]["lr"] == 0.123
    assert best["training"]["batch_size"] == 32
    assert best["training"]["num_epochs"] == 12
    assert best["data"]["train_fraction"] == 0.8
    assert validate_config(best).search is None  # trainable as is


def test_the_config_point_is_enqueued_only_inside_the_space(fast_config):
    base = small_base(fast_config)
    inside = validate_config({**base, "search": search_section(
        enqueue_trials=[{"optimizer.lr": 0.02, "training.batch_size": 32}])})
    check_search(inside)
    # fast_config trains with lr 0.05 and batch 64: inside [0.01, 0.2] x {32, 64}.
    assert initial_points(inside) == [{"optimizer.lr": 0.05, "training.batch_size": 64},
                                      {"optimizer.lr": 0.02, "training.batch_size": 32}]
    base["optimizer"]["lr"] = 0.5
    outside = validate_config({**base, "search": search_section()})
    assert initial_points(outside) == []
    off = validate_config({**small_base(fast_config), "search": search_section(enqueue_config=False)})
    assert initial_points(off) == []


def test_trials_csv_marks_retries():
    study = optuna.create_study()
    lost = _add(study, TrialState.FAIL, user_attrs={FAIL_REASON_ATTR: "interrupted"})
    enqueue_retry(study, lost, lost.params, DIST)
    lines = trials_csv_text(study).splitlines()
    assert lines[0].startswith("number,state,value,x,epochs")
    assert lines[1].endswith("interrupted,,True")
    assert lines[2].split(",")[1] == "WAITING" and lines[2].endswith(",0,False")


def test_the_top_trials_caption_tells_a_queued_retry_from_one_that_ran():
    from kubetune.search.results import top_trials_table

    study = optuna.create_study(direction="maximize")
    _add(study, TrialState.COMPLETE, 0.9)
    first = _add(study, TrialState.FAIL)
    enqueue_retry(study, first, first.params, DIST)
    assert "(1 queued for a retry)" in top_trials_table(study, "val_acc").caption  # stopped before it ran

    retry = study.ask()  # the worker takes the queued retry; it fails too and is queued again
    study.tell(retry, state=TrialState.FAIL)
    enqueue_retry(study, study.get_trials(deepcopy=False)[retry.number], first.params, DIST)
    caption = top_trials_table(study, "val_acc").caption
    assert "(1 retried with the same params, 1 queued for a retry)" in caption


def test_a_running_trial_counts_whether_or_not_its_worker_wrote_its_attributes():
    study = optuna.create_study()
    _add(study, TrialState.RUNNING)  # its worker died before writing kubetune.worker
    assert budget(study, 1).running_workers == 1 and not budget(study, 1).done


def _fail(study, reason):
    return _add(study, TrialState.FAIL, user_attrs={FAIL_REASON_ATTR: reason})


DISK_FULL = "OSError: [Errno 28] No space left on device: '/runs/x/trial-{}/config.yaml'"


def test_the_same_os_error_three_times_in_a_row_stops_the_search():
    study = optuna.create_study()
    for n in range(2):
        _fail(study, DISK_FULL.format(n))
    assert budget(study, 20).repeated_failure is None  # two is not yet a pattern
    _fail(study, DISK_FULL.format(2))
    assert budget(study, 20).repeated_failure == "OSError: [Errno 28] No space left on device"


def test_other_failures_or_a_success_in_between_do_not_stop_it():
    study = optuna.create_study()
    _fail(study, DISK_FULL.format(0))
    _fail(study, "PermissionError: [Errno 13] Permission denied: '/runs/x'")
    _fail(study, DISK_FULL.format(1))
    assert budget(study, 20).repeated_failure is None  # not the same error
    for n in range(3):
        _fail(study, f"NaN loss: training loss became nan at epoch {n}")
    assert budget(study, 20).repeated_failure is None  # the params' fault, not the machine's
    for n in range(2):
        _fail(study, DISK_FULL.format(n))
    _add(study, TrialState.COMPLETE, 1.0)
    assert budget(study, 20).repeated_failure is None
