"""Act: make the calls a :class:`~kubetune_operator.decide.Plan` asks for.

Storage first, then the API: trials are failed or resumed; missing Jobs are
made; trials asked ahead get their Jobs, then new trials are asked for and their Jobs
created; Jobs that never started are deleted; the visualisation Job and the
best-config ConfigMap are written; the next trial is asked ahead (after the launches:
off their way); then the status (only if it changed) and the events. A Job the API
server refuses raises :class:`JobRejected`; a Job-count quota and an earlier StudyJob's leftover Job raise
``kopf.TemporaryError`` (the trial stays unmarked and gets its Job on a later pass).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import kopf
import optuna
from optuna.trial import FrozenTrial

from kubetune.config import Config
from kubetune_operator import names
from kubetune_operator import status as st
from kubetune_operator.builders import best_config_map, config_map, trial_job, visualise_job
from kubetune_operator.decide import Event, Plan
from kubetune_operator.failures import Failure
from kubetune_operator.kube import ApiError, owned_by
from kubetune_operator.observe import Snapshot
from kubetune_operator.runtime import Runtime, StudyJobState
from kubetune_operator.spec import StudyJobSpec
from kubetune_operator.studies import StudyHandle


class JobRejected(Exception):
    """The API server refused a trial Job (invalid spec, admission, RBAC)."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(str(failure))
        self.failure = failure


def format_params(params: Mapping[str, Any]) -> str:
    parts = [f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()]
    return ", ".join(parts) or "no params"


@dataclass
class StudyJobRef:
    """Who the pass acts for: the StudyJob's coordinates and its owner reference."""

    rt: Runtime
    namespace: str
    name: str
    key: str
    uid: str | None
    generation: int | None
    owner: dict[str, Any]
    state: StudyJobState  # what this process holds for the StudyJob

    def post(self, event: Event) -> None:
        if event.once is None or self.state.warn_once(event.once):
            self.rt.post_event(self.owner, event.type, event.reason, event.message)

    def remember(self, announced: Iterable[int]) -> None:
        """Trials whose end had its event (see Memory)."""
        self.state.announced.update(announced)
        self.state.trials_seen = True


def settle(ref: StudyJobRef, s: Snapshot, plan: Plan, handle: StudyHandle) -> None:
    """Fail and resume the trials the plan names; make the Jobs it finds missing."""
    for fail in plan.fail:
        if fail.delete_job is not None:
            ref.rt.kube.delete_job(ref.namespace, fail.delete_job)
        if handle.tell_fail(fail.trial, fail.failure):  # False: the pod told it meanwhile
            ref.remember({fail.trial.number})
            ref.post(fail.event)
    if plan.start or plan.resume:
        _check_jobs(ref, s)
    for item in plan.start:
        start_job(ref, s, handle, item.trial, item.resume)
    for resume in plan.resume:
        if handle.mark_preempted(resume.trial, resume.resume):
            start_job(ref, s, handle, resume.trial, resume.resume, deadline=resume.deadline)
            ref.post(resume.event)
    ref.remember(plan.announced)


def steer(ref: StudyJobRef, s: Snapshot, plan: Plan, handle: StudyHandle, config: Config) -> None:
    """Delete, launch, record the pods seen ended, visualise, write the best config and ask ahead as
    the plan says; then the status."""
    for release in plan.release:
        handle.release_ahead(release.trial, release.failure, requeue=release.requeue)
    if plan.refused is not None:
        raise JobRejected(plan.refused)
    for stuck, job, node in plan.mark_lost:
        handle.mark_node_lost(stuck, job, node)
    for evicted, job, count in plan.mark_evicted:
        handle.mark_evicted(evicted, job, count)
    for name in plan.delete_jobs:
        ref.rt.kube.delete_job(ref.namespace, name)
    for unmarked, job, launched in plan.mark_jobs:
        handle.mark_job(unmarked, job)
        if launched is not None:
            handle.mark_launched(unmarked, launched)
    if plan.launch or plan.launch_ahead:
        _check_jobs(ref, s)
    for ahead in plan.launch_ahead:
        start_job(ref, s, handle, ahead, 0)
        handle.mark_launched(ahead, time.time())
    launched = 0
    for index in range(plan.launch):
        trial = handle.ask(waiting=index < plan.waiting)
        if trial is None:
            break  # the grid is covered
        start_job(ref, s, handle, trial, 0)
        launched += 1
    if plan.usage:  # the pods seen ended: after the launches, off their way
        handle.usage.write(plan.usage)
    if plan.visualise is not None:
        options = ref.rt.options
        body = visualise_job(ref.owner, s.spec, s.study, plan.visualise, options.cpu_image or options.trial_image,
                             single_node=s.results.single_node)
        ref.rt.kube.create(body, ref.namespace)
    if plan.best_config is not None:
        write_best_config(ref, config, plan.best_config, plan.front, s.study)
    ref.remember(plan.announced)
    status = dict(plan.status)
    if launched < plan.launch:  # a grid point another worker took meanwhile
        status["trials"] = {**status["trials"], "running": status["trials"]["running"] - plan.launch + launched}
    for event in plan.events:
        ref.post(event)
    if plan.ask_ahead:  # after the launches, off their way; before the status, as any ask
        handle.ask(waiting=False, ahead=True)  # None: the grid is covered
    write_status(ref, s.old_status, plan.phase, plan.message, plan.conditions, status)


def start_job(ref: StudyJobRef, s: Snapshot, handle: StudyHandle, trial: optuna.Trial | FrozenTrial,
              resume: int, deadline: int | None = None) -> None:
    """Create the trial's Job (``-r<resume>`` for a resumed trial) and mark the trial with it."""
    job_name = names.trial_job_name(ref.name, trial.number, resume)
    job = trial_job(ref.owner, s.spec, s.study, trial.number, ref.rt.options.trial_image, resume,
                    single_node=s.results.single_node, deadline=deadline)
    try:
        created = ref.rt.kube.create(job, ref.namespace)
    except ApiError as exc:
        if _over_quota(exc):
            # A quota on Job count: room comes back as other Jobs go.
            raise kopf.TemporaryError(f"Job {job_name}: {exc}", delay=10) from None
        if not _refused(exc):
            raise
        failure = Failure("JobRejected", f"the API server refused Job {job_name}: {exc}")
        handle.tell_fail(trial, failure)
        raise JobRejected(failure) from None
    if not created:
        existing = ref.rt.kube.get("Job", ref.namespace, job_name)
        if existing is None:  # it was there a moment ago and is gone: make it on the next try
            raise kopf.TemporaryError(f"Job {job_name} was being deleted; creating it again", delay=1)
        if ref.uid and not owned_by(existing, ref.uid):
            # A StudyJob of this name was deleted and re-applied: its Job is still
            # being garbage-collected.
            raise kopf.TemporaryError(f"Job {job_name} of an earlier StudyJob `{ref.name}` "
                                      "is still being deleted", delay=2)
    # Only now: a RUNNING trial without this mark and without its Job was asked (or
    # resumed) by an operator that stopped before creating the Job, and gets it; one with
    # the mark but no Job lost it.
    handle.mark_job(trial, job_name)
    if resume:
        return  # the TrialPreempted event told it
    ref.post(Event("Normal", "TrialStarted",
                   f"trial {trial.number} started as Job {job_name}: {format_params(trial.params)}"))


def check_trial_jobs(ref: StudyJobRef, spec: StudyJobSpec, study: str, *, single_node: bool) -> None:
    """JobRejected if the API server would refuse this spec's trial Jobs, asked once per Job
    body with a dry run of trial 0's Job: before the study is made, and before trials are
    given Jobs after a spec edit, so a field only the Job API checks (tolerations, node
    selectors, names, admission policies) fails no trial."""
    job = trial_job(ref.owner, spec, study, 0, ref.rt.options.trial_image, single_node=single_node)
    text = json.dumps(job, sort_keys=True)
    if ref.state.jobs_checked == text:
        return
    try:
        ref.rt.kube.create(job, ref.namespace, dry_run=True)  # False (it exists): it was taken before
    except ApiError as exc:
        if _no_dry_run(exc):  # a webhook with side effects: only a real create can tell
            ref.state.jobs_checked = text
            return
        if _refused(exc):
            raise JobRejected(Failure(
                "JobRejected", f"the API server refuses this spec's trial Jobs (a dry run of Job "
                f"{job['metadata']['name']}): {exc}")) from None
        if not _over_quota(exc):
            raise
    ref.state.jobs_checked = text


def _check_jobs(ref: StudyJobRef, s: Snapshot) -> None:
    """Before a trial is asked or marked for a Job: a spec edited mid-study into one the
    API server refuses fails the StudyJob, not the trial (a dry run per new Job body)."""
    check_trial_jobs(ref, s.spec, s.study, single_node=s.results.single_node)


def _no_dry_run(exc: ApiError) -> bool:
    """An admission webhook that may have side effects refuses every dry run (HTTP 400)."""
    return exc.status == 400 and "does not support dry run" in str(exc)


def _over_quota(exc: ApiError) -> bool:
    return exc.status == 403 and "exceeded quota" in str(exc)


def _refused(exc: ApiError) -> bool:
    """The answer to the Job itself (400: a body it cannot decode; 403: admission, RBAC; 422: invalid)."""
    return not exc.transient and exc.status in (400, 403, 422) and not _over_quota(exc)


def ensure_config_map(ref: StudyJobRef, config: Config, text: str) -> None:
    """``<name>-config`` holds the config every pod mounts; rewritten when it changes."""
    if ref.state.config_written == text:
        return
    body = config_map(ref.owner, config)
    _create_or_update(ref, body, {"data": body["data"]})
    ref.state.config_written = text


def write_best_config(ref: StudyJobRef, config: Config, best: FrozenTrial, front: Sequence[FrozenTrial] = (),
                      study: str = "") -> None:
    """Write ``<name>-best-config`` once per best trial (and Pareto front, best first)."""
    text, texts = _best_config_texts(config, best, front, study)
    body = best_config_map(ref.owner, text, best.number, best.values[0], texts)
    name = body["metadata"]["name"]
    if ref.state.best_written == body["data"]:
        return
    _create_or_update(ref, body, {"data": body["data"], "metadata": {"annotations": body["metadata"]["annotations"]}})
    ref.state.best_written = body["data"]
    ref.post(Event("Normal", "BestConfig",
                   f"best config (trial {best.number}) in ConfigMap {name}, key {names.BEST_CONFIG_KEY}"))
    kept = len(body["data"]) - 1
    if kept < len(texts):
        ref.post(Event("Warning", "ParetoConfigsCapped",
                       f"ConfigMap {name} holds the configs of {kept} of the {len(texts)} Pareto-optimal trials "
                       "(best on search.pick first) within its size limit; pareto/ on the results volume has all"))
    elif texts:
        ref.post(Event("Normal", "ParetoConfigs",
                       f"the configs of the {kept} Pareto-optimal trials in ConfigMap {name}, keys "
                       "pareto-trial-<trial>.yaml"))


def _best_config_texts(config: Config, best: FrozenTrial, front: Sequence[FrozenTrial],
                       study: str) -> tuple[Mapping[str, Any] | str, list[tuple[int, str]]]:
    """The best config (the picked trial's YAML, as ml-search writes it, under
    ``search.objectives``) and the front's configs."""
    from kubetune.search.results import best_config_dict

    search = config.search
    if search is None or search.objectives is None:
        return best_config_dict(config, dict(best.params)), []
    from kubetune.search.objectives import metric_names
    from kubetune.search.pareto import picked_what, trial_config_text

    metrics = metric_names(search)
    picked = trial_config_text(config, study, metrics, best, picked_what(metrics, search.pick))
    return picked, [(t.number, trial_config_text(config, study, metrics, t, "Pareto-optimal")) for t in front]


def _create_or_update(ref: StudyJobRef, body: dict[str, Any], patch: dict[str, Any]) -> None:
    """Create the ConfigMap ``body``; if it exists with other data, apply ``patch`` to it
    (keys the body lacks are removed)."""
    kube, name = ref.rt.kube, body["metadata"]["name"]
    if not kube.create(body, ref.namespace):
        existing = (kube.get("ConfigMap", ref.namespace, name) or {}).get("data") or {}
        if existing != body["data"]:
            dropped = {key: None for key in existing if key not in body["data"]}
            kube.patch("ConfigMap", ref.namespace, name, {**patch, "data": {**dropped, **patch["data"]}})


def write_status(ref: StudyJobRef, old: Mapping[str, Any], phase: str, message: str,
                 conditions: list[st.Condition], fields: Mapping[str, Any]) -> None:
    """Patch the status if it changed; an event when the phase changes."""
    status = {k: v for k, v in fields.items() if v is not None}
    status["phase"] = phase
    status["message"] = message
    status["conditions"] = st.conditions_list(conditions, old.get("conditions") or [], ref.generation)
    if ref.generation is not None:
        status["observedGeneration"] = ref.generation
    if phase != old.get("phase"):
        failed = [c for c in conditions if c.type == st.FAILED_CONDITION and c.status]
        detail = failed[0].message if failed else message
        ref.post(Event("Warning" if phase == st.FAILED else "Normal", phase, f"{phase}: {detail}"))
    if st.same_status(old, status):
        return
    ref.rt.kube.patch_studyjob_status(ref.namespace, ref.name, st.merge_patch(old, status))
    ref.state.last_status = status
