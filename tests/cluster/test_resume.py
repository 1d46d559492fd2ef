"""Disrupted trials resume as the same trial, from their last checkpoint, on the real control plane.

Every trial's pod is evicted once through the Eviction API (what ``kubectl drain`` does)
after it wrote a checkpoint; the operator starts a ``-r1`` Job for the same trial
number, whose pod continues from ``last.pt``. Nothing trains twice what a checkpoint
holds, and the trial's intermediate values end with no gaps and no duplicates.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState

from kubetune.search.attributes import PREEMPTED_ATTR
from tests.cluster.cluster import Cluster, wait_until
from tests.cluster.kubelet import TestKubelet
from tests.operator.conftest import digits_spec

pytestmark = pytest.mark.slow

# Long enough that a trial is still training when the test sees its checkpoint of epoch 2
# and evicts it (epochs take a fraction of a second; checkpoints land during the next one).
EPOCHS = 30
RESUMED = re.compile(r"resuming from epoch (\d+) of (\d+)")


def checkpoint_epoch(path: Path) -> int:
    """The epoch ``last.pt`` holds, or -1 while there is none (or it is being written)."""
    try:
        return int(torch.load(path, map_location="cpu", weights_only=False)["epoch"])
    except (FileNotFoundError, EOFError, RuntimeError, KeyError, OSError):
        return -1


def running_pod(kube: Cluster, job: str) -> dict | None:
    return next((p for p in kube.job_pods(job) if (p.get("status") or {}).get("phase") == "Running"), None)


def test_every_trial_evicted_once_resumes_from_its_checkpoint(kube: Cluster, kubelet: TestKubelet, operator,
                                                             digits_claims, storage):
    n_trials = 2
    spec = digits_spec(n_trials=n_trials, parallelism=2, retries=1, output=True)
    spec["config"]["training"]["num_epochs"] = EPOCHS
    spec["config"]["search"]["pruner"] = {"type": "none"}  # every trial runs all its epochs
    kube.create_studyjob("resume", spec)

    # Both trials train at once: each is evicted as soon as its checkpoint of epoch 2 is
    # there, so neither can finish training while the test waits on the other.
    waiting = set(range(n_trials))
    evicted_after: dict[int, int] = {}

    def evict_the_checkpointed() -> bool:
        for number in sorted(waiting):
            epoch = checkpoint_epoch(digits_claims["results"] / "digits-op" / f"trial-{number}" / "last.pt")
            pod = running_pod(kube, f"resume-trial-{number}") if epoch >= 2 else None
            if pod is not None:
                kube.evict(pod["metadata"]["name"])
                evicted_after[number] = epoch
                waiting.discard(number)
        return not waiting

    wait_until(evict_the_checkpointed, 180, lambda: f"a running pod with a checkpoint of epoch 2 for trials {sorted(waiting)}")
    status = kube.wait_phase("resume", "Succeeded", 400)

    trials = optuna.load_study(study_name="digits-op", storage=storage).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * n_trials  # resumed, not re-run
    assert status["trials"]["preempted"] == n_trials and status["trials"]["failed"] == 0
    resumed_from = {}
    for trial in trials:
        assert trial.user_attrs[PREEMPTED_ATTR] == 1
        steps = sorted(trial.intermediate_values)
        assert len(steps) == EPOCHS and steps == list(range(steps[0], steps[0] + EPOCHS))  # no gap, no duplicate
        pod = kube.job_pods(f"resume-trial-{trial.number}-r1")[0]
        found = RESUMED.search(kubelet.logs(kube.namespace, pod["metadata"]["name"]))
        assert found is not None, f"trial {trial.number}'s second pod did not resume"
        resumed_from[trial.number] = int(found.group(1))
        # It went on from at least the checkpoint seen before the eviction.
        assert resumed_from[trial.number] >= evicted_after[trial.number]
    saved = sum(resumed_from.values())
    print(f"\nepochs saved by resuming: {saved} ({n_trials} trials x {EPOCHS} epochs, each evicted once: "
          f"{n_trials * EPOCHS} whole epochs trained in all, {n_trials * EPOCHS + saved} if restarted from scratch)")
    assert saved >= 2 * n_trials


def stuck_condition(kube: Cluster, name: str) -> dict | None:
    return next((c for c in kube.status(name).get("conditions") or []
                 if c["type"] == "TrialsStuck" and c["status"] == "True"), None)


def test_a_trial_on_a_lost_node_is_seen_at_once_and_resumes_as_node_lost_once_its_pod_is_gone(
        kube: Cluster, kubelet: TestKubelet, operator, digits_claims, storage):
    spec = digits_spec(n_trials=1, parallelism=1, retries=1, output=True)
    spec["config"]["training"]["num_epochs"] = EPOCHS
    spec["config"]["search"]["pruner"] = {"type": "none"}
    spec["trials"]["nodeSelector"] = {"kubernetes.io/hostname": "node-b"}
    kube.create_studyjob("lost", spec)
    wait_until(lambda: running_pod(kube, "lost-trial-0"), 180, "trial 0's pod to run on node-b")

    kubelet.lose_node("node-b")
    lost_at = time.monotonic()
    try:
        condition = wait_until(lambda: stuck_condition(kube, "lost"), 120, lambda: (
            f"the TrialsStuck condition; the pod: {[(p['metadata'].get('deletionTimestamp'), p.get('status')) for p in kube.job_pods('lost-trial-0')]}; "
            f"the Job: {kube.trial_jobs('lost')['lost-trial-0'].get('status')}; the status: {kube.status('lost')}"))
        seen_after = time.monotonic() - lost_at
        assert condition["reason"] == "NodeNotReady" and condition["message"].startswith("trials 0 on node node-b: ")
        assert any("stuck on node node-b" in e.get("message", "") for e in kube.events("TrialsStuck"))
        # The taint manager evicts the pod; it stays Terminating while nobody can confirm its end,
        # and no second pod starts for the trial meanwhile (the first may still write its checkpoint).
        wait_until(lambda: all(p["metadata"].get("deletionTimestamp") for p in kube.job_pods("lost-trial-0")),
                   60, "the taint manager to evict the pod")
        time.sleep(3)
        assert set(kube.trial_jobs("lost")) == {"lost-trial-0"} and stuck_condition(kube, "lost")
    finally:
        kubelet.restore_node("node-b")  # it confirms the pod gone: the trial resumes

    wait_until(lambda: "lost-trial-0-r1" in kube.trial_jobs("lost"), 60, lambda: (
        f"the trial to resume; its pods: {[(p['metadata'], p.get('status')) for p in kube.job_pods('lost-trial-0')]}; "
        f"its Job: {kube.trial_jobs('lost')['lost-trial-0'].get('status')}; the status: {kube.status('lost')}"))
    status = kube.wait_phase("lost", "Succeeded", 400)
    trial = optuna.load_study(study_name="digits-op", storage=storage).trials[0]
    assert trial.state == TrialState.COMPLETE and trial.user_attrs[PREEMPTED_ATTR] == 1
    assert any("(NodeLost: node node-b stopped answering" in e.get("message", "")
               for e in kube.events("TrialPreempted"))
    assert {c["type"]: c["status"] for c in status["conditions"]}["TrialsStuck"] == "False"
    print(f"\nnode NotReady -> TrialsStuck: {seen_after:.1f}s after the node stopped answering "
          f"(the control plane's node-monitor grace period included)")
