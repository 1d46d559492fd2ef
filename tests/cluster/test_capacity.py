"""Waiting for capacity is not failing, on the real control plane: GPU trials with more
parallelism than free GPUs wait Pending (the real scheduler's ``Insufficient
nvidia.com/gpu``), run one at a time, and none fails on its startup timeout.

The test kubelet's node gpu-1 advertises the cluster's one ``nvidia.com/gpu``; trials
train for real (the small CNN on digits, on the CPU).
"""

from __future__ import annotations

from datetime import datetime

import optuna
import pytest
from optuna.trial import TrialState

from kubetune_operator import status as st
from tests.cluster.cluster import Cluster, wait_until
from tests.operator.conftest import digits_spec

pytestmark = pytest.mark.slow

STARTUP_TIMEOUT = 5  # seconds; a trial trains for longer, so a waiting trial outlives it


def _time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _scheduled_at(pod: dict) -> float:
    condition = next(c for c in pod["status"]["conditions"] if c["type"] == "PodScheduled")
    assert condition["status"] == "True"
    return _time(condition["lastTransitionTime"])


def test_gpu_trials_beyond_the_free_gpus_wait_pending_and_run_one_at_a_time(
        kube: Cluster, operator, digits_claims, storage):
    spec = digits_spec(n_trials=4, parallelism=3, startupTimeoutSeconds=STARTUP_TIMEOUT,
                       resources={"limits": {"nvidia.com/gpu": 1}})
    kube.create_studyjob("gpus", spec)
    seen: dict[str, object] = {}

    def pending_seen() -> bool:
        status = kube.status("gpus")
        if (status.get("trials") or {}).get("pending"):
            seen.update(status)
            return True
        return False

    wait_until(pending_seen, 120, "trials pending for the GPU")
    condition = next(c for c in seen["conditions"] if c["type"] == st.TRIALS_PENDING)  # type: ignore[union-attr]
    assert condition["status"] == "True" and "nvidia.com/gpu" in condition["message"]
    assert " wait for free nvidia.com/gpu: 0/3 nodes are available" in condition["message"]

    final = kube.wait_phase("gpus", "Succeeded", 900)
    trials = optuna.load_study(study_name="digits-op", storage=storage).trials
    assert len(trials) == 4 and all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    assert final["trials"]["failed"] == 0 and final["trials"]["finished"] == 4
    assert final["trials"]["pending"] == 0
    assert not any(c["type"] == st.TRIALS_BLOCKED and c["status"] == "True" for c in final["conditions"])

    pods = {p["metadata"]["labels"]["job-name"]: p for p in kube.pods("kubetune.dev/trial")}
    # One GPU: each trial pod got it in turn.
    assert len({round(_scheduled_at(p)) for p in pods.values()}) == 4
    # The last of the first three waited far longer than its startup timeout, and did not fail for it.
    last = max((pods[f"gpus-trial-{n}"] for n in range(3)), key=_scheduled_at)
    waited = _scheduled_at(last) - _time(last["metadata"]["creationTimestamp"])
    assert waited > 2 * STARTUP_TIMEOUT
    # No fourth trial started while one waited for the GPU: its Job came once the last had it.
    fourth = kube.trial_jobs("gpus")["gpus-trial-3"]
    assert _time(fourth["metadata"]["creationTimestamp"]) >= _scheduled_at(last) - 1
    print(f"\ncapacity: a trial waited {waited:.0f}s for the GPU (startup timeout {STARTUP_TIMEOUT}s)")
