"""Decide: from one :class:`~kubetune_operator.observe.Snapshot`, the plan of a pass.

Pure: no API, no storage, no clock but the snapshot's. Two parts:

- **Settle** the trials whose Job ended or vanished without a result. A disruption
  (eviction, preemption, node loss, deleted Job) resumes the trial in a new Job
  ``-r<k>`` that continues from its checkpoint, up to ``spec.trials.retries`` times
  and within ``activeDeadlineSeconds`` counted from the trial's start; anything else,
  or past that, fails it with the reason read from the Job and its pods. A RUNNING
  trial whose current Job was never made (the operator stopped in between) gets it.
- **Steer** the StudyJob: how many new trials to start (the ledger's room, a trial
  asked ahead first, then WAITING ones, ``parallelism``), whether to ask the next
  trial ahead, the visualisation Job, the best config, the phase, the conditions, the
  status and the events.

A trial asked ahead (:func:`asked_ahead`) is RUNNING without a Job: asked while the
slots are full and the budget has room for it, it waits for the next free slot, which
then only needs its Job. It counts towards ``n_trials`` like any RUNNING trial, never as
running; one the StudyJob will not launch (suspended, failed, refused, its ``n_trials``
lowered under it) is released: failed as NotStarted and, unless over the budget,
queued again as a retry, so it costs no trial.

When settling changes the storage, :func:`kubetune_operator.reconcile.reconcile` acts
on it, observes again and decides anew, so the second part always sees settled trials.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from kubetune.search.attributes import (
    AHEAD_ATTR,
    FAIL_REASON_ATTR,
    INTERRUPTED_ATTR,
    JOB_ATTR,
    NODE_LOST_ATTR,
)
from kubetune.search.ledger import NOT_STARTED, Ledger, ledger, never_ran
from kubetune_operator import names
from kubetune_operator import status as st
from kubetune_operator.failures import (
    STARTUP_REASONS,
    Failure,
    failure_reason,
    job_outcome,
    startup_failure,
    stuck_node,
    vanished,
)
from kubetune_operator.observe import Snapshot, current_job
from kubetune_operator.standing import Standing, best_block, front_block, standing
from kubetune_operator.studies import kueue_evictions, point_key, preempted
from kubetune_operator.usage import account, timestamp, usage_status
from kubetune_operator.waiting import Waiting, waiting_trials


@dataclass(frozen=True)
class Event:
    type: str
    reason: str
    message: str
    once: str | None = None  # post only the first time this tag is seen for the StudyJob


@dataclass(frozen=True)
class FailTrial:
    trial: FrozenTrial
    failure: Failure
    event: Event
    delete_job: str | None = None  # its Job, whose pod never started: delete it to free the slot


@dataclass(frozen=True)
class ResumeTrial:
    trial: FrozenTrial
    resume: int  # the new Job's index (1 for the first resume)
    deadline: int | None  # what is left of activeDeadlineSeconds
    event: Event


@dataclass(frozen=True)
class StartJob:
    """A RUNNING trial's current Job, asked (or resumed) by an operator that stopped before making it."""

    trial: FrozenTrial
    resume: int


@dataclass(frozen=True)
class ReleaseTrial:
    """An asked-ahead trial that will not be launched: fail it, and queue its point again (``requeue``)."""

    trial: FrozenTrial
    failure: Failure
    requeue: bool




@dataclass
class Plan:
    # Settling (changes the storage: the pass observes again after acting on it)
    fail: list[FailTrial] = field(default_factory=list)
    resume: list[ResumeTrial] = field(default_factory=list)
    start: list[StartJob] = field(default_factory=list)
    announced: set[int] = field(default_factory=set)  # trials whose end has its event
    # Steering
    mark_lost: list[tuple[FrozenTrial, str, str]] = field(default_factory=list)  # (trial, its Job, the node)
    mark_evicted: list[tuple[FrozenTrial, str, int]] = field(default_factory=list)  # (trial, its Job, evictions)
    delete_jobs: list[str] = field(default_factory=list)
    # (trial, its Job, when an asked-ahead trial's Job was made): Jobs made by an operator
    # stopped before it marked their trials
    mark_jobs: list[tuple[FrozenTrial, str, float | None]] = field(default_factory=list)
    launch_ahead: list[FrozenTrial] = field(default_factory=list)  # asked-ahead trials to start first
    usage: dict[int, dict[str, Any]] = field(default_factory=dict)  # trial -> its record with pods seen ended
    launch: int = 0  # new trials to ask for and start (at most one batch)
    ask_ahead: bool = False  # then ask the next trial ahead: the slots are full, the budget has room
    release: list[ReleaseTrial] = field(default_factory=list)
    more: bool = False  # more would start than one batch, or trials were released: decide again
    waiting: int = 0  # WAITING trials the asks pop first
    refused: Failure | None = None  # this generation's Jobs were refused: launch nothing
    visualise: int | None = None  # create the visualisation Job for this many finished trials
    best_config: FrozenTrial | None = None  # write ConfigMap <name>-best-config from this trial
    front: list[FrozenTrial] = field(default_factory=list)  # and these Pareto-optimal ones, best first
    phase: str = st.PENDING
    message: str = ""
    conditions: list[st.Condition] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    status: dict[str, Any] = field(default_factory=dict)
    retry_after: float | None = None  # look again after this many seconds (nothing else will say)

    @property
    def settles(self) -> bool:
        """Acting on it changes the trials in the storage."""
        return bool(self.fail or self.resume)

    def event(self, type_: str, reason: str, message: str, once: str | None = None) -> None:
        self.events.append(Event(type_, reason, message, once))


WAIT_FOR_PODS = 5.0  # seconds before a pass looks again at a deleted Job whose pods still run


def decide(s: Snapshot, *, settle_trials: bool = True) -> Plan:
    """The plan of one pass over ``s``: settling if there is any to do (and
    ``settle_trials``), else steering."""
    plan = Plan(usage=account(s))
    if settle_trials:
        settle(s, plan)
        if plan.settles:
            return plan
    steer(s, plan)
    return plan


# Settle -------------------------------------------------------------------------------

def settle(s: Snapshot, plan: Plan) -> None:
    for trial in s.trials:
        if s.owned(trial) and trial.state == TrialState.RUNNING:
            _running(s, plan, trial)


def _running(s: Snapshot, plan: Plan, trial: FrozenTrial) -> None:
    resume = preempted(trial)
    current, job = current_job(s.name, trial, s.trial_jobs)
    stuck = None
    if job is None:
        if asked_ahead(s, trial):
            return  # steering launches it
        if trial.user_attrs.get(JOB_ATTR) != current:
            plan.start.append(StartJob(trial, resume))
            return
        if any(not _terminal(pod) for pod in s.pods.get(current, [])):
            plan.retry_after = WAIT_FOR_PODS  # its pod still runs: resume once it is gone
            return
        failure = vanished()
    else:
        if trial.user_attrs.get(JOB_ATTR) != current:
            launched = None  # an asked-ahead trial's deadline counts from its Job's creation
            if trial.user_attrs.get(AHEAD_ATTR) is True:
                launched = timestamp((job.get("metadata") or {}).get("creationTimestamp")) or s.now
            plan.mark_jobs.append((trial, current, launched))
        outcome = job_outcome(job)
        if outcome is None:
            found = startup_failure(job, s.pods.get(current, []), s.spec.trials.startup_timeout_seconds, s.now)
            if found is None:
                return
            failure = found
            stuck = current  # its pod never started and never will: free the slot
        elif outcome == "succeeded":
            failure = Failure("NoReport", "the trial pod exited 0 without reporting a result")
        else:
            failure = failure_reason(job, s.pods.get(current, []))
    failure = _node_lost(trial, current, failure)
    if failure.resumable and resume < s.spec.trials.retries:
        left = _deadline_left(s, trial)
        if left is None or left > 0:
            plan.resume.append(_resume(s, trial, failure, resume + 1, left))
            return
        failure = Failure("DeadlineExceeded", f"the trial ran past its deadline of "
                                              f"{s.spec.trials.active_deadline_seconds}s ({failure.reason} "
                                              f"left no time to resume)")
    plan.fail.append(FailTrial(trial, failure, Event("Warning", "TrialFailed", f"trial {trial.number} failed: {failure}"),
                               stuck))


def _node_lost(trial: FrozenTrial, job: str, failure: Failure) -> Failure:
    """The end of a Job seen stuck on a node that stopped answering is NodeLost: its pod is
    often gone (the Job then says only Disrupted) or, the node back, ended as
    ContainerStatusUnknown. Its deadline still rules."""
    lost = trial.user_attrs.get(NODE_LOST_ATTR)
    if failure.reason not in ("NodeLost", "DeadlineExceeded") and isinstance(lost, list) and lost[:1] == [job]:
        return Failure("NodeLost", f"node {lost[1]} stopped answering ({failure})")
    return failure


def _terminal(pod: Mapping[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


def _deadline_left(s: Snapshot, trial: FrozenTrial) -> int | None:
    """Seconds of ``activeDeadlineSeconds`` the trial has left over all its Jobs; None: no deadline."""
    deadline = s.spec.trials.active_deadline_seconds
    launched = trial.user_attrs.get(AHEAD_ATTR)  # an asked-ahead trial's time waiting is not its run's
    if isinstance(launched, float):
        return round(deadline - (s.now - launched)) if deadline else None
    if not deadline or trial.datetime_start is None:
        return deadline or None
    return round(deadline - (s.now - trial.datetime_start.timestamp()))  # Optuna's naive local time


def _resume(s: Snapshot, trial: FrozenTrial, failure: Failure, resume: int, deadline: int | None) -> ResumeTrial:
    job = names.trial_job_name(s.name, trial.number, resume)
    stopped = trial.user_attrs.get(INTERRUPTED_ATTR)  # the trainer's "terminated ... after epoch k"
    when = f"; {stopped}" if stopped else ""
    return ResumeTrial(trial, resume, deadline, Event(
        "Warning", "TrialPreempted",
        f"trial {trial.number} was disrupted ({failure}){when}; it resumes from its last checkpoint "
        f"as Job {job} (resume {resume} of {s.spec.trials.retries})"))


# Steer --------------------------------------------------------------------------------

def steer(s: Snapshot, plan: Plan) -> None:
    books = ledger(s.trials, maximize=s.maximize)
    assert s.config.search is not None
    stand = standing(s.config.search, s.trials, books)
    _announce(s, plan, books, stand)
    _note_blocked(s, plan)
    _note_stuck(s, plan)
    evicted = _note_evicted(s, plan)
    counted_failed = books.failed - books.retried
    ahead = [t for t in s.trials if asked_ahead(s, t)]
    running = sum(t.state == TrialState.RUNNING and s.owned(t) for t in s.trials) - len(ahead)
    waiting = waiting_trials(s)
    plan.conditions.extend(waiting.conditions(s.old_status))
    best_config: dict[str, Any] | None = None
    if counted_failed > s.spec.trials.max_failed:
        phase = st.FAILED
        plan.conditions.append(st.Condition(
            st.FAILED_CONDITION, True, "MaxFailedExceeded",
            f"{counted_failed} trials failed, more than spec.trials.maxFailed={s.spec.trials.max_failed}; "
            "no new trials start"))
    elif books.done(s.n_trials, running + len(ahead)) or (stand.goal is not None and running == 0):
        plan.conditions.append(_trials_done(s, books, stand))
        if stand.best is None:
            phase = st.FAILED
            plan.conditions.append(_no_best(books))
        else:
            phase, best_config = _finish(s, plan, books, stand)
    else:
        plan.conditions.append(_trials_done(s, books, stand, running))
        if s.spec.suspend:
            phase = st.SUSPENDED
        else:
            # Once a trial reached search.goal no new trial starts; running ones finish.
            if not waiting.pending and stand.goal is None:  # what is pending holds the rest back
                _launch(s, plan, books, running, ahead)
            running += len(plan.launch_ahead) + plan.launch
            phase = st.RUNNING if running or books.finished else st.PENDING
    suspend = s.spec.suspend
    plan.conditions.append(st.Condition(
        st.SUSPENDED_CONDITION, suspend, "Suspended" if suspend else "NotSuspended",
        "spec.suspend is true: no new trials start" if suspend else ""))
    plan.phase = phase
    _release(s, plan, books, ahead, goal=stand.goal is not None)
    held = len(waiting.pending) + len(waiting.queued)
    plan.message = _message(s, plan, books, stand, running - held, waiting)
    plan.status = {
        "study": s.study,
        "progress": f"{books.finished}/{s.n_trials}",
        "trials": {
            "running": running - held,
            "pending": len(waiting.pending),
            "queued": len(waiting.queued),
            "waiting": books.waiting,
            "complete": books.complete,
            "pruned": books.pruned,
            "failed": books.failed,
            "retried": books.retried,
            "preempted": sum(preempted(t) + sum(kueue_evictions(t).values()) for t in s.trials if s.owned(t))
            + evicted,
            "finished": books.finished,
            "total": s.n_trials,
            "inherited": _inherited(s, plan, books),
        },
        "best": best_block(stand),
        "front": front_block(stand),
        "bestConfig": best_config or s.old_status.get("bestConfig"),
        "usage": usage_status([t for t in s.trials if s.owned(t)], {**s.usage, **plan.usage}, stand.best),
        # Every finished trial has had its event by the end of this pass.
        "announced": st.ranges(t.number for t in s.trials if t.state.is_finished()),
    }


def _inherited(s: Snapshot, plan: Plan, books: Ledger) -> int:
    """Finished trials the study held when this StudyJob took it up (from a StudyJob of
    the same name deleted before, or from ml-search): counted once, at the first look."""
    old = s.old_status.get("trials") or {}
    if s.old_status.get("study") == s.study and old:
        return int(old.get("inherited", 0))
    if books.finished:
        plan.event("Normal", "StudyInherited",
                   f"study `{s.study}` already holds {books.finished} finished trials (an earlier StudyJob "
                   f"or ml-search ran them): they count towards the {s.n_trials} trials")
    return books.finished


def _launch(s: Snapshot, plan: Plan, books: Ledger, running: int, ahead: list[FrozenTrial]) -> None:
    """As many new trials as ``parallelism``, the operator's Job cap and the ledger allow,
    one batch at a time; those asked ahead go first, then WAITING ones. Then, if the
    budget has room for one more, the next trial is asked ahead."""
    parallelism = 1 if s.results.one_pod else s.spec.trials.parallelism
    if parallelism > s.max_jobs:
        plan.event("Warning", "ParallelismCapped",
                   f"spec.trials.parallelism={parallelism} is above the operator's cap of {s.max_jobs} "
                   f"trial Jobs per StudyJob (--max-jobs-per-studyjob): at most {s.max_jobs} run at once",
                   once=f"capped:{parallelism}:{s.max_jobs}")
        parallelism = s.max_jobs
    active = sum(job_outcome(job) is None for job in s.trial_jobs.values())
    slots = max(0, parallelism - max(running, active))
    # Asked ahead: counted already, but n_trials may have been lowered under them.
    take = min(len(ahead), slots, s.batch, max(0, s.n_trials - books.counted + len(ahead)))
    queued = min(books.waiting, slots - take)  # WAITING trials are counted already
    new = max(0, min(slots - take - queued, s.n_trials - books.counted))
    untaken = None
    if s.grid is not None:
        taken = {point_key(t.params) for t in s.trials}
        untaken = sum(point_key(p) not in taken for p in s.grid)
        new = min(new, untaken)
    launch = queued + new
    refused = _refused(s)
    if refused is not None:  # this generation's Jobs were refused: ask for no more trials
        if launch or take:
            plan.refused = refused
        return
    plan.more = take + launch > s.batch
    launch = min(launch, s.batch - take)
    plan.launch_ahead = ahead[:take]
    plan.launch, plan.waiting = launch, min(queued, launch)
    # Ahead: the slots are full now (whatever held a launch back holds this one too).
    room = s.n_trials - books.counted - new
    plan.ask_ahead = (s.spec.trials.ask_ahead and not plan.more and take == len(ahead)
                      and queued == books.waiting and room > 0 and (untaken is None or untaken > new))


def _refused(s: Snapshot) -> Failure | None:
    """This generation's trial Jobs were refused (the last status says so)."""
    refused = old_condition(s, st.FAILED_CONDITION, ("JobRejected",))
    return None if refused is None else Failure("JobRejected", refused.get("message", "").partition(": ")[2])


def asked_ahead(s: Snapshot, trial: FrozenTrial) -> bool:
    """A trial this StudyJob asked ahead that waits for its first Job (see the module docstring)."""
    return (s.owned(trial) and trial.state == TrialState.RUNNING and bool(trial.user_attrs.get(AHEAD_ATTR))
            and not trial.user_attrs.get(JOB_ATTR) and trial.number not in s.trial_jobs)


def _release(s: Snapshot, plan: Plan, books: Ledger, ahead: list[FrozenTrial], *, goal: bool) -> None:
    """The asked-ahead trials this StudyJob will not launch: suspended, failed or refused, each
    goes back to the queue; over a lowered ``n_trials`` (the newest) or once ``search.goal`` is
    reached (all of them), they go without a retry."""
    launched = {t.number for t in plan.launch_ahead}
    left = [t for t in ahead if t.number not in launched]
    if not left:
        return
    if goal:
        why, requeue = "search.goal was reached", False
    elif plan.phase in (st.RUNNING, st.PENDING) and plan.refused is None and _refused(s) is None:
        over = books.counted - s.n_trials
        why, requeue, left = f"the StudyJob's n_trials is now {s.n_trials}", False, left[-over:] if over > 0 else []
    else:
        why = {st.SUSPENDED: "the StudyJob was suspended", st.FAILED: "the StudyJob failed"}.get(
            plan.phase, "the StudyJob's trial Jobs are refused")
        requeue = True
    for trial in left:
        plan.release.append(ReleaseTrial(trial, Failure(NOT_STARTED, f"asked ahead, released before its Job was "
                                                                     f"made: {why}"), requeue))
        plan.announced.add(trial.number)  # no TrialFailed event: it never ran
    if left:
        plan.more = True  # decide again on the released trials: nothing else brings a pass


def _announce(s: Snapshot, plan: Plan, books: Ledger, stand: Standing) -> None:
    """One event per newly finished trial, and one when the best trial changes."""
    finished = {t.number: t for t in s.trials if t.state.is_finished()}
    already: Collection[int] = s.memory.announced
    if s.memory.first_pass:
        # After a restart: what the last status recorded as announced is not news; a
        # status without the record (an older operator's) leaves nothing to catch up.
        recorded = st.parse_ranges(s.old_status["announced"]) if (
            s.old_status.get("study") == s.study and "announced" in s.old_status) else None
        if recorded is None:
            plan.announced.update(finished)
            return
        already = recorded
    for number in sorted(set(finished) - set(already) - plan.announced):
        trial = finished[number]
        plan.announced.add(number)
        if trial.state == TrialState.COMPLETE:
            plan.event("Normal", "TrialComplete", f"trial {number} complete: {stand.values_text(trial)}")
        elif trial.state == TrialState.PRUNED:
            step = trial.last_step  # kubetune's trainer reports once per epoch
            at = f" at epoch {step}" if step is not None else ""
            plan.event("Normal", "TrialPruned", f"trial {number} pruned{at}")
        else:
            reason = trial.user_attrs.get(FAIL_REASON_ATTR) or "no reason recorded"
            plan.event("Warning", "TrialFailed", f"trial {number} failed: {reason}")
    best = stand.best
    old_best = (s.old_status.get("best") or {}).get("trial")
    if best is not None and best.number != old_best:
        what = (f"the picked trial (best {stand.pick or stand.names[0]} on the Pareto front of {len(stand.front)})"
                if stand.several else "the best so far")
        plan.event("Normal", "NewBest", f"trial {best.number} is {what}: {stand.values_text(best)}")


def _note_blocked(s: Snapshot, plan: Plan) -> None:
    """While the latest trial to end is one whose pod never started, say so (a condition
    and the status message), from the storage alone: it holds across passes and restarts."""
    ended = [t for t in s.trials if t.state.is_finished() and s.owned(t) and not never_ran(t)]
    if not ended:
        return
    last = max(ended, key=lambda t: (t.datetime_complete or t.datetime_start or datetime.min, t.number))
    reason, _, message = (last.user_attrs.get(FAIL_REASON_ATTR) or "").partition(": ")
    if last.state == TrialState.FAIL and reason in STARTUP_REASONS:
        blocked(plan, Failure(reason, message), f"trial {last.number}")


def _note_stuck(s: Snapshot, plan: Plan) -> None:
    """Trials whose pod is stuck on a node that stopped answering: the ``TrialsStuck``
    condition names the nodes and the trials (and says what frees them), an event per
    trial, and a mark on the trial so that its disruption reads NodeLost."""
    stuck: dict[str, list[int]] = {}
    for trial in s.trials:
        if not s.owned(trial) or trial.state != TrialState.RUNNING:
            continue
        current, job = current_job(s.name, trial, s.trial_jobs)
        node = stuck_node(s.pods.get(current, []), s.now) if job is not None and job_outcome(job) is None else None
        if node is None:
            continue
        stuck.setdefault(node, []).append(trial.number)
        if trial.user_attrs.get(NODE_LOST_ATTR) != [current, node]:
            plan.mark_lost.append((trial, current, node))
        plan.event("Warning", st.TRIALS_STUCK, f"trial {trial.number}'s pod (Job {current}) is stuck on node "
                   f"{node}, which stopped answering; {_FREE_NODE.format(node=node)}", once=f"stuck:{current}:{node}")
    if stuck:
        where = "; ".join(f"trials {', '.join(map(str, numbers))} on node {node}" for node, numbers in sorted(stuck.items()))
        plan.conditions.append(st.Condition(st.TRIALS_STUCK, True, "NodeNotReady", f"{where}: "
                                            + _FREE_NODE.format(node=" / ".join(sorted(stuck)))))
    elif any(c.get("type") == st.TRIALS_STUCK for c in s.old_status.get("conditions") or []):
        plan.conditions.append(st.Condition(st.TRIALS_STUCK, False, "NoneStuck", ""))


def _note_evicted(s: Snapshot, plan: Plan) -> int:
    """Trials whose Job Kueue evicted since the last look: an event naming Kueue's reason and
    a mark on the trial (the count of its Job's evictions). The trial stays RUNNING in the
    same Job, which Kueue admits again; nothing counts against ``retries``. Returns the
    evictions not yet marked on their trials."""
    new = 0
    for trial in s.trials:
        if not s.owned(trial) or trial.state != TrialState.RUNNING:
            continue
        current, job = current_job(s.name, trial, s.trial_jobs)
        said = s.kueue.get(current)
        known = kueue_evictions(trial).get(current, 0)
        if job is None or said is None or said.evictions <= known:
            continue
        new += said.evictions - known
        plan.mark_evicted.append((trial, current, said.evictions))
        plan.event("Warning", "TrialPreempted", f"trial {trial.number} was evicted by Kueue ({said.evicted}); it "
                   f"resumes from its last checkpoint in Job {current} once Kueue admits it again",
                   once=f"evicted:{current}:{said.evictions}")
    return new


# What frees a pod stuck on a lost node: only these end it while the node is away.
_FREE_NODE = ("it resumes (NodeLost) once the pod is gone: delete the Node (kubectl delete node {node}), "
              "taint it node.kubernetes.io/out-of-service=nodeshutdown:NoExecute, or force-delete the pod")


def blocked(plan: Plan, failure: Failure, what: str) -> None:
    """Trials cannot start: say why in the ``TrialsBlocked`` condition (once per pass)."""
    if _blocked(plan) is None:
        plan.conditions.append(st.Condition(st.TRIALS_BLOCKED, True, failure.reason,
                                            f"{what} could not start: {failure}"))


def _blocked(plan: Plan) -> st.Condition | None:
    return next((c for c in plan.conditions if c.type == st.TRIALS_BLOCKED), None)


def old_condition(s: Snapshot, type_: str, reasons: Collection[str]) -> Mapping[str, Any] | None:
    """The last status's condition ``type_``, if this generation set it with one of ``reasons``."""
    conditions: list[Mapping[str, Any]] = s.old_status.get("conditions") or []
    for condition in conditions:
        if (condition.get("type") == type_ and condition.get("reason") in reasons
                and condition.get("observedGeneration") == s.generation):
            return condition
    return None


def _message(s: Snapshot, plan: Plan, books: Ledger, stand: Standing, running: int, waiting: Waiting) -> str:
    best = ""
    if stand.best is not None and stand.several:
        best = f"; picked trial {stand.best.number}: {stand.values_text(stand.best)} (front of {len(stand.front)})"
    elif stand.best is not None:
        best = f"; best {stand.values_text(stand.best)} (trial {stand.best.number})"
    found = _blocked(plan)
    why = f"; {found.message}" if found is not None else ""
    stuck = next((c for c in plan.conditions if c.type == st.TRIALS_STUCK and c.status), None)
    if stuck is not None:
        why += f"; stuck: {stuck.message.partition(':')[0]}"
    held = "".join(f", {n} {what}" for n, what in ((len(waiting.queued), "queued"), (len(waiting.pending), "pending"))
                   if n)
    return f"{running} running{held}, {books.finished} finished{best}{why}"


# The end of a study -------------------------------------------------------------------

def _trials_done(s: Snapshot, books: Ledger, stand: Standing, running: int | None = None) -> st.Condition:
    """``TrialsDone``: True once nothing runs (``running`` None) and the ledger is done or a
    trial reached ``search.goal``; False while trials remain (or still run after the goal)."""
    finished = f"{books.finished} of {s.n_trials} trials finished"
    if stand.goal is not None:
        reached = f"trial {stand.goal.number} reached search.goal ({stand.values_text(stand.goal)})"
        if running is None:
            return st.Condition(st.TRIALS_DONE, True, "GoalReached", f"{reached}; {finished}")
        return st.Condition(st.TRIALS_DONE, False, "GoalReached",
                            f"{reached}; no new trial starts, {running} running finish; {finished}")
    if running is None:
        return st.Condition(st.TRIALS_DONE, True, "AllTrialsFinished", finished)
    return st.Condition(st.TRIALS_DONE, False, "TrialsRemaining", finished)


def _no_best(books: Ledger) -> st.Condition:
    """Why a finished study has no best trial."""
    if books.complete:  # under search.constraints: none of them is feasible
        return st.Condition(st.FAILED_CONDITION, True, "NoFeasibleTrial",
                            f"none of the {books.complete} complete trials meets search.constraints")
    return st.Condition(st.FAILED_CONDITION, True, "NoCompletedTrial", "every trial was pruned or failed")


def _finish(s: Snapshot, plan: Plan, books: Ledger, stand: Standing) -> tuple[str, dict[str, Any] | None]:
    """The phase and, once the plots are done (or not kept), ``status.bestConfig``.

    The visualisation Job writes best_config.yaml, trials.csv and every plot into
    ``/results/<name>``; without ``spec.output`` only the ConfigMap is written. A failed
    visualisation, or one whose pod never starts, does not fail the study: the
    condition ``Visualised`` says so and why.
    """
    output = s.spec.output
    if output is not None and output.persistent_volume_claim:
        phase = _visualise(s, plan, books.finished)
        if phase is not None:
            return phase, None
    else:
        plan.conditions.append(st.Condition(
            st.VISUALISED, False, "NoOutputVolume", "spec.output.persistentVolumeClaim is not set: no plots are kept"))
    best = stand.best
    assert best is not None
    plan.best_config = best
    plan.front = stand.ranked_front()
    result: dict[str, Any] = {"configMap": names.best_config_map_name(s.name), "key": names.BEST_CONFIG_KEY,
                              "trial": best.number}
    if output is not None and output.persistent_volume_claim:
        result["path"] = f"{names.RESULTS_DIR}/{s.name}/{names.BEST_CONFIG_KEY}"
        if stand.several:
            result["paretoPath"] = f"{names.RESULTS_DIR}/{s.name}/pareto"
    return st.SUCCEEDED, result


def _visualise(s: Snapshot, plan: Plan, finished: int) -> str | None:
    """Visualising while the Job runs; None once it ended (either way)."""
    name = names.visualise_job_name(s.name)
    job = s.visualise
    if job is not None:
        annotations = job["metadata"].get("annotations") or {}
        if annotations.get(names.ANNOTATION_FINISHED) != str(finished):
            # Made for fewer trials (n_trials was raised since): replace it. Its
            # deletion event brings the next pass, which creates the new one.
            plan.delete_jobs.append(name)
            plan.conditions.append(st.Condition(st.VISUALISED, False, "Outdated", "replacing the plots"))
            return st.VISUALISING
    if job is None:
        gave_up = old_condition(s, st.VISUALISED, STARTUP_REASONS)
        if gave_up is not None:  # its pod never started; not made again for this generation
            plan.conditions.append(st.Condition(st.VISUALISED, False, gave_up["reason"], gave_up.get("message", "")))
            return None
        plan.visualise = finished
        plan.event("Normal", "VisualisationStarted",
                   f"all {finished} trials finished; Job {name} writes the plots and "
                   f"best_config.yaml to /results/{s.name}")
        plan.conditions.append(st.Condition(st.VISUALISED, False, "Running", f"Job {name} is running"))
        return st.VISUALISING
    outcome = job_outcome(job)
    if outcome is None:
        stuck = startup_failure(job, s.pods.get(name, []), s.spec.trials.startup_timeout_seconds, s.now)
        if stuck is not None:
            message = f"Job {name} could not start: {stuck}"
            plan.delete_jobs.append(name)
            plan.conditions.append(st.Condition(st.VISUALISED, False, stuck.reason, message))
            plan.event("Warning", "VisualisationFailed", message)
            return None
        plan.conditions.append(st.Condition(st.VISUALISED, False, "Running", f"Job {name} is running"))
        return st.VISUALISING
    if outcome == "failed":
        message = f"Job {name} failed; see kubectl logs job/{name}"
        plan.conditions.append(st.Condition(st.VISUALISED, False, "VisualisationFailed", message))
        plan.event("Warning", "VisualisationFailed", message, once=f"visualise:{job['metadata'].get('uid')}")
    else:
        plan.conditions.append(st.Condition(
            st.VISUALISED, True, "Visualised", f"plots and best_config.yaml in /results/{s.name}"))
    return None
