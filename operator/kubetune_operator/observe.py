"""Observe: one snapshot of a StudyJob's world, read from the API and the storage.

Everything :func:`kubetune_operator.decide.decide` needs, and nothing it has to fetch
itself: the spec and its config, the study's trials, the newest Job of each trial,
the visualisation Job, the pods of the Jobs worth a look (ended, or not started long
after they were made, or vanished with pods still terminating), the results claim's
access modes, the last status and what this process remembers of the StudyJob.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from kubetune.config import Config
from kubetune.search.attributes import JOB_ATTR, OWNER_ATTR
from kubetune_operator import names
from kubetune_operator.failures import job_outcome, may_be_lost, may_be_stuck, unstarted
from kubetune_operator.kube import Kube
from kubetune_operator.names import MAX_JOBS
from kubetune_operator.spec import StudyJobSpec
from kubetune_operator.studies import preempted
from kubetune_operator.volumes import ResultsVolume
from kubetune_operator.workloads import Kueued, by_job

LAUNCH_BATCH = 10  # trial Jobs created between two looks at the StudyJob (suspend, delete)


@dataclass(frozen=True)
class Memory:
    """What this operator process remembers of a StudyJob (empty after a restart)."""

    first_pass: bool  # the first pass of this process: trials that ended before are not news
    announced: frozenset[int] = frozenset()  # trials whose end had its event
    was_ready: frozenset[str] = frozenset()  # trial Jobs seen with a ready pod


@dataclass(frozen=True)
class Snapshot:
    namespace: str
    name: str
    key: str  # names.owner_key
    generation: int | None
    spec: StudyJobSpec
    config: Config
    n_trials: int  # search.n_trials, capped to the grid's size
    study: str  # the Optuna study's name
    maximize: bool
    grid: list[dict[str, Any]] | None  # every grid point, for a GridSampler
    trials: list[FrozenTrial]
    trial_jobs: dict[int, dict[str, Any]]  # trial number -> its newest Job
    visualise: dict[str, Any] | None
    pods: dict[str, list[dict[str, Any]]]  # Job name -> its pods, for the Jobs worth a look
    results: ResultsVolume
    old_status: Mapping[str, Any]
    memory: Memory
    now: float = field(default_factory=time.time)
    max_jobs: int = MAX_JOBS  # the operator-wide cap on this StudyJob's running trial Jobs
    batch: int = LAUNCH_BATCH  # Jobs one round creates before the pass looks at the StudyJob again
    kueue: dict[str, Kueued] = field(default_factory=dict)  # Job -> its Kueue Workload's word (queued Jobs)
    usage: Mapping[int, Mapping[str, Any]] = field(default_factory=dict)  # trial -> what its pods held (usage.py)

    def owned(self, trial: FrozenTrial) -> bool:
        return trial.user_attrs.get(OWNER_ATTR) == self.key


def latest_trial_jobs(jobs: Iterable[Mapping[str, Any]]) -> dict[int, dict[str, Any]]:
    """Trial number -> its newest Job (a resumed trial has one per disruption)."""
    found: dict[int, tuple[int, dict[str, Any]]] = {}
    for job in jobs:
        labels = job["metadata"].get("labels") or {}
        if names.LABEL_TRIAL not in labels:
            continue
        number, resume = int(labels[names.LABEL_TRIAL]), int(labels.get(names.LABEL_RESUME, 0))
        if number not in found or resume > found[number][0]:
            found[number] = (resume, dict(job))
    return {number: job for number, (_, job) in found.items()}


def current_job(studyjob: str, trial: FrozenTrial,
                trial_jobs: Mapping[int, dict[str, Any]]) -> tuple[str, dict[str, Any] | None]:
    """The name of the Job the trial should run in now (``-r<k>`` once resumed k times) and
    that Job, or None while it does not exist (an earlier Job of the trial does not count)."""
    name = names.trial_job_name(studyjob, trial.number, preempted(trial))
    job = trial_jobs.get(trial.number)
    return name, job if job is not None and job["metadata"]["name"] == name else None


def jobs_to_read(studyjob: str, trials: list[FrozenTrial], key: str, trial_jobs: dict[int, dict[str, Any]],
                 visualise: dict[str, Any] | None, timeout: float, now: float,
                 was_ready: frozenset[str] = frozenset()) -> list[str]:
    """The Jobs whose pods decide something: ended with their trial untold, not started
    (waiting for free resources, or stuck), gone while their pods may still run, or with
    a pod that was ready and is no more, or is being deleted (stuck on a lost node?)."""
    wanted = []
    for trial in trials:
        if trial.user_attrs.get(OWNER_ATTR) != key or trial.state != TrialState.RUNNING:
            continue
        current, job = current_job(studyjob, trial, trial_jobs)
        if job is None:
            if trial.user_attrs.get(JOB_ATTR) == current:
                wanted.append(current)  # vanished: are its pods gone too?
        elif job_outcome(job) == "failed" or unstarted(job):
            wanted.append(current)
        elif may_be_lost(job) and (current in was_ready or (job.get("status") or {}).get("terminating")):
            wanted.append(current)
    if visualise is not None and may_be_stuck(visualise, timeout, now):
        wanted.append(visualise["metadata"]["name"])
    return wanted


def read_pods(kube: Kube, namespace: str, studyjob: str, jobs: list[str]) -> dict[str, list[dict[str, Any]]]:
    """The pods of ``jobs``: one list call per Job for one or two, else one for the StudyJob's pods."""
    if len(jobs) <= 2:
        return {job: kube.list_job_pods(namespace, job) for job in jobs}
    found: dict[str, list[dict[str, Any]]] = {job: [] for job in jobs}
    for pod in kube.list_studyjob_pods(namespace, studyjob):
        job = ((pod.get("metadata") or {}).get("labels") or {}).get("job-name")
        if job in found:
            found[job].append(pod)
    return found


def read_workloads(kube: Kube, namespace: str, jobs: Iterable[Mapping[str, Any]]) -> dict[str, Kueued]:
    """Kueue's word on the Jobs that carry its queue label, if any of them is suspended (queued,
    or evicted): one list call, none on a cluster where no Job waits for Kueue."""
    queued = {job["metadata"]["name"]: job["metadata"].get("uid", "") for job in jobs
              if names.LABEL_KUEUE_QUEUE in (job["metadata"].get("labels") or {})}
    if not any((job.get("spec") or {}).get("suspend") for job in jobs if job["metadata"]["name"] in queued):
        return {}
    return by_job(kube.list_workloads(namespace), queued)
