"""What a trial held, and for how long: wall seconds, GPU seconds, CPU seconds, its device.

A usage record sums a trial's attempts (one per ``ml-search`` run of it, one per pod on
Kubernetes) and keeps each under a key, so that recording an attempt again changes
nothing::

    {"wall_seconds": 41.0, "gpu_seconds": 41.0, "cpu_seconds": 82.0, "device": "cuda:0",
     "attempts": {"<key>": {"start": <epoch s>, "end": <epoch s>, "gpus": 1, "cpus": 2}}}

- A trial process (an ``ml-search`` worker, a trial pod) writes the trial's user
  attribute ``usage`` as the trial ends (a worker in the tell's own transaction): the
  seconds it trained, its device, one GPU while on ``cuda``/``mps``, and the CPU time it used.
- The operator writes what the API says of every pod of the trial's Jobs: from the pod's
  ``startTime`` to its containers' end, times the ``nvidia.com/gpu`` and CPU the pod
  requested. A finished trial takes no more user attributes, so these records live in
  the study's user attribute ``kubetune.usage.<trial number>``, and they win over the
  trial's own where both exist.

Torch-free: the operator imports it.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from kubetune.search.attributes import USAGE_ATTR, USAGE_STUDY_PREFIX
from kubetune.search.optuna_internals import set_trial_user_attrs

__all__ = ["Usage", "attempt", "record_of", "record_trial", "spent", "study_records", "totals", "with_attempts"]


@dataclass(frozen=True)
class Usage:
    """A record's totals; ``device`` only where a trial process said it."""

    wall_seconds: float = 0.0
    gpu_seconds: float = 0.0
    cpu_seconds: float = 0.0
    device: str = ""


def attempt(start: float, end: float, gpus: float, cpus: float) -> dict[str, float]:
    """One attempt: epoch seconds it started and ended, and the GPUs and CPUs it held."""
    return {"start": round(start, 3), "end": round(max(start, end), 3), "gpus": gpus, "cpus": round(cpus, 3)}


def with_attempts(record: Mapping[str, Any] | None, attempts: Mapping[str, Mapping[str, float]],
                  device: str | None = None, **extra: Any) -> dict[str, Any]:
    """``record`` with ``attempts`` added (an attempt's key already there is replaced) and its
    totals summed again; ``extra`` keys are set as given."""
    merged = {**((record or {}).get("attempts") or {}), **{k: dict(v) for k, v in attempts.items()}}
    result = {**(record or {}), **extra, "attempts": merged}
    held = [(a["end"] - a["start"], a["gpus"], a["cpus"]) for a in merged.values()]
    result["wall_seconds"] = round(sum(seconds for seconds, _, _ in held), 3)
    result["gpu_seconds"] = round(sum(seconds * gpus for seconds, gpus, _ in held), 3)
    result["cpu_seconds"] = round(sum(seconds * cpus for seconds, _, cpus in held), 3)
    if device:
        result["device"] = device
    return result


def record_trial(trial: optuna.Trial, start: float, cpu_start: float, device: str,
                 extra: Mapping[str, Any] | None = None, *, with_outcome: bool = False) -> None:
    """Add this process's attempt at ``trial`` to its ``usage``: from ``start`` (``time.time()``)
    until now on ``device``, one GPU unless it is the CPU, and the CPU time used since
    ``cpu_start`` (``time.process_time()``) as the CPUs it held; ``extra`` user attributes
    are written in the same transaction; ``with_outcome``: in the one that tells the trial,
    which this process does next."""
    end = time.time()
    gpus = 0 if device in ("", "cpu") else 1
    cpus = (time.process_time() - cpu_start) / max(end - start, 1e-6)
    key = f"{socket.gethostname()}:{os.getpid()}:{start:.0f}"
    usage = with_attempts(trial.user_attrs.get(USAGE_ATTR), {key: attempt(start, end, gpus, cpus)}, device)
    set_trial_user_attrs(trial.study, trial, {**(extra or {}), USAGE_ATTR: usage}, with_outcome=with_outcome)


def totals(record: Mapping[str, Any] | None) -> Usage:
    if not record:
        return Usage()
    return Usage(float(record.get("wall_seconds") or 0), float(record.get("gpu_seconds") or 0),
                 float(record.get("cpu_seconds") or 0), str(record.get("device") or ""))


def study_records(study_attrs: Mapping[str, Any]) -> dict[int, dict[str, Any]]:
    """Trial number -> the operator's record, from the study's user attributes."""
    found = {}
    for key, value in study_attrs.items():
        number = key.removeprefix(USAGE_STUDY_PREFIX)
        if key.startswith(USAGE_STUDY_PREFIX) and number.isdigit() and isinstance(value, dict):
            found[int(number)] = value
    return found


def record_of(trial: FrozenTrial, records: Mapping[int, Mapping[str, Any]]) -> dict[str, Any] | None:
    """The trial's record: the operator's (its pods), with the device the trial process
    named; else the trial process's own; None if neither was written."""
    own = trial.user_attrs.get(USAGE_ATTR)
    own = own if isinstance(own, dict) else None
    pods = records.get(trial.number)
    if pods is None:
        return own
    device = (own or {}).get("device")
    return {**pods, "device": device} if device else dict(pods)


def spent(records: Iterable[Mapping[str, Any] | None], until: float | None = None) -> tuple[float, float]:
    """GPU and CPU seconds of the records' attempts, only the part before ``until`` (epoch s) if given."""
    gpu = cpu = 0.0
    for record in records:
        for a in ((record or {}).get("attempts") or {}).values():
            end = a["end"] if until is None else min(a["end"], until)
            seconds = max(0.0, end - a["start"])
            gpu += seconds * a["gpus"]
            cpu += seconds * a["cpus"]
    return gpu, cpu
