"""act: the calls a plan makes, against stand-ins for the API and the study."""

from __future__ import annotations

from typing import Any

import kopf
import pytest

from kubetune_operator.act import StudyJobRef, start_job
from kubetune_operator.runtime import Options, Runtime, StudyJobState
from tests.operator.snapshots import snapshot, trial


def _ref(rt: Runtime) -> StudyJobRef:
    return StudyJobRef(rt, "kt", "sj", "kt/sj", "uid-1", 1, {"metadata": {"name": "sj", "uid": "uid-1"}},
                       StudyJobState())


class NameTakenThenGone:
    """An API server where the Job's name is taken at create time and free by the list after."""

    def create(self, obj: dict[str, Any], namespace: str) -> bool:
        return False

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return None


class Study:
    def __init__(self) -> None:
        self.marked: list[str] = []

    def mark_job(self, trial: Any, job_name: str) -> None:
        self.marked.append(job_name)


def test_a_job_name_freed_between_create_and_list_is_not_marked_as_made():
    # The old Job of that name was being deleted: marking the trial now would make the
    # next pass think its Job vanished.
    rt = Runtime(NameTakenThenGone(), Options())  # type: ignore[arg-type]
    ref = _ref(rt)
    study = Study()
    with pytest.raises(kopf.TemporaryError):
        start_job(ref, snapshot([trial(0)]), study, trial(0), 0)  # type: ignore[arg-type]
    assert study.marked == []


class DryRunApi:
    """An API server that answers dry runs of Job creates with ``answer`` (an ApiError or True)."""

    def __init__(self, answer: Any) -> None:
        self.answer, self.dry_runs = answer, []

    def create(self, obj: dict[str, Any], namespace: str, *, dry_run: bool = False) -> bool:
        assert dry_run, "only dry runs before the study exists"
        self.dry_runs.append(obj["metadata"]["name"])
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def _check(api: DryRunApi, **trials_spec: Any) -> None:
    from kubetune_operator.act import check_trial_jobs

    rt = Runtime(api, Options())  # type: ignore[arg-type]
    ref = _ref(rt)
    s = snapshot([], **trials_spec)
    for _ in range(2):
        check_trial_jobs(ref, s.spec, s.study, single_node=False)


def test_trial_jobs_are_checked_once_per_job_body_by_a_dry_run():
    api = DryRunApi(True)
    _check(api)
    assert api.dry_runs == ["sj-trial-0"]  # one dry run for two passes with the same spec
    _check(api, tolerations=[{"key": "k", "operator": "Exists"}])
    assert len(api.dry_runs) == 2  # a new runtime (a restart) or a new Job body asks again


@pytest.mark.parametrize("status, rejected", [(422, True), (403, True), (400, True), (500, False), (429, False)])
def test_a_dry_run_the_api_server_refuses_rejects_the_spec(status, rejected):
    from kubetune_operator.act import JobRejected
    from kubetune_operator.kube import ApiError

    error = ApiError(status, 'Job.batch "sj-trial-0" is invalid: spec.template.spec.tolerations[0].operator')
    with pytest.raises(JobRejected if rejected else ApiError) as info:
        _check(DryRunApi(error))
    if rejected:
        assert "a dry run of Job sj-trial-0" in str(info.value) and "tolerations[0]" in str(info.value)


def test_a_job_count_quota_in_the_dry_run_is_not_a_refusal():
    from kubetune_operator.kube import ApiError

    _check(DryRunApi(ApiError(403, 'jobs.batch "sj-trial-0" is forbidden: exceeded quota: jobs, requested: '
                                   'count/jobs.batch=1, used: count/jobs.batch=10, limited: count/jobs.batch=10')))


def test_a_webhook_that_cannot_dry_run_is_not_a_refusal():
    from kubetune_operator.kube import ApiError

    api = DryRunApi(ApiError(400, 'admission webhook "audit.example.com" does not support dry run'))
    _check(api)
    assert api.dry_runs == ["sj-trial-0"]  # asked once, then left to the real creates


class RefusingApi(DryRunApi):
    def __init__(self) -> None:
        from kubetune_operator.kube import ApiError

        super().__init__(ApiError(422, 'Job.batch "sj-trial-0" is invalid: spec.template.spec.tolerations[0]'))
        self.deleted: list[str] = []

    def delete_job(self, namespace: str, name: str) -> None:
        self.deleted.append(name)


class Storage:
    def __init__(self) -> None:
        self.failed: list[int] = []
        self.preempted: list[int] = []

    def tell_fail(self, trial: Any, failure: Any) -> bool:
        self.failed.append(trial.number)
        return True

    def mark_preempted(self, trial: Any, resume: int) -> bool:
        self.preempted.append(trial.number)
        return True


def test_a_refused_spec_mid_study_fails_the_ended_trials_and_resumes_none():
    # Trial 0's Job failed, trial 1's pod was evicted; the spec was since edited into
    # Jobs the API server refuses. Trial 0 is still told FAIL; trial 1 is not resumed.
    from kubetune_operator.act import JobRejected, settle
    from kubetune_operator.decide import Event, FailTrial, Plan, ResumeTrial
    from kubetune_operator.failures import Failure

    api = RefusingApi()
    rt = Runtime(api, Options())  # type: ignore[arg-type]
    ref = _ref(rt)
    failure = Failure("BackoffLimitExceeded", "exit 1")
    plan = Plan(fail=[FailTrial(trial(0), failure, Event("Warning", "TrialFailed", "trial 0 failed"))],
                resume=[ResumeTrial(trial(1), 1, None, Event("Normal", "TrialPreempted", "evicted"))])
    storage = Storage()
    with pytest.raises(JobRejected, match="a dry run of Job sj-trial-0"):
        settle(ref, snapshot([trial(0), trial(1)]), plan, storage)  # type: ignore[arg-type]
    assert storage.failed == [0] and storage.preempted == []
    assert api.dry_runs == ["sj-trial-0"]
