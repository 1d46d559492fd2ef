"""decide(): the plan of a pass from one snapshot, without any cluster or storage."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

import optuna
from optuna.trial import TrialState

from kubetune.search.attributes import (
    AHEAD_ATTR,
    FAIL_REASON_ATTR,
    INTERRUPTED_ATTR,
    JOB_ATTR,
    KUEUE_EVICTIONS_ATTR,
    NODE_LOST_ATTR,
    PREEMPTED_ATTR,
)
from kubetune.search.ledger import budget
from kubetune_operator import status as st
from kubetune_operator.decide import decide
from kubetune_operator.workloads import Kueued
from tests.operator.snapshots import EVICTED_POD, FAILED, NOW, job, snapshot, trial


def test_an_evicted_trial_resumes_in_a_new_job_for_the_same_trial():
    running = trial(0, **{INTERRUPTED_ATTR: "terminated (SIGTERM) after epoch 2"})
    plan = decide(snapshot([running], {0: job(0, status=FAILED)}, {"sj-trial-0": [EVICTED_POD]}, retries=1))
    assert not plan.fail and [(r.trial.number, r.resume) for r in plan.resume] == [(0, 1)]
    assert plan.resume[0].event.message == (
        "trial 0 was disrupted (Evicted: Eviction API); terminated (SIGTERM) after epoch 2; it resumes from its "
        "last checkpoint as Job sj-trial-0-r1 (resume 1 of 1)")
    assert plan.launch == 0 and plan.status == {}  # settle first; the pass decides again after acting


def test_a_trial_disrupted_past_its_retries_fails_with_the_reason():
    resumed = trial(0, **{PREEMPTED_ATTR: 1})
    plan = decide(snapshot([resumed], {0: job(0, 1, FAILED)}, {"sj-trial-0-r1": [EVICTED_POD]}, retries=1))
    assert not plan.resume and [str(f.failure) for f in plan.fail] == ["Evicted: Eviction API"]


def test_a_resume_gets_what_is_left_of_the_deadline_and_none_when_it_is_spent():
    young = trial(0, started=NOW - 100)
    plan = decide(snapshot([young], {0: job(0, status=FAILED)}, {"sj-trial-0": [EVICTED_POD]},
                           activeDeadlineSeconds=600))
    assert plan.resume[0].deadline == 500
    old = trial(0, started=NOW - 700)
    plan = decide(snapshot([old], {0: job(0, status=FAILED)}, {"sj-trial-0": [EVICTED_POD]},
                           activeDeadlineSeconds=600))
    assert not plan.resume and plan.fail[0].failure.reason == "DeadlineExceeded"


def test_a_deleted_job_whose_pod_still_runs_is_resumed_only_once_the_pod_is_gone():
    running = trial(0)
    still = decide(snapshot([running], {}, {"sj-trial-0": [{"status": {"phase": "Running"}}]}))
    assert not still.settles and still.retry_after is not None
    gone = decide(snapshot([running], {}, {"sj-trial-0": []}))
    assert gone.resume[0].event.message.startswith("trial 0 was disrupted (JobDeleted")


def test_a_trial_asked_before_the_operator_stopped_gets_its_job():
    asked = trial(0, **{PREEMPTED_ATTR: 1})  # resumed: marked with the -r1 Job it never got
    asked.user_attrs[JOB_ATTR] = "sj-trial-0"
    plan = decide(snapshot([asked], {0: job(0, status=FAILED)}))
    assert [(a.trial.number, a.resume) for a in plan.start] == [(0, 1)] and not plan.fail


def test_waiting_trials_count_towards_n_trials_as_in_ml_search():
    study = optuna.create_study(direction="maximize")
    done = trial(0, TrialState.COMPLETE, 0.9)
    queued = trial(1, TrialState.WAITING)
    for t in (done, queued):
        study.add_trial(optuna.trial.create_trial(state=t.state, value=t.value, params=t.params,
                                                  distributions=t.distributions, user_attrs=t.user_attrs))
    plan = decide(snapshot([done, queued], n_trials=2, parallelism=4))
    assert (plan.launch, plan.waiting) == (1, 1)  # the WAITING trial, and nothing new
    assert not budget(study, 2).has_room  # ml-search's workers see the same books


def test_launches_fill_parallelism_within_n_trials():
    plan = decide(snapshot([trial(0, TrialState.COMPLETE, 0.5), trial(1)], {1: job(1)}, n_trials=3, parallelism=4))
    assert plan.launch == 1 and plan.phase == st.RUNNING
    assert plan.status["trials"]["running"] == 2 and plan.status["progress"] == "1/3"


def test_a_huge_parallelism_launches_one_batch_at_a_time_up_to_the_operator_cap():
    huge = replace(snapshot([], n_trials=10**6, parallelism=10_000), max_jobs=25, batch=10)
    plan = decide(huge)
    assert (plan.launch, plan.more) == (10, True)
    assert [e.reason for e in plan.events] == ["ParallelismCapped"]
    assert "above the operator's cap of 25" in plan.events[0].message
    running = [trial(n) for n in range(20)]
    plan = decide(replace(huge, trials=running, trial_jobs={n: job(n) for n in range(20)}))
    assert (plan.launch, plan.more) == (5, False)  # the cap, not parallelism
    lingering = {n: job(n) for n in range(25)}  # Jobs whose trials ended but whose pods still run
    plan = decide(replace(huge, trials=running, trial_jobs=lingering))
    assert plan.launch == 0


def test_a_read_write_once_pod_claim_runs_one_trial_at_a_time():
    plan = decide(snapshot([], n_trials=4, parallelism=3, modes=frozenset({"ReadWriteOncePod"})))
    assert plan.launch == 1


def test_the_study_ends_when_the_ledger_is_done():
    trials = [trial(0, TrialState.COMPLETE, 0.5), trial(1, TrialState.COMPLETE, 0.8)]
    plan = decide(snapshot(trials, n_trials=2, modes=frozenset()))
    assert plan.phase == st.SUCCEEDED and plan.best_config is trials[1] and plan.launch == 0
    assert plan.status["bestConfig"] == {"configMap": "sj-best-config", "key": "best_config.yaml", "trial": 1}
    with_output = decide(snapshot(trials, n_trials=2, output=True))
    assert with_output.phase == st.VISUALISING and with_output.visualise == 2


def test_too_many_failures_fail_the_studyjob():
    failed = [trial(n, TrialState.FAIL, **{FAIL_REASON_ATTR: "OOMKilled: x"}) for n in range(2)]
    plan = decide(snapshot(failed, maxFailed=1))
    assert plan.phase == st.FAILED and plan.launch == 0
    assert any(c.reason == "MaxFailedExceeded" for c in plan.conditions)


def test_a_trial_whose_pod_never_starts_fails_and_its_job_is_deleted():
    stuck = job(0, status={"active": 1})  # made long ago, never ready
    pulling = {"status": {"phase": "Pending", "containerStatuses": [
        {"name": "trial", "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling"}}}]}}
    plan = decide(snapshot([trial(0)], {0: stuck}, {"sj-trial-0": [pulling]}, startupTimeoutSeconds=60))
    assert [(f.failure.reason, f.delete_job) for f in plan.fail] == [("ImagePullBackOff", "sj-trial-0")]


def _pod_on(node: str, ready: dict, deleting: str | None = None) -> dict:
    meta = {"name": "sj-trial-0-abc", **({"deletionTimestamp": deleting} if deleting else {})}
    return {"metadata": meta, "spec": {"nodeName": node},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", **ready}]}}


def test_a_trial_stuck_on_a_node_that_stopped_answering_is_named_at_once_and_resumes_as_node_lost():
    not_ready = job(0, status={"active": 1, "ready": 0})
    lost = _pod_on("node-b", {"status": "False"})  # the node controller's mark: no reason
    plan = decide(snapshot([trial(0)], {0: not_ready}, {"sj-trial-0": [lost]}))
    stuck = next(c for c in plan.conditions if c.type == st.TRIALS_STUCK)
    assert stuck.status and stuck.reason == "NodeNotReady" and stuck.message.startswith("trials 0 on node node-b: ")
    assert "kubectl delete node node-b" in stuck.message and "out-of-service" in stuck.message
    assert [(t.number, j, n) for t, j, n in plan.mark_lost] == [(0, "sj-trial-0", "node-b")]
    assert [e.reason for e in plan.events if e.type == "Warning"] == [st.TRIALS_STUCK]
    assert "stuck: trials 0 on node node-b" in plan.message
    # The pod is gone (the node deleted, force-deleted): the Job only says Disrupted.
    marked = trial(0, **{NODE_LOST_ATTR: ["sj-trial-0", "node-b"]})
    plan = decide(snapshot([marked], {0: job(0, status=FAILED)}, retries=1))
    assert [r.resume for r in plan.resume] == [1]
    assert "(NodeLost: node node-b stopped answering (Disrupted:" in plan.resume[0].event.message


def test_a_pod_past_its_deletion_deadline_is_stuck_and_one_the_kubelet_reports_is_not():
    def stuck(pod: dict) -> bool:
        plan = decide(snapshot([trial(0)], {0: job(0, status={"terminating": 1, "ready": 0})}, {"sj-trial-0": [pod]}))
        return any(c.type == st.TRIALS_STUCK and c.status for c in plan.conditions)
    assert stuck(_pod_on("node-b", {"status": "True"}, deleting="2020-01-01T00:00:00Z"))
    assert not stuck(_pod_on("node-b", {"status": "True"}, deleting="2999-01-01T00:00:00Z"))  # within its grace
    assert not stuck(_pod_on("node-b", {"status": "False", "reason": "ContainersNotReady"}))  # the kubelet's word


def test_trials_stuck_clears_once_nothing_is_stuck():
    s = replace(snapshot([trial(0)], {0: job(0)}),
                old_status={"conditions": [{"type": st.TRIALS_STUCK, "status": "True", "reason": "NodeNotReady"}]})
    stuck = next(c for c in decide(s).conditions if c.type == st.TRIALS_STUCK)
    assert (stuck.status, stuck.reason) == (False, "NoneStuck")
    assert all(c.type != st.TRIALS_STUCK for c in decide(snapshot([trial(0)], {0: job(0)})).conditions)


def test_a_pod_of_a_lost_node_that_ends_unknown_when_the_node_returns_resumes_as_node_lost():
    unknown = {"status": {"phase": "Failed", "containerStatuses": [{"name": "trial", "state": {"terminated": {
        "exitCode": 137, "reason": "ContainerStatusUnknown"}}}]}}
    marked = trial(0, **{NODE_LOST_ATTR: ["sj-trial-0", "node-b"]})
    plan = decide(snapshot([marked], {0: job(0, status=FAILED)}, {"sj-trial-0": [unknown]}, retries=1))
    assert [r.resume for r in plan.resume] == [1] and "NodeLost: node node-b" in plan.resume[0].event.message
    unmarked = decide(snapshot([trial(0)], {0: job(0, status=FAILED)}, {"sj-trial-0": [unknown]}, retries=1))
    assert not unmarked.resume or "NodeLost" not in unmarked.resume[0].event.message


def test_after_a_restart_trials_that_ended_while_it_was_down_get_their_end_event_once():
    ended = [trial(n, TrialState.COMPLETE, 0.5 + n / 10) for n in range(4)]
    s = replace(snapshot(ended, n_trials=8, first_pass=True),
                old_status={"study": "digits-op", "announced": "0-1", "best": {"trial": 1}})
    plan = decide(s)
    assert [e.message.split(":")[0] for e in plan.events if e.reason == "TrialComplete"] == [
        "trial 2 complete", "trial 3 complete"]
    assert plan.status["announced"] == "0-3"
    older = decide(replace(s, old_status={"study": "digits-op"}))  # an older operator's status: nothing to catch up
    assert not [e for e in older.events if e.reason == "TrialComplete"]


def test_finished_trials_found_in_the_study_at_the_first_look_are_inherited_and_said_once():
    found = [trial(n, TrialState.COMPLETE, 0.5) for n in range(3)]
    plan = decide(snapshot(found, n_trials=8))  # no status yet: a StudyJob taking the study up
    assert plan.status["trials"]["inherited"] == 3
    assert [e.message for e in plan.events if e.reason == "StudyInherited"] == [
        "study `digits-op` already holds 3 finished trials (an earlier StudyJob or ml-search ran them): "
        "they count towards the 8 trials"]
    later = decide(replace(snapshot([*found, trial(3, TrialState.COMPLETE, 0.6)], n_trials=8),
                           old_status={"study": "digits-op", "trials": plan.status["trials"]}))
    assert later.status["trials"]["inherited"] == 3 and not [e for e in later.events if e.reason == "StudyInherited"]


GPU_BUSY = {"status": {"phase": "Pending", "conditions": [{
    "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
    "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu. preemption: 0/3 nodes are available: "
               "1 No preemption victims found for incoming pod, 2 Preemption is not helpful for scheduling."}]}}


def test_trials_waiting_for_a_free_gpu_are_pending_not_failed_and_hold_back_new_trials():
    trials = [trial(n) for n in range(3)]
    jobs = {0: job(0), 1: job(1, status={"active": 1}), 2: job(2, status={"active": 1})}  # made long ago
    pods = {"sj-trial-1": [GPU_BUSY], "sj-trial-2": [GPU_BUSY]}
    plan = decide(snapshot(trials, jobs, pods, n_trials=6, parallelism=4, startupTimeoutSeconds=20))
    assert not plan.fail and plan.launch == 0  # a fourth trial would wait too
    counts = plan.status["trials"]
    assert (counts["running"], counts["pending"], counts["queued"]) == (1, 2, 0)
    pending = next(c for c in plan.conditions if c.type == st.TRIALS_PENDING)
    assert pending.status and pending.reason == "InsufficientResources"
    assert pending.message.startswith("trials 1, 2 wait for free nvidia.com/gpu: 0/3 nodes are available")
    assert plan.phase == st.RUNNING and plan.message.startswith("1 running, 2 pending, 0 finished")

    # Once none waits, the condition turns False and new trials start again.
    old = {"conditions": [{"type": st.TRIALS_PENDING, "status": "True"}]}
    later = decide(replace(snapshot(trials[:1], {0: job(0)}, n_trials=6, parallelism=4), old_status=old))
    assert later.launch == 3 and later.status["trials"]["pending"] == 0
    assert [(c.status, c.reason) for c in later.conditions if c.type == st.TRIALS_PENDING] == [(False, "NonePending")]


def test_a_trial_job_suspended_for_kueue_is_queued_and_counts_towards_parallelism():
    trials = [trial(0), trial(1)]
    queued = {**job(1, status={}), "spec": {"suspend": True}}
    snap = replace(snapshot(trials, {0: job(0), 1: queued}, n_trials=4, parallelism=2, startupTimeoutSeconds=5),
                   kueue={"sj-trial-1": Kueued("couldn't assign flavors to pod set main: insufficient quota for "
                                               "nvidia.com/gpu in flavor default-flavor", "")})
    plan = decide(snap)
    assert not plan.fail and plan.launch == 0
    assert (plan.status["trials"]["running"], plan.status["trials"]["queued"]) == (1, 1)
    (queued_condition,) = [c for c in plan.conditions if c.type == st.TRIALS_QUEUED]
    assert queued_condition.status and queued_condition.message == (
        "trial 1 queued in Kueue: couldn't assign flavors to pod set main: insufficient quota for nvidia.com/gpu "
        "in flavor default-flavor")


def test_a_trial_kueue_evicts_stays_in_its_job_is_counted_preempted_and_never_against_retries():
    evicted_job = {**job(0, status={}), "spec": {"suspend": True}}
    said = Kueued("couldn't assign flavors to pod set main: insufficient unused quota for nvidia.com/gpu",
                  "Preempted: Preempted to accommodate a workload (UID: 42) due to prioritization in the ClusterQueue",
                  1)
    plan = decide(replace(snapshot([trial(0)], {0: evicted_job}, retries=0, parallelism=1), kueue={"sj-trial-0": said}))
    assert not plan.fail and not plan.resume and plan.launch == 0
    assert [(t.number, j, n) for t, j, n in plan.mark_evicted] == [(0, "sj-trial-0", 1)]
    (event,) = [e for e in plan.events if e.reason == "TrialPreempted"]
    assert "evicted by Kueue (Preempted: Preempted to accommodate" in event.message
    assert (plan.status["trials"]["preempted"], plan.status["trials"]["queued"]) == (1, 1)
    # Once marked on the trial: counted, not announced again.
    marked = trial(0, **{KUEUE_EVICTIONS_ATTR: {"sj-trial-0": 1}})
    again = decide(replace(snapshot([marked], {0: evicted_job}, retries=0, parallelism=1), kueue={"sj-trial-0": said}))
    assert not again.mark_evicted and not [e for e in again.events if e.reason == "TrialPreempted"]
    assert again.status["trials"]["preempted"] == 1


# Asking ahead -------------------------------------------------------------------------

def _ahead(number: int) -> optuna.trial.FrozenTrial:
    """A trial asked ahead: RUNNING, marked, without a Job."""
    ahead = trial(number, **{AHEAD_ATTR: True})
    del ahead.user_attrs[JOB_ATTR]
    return ahead


def test_with_its_slots_full_and_room_in_the_budget_the_next_trial_is_asked_ahead():
    plan = decide(snapshot([trial(0, TrialState.COMPLETE, 0.5)], n_trials=4, parallelism=2))
    assert plan.launch == 2 and plan.ask_ahead  # trials 1 and 2 start; 3 is asked ahead
    last = decide(snapshot([trial(0, TrialState.COMPLETE, 0.5)], n_trials=3, parallelism=2))
    assert last.launch == 2 and not last.ask_ahead  # the budget has no room for a fourth
    off = decide(snapshot([trial(0, TrialState.COMPLETE, 0.5)], n_trials=4, parallelism=2, askAhead=False))
    assert off.launch == 2 and not off.ask_ahead  # every trial asked when its slot frees


def test_a_trial_asked_ahead_takes_the_next_free_slot_and_never_counts_as_running():
    ahead = _ahead(2)
    full = decide(snapshot([trial(0), trial(1), ahead], {0: job(0), 1: job(1)}, n_trials=6, parallelism=2))
    assert not full.start and not full.launch_ahead and full.launch == 0 and not full.ask_ahead
    assert not full.more and not full.release  # it waits for a slot: the pass ends
    assert full.status["trials"]["running"] == 2 and full.phase == st.RUNNING
    freed = decide(snapshot([trial(0, TrialState.COMPLETE, 0.5), trial(1), ahead], {1: job(1)},
                            n_trials=6, parallelism=2))
    assert [t.number for t in freed.launch_ahead] == [2] and freed.launch == 0 and freed.ask_ahead
    assert freed.status["trials"]["running"] == 2


def test_a_trial_asked_ahead_holds_its_place_in_the_budget():
    # 3 finished + 1 running + 1 ahead = n_trials: the ahead one starts, nothing is asked
    trials = [trial(n, TrialState.COMPLETE, 0.5) for n in range(3)] + [trial(3), _ahead(4)]
    plan = decide(snapshot(trials, {3: job(3)}, n_trials=5, parallelism=2))
    assert [t.number for t in plan.launch_ahead] == [4] and plan.launch == 0 and not plan.ask_ahead
    assert plan.phase == st.RUNNING  # never done while a trial waits ahead
    alone = decide(snapshot(trials[:3] + [_ahead(4)], n_trials=4, parallelism=1))
    assert [t.number for t in alone.launch_ahead] == [4] and alone.phase == st.RUNNING


def test_a_trial_asked_ahead_with_its_job_made_is_an_ordinary_trial():
    # The operator stopped between creating the Job and marking the trial.
    ahead = _ahead(1)
    plan = decide(snapshot([trial(0, TrialState.COMPLETE, 0.5), ahead], {1: job(1)}, n_trials=4, parallelism=1))
    assert not plan.start and not plan.launch_ahead and plan.status["trials"]["running"] == 1
    # The mark and the launch time the stopped operator did not write: its deadline counts from the Job.
    made = datetime.fromisoformat("2026-01-01T00:00:00+00:00").timestamp()
    assert plan.mark_jobs == [(ahead, "sj-trial-1", made)]


def test_a_trial_whose_job_was_made_by_an_operator_stopped_before_it_marked_the_trial_is_marked():
    unmarked = trial(1)
    del unmarked.user_attrs[JOB_ATTR]
    plan = decide(snapshot([trial(0, TrialState.COMPLETE, 0.5), unmarked], {1: job(1)}, n_trials=4, parallelism=1))
    assert plan.mark_jobs == [(unmarked, "sj-trial-1", None)] and not plan.start
    assert not decide(snapshot([trial(0, TrialState.COMPLETE, 0.5), trial(1)], {1: job(1)}, n_trials=4)).mark_jobs


def test_a_suspended_or_failed_studyjob_releases_its_trial_asked_ahead_into_the_queue():
    ahead = _ahead(1)
    running = snapshot([trial(0, TrialState.COMPLETE, 0.5), ahead], n_trials=4)
    suspended = decide(replace(running, spec=running.spec.model_copy(update={"suspend": True})))
    assert suspended.phase == st.SUSPENDED and not suspended.launch_ahead
    [release] = suspended.release
    assert release.trial.number == 1 and release.requeue and release.failure.reason == "NotStarted"
    assert 1 in suspended.announced  # no TrialFailed event for a trial that never ran
    assert suspended.more  # the pass decides again on the released trial
    failed = [trial(n, TrialState.FAIL, **{FAIL_REASON_ATTR: "OOMKilled"}) for n in range(2)]
    over = decide(snapshot([*failed, ahead], n_trials=6, maxFailed=1))
    assert over.phase == st.FAILED and [r.requeue for r in over.release] == [True]


def test_a_trial_asked_ahead_over_a_lowered_n_trials_is_released_and_no_failure_counts():
    trials = [trial(n, TrialState.COMPLETE, 0.5) for n in range(3)] + [trial(3), _ahead(4)]
    plan = decide(snapshot(trials, {3: job(3)}, n_trials=4, parallelism=2))
    assert not plan.launch_ahead and [(r.trial.number, r.requeue) for r in plan.release] == [(4, False)]
    released = trial(4, TrialState.FAIL, **{FAIL_REASON_ATTR: str(plan.release[0].failure)})
    after = decide(snapshot([*trials[:4], released], {3: job(3)}, n_trials=4, parallelism=2, maxFailed=0))
    assert after.phase == st.RUNNING  # a trial that never ran is no failure


def test_a_resume_of_a_trial_asked_ahead_counts_its_deadline_from_its_job():
    launched = trial(0, started=NOW - 700, **{AHEAD_ATTR: NOW - 100})  # waited 600 s for a slot
    plan = decide(snapshot([launched], {0: job(0, status=FAILED)}, {"sj-trial-0": [EVICTED_POD]},
                           activeDeadlineSeconds=600))
    assert plan.resume[0].deadline == 500
