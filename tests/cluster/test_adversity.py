"""A StudyJob under adversity on the real control plane: a flood that suspend and delete
stop within one batch, a StudyJob deleted and applied again at once, and an operator
process killed again and again.

The test kubelet holds every trial pod in ContainerCreating (no training) where a test
only counts Jobs; the re-applied StudyJob's trials train for real.
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
import time

import optuna
import pytest
from optuna.trial import TrialState

from kubetune.search.attributes import FAIL_REASON_ATTR, JOB_ATTR
from kubetune_operator.kube import ApiError
from kubetune_operator.observe import LAUNCH_BATCH
from tests.cluster.cluster import (
    CPU_IMAGE,
    STUDYJOB,
    TRIAL_IMAGE,
    Cluster,
    install_operator,
    wait_until,
)
from tests.cluster.controlplane import ControlPlane
from tests.cluster.kubelet import TestKubelet
from tests.operator.conftest import digits_spec
from tests.polling import scaled

pytestmark = pytest.mark.slow

CAP = 40  # the operator's --max-jobs-per-studyjob in the flood test


def jobs_made(url: str, study: str = "digits-op") -> int:
    """Trial Jobs the operator has made: each trial it asked carries its Job's name."""
    try:
        return sum(JOB_ATTR in t.user_attrs for t in optuna.load_study(study_name=study, storage=url).trials)
    except KeyError:
        return 0


def test_a_flood_is_capped_and_suspend_and_delete_stop_it_within_one_batch(
        kube: Cluster, kubelet: TestKubelet, start_operator, digits_claims, storage):
    kubelet.hold(lambda job: "-trial-" in job)
    start_operator(max_jobs=CAP)
    with pytest.raises(ApiError) as refused:
        kube.create_studyjob("flood", digits_spec(n_trials=1_000_000, parallelism=100_000))
    assert refused.value.status == 422 and "spec.trials.parallelism" in str(refused.value)

    kube.create_studyjob("flood", digits_spec(n_trials=1_000_000, parallelism=10_000))
    # The operator makes the storage's tables: only then does the test read them.
    wait_until(lambda: kube.status("flood").get("trials"), 60, "the first status")
    wait_until(lambda: jobs_made(storage) >= 1, 60, "the first Jobs")
    kube.patch(STUDYJOB, "flood", {"spec": {"suspend": True}})
    at_suspend = jobs_made(storage)
    kube.wait_phase("flood", "Suspended", 60)
    time.sleep(3)
    after_suspend = jobs_made(storage) - at_suspend

    kube.patch(STUDYJOB, "flood", {"spec": {"suspend": False}})
    wait_until(lambda: jobs_made(storage) > at_suspend + after_suspend, 60, "launching again")
    kube.delete(STUDYJOB, "flood")
    at_delete = jobs_made(storage)
    wait_until(lambda: kube.get(STUDYJOB, "flood") is None, 120, "the StudyJob to go")
    after_delete = jobs_made(storage) - at_delete
    total = jobs_made(storage)
    print(f"\nflood (parallelism 10000, cap {CAP}, batch {LAUNCH_BATCH}): {after_suspend} Jobs created after "
          f"suspend, {after_delete} after delete, {total} in all")
    assert after_suspend <= LAUNCH_BATCH and after_delete <= LAUNCH_BATCH
    assert total <= CAP  # never more than the cap at once, and none of them ended
    assert kube.events("ParallelismCapped")


@pytest.mark.parametrize("wait", [True, False], ids=["wait", "no-wait"])
def test_a_studyjob_deleted_and_applied_again_runs_its_trials_to_the_budget(
        kube: Cluster, kubelet: TestKubelet, operator, digits_claims, storage, wait: bool):
    first = {f"again-trial-{n}" for n in range(3)}  # the deleted StudyJob's: held until it is gone
    kubelet.hold(lambda job: job in first)
    spec = digits_spec(n_trials=3, parallelism=3, maxFailed=1)
    kube.create_studyjob("again", spec)
    wait_until(lambda: len(kube.trial_jobs("again")) == 3, 60, "three held trial Jobs")
    kube.delete(STUDYJOB, "again")
    if wait:  # kubectl delete (waits for the finalizer), then kubectl apply
        wait_until(lambda: kube.get(STUDYJOB, "again") is None, 120, "the StudyJob to go")
    taken = wait_until(lambda: _apply(kube, "again", spec), 120, "the name to be free again", interval=0.01)
    assert taken["metadata"]["uid"]
    kubelet.release()
    status = kube.wait_phase("again", "Succeeded", 600)
    trials = optuna.load_study(study_name="digits-op", storage=storage).trials
    deleted = [t for t in trials if (t.user_attrs.get(FAIL_REASON_ATTR) or "").startswith("StudyJobDeleted")]
    assert len(deleted) == 3 and status["trials"]["retried"] == 3
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials) == 3
    assert status["trials"]["inherited"] == 0 and status["trials"]["finished"] == 3


def _apply(kube: Cluster, name: str, spec: dict) -> dict | None:
    """`kubectl apply` as a GitOps loop does it: taken once the old StudyJob is gone
    (a create under its name is refused while it is being finalised)."""
    try:
        return kube.create_studyjob(name, spec)
    except ApiError as exc:
        if exc.status == 409:
            return None
        raise


KILLS = 9


def test_operator_killed_nine_times_at_random_moments_loses_and_duplicates_nothing(
        kube: Cluster, kubelet: TestKubelet, control_plane: ControlPlane, digits_claims, storage, tmp_path):
    """``kill -9`` of the operator process (as a node failure or an OOM kill does it) while it
    asks trials, creates Jobs and writes status: every trial still gets exactly one Job and
    the study ends at its budget. Trials from 12 on wait in ContainerCreating until the last
    kill, so every kill falls mid-study."""
    credentials = install_operator(control_plane, [kube.namespace])
    env = {**os.environ, "KUBECONFIG": str(control_plane.kubeconfig("operator-process", credentials))}
    command = [sys.executable, "-m", "kubetune_operator.main", "-n", kube.namespace, "--liveness", "",
               "--trial-image", TRIAL_IMAGE, "--cpu-image", CPU_IMAGE, "--resync-seconds", "2"]
    log = (tmp_path / "operator.log").open("w")

    def start() -> subprocess.Popen:
        return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)

    n_trials, rng = 18, random.Random(KILLS)
    kubelet.hold(lambda job: int(re.search(r"-trial-(\d+)", job)[1]) >= 12 if "-trial-" in job else False)
    began = time.monotonic()
    process = start()
    kube.create_studyjob("kills", digits_spec(n_trials=n_trials, parallelism=6))
    try:
        for _ in range(KILLS):
            time.sleep(rng.uniform(0.5, 6.0))
            assert kube.status("kills").get("phase") != "Succeeded", "the study ended before the last kill"
            process.kill()
            process.wait()
            process = start()
        kubelet.release()
        status = wait_until(lambda: kube.status("kills") if kube.status("kills").get("phase") == "Succeeded"
                            else None, scaled(600), lambda: f"the StudyJob to succeed ({kube.status('kills')})")
    finally:
        process.kill()
        process.wait()
        log.close()
    trials = optuna.load_study(study_name="digits-op", storage=storage).trials
    print(f"\n{KILLS} operator kills at parallelism 6: {n_trials} trials in {time.monotonic() - began:.0f} s, "
          f"{len(kube.trial_jobs('kills'))} Jobs")
    assert len(trials) == n_trials  # none asked twice
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)  # none lost or failed
    assert sorted(kube.trial_jobs("kills")) == sorted(f"kills-trial-{n}" for n in range(n_trials))
    assert [t.user_attrs[JOB_ATTR] for t in trials] == [f"kills-trial-{n}" for n in range(n_trials)]
    assert status["trials"]["finished"] == n_trials and status["trials"]["failed"] == 0
    assert status["progress"] == f"{n_trials}/{n_trials}"
