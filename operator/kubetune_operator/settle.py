"""What the Jobs say about the trials: failures the pod could not report, retries, events.

For each trial this StudyJob asked (``kubetune.owner``):

- RUNNING, its Job ended or vanished: the pod died without telling (OOM kill,
  eviction, deadline, node loss, deleted Job). A disruption (eviction, preemption,
  node loss, deleted Job) resumes the trial: a new Job ``-r<k>`` for the same trial
  continues from its last checkpoint, up to ``spec.trials.retries`` times. Otherwise,
  or past that, the trial is told FAIL with the reason read from the Job and its pods.
- RUNNING, and its current Job (``kubetune.preempted`` says which) does not exist and
  is not marked in ``kubetune.job``: the operator stopped between asking (or resuming)
  the trial and creating its Job; the Job is created now.
- FAIL as "terminated (SIGTERM)" and its Job failed: a trainer image older than the
  resume told FAIL itself on the SIGTERM; the Job and its pods still say why, and a
  disruption is retried with the same params as a new trial (``attempt``).
  (Other FAILs are the trainer's own errors: never retried.)

Every finished trial gets one event; after a restart, trials that ended before are
not news (only retries still owed are acted on).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from optuna.trial import FrozenTrial, TrialState

from kubetune.search.budget import retried_numbers
from kubetune.search.interruption import INTERRUPTED_ATTR
from kubetune.search.single_trial import TERMINATED
from kubetune_operator import names
from kubetune_operator.failures import Failure, failure_reason, job_outcome, vanished
from kubetune_operator.spec import StudyJobSpec
from kubetune_operator.studies import StudyHandle, Summary, attempt, preempted

if TYPE_CHECKING:
    from kubetune_operator.reconcile import Pass


class Settler:
    def __init__(self, run: Pass, spec: StudyJobSpec, handle: StudyHandle,
                 trial_jobs: dict[int, dict[str, Any]], start_job: Callable[[FrozenTrial, int], None]) -> None:
        self.p, self.spec, self.handle, self.trial_jobs = run, spec, handle, trial_jobs
        self.start_job = start_job
        rt = run.rt
        self.first_pass = run.key not in rt.announced
        self.seen: set[int] = rt.announced.setdefault(run.key, set())
        self.examined: set[int] = rt.examined.setdefault(run.key, set())

    def settle(self, trials: list[FrozenTrial]) -> bool:
        """Act on ended Jobs; True if the storage changed (the trials need reading again)."""
        changed = False
        retried = retried_numbers(trials)
        for trial in trials:
            if trial.user_attrs.get(names.ATTR_OWNER) != self.p.key:
                continue
            job = self.trial_jobs.get(trial.number)
            if trial.state == TrialState.RUNNING:
                changed |= self._running(trial, job)
            elif (_terminated(trial) and job is not None and job_outcome(job) == "failed"
                  and trial.number not in self.examined):
                self.examined.add(trial.number)
                if trial.number not in retried:
                    changed |= self._reported_failure(trial, job, trials)
        return changed

    def _running(self, trial: FrozenTrial, job: dict[str, Any] | None) -> bool:
        resume = preempted(trial)
        current = names.trial_job_name(self.p.name, trial.number, resume)
        if job is not None and job["metadata"]["name"] != current:
            job = None  # an earlier Job of a trial since resumed
        if job is None:
            if trial.user_attrs.get(names.ATTR_JOB) != current:
                self.start_job(trial, resume)  # the operator stopped before the Job existed
                return False
            failure = vanished()
        else:
            outcome = job_outcome(job)
            if outcome is None:
                failure = self.p.not_starting(job, self.spec.trials.startup_timeout_seconds)
                if failure is None:
                    return False
                # Its pod never started and never will by itself: free the slot.
                self.p.kube.delete_job(self.p.namespace, job["metadata"]["name"])
            elif outcome == "succeeded":
                failure = Failure("NoReport", "the trial pod exited 0 without reporting a result")
            else:
                failure = self._why(job)
        if failure.resumable and resume < self.spec.trials.retries:
            self._resume(trial, failure, resume + 1)
            return True
        if not self.handle.tell_fail(trial, failure):
            return True  # the pod told it meanwhile; the next pass looks again
        self.examined.add(trial.number)
        self._fail_event(trial, str(failure), failure, retried=False)
        return True

    def _resume(self, trial: FrozenTrial, failure: Failure, resume: int) -> None:
        """A new Job for the same trial; it continues from the trial's last checkpoint."""
        if not self.handle.mark_preempted(trial, resume):
            return  # the pod told it meanwhile
        self.start_job(trial, resume)
        job_name = names.trial_job_name(self.p.name, trial.number, resume)
        stopped = trial.user_attrs.get(INTERRUPTED_ATTR)  # the trainer's "terminated ... after epoch k"
        when = f"; {stopped}" if stopped else ""
        self.p.event("Warning", "TrialPreempted",
                     f"trial {trial.number} was disrupted ({failure}){when}; it resumes from its last "
                     f"checkpoint as Job {job_name} (resume {resume} of {self.spec.trials.retries})")

    def _reported_failure(self, trial: FrozenTrial, job: dict[str, Any], trials: list[FrozenTrial]) -> bool:
        failure = self._why(job)
        retry = self._maybe_retry(trial, failure, trials)
        if self.first_pass and not retry:
            return retry  # old news
        reported = trial.user_attrs.get(names.ATTR_FAIL_REASON)
        if reported and failure.reason == "BackoffLimitExceeded":
            text = reported  # the trainer failed and said why; the exit code adds nothing
        elif reported:
            text = f"{failure} (the trial reported: {reported})"
        else:
            text = str(failure)
        self._fail_event(trial, text, failure, retry)
        return retry

    def _why(self, job: dict[str, Any]) -> Failure:
        pods = self.p.kube.list_job_pods(self.p.namespace, job["metadata"]["name"])
        return failure_reason(job, pods)

    def _maybe_retry(self, trial: FrozenTrial, failure: Failure, trials: list[FrozenTrial]) -> bool:
        if failure.resumable and attempt(trial) <= self.spec.trials.retries:
            self.handle.retry(trial, trials)
            return True
        return False

    def _fail_event(self, trial: FrozenTrial, text: str, failure: Failure, retried: bool) -> None:
        self.seen.add(trial.number)
        message = f"trial {trial.number} failed: {text}"
        if retried:
            message += (f"; its params run again as a new trial (attempt {attempt(trial) + 1} "
                        f"of {self.spec.trials.retries + 1})")
        self.p.event("Warning", "TrialFailed", message)

    def announce(self, trials: list[FrozenTrial], summary: Summary, metric: str) -> None:
        """One event per newly finished trial, and one when the best trial changes."""
        finished = {t.number: t for t in trials if t.state.is_finished()}
        if self.first_pass:
            self.seen.update(finished)
            return
        for number in sorted(set(finished) - self.seen):
            trial = finished[number]
            if trial.state == TrialState.FAIL and self._job_still_explains(trial):
                continue  # settle() reports it once the Job has ended
            self.seen.add(number)
            if trial.state == TrialState.COMPLETE:
                self.p.event("Normal", "TrialComplete", f"trial {number} complete: {metric}={trial.value:.4g}")
            elif trial.state == TrialState.PRUNED:
                step = trial.last_step  # kubetune's trainer reports once per epoch
                at = f" at epoch {step}" if step is not None else ""
                self.p.event("Normal", "TrialPruned", f"trial {number} pruned{at}")
            else:
                reason = trial.user_attrs.get(names.ATTR_FAIL_REASON) or "no reason recorded"
                self.p.event("Warning", "TrialFailed", f"trial {number} failed: {reason}")
        best = summary.best
        old_best = (self.p.old_status.get("best") or {}).get("trial")
        if best is not None and best.number != old_best:
            self.p.event("Normal", "NewBest", f"trial {best.number} is the best so far: {metric}={best.value:.4g}")

    def _job_still_explains(self, trial: FrozenTrial) -> bool:
        """A trial terminated from outside: its Job, once failed, says why (settle() reports it)."""
        job = self.trial_jobs.get(trial.number)
        if not _terminated(trial) or trial.user_attrs.get(names.ATTR_OWNER) != self.p.key or job is None:
            return False
        return job_outcome(job) != "succeeded"


def _terminated(trial: FrozenTrial) -> bool:
    return trial.state == TrialState.FAIL and trial.user_attrs.get(names.ATTR_FAIL_REASON) == TERMINATED
