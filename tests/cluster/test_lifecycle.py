"""A live StudyJob on the real control plane: restart, grid, suspend, live patches, deletion.

Trials train for real (two epochs of the small CNN on a fraction of digits); the test
kubelet holds chosen Jobs' pods in ContainerCreating where a test needs a trial to
wait. What runs is the real Job controller, scheduler and garbage collector.
"""

from __future__ import annotations

import time

import optuna
import pytest
from optuna.trial import TrialState

from kubetune.search.attributes import FAIL_REASON_ATTR, JOB_ATTR, PREEMPTED_ATTR
from kubetune.search.ledger import counted_trials
from kubetune_operator import names
from tests.cluster.cluster import STUDYJOB, Cluster, wait_until
from tests.cluster.kubelet import TestKubelet
from tests.operator.conftest import digits_spec

pytestmark = pytest.mark.slow


def study(url: str, name: str = "digits-op") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=url)


def running_jobs(kube: Cluster, name: str) -> list[str]:
    return sorted(n for n, job in kube.trial_jobs(name).items()
                  if not any(c["status"] == "True" for c in (job.get("status") or {}).get("conditions") or []))


def test_operator_restarted_mid_study_loses_and_duplicates_nothing(kube, kubelet: TestKubelet, start_operator,
                                                                   digits_claims, storage):
    kubelet.hold(lambda job: "-trial-" in job)
    first = start_operator()
    kube.create_studyjob("restart", digits_spec(n_trials=4, parallelism=2))
    wait_until(lambda: len(kube.trial_jobs("restart")) == 2, 60, "two trial Jobs")
    first.stop()

    # While no operator runs, trial 0 trains and tells its result.
    kubelet.release("restart-trial-0")
    wait_until(lambda: study(storage).trials[0].state.is_finished(), 120, "trial 0 to finish")

    start_operator()
    kubelet.release()
    status = kube.wait_phase("restart", "Succeeded", 300)
    trials = study(storage).trials
    assert len(trials) == 4 and all(t.state.is_finished() for t in trials)
    assert status["trials"]["finished"] == 4
    # One Job per trial across both operators: no duplicate, none missing.
    assert set(kube.trial_jobs("restart")) == {f"restart-trial-{n}" for n in range(4)}
    assert [t.user_attrs[JOB_ATTR] for t in trials] == [f"restart-trial-{n}" for n in range(4)]


def test_grid_studyjob_covers_each_point_once(kube, operator, digits_claims, storage):
    spec = digits_spec(n_trials=10, parallelism=2)
    search = spec["config"]["search"]
    search["sampler"] = {"type": "GridSampler", "seed": 0}
    search["search_space"] = {"optimizer.lr": {"type": "categorical", "choices": [0.01, 0.05]},
                              "model.dropout": {"type": "categorical", "choices": [0.0, 0.2]}}
    kube.create_studyjob("grid", spec)
    status = kube.wait_phase("grid", "Succeeded", 300)
    points = sorted(tuple(sorted(t.params.items())) for t in study(storage).trials)
    assert len(points) == 4 and len(set(points)) == 4
    assert status["progress"] == "4/4"


def test_suspend_then_raise_parallelism_and_n_trials(kube, kubelet: TestKubelet, operator, digits_claims,
                                                      storage):
    kubelet.hold(lambda job: job == "live-trial-0")
    kube.create_studyjob("live", digits_spec(n_trials=2, parallelism=1))
    wait_until(lambda: "live-trial-0" in kube.trial_jobs("live"), 60, "the first trial Job")
    kube.patch(STUDYJOB, "live", {"spec": {"suspend": True}})
    kubelet.release("live-trial-0")
    kube.wait_phase("live", "Suspended", 120)
    wait_until(lambda: not running_jobs(kube, "live"), 120, "trial 0 to end")
    assert set(kube.trial_jobs("live")) == {"live-trial-0"}  # nothing new starts while suspended

    kube.patch(STUDYJOB, "live", {"spec": {"suspend": False, "trials": {"parallelism": 2},
                                           "config": {"search": {"n_trials": 4}}}})
    wait_until(lambda: len(running_jobs(kube, "live")) == 2, 60, "two trials at once")
    status = kube.wait_phase("live", "Succeeded", 300)
    # The trial asked ahead when the StudyJob was suspended never ran: it is no trial.
    assert status["trials"]["finished"] == 4 and len(counted_trials(study(storage).trials)) == 4
    assert status["observedGeneration"] == 3


def test_delete_study_with_the_studyjob(kube, operator, digits_claims, storage):
    spec = digits_spec(n_trials=1, parallelism=1)
    spec["cleanup"] = {"deleteStudy": True}
    kube.create_studyjob("gone", spec)
    kube.wait_phase("gone", "Succeeded", 300)
    kube.delete(STUDYJOB, "gone")
    wait_until(lambda: kube.get(STUDYJOB, "gone") is None, 60, "the finalizer to let the StudyJob go")
    with pytest.raises(KeyError):
        study(storage)
    wait_until(lambda: not kube.trial_jobs("gone"), 60, "the garbage collector")


def test_evicted_trial_keeps_its_reason_and_resumes_as_the_same_trial(kube, kubelet: TestKubelet, operator,
                                                                      digits_claims, storage):
    kubelet.hold(lambda job: job == "evict-trial-0")
    kube.create_studyjob("evict", digits_spec(n_trials=2, parallelism=1, retries=1))
    pod = wait_until(lambda: (kube.job_pods("evict-trial-0") or [None])[0], 60, "trial 0's pod")
    kube.evict(pod["metadata"]["name"])  # kubectl drain does this
    status = kube.wait_phase("evict", "Succeeded", 300)

    trials = study(storage).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2  # no new trial for the eviction
    assert trials[0].user_attrs[PREEMPTED_ATTR] == 1
    assert status["trials"]["preempted"] == 1 and status["trials"]["failed"] == 0
    assert "evict-trial-0-r1" in kube.trial_jobs("evict")
    messages = [e.get("message", "") for e in kube.events("TrialPreempted")]
    assert len(messages) == 1 and messages[0].startswith(("trial 0 was disrupted (Evicted", "trial 0 was disrupted (Disrupted"))


def test_trial_whose_image_cannot_be_pulled_fails_after_the_startup_timeout(kube, kubelet: TestKubelet, operator,
                                                                           digits_claims, storage):
    kubelet.unpullable.add("registry.invalid/trainer:missing")
    spec = digits_spec(n_trials=2, parallelism=1, retries=0, maxFailed=0,
                       image="registry.invalid/trainer:missing", startupTimeoutSeconds=3)
    kube.create_studyjob("nopull", spec)
    status = kube.wait_phase("nopull", "Failed", 120)
    trial = study(storage).trials[0]
    assert trial.state == TrialState.FAIL
    assert trial.user_attrs[FAIL_REASON_ATTR].startswith(("ErrImagePull", "ImagePullBackOff"))
    blocked = {c["type"]: c for c in status["conditions"]}["TrialsBlocked"]
    assert blocked["status"] == "True" and blocked["reason"] in ("ErrImagePull", "ImagePullBackOff")
    assert "could not start" in status["message"]
    wait_until(lambda: "nopull-trial-0" not in kube.trial_jobs("nopull"), 60, "the stuck Job to be deleted")


def test_oom_killed_trial_fails_with_its_reason_and_is_not_retried(kube, kubelet: TestKubelet, operator,
                                                                  digits_claims, storage):
    kube.create_studyjob("oom", digits_spec(n_trials=1, parallelism=1, retries=1, maxFailed=1))
    pod = wait_until(lambda: next((p for p in kube.job_pods("oom-trial-0")
                                   if (p.get("status") or {}).get("phase") == "Running"), None),
                     120, "trial 0 to run")
    kubelet.oom_kill(kube.namespace, pod["metadata"]["name"])
    status = kube.wait_phase("oom", "Failed", 120)
    trial = study(storage).trials[0]
    assert trial.user_attrs[FAIL_REASON_ATTR].startswith("OOMKilled")
    assert len(study(storage).trials) == 1 and status["trials"]["retried"] == 0


def test_trial_job_the_api_server_refuses_fails_the_studyjob_with_its_message(kube, operator, digits_claims,
                                                                              storage):
    # Valid for the CRD (and the operator), refused by the Job API: a value with operator Exists.
    spec = digits_spec(n_trials=3, parallelism=1, tolerations=[{"key": "k", "operator": "Exists", "value": "v"}])
    kube.create_studyjob("refused", spec)
    status = kube.wait_phase("refused", "Failed", 60)
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["TrialsBlocked"]["reason"] == "JobRejected"
    assert "tolerations[0].operator" in conditions["Failed"]["message"], conditions["Failed"]["message"]
    assert "refused" in status["message"]
    assert any("a dry run of Job refused-trial-0" in e.get("message", "") for e in kube.events("TrialsBlocked"))
    # Found by a dry run before the study was made: no trial was spent on it, and none is
    # asked while the spec stays the same.
    time.sleep(5)  # two more passes of the safety-net timer
    with pytest.raises(KeyError):
        study(storage)
    assert kube.trial_jobs("refused") == {}


def test_a_spec_edited_mid_study_into_jobs_the_api_server_refuses_fails_no_trial(
        kube, kubelet: TestKubelet, operator, digits_claims, storage):
    kubelet.hold(lambda job: job == "edited-trial-0")
    kube.create_studyjob("edited", digits_spec(n_trials=2, parallelism=1, retries=0, maxFailed=0))
    wait_until(lambda: "edited-trial-0" in kube.trial_jobs("edited"), 60, "the first trial Job")
    kube.patch(STUDYJOB, "edited", {"spec": {"trials": {
        "tolerations": [{"key": "k", "operator": "Exists", "value": "v"}]}}})
    kubelet.release("edited-trial-0")
    status = kube.wait_phase("edited", "Failed", 180)
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["TrialsBlocked"]["reason"] == "JobRejected"
    assert "a dry run of Job edited-trial-0" in conditions["Failed"]["message"]
    assert "tolerations[0].operator" in conditions["Failed"]["message"]
    # Trial 0 ended as it would have; no trial ran in the refused Jobs (one asked ahead
    # while trial 0 ran is queued again).
    assert [t.state for t in counted_trials(study(storage).trials)] in (
        [TrialState.COMPLETE], [TrialState.COMPLETE, TrialState.WAITING])
    assert set(kube.trial_jobs("edited")) == {"edited-trial-0"}

    kube.patch(STUDYJOB, "edited", {"spec": {"trials": {"tolerations": []}}})  # fixed: it goes on
    status = kube.wait_phase("edited", "Succeeded", 300)
    assert status["trials"]["complete"] == 2 and status["trials"]["failed"] == 0
    assert [t.state for t in counted_trials(study(storage).trials)] == [TrialState.COMPLETE] * 2


def test_jobs_of_an_earlier_studyjob_of_the_same_name_are_not_adopted(kube, kubelet: TestKubelet, operator,
                                                                      digits_claims, storage):
    # A Job left by a deleted StudyJob "same" (same labels, another owner), not yet collected.
    kubelet.hold(lambda job: job == "same-trial-0")
    old_owner = kube.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "old-owner"}})
    leftover = {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "same-trial-0", "labels": {names.LABEL_MANAGED_BY: names.MANAGED_BY,
                                                         names.LABEL_STUDYJOB: "same", names.LABEL_TRIAL: "0"},
                     "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "old-owner",
                                          "uid": old_owner["metadata"]["uid"]}]},
        "spec": {"backoffLimit": 0, "template": {"spec": {
            "restartPolicy": "Never", "containers": [{"name": "c", "image": "x", "command": ["true"],
                                                      "securityContext": {"allowPrivilegeEscalation": False,
                                                                          "capabilities": {"drop": ["ALL"]}}}],
            "securityContext": {"runAsNonRoot": True, "runAsUser": 1000,
                                "seccompProfile": {"type": "RuntimeDefault"}}}}},
    }
    kube.create(leftover)
    created = kube.create_studyjob("same", digits_spec(n_trials=1, parallelism=1))
    time.sleep(4)  # passes run; the leftover is neither counted nor replaced
    assert kube.status("same").get("trials", {}).get("finished", 0) == 0
    assert study(storage).trials[0].state == TrialState.RUNNING
    kube.delete(("v1", "ConfigMap"), "old-owner")  # the garbage collector takes the leftover
    kubelet.release()
    kube.wait_phase("same", "Succeeded", 300)
    job = kube.get(("batch/v1", "Job"), "same-trial-0")
    assert [r["uid"] for r in job["metadata"]["ownerReferences"]] == [created["metadata"]["uid"]]
    assert study(storage).trials[0].state == TrialState.COMPLETE


def test_visualisation_whose_image_cannot_be_pulled_is_given_up_and_the_study_succeeds(
        kube, kubelet: TestKubelet, start_operator, digits_claims, storage):
    kubelet.unpullable.add("registry.invalid/cpu:missing")
    start_operator(cpu_image="registry.invalid/cpu:missing")
    spec = digits_spec(n_trials=1, parallelism=1, output=True, startupTimeoutSeconds=3)
    kube.create_studyjob("noplots", spec)
    status = kube.wait_phase("noplots", "Succeeded", 300)
    visualised = {c["type"]: c for c in status["conditions"]}["Visualised"]
    assert visualised["status"] == "False" and visualised["reason"] in ("ErrImagePull", "ImagePullBackOff")
    assert status["bestConfig"]["configMap"] == "noplots-best-config"
    wait_until(lambda: kube.get(("batch/v1", "Job"), "noplots-visualise") is None, 60, "the stuck Job to go")
    time.sleep(5)  # later passes do not make it again
    assert kube.get(("batch/v1", "Job"), "noplots-visualise") is None
