"""What a trial's pods held: attempts from pods, once per pod, and ``status.usage``."""

from __future__ import annotations

import dataclasses
import datetime

import optuna
from optuna.trial import TrialState

from kubetune.search.usage import with_attempts
from kubetune_operator import names
from kubetune_operator.decide import decide
from kubetune_operator.usage import (
    UsageBook,
    account,
    cpu_quantity,
    pod_attempt,
    timestamp,
    unaccounted_jobs,
    usage_status,
)
from tests.operator.snapshots import job, snapshot, trial

COMPLETE = {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}


def _pod(name: str, number: int, start: str, end: str | None, gpus: int = 1, cpu: str = "500m") -> dict:
    state = {"terminated": {"exitCode": 0, "startedAt": start, "finishedAt": end}} if end else {
        "running": {"startedAt": start}}
    return {"metadata": {"name": name, "labels": {names.LABEL_TRIAL: str(number)}},
            "spec": {"containers": [{"name": "trial", "resources": {
                "limits": {"nvidia.com/gpu": gpus}, "requests": {"cpu": cpu}}}]},
            "status": {"phase": "Succeeded" if end else "Running", "startTime": start,
                       "containerStatuses": [{"name": "trial", "state": state}]}}


def test_an_ended_pod_held_its_requests_from_its_start_to_its_end():
    found = pod_attempt(_pod("p", 0, "2026-01-01T00:00:00Z", "2026-01-01T00:01:40Z", gpus=2, cpu="1500m"))
    assert found is not None
    assert found["end"] - found["start"] == 100 and found["gpus"] == 2 and found["cpus"] == 1.5
    assert pod_attempt(_pod("p", 0, "2026-01-01T00:00:00Z", None)) is None  # still running
    going = _pod("p", 0, "2026-01-01T00:00:00Z", None)
    going["metadata"]["deletionTimestamp"] = "2026-01-01T00:10:00Z"  # Kueue evicted it: it may vanish unseen
    assert pod_attempt(going, now=timestamp("2026-01-01T00:00:50Z"))["end"] == timestamp("2026-01-01T00:00:50Z")
    assert cpu_quantity("2") == 2 and cpu_quantity("250m") == 0.25


def test_a_completed_job_is_accounted_once_and_read_no_more():
    t = trial(0, TrialState.COMPLETE, value=0.9)
    jobs = {0: job(0, status=COMPLETE)}
    pods = {"sj-trial-0": [_pod("sj-trial-0-abc", 0, "2026-01-01T00:00:00Z", "2026-01-01T00:00:30Z")]}
    assert unaccounted_jobs([t], "kt/sj", jobs, {}) == ["sj-trial-0"]
    s = snapshot([t], jobs, pods)
    updates = account(s)
    assert updates[0]["gpu_seconds"] == 30 and updates[0]["cpu_seconds"] == 15 and updates[0]["jobs"] == ["sj-trial-0"]
    assert unaccounted_jobs([t], "kt/sj", jobs, updates) == []
    again = dataclasses.replace(s, usage=updates)
    assert account(again) == {}  # a repeated pass (or a restarted operator) counts nothing twice


def test_a_job_that_succeeded_before_its_pod_ended_is_read_again():
    t = trial(0, TrialState.COMPLETE, value=0.9)
    s = snapshot([t], {0: job(0, status=COMPLETE)}, {"sj-trial-0": [_pod("sj-trial-0-abc", 0, "2026-01-01T00:00:00Z",
                                                                         None)]})
    assert account(s) == {}


def test_status_usage_sums_every_trial_and_the_gpu_hours_until_the_best_completed():
    best = trial(0, TrialState.COMPLETE, value=0.9)
    best.datetime_complete = datetime.datetime.fromtimestamp(3600)  # Optuna's naive local time
    pruned = trial(1, TrialState.PRUNED)
    records = {0: with_attempts(None, {"a": {"start": 0, "end": 3600, "gpus": 1, "cpus": 2}}),
               1: with_attempts(None, {"b": {"start": 1800, "end": 9000, "gpus": 2, "cpus": 0}})}
    found = usage_status([best, pruned], records, best)
    assert found["gpuSeconds"] == 3600 + 2 * 7200 and found["cpuSeconds"] == 7200
    assert found["gpuHoursToBest"] == 1 + 2 * 0.5  # the pruned trial's share before the best completed
    assert found["gpuHours"] == 5


def test_decide_records_the_pods_and_puts_the_sums_in_the_status():
    t = trial(0, TrialState.COMPLETE, value=0.9)
    pods = {"sj-trial-0": [_pod("sj-trial-0-abc", 0, "2026-01-01T00:00:00Z", "2026-01-01T00:00:30Z")]}
    plan = decide(snapshot([t], {0: job(0, status=COMPLETE)}, pods, n_trials=1))
    assert plan.usage[0]["gpu_seconds"] == 30
    assert plan.status["usage"]["gpuSeconds"] == 30


def test_the_book_keeps_records_in_the_study_for_a_restarted_operator():
    study = optuna.create_study()
    record = with_attempts(None, {"pod": {"start": 0, "end": 10, "gpus": 1, "cpus": 1}}, jobs=["sj-trial-0"])
    UsageBook(study).write({0: record})
    assert UsageBook(study).records() == {0: record}  # a new process reads what the last one wrote
