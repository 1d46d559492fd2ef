"""Trials lost to the cluster, too many failures, bad specs, missing Secrets and ConfigMaps.

The operator runs for real against the emulator; the fake kubelet decides each
Job's fate. ``tell`` stands in for a trial pod that trains and tells COMPLETE:
these tests are about what the operator does with Jobs, not about training.
"""

from __future__ import annotations

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from kubetune.search.attributes import (
    FAIL_REASON_ATTR,
    JOB_ATTR,
    PREEMPTED_ATTR,
    RETRY_HISTORY_ATTR,
)
from kubetune_operator import names
from tests.operator.conftest import digits_spec
from tests.operator.harness import STUDYJOBS
from tests.polling import wait_for


def _trial_of(job: dict) -> int:
    return int(job["metadata"]["labels"][names.LABEL_TRIAL])


def _study(url: str, name: str = "digits-op") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=url)


async def _run(cluster, make_kubelet, storage: str, name: str, fate, **spec) -> tuple[list, dict]:
    """Run StudyJob ``name`` to Succeeded with the kubelet's ``fate`` for each Job (a name, or
    a name for trial 0's Jobs, every other one told COMPLETE); its trials and status."""
    decide = fate if callable(fate) else (lambda job: fate if _trial_of(job) == 0 else "tell")
    async with make_kubelet(decide):
        await cluster.create_studyjob(name, digits_spec(parallelism=1, **spec))
        status = await cluster.wait_phase(name, "Succeeded")
    return _study(storage).trials, status


def _condition(status: dict, kind: str) -> dict:
    return next(c for c in status.get("conditions", []) if c["type"] == kind)


@pytest.mark.asyncio
async def test_evicted_trial_resumes_as_the_same_trial(cluster, storage_secret, start_operator, make_kubelet):
    await start_operator()
    first_job_only = lambda job: "evict" if job["metadata"]["name"] == "evict-trial-0" else "tell"  # noqa: E731
    trials, status = await _run(cluster, make_kubelet, storage_secret, "evict", first_job_only,
                                n_trials=3, retries=1)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3  # no new trial, nothing failed
    assert trials[0].user_attrs[PREEMPTED_ATTR] == 1
    assert trials[0].user_attrs[JOB_ATTR] == "evict-trial-0-r1"
    assert status["trials"]["preempted"] == 1 and status["trials"]["failed"] == 0
    resumed = cluster.event_messages("TrialPreempted")
    assert len(resumed) == 1 and resumed[0].startswith("trial 0 was disrupted (Evicted:")
    assert "as Job evict-trial-0-r1 (resume 1 of 1)" in resumed[0]


@pytest.mark.asyncio
async def test_a_trial_disrupted_past_its_retries_fails_with_the_reason(cluster, storage_secret, start_operator,
                                                                        make_kubelet):
    await start_operator()
    trials, status = await _run(cluster, make_kubelet, storage_secret, "evict", "evict",
                                n_trials=2, retries=1)
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert trials[0].user_attrs[FAIL_REASON_ATTR] == "Evicted: The node was low on resource: memory."
    assert trials[0].user_attrs[PREEMPTED_ATTR] == 1
    assert status["trials"]["failed"] == 1 and status["trials"]["retried"] == 0
    assert any(m.startswith("trial 0 failed: Evicted") for m in cluster.event_messages("TrialFailed"))


@pytest.mark.asyncio
async def test_job_oom_killed_before_its_trial_tells_fails_it_once(cluster, storage_secret,
                                                                  start_operator, make_kubelet):
    await start_operator()
    trials, status = await _run(cluster, make_kubelet, storage_secret, "oom", "oom",
                                n_trials=2, retries=2)
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE]
    reason = trials[0].user_attrs[FAIL_REASON_ATTR]
    assert reason == "OOMKilled: the trial container exceeded its memory limit"
    assert RETRY_HISTORY_ATTR not in trials[1].system_attrs  # the same params would OOM again
    assert status["trials"]["failed"] == 1 and status["trials"]["retried"] == 0


@pytest.mark.asyncio
async def test_a_trainer_error_is_reported_and_not_retried(cluster, storage_secret, start_operator,
                                                           make_kubelet):
    await start_operator()
    trials, status = await _run(cluster, make_kubelet, storage_secret, "nan", "trainer-error",
                                n_trials=2, retries=3)
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert status["trials"]["retried"] == 0
    await wait_for(lambda: cluster.events("TrialFailed"), 10, "the TrialFailed event")
    assert cluster.event_messages("TrialFailed") == ["trial 0 failed: TrainingDiverged: the loss became NaN"]


@pytest.mark.asyncio
async def test_vanished_job_resumes_its_trial_in_a_new_job(cluster, storage_secret, start_operator,
                                                          make_kubelet):
    await start_operator()
    async with make_kubelet(lambda job: "hold") as kubelet:
        await cluster.create_studyjob("gone", digits_spec(n_trials=2, parallelism=1))
        await wait_for(lambda: cluster.jobs("gone"), 30, "the first Job")
        await cluster.delete("batch/v1/jobs", "gone-trial-0")
        await wait_for(lambda: "gone-trial-0-r1" in cluster.jobs("gone"), 30, "the resumed trial's Job")
        kubelet.release()
        await cluster.wait_phase("gone", "Succeeded")
    trials = _study(storage_secret).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    assert trials[0].user_attrs[PREEMPTED_ATTR] == 1
    assert "JobDeleted" in cluster.event_messages("TrialPreempted")[0]


@pytest.mark.asyncio
async def test_more_failures_than_max_failed_fail_the_studyjob(cluster, storage_secret, start_operator,
                                                               make_kubelet):
    await start_operator()
    async with make_kubelet(lambda job: "oom"):
        await cluster.create_studyjob("bad", digits_spec(n_trials=6, parallelism=1, maxFailed=1))
        status = await cluster.wait_phase("bad", "Failed")
    failed = _condition(status, "Failed")
    assert failed["reason"] == "MaxFailedExceeded" and "spec.trials.maxFailed=1" in failed["message"]
    assert sorted(cluster.jobs("bad")) == ["bad-trial-0", "bad-trial-1"]
    # Trial 2, asked ahead, never ran: failed as NotStarted and queued again, costing no trial.
    await wait_for(lambda: len(_study(storage_secret).trials) == 4, 10, "trial 2 released")
    trials = _study(storage_secret).trials
    assert [t.state for t in trials] == [TrialState.FAIL] * 3 + [TrialState.WAITING]
    assert trials[2].user_attrs[FAIL_REASON_ATTR].startswith("NotStarted: ")
    assert trials[3].params == trials[2].params
    await wait_for(lambda: cluster.events("Failed"), 10, "the Failed event")
    assert cluster.events("Failed")[0]["type"] == "Warning"


@pytest.mark.asyncio
@pytest.mark.parametrize(("change", "field", "words"), [
    ({"config": {"optimizer": {"lr": -1}}}, "spec.config.optimizer.lr", "must be greater than 0"),
    ({"config": {"optimizer": {"learning_rate": 0.1}}}, "spec.config.optimizer.learning_rate",
     "unknown config key"),
    ({"trials": {"parallelism": 0}}, "spec.trials.parallelism", "greater than or equal to 1"),
    ({"config": {"search": {"search_space": {"optimizer.lr": {"type": "loguniform", "low": 0,
                                                              "high": 1}}}}},
     "spec.config.search.search_space.optimizer.lr", "greater than 0 on a log scale"),
])
async def test_invalid_spec_fails_with_the_field_named_and_no_job(
        cluster, storage_secret, start_operator, change, field, words):
    await start_operator()
    spec = digits_spec()
    for section, values in change.items():
        _merge(spec[section], values)
    await cluster.create_studyjob("invalid", spec)
    status = await cluster.wait_phase("invalid", "Failed", timeout=30)
    valid = _condition(status, "SpecValid")
    assert valid["status"] == "False" and valid["reason"] == "InvalidSpec"
    assert field.rsplit(".", 1)[-1] in valid["message"] and words in valid["message"], valid["message"]
    assert status["message"] == valid["message"]
    await wait_for(lambda: cluster.events("InvalidSpec"), 10, "the InvalidSpec event")
    event = cluster.events("InvalidSpec")[0]
    assert event["type"] == "Warning" and event["message"] == valid["message"]
    assert cluster.jobs() == {}
    assert cluster.get("v1/configmaps", "invalid-config") is None


@pytest.mark.asyncio
async def test_fixing_an_invalid_spec_starts_the_study(cluster, storage_secret, start_operator,
                                                       make_kubelet):
    await start_operator()
    spec = digits_spec(n_trials=1, parallelism=1)
    spec["config"]["optimizer"]["lr"] = -1
    async with make_kubelet(lambda job: "tell"):
        await cluster.create_studyjob("fixme", spec)
        await cluster.wait_phase("fixme", "Failed", timeout=30)
        await cluster.patch(STUDYJOBS, "fixme", {"spec": {"config": {"optimizer": {"lr": 0.05}}}})
        status = await cluster.wait_phase("fixme", "Succeeded")
    assert _condition(status, "SpecValid")["status"] == "True"


@pytest.mark.asyncio
async def test_missing_secret_waits_then_runs(cluster, postgres_url, start_operator, make_kubelet):
    await start_operator()
    async with make_kubelet(lambda job: "tell"):
        await cluster.create_studyjob("nosecret", digits_spec(n_trials=1, parallelism=1))
        status = await wait_for(lambda: _storage_not_ready(cluster.status("nosecret")), 30,
                                "StorageReady=False")
        assert status["phase"] == "Pending"
        assert "kubetune-postgres" in _condition(status, "StorageReady")["message"]
        await cluster.create_secret("kubetune-postgres", {"url": postgres_url})
        await cluster.wait_phase("nosecret", "Succeeded")  # kopf retries the handler


def _storage_not_ready(status: dict) -> dict | None:
    conditions = {c["type"]: c for c in status.get("conditions", [])}
    ready = conditions.get("StorageReady")
    return status if ready and ready["status"] == "False" and ready["reason"] == "SecretNotFound" else None


@pytest.mark.asyncio
async def test_config_from_a_configmap(cluster, storage_secret, start_operator, make_kubelet):
    await start_operator()
    spec = digits_spec(n_trials=2, parallelism=2)
    config = spec.pop("config")
    spec["configMapRef"] = {"name": "search-config", "key": "search.yaml"}
    async with make_kubelet(lambda job: "tell"):
        await cluster.create_studyjob("fromcm", spec)
        status = await cluster.wait_phase("fromcm", "Pending", timeout=30)
        assert _condition(status, "SpecValid")["reason"] == "ConfigMapNotFound"
        await cluster.create("v1/configmaps", {"apiVersion": "v1", "kind": "ConfigMap",
                                               "metadata": {"name": "search-config"},
                                               "data": {"search.yaml": yaml.safe_dump(config)}})
        await cluster.wait_phase("fromcm", "Succeeded")
    mounted = yaml.safe_load(cluster.get("v1/configmaps", "fromcm-config")["data"]["config.yaml"])
    assert mounted["data"]["path"] == "/data" and mounted["search"]["study_name"] == "digits-op"


@pytest.mark.asyncio
async def test_credentials_stay_out_of_specs_status_events_and_children(
        cluster, postgres_url, start_operator, make_kubelet):
    # Trust auth ignores the password, so the study still runs.
    secret_url = postgres_url.replace("postgres@", "postgres:s3cr3t-pw@")
    await cluster.create_secret("kubetune-postgres", {"url": secret_url})
    await start_operator()
    spec = digits_spec(n_trials=1, parallelism=1)
    spec["config"]["search"]["storage"] = secret_url  # ignored, with a warning, never copied
    async with make_kubelet(lambda job: "tell"):
        await cluster.create_studyjob("secret", spec)
        await cluster.wait_phase("secret", "Succeeded")
    await wait_for(lambda: cluster.events("StorageIgnored"), 10, "the StorageIgnored event")
    visible = [cluster.status("secret"), cluster.events(), cluster.jobs(),
               cluster.list("v1/configmaps")]
    assert "s3cr3t-pw" not in yaml.safe_dump(visible)
    job = cluster.jobs("secret")["secret-trial-0"]
    env = job["spec"]["template"]["spec"]["containers"][0]["env"]
    assert env[0] == {"name": "KUBETUNE_STORAGE_URL", "valueFrom": {
        "secretKeyRef": {"name": "kubetune-postgres", "key": "url"}}}


def _merge(target: dict, change: dict) -> None:
    for key, value in change.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = value
