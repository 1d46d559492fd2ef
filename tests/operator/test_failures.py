"""Why a trial Job failed, from the Job's and its pods' status (as the kubelet reports it)."""

from __future__ import annotations

import pytest

from kubetune_operator.failures import failure_reason, job_outcome, vanished


def _job(reason: str = "BackoffLimitExceeded", deadline: int | None = None) -> dict:
    job = {"spec": {}, "status": {"failed": 1, "conditions": [
        {"type": "Failed", "status": "True", "reason": reason, "message": "Job failed"}]}}
    if deadline:
        job["spec"]["activeDeadlineSeconds"] = deadline
    return job


def _pod(**status) -> dict:
    return {"status": status}


def _terminated(reason: str, code: int) -> dict:
    return _pod(phase="Failed", containerStatuses=[{"name": "trial", "state": {
        "terminated": {"reason": reason, "exitCode": code}}}])


@pytest.mark.parametrize(("job", "expected"), [
    ({"status": {}}, None),
    ({"status": {"active": 1}}, None),
    ({"status": {"succeeded": 1}}, "succeeded"),
    ({"status": {"conditions": [{"type": "Complete", "status": "True"}]}}, "succeeded"),
    ({"status": {"conditions": [{"type": "Failed", "status": "True"}]}}, "failed"),
    ({"status": {"conditions": [{"type": "Failed", "status": "False"}]}}, None),
    # 1.31+: the interim conditions decide before the pods are gone.
    ({"status": {"conditions": [{"type": "FailureTarget", "status": "True"}]}}, "failed"),
    ({"status": {"conditions": [{"type": "SuccessCriteriaMet", "status": "True"}]}}, "succeeded"),
])
def test_job_outcome(job, expected):
    assert job_outcome(job) == expected


@pytest.mark.parametrize(("job", "pods", "reason", "resumable"), [
    (_job(), [_terminated("OOMKilled", 137)], "OOMKilled", False),
    (_job(), [_pod(phase="Failed", reason="Evicted", message="low on memory")], "Evicted", True),
    (_job(), [_pod(phase="Failed", conditions=[{"type": "DisruptionTarget", "status": "True",
                                                "reason": "PreemptionByScheduler"}])], "Preempted", True),
    (_job(), [_pod(phase="Failed", conditions=[{"type": "DisruptionTarget", "status": "True",
                                                "reason": "EvictionByEvictionAPI"}])], "Evicted", True),
    (_job(), [_pod(phase="Running", conditions=[{"type": "DisruptionTarget", "status": "True",
                                                 "reason": "DeletionByTaintManager"}])], "NodeLost", True),
    # The evicted pod is gone; the Job's podFailurePolicy kept the reason.
    (_job("PodFailurePolicy") | {"status": {"conditions": [{
        "type": "Failed", "status": "True", "reason": "PodFailurePolicy",
        "message": "Pod kt/x-1 has condition DisruptionTarget matching FailJob rule at index 0"}]}},
     [], "Disrupted", True),
    (_job("DeadlineExceeded", 600), [_terminated("Error", 137)], "DeadlineExceeded", False),
    (_job(), [_terminated("Error", 3)], "BackoffLimitExceeded", False),
    # kubectl delete pod: no DisruptionTarget, but the trainer left its trial RUNNING (exit 143).
    (_job(), [_terminated("Error", 143)], "Terminated", True),
    (_job("DeadlineExceeded", 600), [_terminated("Error", 143)], "DeadlineExceeded", False),
    (_job(), [], "BackoffLimitExceeded", False),
])
def test_failure_reasons(job, pods, reason, resumable):
    failure = failure_reason(job, pods)
    assert failure.reason == reason and failure.resumable is resumable
    assert str(failure).startswith(f"{reason}: ")


def test_messages_say_what_happened():
    assert "exited with code 3 without reporting" in str(failure_reason(_job(), [_terminated("Error", 3)]))
    assert "deadline of 600s" in str(failure_reason(_job("DeadlineExceeded", 600), []))
    assert "low on memory" in str(failure_reason(_job(), [_pod(reason="Evicted", message="low on memory")]))
    assert vanished().resumable and vanished().reason == "JobDeleted"


def _pending_job(**status) -> dict:
    return {"metadata": {"name": "j", "creationTimestamp": "2026-01-01T00:00:00Z"}, "status": status}


START = 1767225600.0  # 2026-01-01T00:00:00Z


@pytest.mark.parametrize(("pods", "reason"), [
    ([], "FailedCreate"),
    ([_pod(phase="Pending", containerStatuses=[{"state": {"waiting": {
        "reason": "ImagePullBackOff", "message": "Back-off pulling image"}}}])], "ImagePullBackOff"),
    ([_pod(phase="Pending", conditions=[{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                         "message": "0/3 nodes: Insufficient nvidia.com/gpu"}])], "Unschedulable"),
    ([_pod(phase="Pending", containerStatuses=[{"state": {"waiting": {"reason": "ContainerCreating"}}}])],
     "FailedMount"),
])
def test_a_pod_that_never_starts_fails_after_the_startup_timeout(pods, reason):
    from kubetune_operator.failures import STARTUP_REASONS, startup_failure

    job = _pending_job(active=1)
    assert startup_failure(job, pods, timeout=300, now=START + 299) is None  # still within the timeout
    failure = startup_failure(job, pods, timeout=300, now=START + 301)
    assert failure is not None and failure.reason == reason and not failure.resumable
    assert reason in STARTUP_REASONS and "300s" in failure.message


def test_a_started_or_running_trial_is_never_a_startup_failure():
    from kubetune_operator.failures import startup_failure

    assert startup_failure(_pending_job(active=1, ready=1), [], timeout=1, now=START + 10) is None
    running = [_pod(phase="Running")]
    assert startup_failure(_pending_job(active=1), running, timeout=1, now=START + 10) is None


@pytest.mark.parametrize(("status", "message", "transient"), [
    (403, 'configmaps "x" is forbidden: cannot set blockOwnerDeletion in this case because cannot find '
          "RESTMapping for APIVersion kubetune.dev/v1alpha1 Kind StudyJob", True),
    (403, 'jobs.batch is forbidden: User "system:serviceaccount:kt:op" cannot create resource', False),
    (429, "storage is (re)initializing", True),
    (503, "unavailable", True),
    (422, "Job.batch is invalid", False),
])
def test_which_api_answers_change_by_themselves(status, message, transient):
    from kubetune_operator.kube import ApiError

    assert ApiError(status, message).transient is transient


def _unschedulable(message: str) -> dict:
    return _pod(phase="Pending", conditions=[{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                              "message": message}])


GPU_BUSY = ("0/3 nodes are available: 3 Insufficient nvidia.com/gpu. preemption: 0/3 nodes are available: "
            "1 No preemption victims found for incoming pod, 2 Preemption is not helpful for scheduling.")


@pytest.mark.parametrize(("message", "resources"), [
    (GPU_BUSY, ["nvidia.com/gpu"]),
    ("0/3 nodes are available: 1 Insufficient cpu, 1 Insufficient memory, 1 node(s) had untolerated taint "
     "{node-role.kubernetes.io/control-plane: }. preemption: 0/3 nodes are available: 2 No preemption victims "
     "found for incoming pod, 1 Preemption is not helpful for scheduling.", ["cpu", "memory"]),
    ("0/2 nodes are available: 2 Too many pods. preemption: not eligible due to preemptionPolicy=Never.", ["pods"]),
    # Larger than every node: it would not fit even on an empty one.
    ("0/3 nodes are available: 3 Insufficient nvidia.com/gpu. preemption: 0/3 nodes are available: "
     "3 Preemption is not helpful for scheduling.", []),
    ("0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector. preemption: 0/3 nodes are "
     "available: 3 Preemption is not helpful for scheduling.", []),
    ("0/3 nodes are available: pod has unbound immediate PersistentVolumeClaims. preemption: 0/3 nodes are "
     "available: 3 Preemption is not helpful for scheduling.", []),
    ("0/3 nodes are available: 1 Insufficient cpu, 2 node(s) didn't match Pod's node affinity/selector. "
     "preemption: not eligible due to preemptionPolicy=Never.", []),
])
def test_a_pod_waits_for_capacity_only_when_free_resources_are_all_it_lacks(message, resources):
    from kubetune_operator.failures import waits_for_capacity

    assert waits_for_capacity(_unschedulable(message)) == resources


def test_waiting_for_capacity_never_times_out_and_the_timeout_counts_from_scheduling():
    from kubetune_operator.failures import startup_failure

    job = _pending_job(active=1)
    assert startup_failure(job, [_unschedulable(GPU_BUSY)], timeout=60, now=START + 3600) is None
    # Scheduled an hour late, then stuck in ContainerCreating: the timeout counts from scheduling.
    creating = _pod(phase="Pending", conditions=[
        {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2026-01-01T01:00:00Z"}],
        containerStatuses=[{"state": {"waiting": {"reason": "ContainerCreating"}}}])
    assert startup_failure(job, [creating], timeout=60, now=START + 3630) is None
    failure = startup_failure(job, [creating], timeout=60, now=START + 3661)
    assert failure is not None and failure.reason == "FailedMount"


def test_a_suspended_job_is_queued_and_its_timeout_counts_from_admission():
    from kubetune_operator.failures import startup_failure

    queued = {**_pending_job(), "spec": {"suspend": True}}
    assert startup_failure(queued, [], timeout=60, now=START + 3600) is None
    admitted = {**_pending_job(startTime="2026-01-01T01:00:00Z"), "spec": {"suspend": False}}
    assert startup_failure(admitted, [], timeout=60, now=START + 3630) is None
    failure = startup_failure(admitted, [], timeout=60, now=START + 3661)
    assert failure is not None and failure.reason == "FailedCreate"
