"""A StudyJob under adversity on the real control plane: a flood that suspend and delete
stop within one batch, and a StudyJob deleted and applied again at once.

The test kubelet holds every trial pod in ContainerCreating (no training) where a test
only counts Jobs; the re-applied StudyJob's trials train for real.
"""

from __future__ import annotations

import time

import optuna
import pytest
from optuna.trial import TrialState

from kubetune.search.attributes import FAIL_REASON_ATTR, JOB_ATTR
from kubetune_operator.kube import ApiError
from kubetune_operator.observe import LAUNCH_BATCH
from tests.cluster.cluster import STUDYJOB, Cluster, wait_until
from tests.cluster.kubelet import TestKubelet
from tests.operator.conftest import digits_spec

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
