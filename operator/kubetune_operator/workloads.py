"""Kueue's word on a StudyJob's Jobs, read from their Workloads' status conditions.

Kueue makes one Workload per Job it manages, owned by the Job. While the Job is
suspended, the Workload's ``QuotaReserved`` (then ``Admitted``) condition says why it
waits ("couldn't assign flavors to pod set main: insufficient unused quota for
nvidia.com/gpu ...", "LocalQueue team-a doesn't exist"); once Kueue evicts an admitted
Job, ``Evicted`` says why (reason ``Preempted``, ``PodsReadyTimeout``, ...).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Kueued:
    """What a Job's Workload says."""

    waiting: str  # why it is not admitted ("" once it is)
    evicted: str  # "<reason>: <message>" of its last eviction, or ""
    evictions: int = 0  # times Kueue evicted it after admitting it


NO_WORKLOAD = ("no Kueue Workload exists for the Job yet (is Kueue installed, and does it manage "
               "batch/v1 Jobs?)")


def _condition(workload: Mapping[str, Any], kind: str) -> Mapping[str, Any]:
    conditions = (workload.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == kind), {})


def read(workload: Mapping[str, Any]) -> Kueued:
    reserved, admitted = _condition(workload, "QuotaReserved"), _condition(workload, "Admitted")
    waiting = ""
    if reserved.get("status") != "True":
        waiting = str(reserved.get("message") or "waiting for quota in its ClusterQueue")
    elif admitted.get("status") != "True":
        waiting = str(admitted.get("message") or "waiting for its admission checks")
    evicted = _condition(workload, "Evicted")
    said = ""
    if evicted.get("status") == "True" or evicted.get("reason"):
        said = f"{evicted.get('reason') or 'Evicted'}: {evicted.get('message') or ''}".rstrip(": ")
    stats = ((workload.get("status") or {}).get("schedulingStats") or {}).get("evictions") or []
    count = sum(int(e.get("count") or 0) for e in stats)
    return Kueued(waiting, said, count or int(evicted.get("status") == "True"))


def by_job(workloads: Iterable[Mapping[str, Any]], jobs: Mapping[str, str]) -> dict[str, Kueued]:
    """Job name -> its Workload's word, for the ``jobs`` (name -> uid) that have one."""
    names = {uid: name for name, uid in jobs.items()}
    found: dict[str, Kueued] = {}
    for workload in workloads:
        for owner in (workload.get("metadata") or {}).get("ownerReferences") or []:
            if owner.get("kind") == "Job" and owner.get("uid") in names:
                found[names[owner["uid"]]] = read(workload)
    return found
