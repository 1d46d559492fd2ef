"""Why a trial Job ended without its trial being told, read from the Job and its pods.

Reasons, and whether the trial resumes (a new Job for the same trial, continuing from
its last checkpoint, up to ``spec.trials.retries`` times):

==================== ========= ===================================================
reason               resumed   seen as
==================== ========= ===================================================
Evicted              yes       pod condition DisruptionTarget/EvictionByEvictionAPI (drain),
                               TerminationByKubelet or ``status.reason`` Evicted (node pressure)
Preempted            yes       pod condition DisruptionTarget/PreemptionByScheduler
NodeLost             yes       pod condition DisruptionTarget/DeletionByTaintManager or
                               PodGC (the node went NotReady or away)
Disrupted            yes       the Job's ``podFailurePolicy`` DisruptionTarget rule fired and
                               the pod is already gone (evicted pods often are)
JobDeleted           yes       the Job vanished while its trial was RUNNING
Terminated           yes       the trial container exited 143 (SIGTERM, e.g. ``kubectl delete pod``)
                               and left its trial RUNNING for the next pod
OOMKilled            no        container terminated with reason OOMKilled
DeadlineExceeded     no        Job condition Failed/DeadlineExceeded
BackoffLimitExceeded no        the pod exited non-zero without telling the trial
==================== ========= ===================================================

A disruption says nothing about the params, so the trial goes on where it stopped;
the others would fail again the same way (same params, same memory, same time).
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from kubetune.search.interruption import TERMINATED_EXIT

DISRUPTIONS_RESUMED = frozenset({"Evicted", "Preempted", "NodeLost", "Disrupted", "JobDeleted", "Terminated"})
# DisruptionTarget condition reasons (Kubernetes 1.26+) -> kubetune's reason.
DISRUPTIONS = {
    "EvictionByEvictionAPI": "Evicted",
    "TerminationByKubelet": "Evicted",
    "PreemptionByScheduler": "Preempted",
    "DeletionByTaintManager": "NodeLost",
    "DeletionByPodGC": "NodeLost",
}


@dataclass(frozen=True)
class Failure:
    reason: str
    message: str

    @property
    def resumable(self) -> bool:
        """A disruption: the trial may go on from its checkpoint in a new Job."""
        return self.reason in DISRUPTIONS_RESUMED

    def __str__(self) -> str:
        return f"{self.reason}: {self.message}" if self.message else self.reason


def _condition(job: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    conditions: list[Mapping[str, Any]] = (job.get("status") or {}).get("conditions") or []
    for condition in conditions:
        if condition.get("type") == kind and condition.get("status") == "True":
            return condition
    return None


def job_outcome(job: Mapping[str, Any]) -> str | None:
    """``"succeeded"``, ``"failed"`` or ``None`` while the Job still runs.

    On 1.31+ the Job controller sets ``SuccessCriteriaMet``/``FailureTarget`` first and
    ``Complete``/``Failed`` once its pods are gone; either one decides the outcome.
    """
    status = job.get("status") or {}
    if _condition(job, "Complete") or _condition(job, "SuccessCriteriaMet") or (status.get("succeeded") or 0) > 0:
        return "succeeded"
    if _condition(job, "Failed") or _condition(job, "FailureTarget"):
        return "failed"
    return None


def _failed_condition(job: Mapping[str, Any]) -> Mapping[str, Any]:
    return _condition(job, "Failed") or _condition(job, "FailureTarget") or {}


def _terminated(pod: Mapping[str, Any]) -> Mapping[str, Any] | None:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    for status in statuses:
        state = status.get("state") or {}
        last = status.get("lastState") or {}
        terminated: Mapping[str, Any] | None = state.get("terminated") or last.get("terminated")
        if terminated:
            return terminated
    return None


def _pod_failure(pod: Mapping[str, Any]) -> Failure | None:
    status = pod.get("status") or {}
    for condition in status.get("conditions") or []:
        if condition.get("type") == "DisruptionTarget" and condition.get("status") == "True":
            reason = DISRUPTIONS.get(condition.get("reason") or "", "Preempted")
            return Failure(reason, condition.get("message") or condition.get("reason") or "")
    if status.get("reason") == "Evicted":
        return Failure("Evicted", status.get("message") or "the pod was evicted")
    terminated = _terminated(pod)
    if terminated and terminated.get("reason") == "OOMKilled":
        return Failure("OOMKilled", "the trial container exceeded its memory limit")
    return None


def failure_reason(job: Mapping[str, Any], pods: Sequence[Mapping[str, Any]]) -> Failure:
    """The reason a failed Job gives, refined by what its pods say."""
    failed = _failed_condition(job)
    if failed.get("reason") == "DeadlineExceeded":
        deadline = (job.get("spec") or {}).get("activeDeadlineSeconds")
        suffix = f" of {deadline}s" if deadline else ""
        return Failure("DeadlineExceeded", f"the trial ran past its deadline{suffix}")
    for pod in pods:
        found = _pod_failure(pod)
        if found is not None:
            return found
    if failed.get("reason") == "PodFailurePolicy" and "DisruptionTarget" in (failed.get("message") or ""):
        return Failure("Disrupted", failed.get("message") or "")
    for pod in pods:
        terminated = _terminated(pod)
        if terminated and terminated.get("exitCode") == TERMINATED_EXIT:
            return Failure("Terminated", "the trial pod was stopped (SIGTERM) before its trial ended")
        if terminated and terminated.get("exitCode") not in (None, 0):
            return Failure(
                "BackoffLimitExceeded",
                f"the trial pod exited with code {terminated['exitCode']} without reporting a result",
            )
    reason = failed.get("reason") or "BackoffLimitExceeded"
    return Failure(reason, failed.get("message") or "the trial pod failed without reporting a result")


def vanished() -> Failure:
    return Failure("JobDeleted", "the trial's Job was deleted while the trial was running")


# Reasons a trial fails before its pod ever ran (see startup_failure).
STARTUP_REASONS = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CreateContainerConfigError",
                             "CreateContainerError", "FailedMount", "FailedCreate", "Unschedulable",
                             "NotStarted", "JobRejected"})

# Waiting reasons of a container that will not start by itself.
_STUCK_WAITING = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CreateContainerConfigError",
                  "CreateContainerError", "ContainerCreating", "PodInitializing"}


def stuck_node(pods: Sequence[Mapping[str, Any]], now: float | None = None) -> str | None:
    """The node a Job's pod is stuck on, or None: a pod not ended whose node stopped
    answering (the node controller marked it not Ready, which leaves the reason empty;
    the kubelet always gives one), or still there past its deletion deadline."""
    now = time.time() if now is None else now
    for pod in pods:
        status, meta = pod.get("status") or {}, pod.get("metadata") or {}
        node = (pod.get("spec") or {}).get("nodeName")
        if not node or status.get("phase") in ("Succeeded", "Failed"):
            continue
        deleting = meta.get("deletionTimestamp")
        if deleting and _timestamp(deleting) < now:
            return str(node)
        ready: Mapping[str, Any] = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {})
        if status.get("phase") == "Running" and ready.get("status") != "True" and not ready.get("reason"):
            return str(node)
    return None


def may_be_lost(job: Mapping[str, Any]) -> bool:
    """A Job not ended with a pod not ready, or one being deleted (no longer counted
    active): is it stuck on a lost node?"""
    status = job.get("status") or {}
    return job_outcome(job) is None and (
        bool(status.get("terminating")) or (bool(status.get("active")) and not status.get("ready")))


def _timestamp(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _started(job: Mapping[str, Any]) -> bool:
    status = job.get("status") or {}
    return bool(status.get("ready") or status.get("succeeded") or status.get("failed"))


def suspended(job: Mapping[str, Any]) -> bool:
    """The Job is suspended (``spec.suspend``): Kueue holds it until its Workload is admitted."""
    return bool((job.get("spec") or {}).get("suspend"))


def unstarted(job: Mapping[str, Any]) -> bool:
    """A Job not ended, not suspended, whose pod was never ready: its pods say why."""
    return job_outcome(job) is None and not _started(job) and not suspended(job)


def _scheduled_condition(pod: Mapping[str, Any]) -> Mapping[str, Any]:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == "PodScheduled"), {})


# The scheduler's summary: "0/3 nodes are available: 3 Insufficient nvidia.com/gpu. preemption:
# 0/3 nodes are available: 1 No preemption victims found for incoming pod, 2 Preemption is not
# helpful for scheduling."
_AVAILABLE = re.compile(r"0/(\d+) nodes are available: (.*)")
_NOT_HELPFUL = re.compile(r"(\d+) Preemption is not helpful for scheduling")


def waits_for_capacity(pod: Mapping[str, Any]) -> list[str]:
    """The resources a pod waits for (``["nvidia.com/gpu"]``) when the scheduler could not
    place it only for lack of free resources on nodes where it would fit once pods end;
    empty otherwise (a node selector no node has, a request larger than every node)."""
    condition = _scheduled_condition(pod)
    if condition.get("status") != "False" or condition.get("reason") != "Unschedulable":
        return []
    head, _, preemption = str(condition.get("message") or "").partition(" preemption: ")
    found = _AVAILABLE.search(head)
    if found is None:
        return []
    resources, other = set(), False
    for part in found.group(2).rstrip(". ").split(", "):
        reason = part.partition(" ")[2]
        if reason.startswith("Insufficient "):
            resources.add(reason.removeprefix("Insufficient "))
        elif reason == "Too many pods":
            resources.add("pods")
        else:
            other = True
    if not resources:
        return []
    # Nodes where preemption "is not helpful" would not fit the pod even when empty (or fail
    # a rule that never changes); any other node only lacks free resources now.
    hopeless = sum(int(n) for n in _NOT_HELPFUL.findall(preemption))
    if preemption.startswith("0/"):
        return sorted(resources) if hopeless < int(found.group(1)) else []
    return [] if other else sorted(resources)


def _since(job: Mapping[str, Any], pods: Sequence[Mapping[str, Any]]) -> float:
    """When the startup timeout began: the Job's start (set again each time it is unsuspended,
    so a Job queued by Kueue counts from admission), or the time its pod was scheduled, if later
    (a pod that waited for free resources counts from when it got them)."""
    status = job.get("status") or {}
    began = status.get("startTime") or (job.get("metadata") or {}).get("creationTimestamp")
    since = _timestamp(began) if began else 0.0
    for pod in pods:
        condition = _scheduled_condition(pod)
        if condition.get("status") == "True" and condition.get("lastTransitionTime"):
            since = max(since, _timestamp(condition["lastTransitionTime"]))
    return since


def _why_pending(pod: Mapping[str, Any]) -> Failure:
    status = pod.get("status") or {}
    for condition in status.get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            return Failure(condition.get("reason") or "Unschedulable", condition.get("message") or "")
    for key in ("initContainerStatuses", "containerStatuses"):
        for container in status.get(key) or []:
            waiting = (container.get("state") or {}).get("waiting") or {}
            reason = waiting.get("reason")
            if reason in _STUCK_WAITING:
                if reason in ("ContainerCreating", "PodInitializing"):
                    return Failure("FailedMount", "the pod's volumes or containers were not set up; "
                                   f"see kubectl describe pod {(pod.get('metadata') or {}).get('name', '')}")
                return Failure(reason, waiting.get("message") or "")
    return Failure("NotStarted", f"the pod stayed {status.get('phase') or 'Pending'}")


def may_be_stuck(job: Mapping[str, Any], timeout: float, now: float | None = None) -> bool:
    """A running Job, started over ``timeout`` seconds ago, with no pod ever ready: worth a look."""
    now = time.time() if now is None else now
    return unstarted(job) and now - _since(job, ()) >= timeout


def startup_failure(job: Mapping[str, Any], pods: Sequence[Mapping[str, Any]], timeout: float,
                    now: float | None = None) -> Failure | None:
    """Why a Job's pod has not started ``timeout`` seconds after the Job started (or its pod
    was scheduled), or None.

    Pending pods never fail a Job by themselves (an image that cannot be pulled, no node
    that fits, a volume that does not mount, a quota that refuses the pod), so the
    operator gives up on them after ``spec.trials.startupTimeoutSeconds``. A pod waiting
    only for free resources (see :func:`waits_for_capacity`) and a Job suspended by Kueue
    are waiting, not failing: neither ever times out.
    """
    now = time.time() if now is None else now
    if not unstarted(job) or now - _since(job, pods) < timeout:
        return None
    waiting = f"after {timeout:.0f}s"
    if not pods:
        name = (job.get("metadata") or {}).get("name", "")
        return Failure("FailedCreate", f"no pod was created {waiting} (a ResourceQuota or admission may "
                                       f"refuse it; see kubectl describe job {name})")
    for pod in pods:
        if (pod.get("status") or {}).get("phase") == "Running" or waits_for_capacity(pod):
            return None
    found = _why_pending(pods[0])
    return Failure(found.reason, f"{found.message} (not started {waiting})".strip())
