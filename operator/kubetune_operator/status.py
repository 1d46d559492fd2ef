"""A StudyJob's status: the phase machine's output, counts, best trial, conditions.

Phases: Pending -> Running -> Visualising -> Succeeded, with Failed and Suspended
reachable from Pending and Running (and back: raising ``n_trials`` or ``maxFailed``,
or clearing ``suspend``, lets the study continue).
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

PENDING = "Pending"
RUNNING = "Running"
VISUALISING = "Visualising"
SUCCEEDED = "Succeeded"
FAILED = "Failed"
SUSPENDED = "Suspended"
PHASES = (PENDING, RUNNING, VISUALISING, SUCCEEDED, FAILED, SUSPENDED)

# Condition types, in the order status lists them.
SPEC_VALID = "SpecValid"
STORAGE_READY = "StorageReady"
SUSPENDED_CONDITION = "Suspended"
TRIALS_DONE = "TrialsDone"
VISUALISED = "Visualised"
FAILED_CONDITION = "Failed"
TRIALS_BLOCKED = "TrialsBlocked"  # a trial could not start (pod never started, Job refused)
TRIALS_STUCK = "TrialsStuck"  # a trial's pod is stuck on a node that stopped answering
TRIALS_PENDING = "TrialsPending"  # trial pods wait for free resources (the scheduler's Insufficient ...)
TRIALS_QUEUED = "TrialsQueued"  # trial Jobs wait, suspended, for Kueue to admit their Workloads
RESULTS_VOLUME = "ResultsVolume"  # where trials can write: any node, one node, or no claim yet
DATA_VOLUME = "DataVolume"  # only while spec.data's claim is missing
CONDITION_ORDER = (SPEC_VALID, DATA_VOLUME, RESULTS_VOLUME, STORAGE_READY, SUSPENDED_CONDITION, TRIALS_QUEUED,
                   TRIALS_PENDING, TRIALS_BLOCKED, TRIALS_STUCK, TRIALS_DONE, VISUALISED, FAILED_CONDITION)


@dataclass(frozen=True)
class Condition:
    type: str
    status: bool
    reason: str
    message: str = ""


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def conditions_list(
    new: Sequence[Condition], old: Sequence[Mapping[str, Any]], generation: int | None
) -> list[dict[str, Any]]:
    """Kubernetes-style conditions; ``lastTransitionTime`` moves only when the status flips."""
    previous = {c.get("type"): c for c in old or []}
    result = []
    for condition in sorted(new, key=lambda c: CONDITION_ORDER.index(c.type)):
        text = "True" if condition.status else "False"
        before = previous.get(condition.type) or {}
        item: dict[str, Any] = {
            "type": condition.type,
            "status": text,
            "reason": condition.reason,
            "message": condition.message,
            "lastTransitionTime": before.get("lastTransitionTime") if before.get("status") == text else now(),
        }
        if generation is not None:
            item["observedGeneration"] = generation
        result.append(item)
    return result


def _strip_times(conditions: Sequence[Mapping[str, Any]] | None) -> list[dict[str, Any]]:
    return [{k: v for k, v in c.items() if k != "lastTransitionTime"} for c in conditions or []]


def same_status(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> bool:
    """Equal apart from condition timestamps (which only follow other changes)."""
    a, b = dict(a or {}), dict(b or {})
    conditions_a, conditions_b = a.pop("conditions", None), b.pop("conditions", None)
    return a == b and _strip_times(conditions_a) == _strip_times(conditions_b)


def merge_patch(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> dict[str, Any]:
    """The merge patch that turns ``old`` status into ``new``: dropped keys become null."""
    patch = dict(new)
    for key in old or {}:
        if key not in new:
            patch[key] = None
    return patch


def ranges(numbers: Iterable[int]) -> str:
    """Trial numbers as ranges, ``0-17,19,21-40``: a short record even for a huge study."""
    result: list[str] = []
    ordered = sorted(set(numbers))
    start = 0
    for i, number in enumerate(ordered):
        if i + 1 == len(ordered) or ordered[i + 1] != number + 1:
            first = ordered[start]
            result.append(str(first) if first == number else f"{first}-{number}")
            start = i + 1
    return ",".join(result)


def parse_ranges(text: Any) -> set[int] | None:
    """The trial numbers :func:`ranges` wrote; None for a record it cannot read."""
    numbers: set[int] = set()
    try:
        for part in filter(None, str(text).split(",")):
            first, _, last = part.partition("-")
            numbers.update(range(int(first), int(last or first) + 1))
    except ValueError:
        return None
    return numbers
