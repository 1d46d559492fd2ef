"""Snapshots for decide() and act() tests: trials, Jobs and pods as plain objects."""

from __future__ import annotations

import datetime
import time
from typing import Any

from optuna.distributions import FloatDistribution
from optuna.trial import FrozenTrial, TrialState

from kubetune.search.attributes import JOB_ATTR, OWNER_ATTR, PREEMPTED_ATTR
from kubetune_operator import names
from kubetune_operator.observe import Memory, Snapshot
from kubetune_operator.spec import parse_spec, resolve_config
from kubetune_operator.volumes import ResultsVolume
from tests.operator.conftest import digits_spec

KEY = "kt/sj"
DIST = {"optimizer.lr": FloatDistribution(1e-4, 0.3, log=True)}
NOW = time.time()


def trial(number: int, state: TrialState = TrialState.RUNNING, value: float | list[float] | None = None,
          started: float = NOW - 60, constraints: dict[str, float] | None = None, **attrs: Any) -> FrozenTrial:
    """A trial of the snapshot's study; ``value`` a list for several objectives, ``constraints``
    as ``Trial.set_constraint`` records them."""
    user_attrs = {OWNER_ATTR: KEY, **attrs}
    if state == TrialState.RUNNING:
        user_attrs.setdefault(JOB_ATTR, names.trial_job_name("sj", number, attrs.get(PREEMPTED_ATTR, 0)))
    several = isinstance(value, list)
    return FrozenTrial(
        number=number, state=state, value=None if several else value,  # type: ignore[arg-type]
        values=value if several else None,  # type: ignore[arg-type]
        datetime_start=datetime.datetime.fromtimestamp(started),
        datetime_complete=None if state in (TrialState.RUNNING, TrialState.WAITING) else datetime.datetime.now(),
        params={"optimizer.lr": 0.01}, distributions=DIST, user_attrs=user_attrs,
        system_attrs={f"constraints:{k}": v for k, v in (constraints or {}).items()},
        intermediate_values={}, trial_id=number,
    )


def job(number: int, resume: int = 0, status: dict | None = None) -> dict[str, Any]:
    return {"metadata": {"name": names.trial_job_name("sj", number, resume),
                         "labels": {names.LABEL_TRIAL: str(number), names.LABEL_RESUME: str(resume)},
                         "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {}, "status": status or {"active": 1, "ready": 1}}


FAILED = {"failed": 1, "conditions": [{"type": "Failed", "status": "True", "reason": "PodFailurePolicy",
                                       "message": "Container trial for pod kt/x failed: DisruptionTarget"}]}
EVICTED_POD = {"status": {"phase": "Failed", "conditions": [
    {"type": "DisruptionTarget", "status": "True", "reason": "EvictionByEvictionAPI", "message": "Eviction API"}]}}


def snapshot(trials: list[FrozenTrial], jobs: dict[int, dict] | None = None, pods: dict | None = None,
             n_trials: int = 4, modes: frozenset[str] = frozenset({"ReadWriteMany"}), first_pass: bool = False,
             search: dict[str, Any] | None = None, old_status: dict[str, Any] | None = None,
             **trials_spec: Any) -> Snapshot:
    """``search``: what replaces keys of the config's search section."""
    raw = digits_spec(n_trials=n_trials, **trials_spec)
    for key, value in (search or {}).items():
        if value is None:
            raw["config"]["search"].pop(key, None)
        else:
            raw["config"]["search"][key] = value
    spec = parse_spec(raw, "sj")
    config = resolve_config(spec.config, spec).config
    return Snapshot(namespace="kt", name="sj", key=KEY, generation=1, spec=spec, config=config, n_trials=n_trials,
                    study="digits-op", maximize=True, grid=None, trials=trials, trial_jobs=jobs or {}, visualise=None,
                    pods=pods or {}, results=ResultsVolume(None if not modes else "results", modes),
                    old_status=old_status or {}, memory=Memory(first_pass), now=NOW)
