"""Trials that wait to start, which is not failing: pods the scheduler cannot place only for
lack of free resources (``Pending``), and Jobs Kueue keeps suspended until it admits their
Workload (``Queued``). Neither times out; both count towards ``parallelism``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from optuna.trial import TrialState

from kubetune_operator import status as st
from kubetune_operator.failures import job_outcome, suspended, unstarted, waits_for_capacity
from kubetune_operator.observe import Snapshot, current_job
from kubetune_operator.workloads import NO_WORKLOAD


@dataclass(frozen=True)
class Waiting:
    pending: dict[int, list[str]] = field(default_factory=dict)  # trial -> the resources it waits for
    pending_message: str = ""  # the scheduler's word on the first pending trial
    queued: dict[int, str] = field(default_factory=dict)  # trial -> Kueue's word on its Workload

    def conditions(self, old: Mapping[str, Any]) -> list[st.Condition]:
        """``TrialsPending`` and ``TrialsQueued``: True while trials wait, False once none
        does (only after they were True once)."""
        had = {c.get("type") for c in old.get("conditions") or []}
        found = []
        if self.pending:
            resources = sorted({r for rs in self.pending.values() for r in rs})
            found.append(st.Condition(st.TRIALS_PENDING, True, "InsufficientResources",
                                      f"{_trials(self.pending)} wait for free {', '.join(resources)}: "
                                      f"{self.pending_message}"))
        elif st.TRIALS_PENDING in had:
            found.append(st.Condition(st.TRIALS_PENDING, False, "NonePending", ""))
        if self.queued:
            first = self.queued[min(self.queued)]
            found.append(st.Condition(st.TRIALS_QUEUED, True, "WorkloadNotAdmitted",
                                      f"{_trials(self.queued)} queued in Kueue: {first}".rstrip(": ")))
        elif st.TRIALS_QUEUED in had:
            found.append(st.Condition(st.TRIALS_QUEUED, False, "NoneQueued", ""))
        return found


def _trials(numbers: Mapping[int, Any]) -> str:
    ordered = sorted(numbers)
    return f"trial{'s' if len(ordered) > 1 else ''} {', '.join(map(str, ordered))}"


QUEUED_MESSAGE = "admitted; its pod is being created"


def waiting_trials(s: Snapshot) -> Waiting:
    """The RUNNING trials whose current Job waits for free resources or for Kueue."""
    pending: dict[int, list[str]] = {}
    queued: dict[int, str] = {}
    message = ""
    for trial in s.trials:
        if not s.owned(trial) or trial.state != TrialState.RUNNING:
            continue
        name, job = current_job(s.name, trial, s.trial_jobs)
        if job is None or job_outcome(job) is not None:
            continue
        if suspended(job):
            said = s.kueue.get(name)
            queued[trial.number] = (said.waiting or QUEUED_MESSAGE) if said is not None else NO_WORKLOAD
        elif unstarted(job):
            pods = s.pods.get(name, [])
            resources = sorted({r for pod in pods for r in waits_for_capacity(pod)})
            if resources and not any((p.get("status") or {}).get("phase") == "Running" for p in pods):
                pending[trial.number] = resources
                if not message:
                    message = _scheduler_message(pods)
    return Waiting(pending, message, queued)


def _scheduler_message(pods: list[dict[str, Any]]) -> str:
    for pod in pods:
        for condition in (pod.get("status") or {}).get("conditions") or []:
            if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
                return str(condition.get("message") or "")
    return ""
