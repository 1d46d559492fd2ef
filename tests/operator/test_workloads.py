"""Kueue's word on a Job, read from its Workload's status as Kueue v1beta2 writes it."""

from __future__ import annotations

from kubetune_operator.workloads import Kueued, by_job, read


def _workload(uid: str, *conditions: dict, evictions: list | None = None) -> dict:
    status: dict = {"conditions": list(conditions)}
    if evictions is not None:
        status["schedulingStats"] = {"evictions": evictions}
    return {"metadata": {"name": f"job-{uid}", "ownerReferences": [{"kind": "Job", "uid": uid}]}, "status": status}


NO_QUOTA = {"type": "QuotaReserved", "status": "False", "reason": "Pending",
            "message": "couldn't assign flavors to pod set main: insufficient unused quota for nvidia.com/gpu in "
                       "flavor default-flavor, 1 more needed"}


def test_a_waiting_workload_says_why_and_an_evicted_one_how_often():
    assert read(_workload("a", NO_QUOTA)) == Kueued(NO_QUOTA["message"], "", 0)
    no_queue = {"type": "QuotaReserved", "status": "False", "reason": "Inadmissible",
                "message": "LocalQueue nowhere doesn't exist"}
    assert read(_workload("b", no_queue)).waiting == "LocalQueue nowhere doesn't exist"
    checks = [{"type": "QuotaReserved", "status": "True"},
              {"type": "Admitted", "status": "False", "message": "The workload has failed admission checks"}]
    assert read(_workload("c", *checks)).waiting == "The workload has failed admission checks"
    evicted = _workload("d", NO_QUOTA, {"type": "Evicted", "status": "True", "reason": "Preempted",
                                        "message": "Preempted to accommodate a workload"},
                        evictions=[{"reason": "Preempted", "underlyingCause": "", "count": 2}])
    assert read(evicted) == Kueued(NO_QUOTA["message"], "Preempted: Preempted to accommodate a workload", 2)
    admitted = _workload("e", {"type": "QuotaReserved", "status": "True"}, {"type": "Admitted", "status": "True"})
    assert read(admitted) == Kueued("", "", 0)


def test_workloads_are_matched_to_their_jobs_by_owner_uid():
    found = by_job([_workload("u1", NO_QUOTA), _workload("other", NO_QUOTA)], {"sj-trial-0": "u1", "sj-trial-1": "u2"})
    assert set(found) == {"sj-trial-0"}
