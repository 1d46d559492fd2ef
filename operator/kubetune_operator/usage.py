"""What each trial's pods held, as the API says, and ``status.usage``.

An attempt is one pod of a trial's Jobs: from its ``startTime`` (when its node took it and
its resources) to the end of its last container, times the ``nvidia.com/gpu`` and CPU its
containers requested. The operator records an attempt when it sees its pod ended, keyed by
the pod's name, and a Job as accounted once it ended with all its pods seen ended: the
pods of such a Job are read once more, after it ends, and never again. Records live in the
study (:mod:`kubetune.search.usage`), so a restarted operator or a repeated pass never
counts a pod twice.

A pod being deleted (Kueue deletes the pods of a Job it evicts; an eviction; a deleted
Job) may be gone before the API shows it ended: while the operator sees it terminating it
counts until then, and the exact end replaces that once seen.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from kubetune.search.attributes import OWNER_ATTR, USAGE_STUDY_PREFIX
from kubetune.search.usage import attempt, record_of, spent, study_records, with_attempts
from kubetune_operator import names
from kubetune_operator.failures import job_outcome

if TYPE_CHECKING:
    from kubetune_operator.observe import Snapshot

GPU = "nvidia.com/gpu"
Records = Mapping[int, Mapping[str, Any]]


class UsageBook:
    """The study's usage records, read once and kept current by this process's writes."""

    def __init__(self, study: optuna.Study) -> None:
        self.study = study
        self._records: dict[int, dict[str, Any]] | None = None

    def records(self) -> dict[int, dict[str, Any]]:
        if self._records is None:
            self._records = study_records(self.study.user_attrs)
        return self._records

    def write(self, updates: Mapping[int, dict[str, Any]]) -> None:
        """Store the records that changed."""
        records = self.records()
        for number, record in updates.items():
            if records.get(number) != record:
                self.study.set_user_attr(f"{USAGE_STUDY_PREFIX}{number}", record)
                records[number] = record


def timestamp(text: Any) -> float | None:
    """An API time (RFC 3339) in epoch seconds; None for none."""
    if not text:
        return None
    return datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp()


def cpu_quantity(value: Any) -> float:
    """A CPU quantity in cores: ``2``, ``0.5``, ``500m``."""
    text = str(value)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def requested(pod: Mapping[str, Any]) -> tuple[float, float]:
    """The GPUs and CPUs the pod's containers asked for (requests, else limits)."""
    gpus = cpus = 0.0
    for container in (pod.get("spec") or {}).get("containers") or []:
        resources = container.get("resources") or {}
        asked = {**(resources.get("limits") or {}), **(resources.get("requests") or {})}
        gpus += float(asked.get(GPU, 0))
        cpus += cpu_quantity(asked["cpu"]) if "cpu" in asked else 0.0
    return gpus, cpus


def ended(pod: Mapping[str, Any]) -> bool:
    status = pod.get("status") or {}
    if status.get("phase") in ("Succeeded", "Failed"):
        return True
    containers = status.get("containerStatuses") or []
    return bool(containers) and all("terminated" in (c.get("state") or {}) for c in containers)


def pod_attempt(pod: Mapping[str, Any], now: float | None = None) -> dict[str, float] | None:
    """The attempt of an ended pod, or of one being deleted until ``now``; None while it runs
    (or if it never started: it held nothing)."""
    done = ended(pod)
    if not done and (now is None or not (pod.get("metadata") or {}).get("deletionTimestamp")):
        return None
    status = pod.get("status") or {}
    terminated = [(c.get("state") or {}).get("terminated") or {}
                  for c in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]]
    starts = [t for t in (timestamp(status.get("startTime")), *(timestamp(t.get("startedAt")) for t in terminated)) if t]
    ends = [t for t in (timestamp(t.get("finishedAt")) for t in terminated) if t]
    if not starts:
        return None
    start = min(starts)
    return attempt(start, max(ends, default=start) if done else max(start, now or start), *requested(pod))


def accounted(records: Records, number: int) -> set[str]:
    return set((records.get(number) or {}).get("jobs") or [])


def ended_unaccounted(trial_jobs: Mapping[int, Mapping[str, Any]], records: Records) -> list[str]:
    """The ended Jobs among ``trial_jobs`` whose pods are not all recorded yet, known from the
    Jobs alone (:func:`unaccounted_jobs` also checks the trials are the StudyJob's)."""
    return [job["metadata"]["name"] for number, job in trial_jobs.items()
            if job_outcome(job) is not None and job["metadata"]["name"] not in accounted(records, number)]


def unaccounted_jobs(trials: Iterable[FrozenTrial], key: str, trial_jobs: Mapping[int, Mapping[str, Any]],
                     records: Records) -> list[str]:
    """The ended trial Jobs of the StudyJob's trials whose pods are not all recorded yet."""
    wanted = []
    for trial in trials:
        job = trial_jobs.get(trial.number)
        if job is None or trial.user_attrs.get(OWNER_ATTR) != key or job_outcome(job) is None:
            continue
        if job["metadata"]["name"] not in accounted(records, trial.number):
            wanted.append(job["metadata"]["name"])
    return wanted


def account(s: Snapshot) -> dict[int, dict[str, Any]]:
    """Trial number -> its record with the attempts of the pods in ``s`` that ended since;
    an ended Job whose pods all ended is marked accounted."""
    owned = {t.number for t in s.trials if s.owned(t)}
    jobs = {job["metadata"]["name"]: job for job in s.trial_jobs.values()}
    found: dict[int, tuple[dict[str, dict[str, float]], set[str]]] = {}
    for job_name, pods in s.pods.items():
        number = _trial_number(jobs.get(job_name), pods)
        if number is None or number not in owned:
            continue
        attempts, done = found.setdefault(number, ({}, set()))
        for pod in pods:
            if (seen := pod_attempt(pod, s.now)) is not None:
                attempts[pod["metadata"]["name"]] = seen
        job = jobs.get(job_name)
        if job is not None and job_outcome(job) is not None and all(ended(pod) for pod in pods):
            done.add(job_name)
    updates = {}
    for number, (attempts, done) in found.items():
        old = s.usage.get(number)
        jobs_done = sorted(accounted(s.usage, number) | done)
        record = with_attempts(old, attempts, jobs=jobs_done)
        if record != old and (attempts or done - accounted(s.usage, number)):
            updates[number] = record
    return updates


def _trial_number(job: Mapping[str, Any] | None, pods: list[dict[str, Any]]) -> int | None:
    for labels in [(job or {}).get("metadata", {}).get("labels") or {},
                   *((pod.get("metadata") or {}).get("labels") or {} for pod in pods)]:
        if names.LABEL_TRIAL in labels:
            return int(labels[names.LABEL_TRIAL])
    return None


def usage_status(trials: Iterable[FrozenTrial], records: Records, best: FrozenTrial | None) -> dict[str, Any]:
    """``status.usage``: GPU and CPU seconds of every trial's pods, and the GPU-hours spent
    until the best trial completed (every trial's share before then, the best's included)."""
    found = [record_of(t, records) for t in trials if t.state != TrialState.WAITING and t.number in records]
    gpu, cpu = spent(found)
    result: dict[str, Any] = {"gpuSeconds": round(gpu, 1), "cpuSeconds": round(cpu, 1),
                              "gpuHours": round(gpu / 3600, 3)}
    if best is not None and best.datetime_complete is not None:
        result["gpuHoursToBest"] = round(spent(found, best.datetime_complete.timestamp())[0] / 3600, 3)
    return result
