"""StudyJobs on a cluster that admits Jobs through Kueue: a real Kueue controller-manager
(built from its Go module) against the real control plane, scheduler and test kubelet.

Every trial Job is its own Kueue Workload: created suspended in the StudyJob's LocalQueue,
admitted against the ClusterQueue's quota, unsuspended by Kueue. Trials train for real.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from kubetune.search.attributes import FAIL_REASON_ATTR, PREEMPTED_ATTR, USAGE_STUDY_PREFIX
from kubetune_operator import names
from kubetune_operator import status as st
from kubetune_operator.kube import ApiError
from tests.cluster.cluster import STUDYJOB, Cluster, wait_until
from tests.cluster.kueue import KUEUE, Kueue
from tests.cluster.test_resume import EPOCHS, RESUMED, checkpoint_epoch
from tests.operator.conftest import digits_spec

pytestmark = pytest.mark.slow

FLAVOR = "default-flavor"
STARTUP_TIMEOUT = 5  # seconds; a queued trial waits far longer, and must not fail for it
GPU = {"limits": {"nvidia.com/gpu": 1}}
LONG = 4 * EPOCHS  # a preempted trial still trains while the higher-priority one is admitted


def _time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _quota(kube: Cluster, gpus: int, queues: tuple[str, ...] = ("team",), **spec: Any) -> str:
    """A ClusterQueue of ``gpus`` GPUs (CPU and memory to spare) and LocalQueues ``queues`` in
    the test's namespace pointing at it; the ClusterQueue's name."""
    try:
        kube.create({"apiVersion": KUEUE, "kind": "ResourceFlavor", "metadata": {"name": FLAVOR}})
    except ApiError as exc:
        if exc.status != 409:
            raise
    cluster_queue = f"cq-{kube.namespace}"
    kube.create({"apiVersion": KUEUE, "kind": "ClusterQueue", "metadata": {"name": cluster_queue}, "spec": {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": kube.namespace}},
        "resourceGroups": [{"coveredResources": ["cpu", "memory", "nvidia.com/gpu"], "flavors": [{
            "name": FLAVOR, "resources": [{"name": "cpu", "nominalQuota": "64"},
                                          {"name": "memory", "nominalQuota": "256Gi"},
                                          {"name": "nvidia.com/gpu", "nominalQuota": gpus}]}]}], **spec}})
    for queue in queues:
        kube.create({"apiVersion": KUEUE, "kind": "LocalQueue", "metadata": {"name": queue},
                     "spec": {"clusterQueue": cluster_queue}})
    return cluster_queue


def _condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions") or [] if c["type"] == kind), {})


def _admission_to_running(kube: Cluster, job: dict[str, Any]) -> float:
    """Seconds from Kueue unsuspending the Job (its startTime) to its pod running."""
    (pod,) = [p for p in kube.job_pods(job["metadata"]["name"]) if p["status"].get("containerStatuses")]
    started = pod["status"]["containerStatuses"][0]["state"]["terminated"]["startedAt"]
    return _time(started) - _time(job["status"]["startTime"])


def _pod_gpu_seconds(kube: Cluster, jobs: Any) -> dict[str, float]:
    """Pod -> its GPUs times its run, from its startTime to its container's end, as the kubelet said."""
    found = {}
    for job in jobs:
        for pod in kube.job_pods(job):
            (container,) = pod["status"]["containerStatuses"]
            gpus = int(pod["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"])
            ended = _time(container["state"]["terminated"]["finishedAt"])
            found[pod["metadata"]["name"]] = gpus * (ended - _time(pod["status"]["startTime"]))
    return found


def _usage_matches_the_pods(kube: Cluster, name: str, storage: str, jobs: Any) -> dict[str, Any]:
    """Once the operator saw every pod end: ``status.usage`` (and each trial's record in the study)
    holds the pods' GPU seconds within a second; the status."""
    pods = _pod_gpu_seconds(kube, jobs)

    def settled() -> dict[str, Any] | None:
        status = kube.status(name)
        used = status.get("usage") or {}
        return status if abs(used.get("gpuSeconds", -9) - sum(pods.values())) <= 1 else None

    status = wait_until(settled, 60, lambda: f"status.usage {kube.status(name).get('usage')} to hold the pods' "
                        f"{sum(pods.values()):.0f} GPU seconds")
    attrs = optuna.load_study(study_name=status["study"], storage=storage).user_attrs
    recorded = {pod: a for key, record in attrs.items() if key.startswith(USAGE_STUDY_PREFIX)
                for pod, a in record["attempts"].items()}
    assert set(recorded) == set(pods)  # every pod once
    for pod, seconds in pods.items():
        assert abs((recorded[pod]["end"] - recorded[pod]["start"]) * recorded[pod]["gpus"] - seconds) <= 1, pod
    return status


def _kueue_story(kube: Cluster) -> str:
    """What the StudyJobs, their events and Kueue's Workloads say, for a failure's message."""
    workloads = [(w["metadata"]["name"], [(c["type"], c["status"], c.get("reason")) for c in
                                          (w.get("status") or {}).get("conditions") or []])
                 for w in kube.list((KUEUE, "Workload"))]
    messages = {sj["metadata"]["name"]: (sj.get("status") or {}).get("message") for sj in kube.list(STUDYJOB)}
    events = [(e["reason"], e["message"]) for e in kube.events() if e["reason"].startswith("Trial")]
    return f"StudyJobs {messages}; events {events}; workloads {workloads}"


def test_gpu_trials_beyond_the_quota_wait_queued_and_run_one_at_a_time(
        kueue: Kueue, kube: Cluster, operator, digits_claims, storage):
    _quota(kube, gpus=1)
    spec = digits_spec(n_trials=3, parallelism=3, queueName="team", startupTimeoutSeconds=STARTUP_TIMEOUT,
                       resources=GPU)
    began = time.monotonic()
    kube.create_studyjob("queued", spec)
    seen: dict[str, Any] = {}

    def two_queued() -> bool:
        status = kube.status("queued")
        if (status.get("trials") or {}).get("queued") == 2:
            seen.update(status)
            return True
        return False

    wait_until(two_queued, 120, "two trials queued in Kueue")
    queued = _condition(seen, st.TRIALS_QUEUED)
    assert queued["status"] == "True" and "queued in Kueue" in queued["message"]
    assert "nvidia.com/gpu" in queued["message"]  # Kueue's own word on the quota that is short
    assert seen["trials"]["running"] + seen["trials"]["pending"] == 1
    table = kube.kubectl("get", "sj", "queued", "-n", kube.namespace).stdout
    assert table.splitlines()[0].split()[:5] == ["NAME", "PHASE", "TRIALS", "BEST", "QUEUED"]

    final = kube.wait_phase("queued", "Succeeded", 900)
    elapsed = time.monotonic() - began
    trials = optuna.load_study(study_name="digits-op", storage=storage).trials
    assert len(trials) == 3 and all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    assert final["trials"]["failed"] == 0 and final["trials"]["queued"] == 0
    assert _condition(final, st.TRIALS_QUEUED)["status"] == "False"
    jobs = wait_until(lambda: (found := kube.trial_jobs("queued")) and all(
        j["status"].get("completionTime") for j in found.values()) and found, 60, "the trial Jobs to complete")
    assert all(job["metadata"]["labels"][names.LABEL_KUEUE_QUEUE] == "team" for job in jobs.values())
    # Kueue admitted one at a time: each Job started after the one before had ended.
    spans = sorted((_time(j["status"]["startTime"]), _time(j["status"]["completionTime"])) for j in jobs.values())
    assert all(end <= start + 1 for (_, end), (start, _) in zip(spans, spans[1:], strict=False))
    delays = [_admission_to_running(kube, job) for job in jobs.values()]
    used = _usage_matches_the_pods(kube, "queued", storage, jobs)["usage"]
    assert used["gpuSeconds"] > 0 and 0 < used["gpuHoursToBest"] <= used["gpuHours"]
    print(f"\nkueue: 3 GPU trials through a 1-GPU ClusterQueue in {elapsed:.0f}s; admission to pod running "
          f"{min(delays):.0f}-{max(delays):.0f}s (startTime to container start, 1 s resolution)")


def test_two_studyjobs_in_two_local_queues_sharing_one_gpu_both_progress(
        kueue: Kueue, kube: Cluster, operator, digits_claims, storage):
    _quota(kube, gpus=1, queues=("team-a", "team-b"))
    for name in ("a", "b"):
        kube.create_studyjob(name, digits_spec(n_trials=2, parallelism=2, study=name, queueName=f"team-{name}",
                                               startupTimeoutSeconds=STARTUP_TIMEOUT, resources=GPU))
    finals = {name: kube.wait_phase(name, "Succeeded", 900) for name in ("a", "b")}
    for name, final in finals.items():
        assert final["trials"]["failed"] == 0 and final["trials"]["finished"] == 2
        trials = optuna.load_study(study_name=name, storage=storage).trials
        assert [t.state.is_finished() and t.state != TrialState.FAIL for t in trials] == [True, True]
        assert {j["metadata"]["labels"][names.LABEL_KUEUE_QUEUE] for j in kube.trial_jobs(name).values()} == {
            f"team-{name}"}


def test_a_queue_that_does_not_exist_is_a_clear_condition_and_fails_no_trial(
        kueue: Kueue, kube: Cluster, operator, digits_claims, storage):
    spec = digits_spec(n_trials=2, parallelism=2, queueName="nowhere", startupTimeoutSeconds=STARTUP_TIMEOUT)
    kube.create_studyjob("lost", spec)

    def says_missing() -> dict[str, Any] | None:
        found = _condition(kube.status("lost"), st.TRIALS_QUEUED)
        return found if "nowhere" in found.get("message", "") else None

    condition = wait_until(says_missing, 120, "TrialsQueued to name the missing LocalQueue")
    assert condition["status"] == "True" and condition["message"].startswith("trials 0, 1 queued in Kueue: ")
    time.sleep(3 * STARTUP_TIMEOUT)  # far past the startup timeout
    status = kube.status("lost")
    assert status["trials"]["failed"] == 0 and status["trials"]["queued"] == 2
    trials = optuna.load_study(study_name="digits-op", storage=storage).trials
    assert all(t.state == TrialState.RUNNING and FAIL_REASON_ATTR not in t.user_attrs for t in trials)
    assert all(job["spec"]["suspend"] for job in kube.trial_jobs("lost").values())  # the operator never flips it


def test_a_higher_priority_study_preempts_a_trial_that_resumes_in_the_same_job_from_its_checkpoint(
        kueue: Kueue, kube: Cluster, kubelet, operator, digits_claims, storage):
    for name, value in (("low", 100), ("high", 1000)):
        try:
            kube.create({"apiVersion": KUEUE, "kind": "WorkloadPriorityClass", "metadata": {"name": name},
                         "value": value})
        except ApiError as exc:
            if exc.status != 409:
                raise
    _quota(kube, gpus=1, preemption={"withinClusterQueue": "LowerPriority"})
    low = digits_spec(n_trials=1, parallelism=1, study="low", queueName="team", workloadPriorityClassName="low",
                      resources=GPU, output=True)
    low["config"]["training"]["num_epochs"] = LONG
    low["config"]["search"]["pruner"] = {"type": "none"}
    kube.create_studyjob("low", low)
    checkpoint = digits_claims["results"] / "low" / "trial-0" / "last.pt"
    wait_until(lambda: checkpoint_epoch(checkpoint) >= 2, 180, "the low-priority trial's checkpoint of epoch 2")
    at = checkpoint_epoch(checkpoint)

    high = digits_spec(n_trials=1, parallelism=1, study="high", queueName="team", workloadPriorityClassName="high",
                       resources=GPU)
    kube.create_studyjob("high", high)
    evicted = wait_until(lambda: kube.events("TrialPreempted"), 120,
                         lambda: f"the low-priority trial to be preempted ({_kueue_story(kube)})")
    assert "trial 0 was evicted by Kueue (Preempted" in evicted[0]["message"]
    kube.wait_phase("high", "Succeeded", 600)
    status = kube.wait_phase("low", "Succeeded", 600)

    (trial,) = optuna.load_study(study_name="low", storage=storage).trials
    assert trial.state == TrialState.COMPLETE and trial.user_attrs.get(PREEMPTED_ATTR, 0) == 0
    steps = sorted(trial.intermediate_values)
    assert steps == list(range(steps[0], steps[0] + LONG))  # no epoch missing, none told twice
    assert status["trials"]["preempted"] == 1 and status["trials"]["failed"] == 0
    assert set(kube.trial_jobs("low")) == {"low-trial-0"}  # the same Job, admitted again
    pods = sorted(kube.job_pods("low-trial-0"), key=lambda p: p["metadata"]["creationTimestamp"])  # the new one
    found = RESUMED.search(kubelet.logs(kube.namespace, pods[-1]["metadata"]["name"]))
    assert found is not None and int(found.group(1)) >= at  # the pod Kueue stopped is gone (deleted)
    ran = sum(_pod_gpu_seconds(kube, ["low-trial-0"]).values())  # the pod Kueue admitted again
    used = wait_until(lambda: (seen := kube.status("low").get("usage") or {}).get("gpuSeconds", 0) > ran and seen,
                      60, lambda: f"status.usage {kube.status('low').get('usage')} to count the evicted pod too")
    print(f"\nkueue preemption of every trial once: the trial resumed from epoch {found.group(1)} of {LONG} in the "
          f"same Job, {found.group(1)} epochs not trained again; status.usage {used['gpuSeconds']:.0f} GPU seconds, "
          f"{ran:.0f} of them the resumed pod's")
