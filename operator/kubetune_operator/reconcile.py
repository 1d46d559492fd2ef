"""One reconcile pass over a StudyJob: observe, decide, act.

A pass validates the spec (:func:`_valid_spec`), checks what it names in the cluster
(:func:`_check_claims_and_jobs`), opens the study (:func:`_open_study`), then takes one
:class:`~kubetune_operator.observe.Snapshot` (trials, Jobs, the pods that matter),
:func:`~kubetune_operator.decide.decide` turns it into a plan without any I/O, and
:mod:`~kubetune_operator.act` makes the calls. When the plan settles trials (fails or
resumes them), the pass observes and decides again (:func:`_settle`), so the phase,
the launches and the status are always decided on settled trials. Nothing is
remembered between passes that the API and the storage do not hold but what is only
news once (events), so a restarted operator picks up exactly where the old one stopped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from kubetune.config import Config
from kubetune.search.checks import cap_to_grid
from kubetune_operator import act, names
from kubetune_operator import status as st
from kubetune_operator.act import JobRejected, StudyJobRef
from kubetune_operator.decide import Event, Plan, decide
from kubetune_operator.failures import Failure, job_outcome
from kubetune_operator.observe import (
    Memory,
    Snapshot,
    jobs_to_read,
    latest_trial_jobs,
    read_pods,
    read_workloads,
)
from kubetune_operator.runtime import (
    Runtime,
    StorageProblem,
    StudyJobState,
    describe_storage,
    redact,
)
from kubetune_operator.spec import SpecError, StudyJobSpec, parse_spec, read_config
from kubetune_operator.studies import StudyHandle, StudyLost
from kubetune_operator.usage import ended_unaccounted, unaccounted_jobs
from kubetune_operator.volumes import ResultsVolume, check_data_claim, results_volume

logger = logging.getLogger("kubetune_operator")

STUDY_DELETED = "StudyDeleted"  # the reason when the study went from under the StudyJob
MAX_ROUNDS = 3  # observe-decide-act rounds in one pass (settling, then steering)

__all__ = ["JobRejected", "Outcome", "reconcile"]


@dataclass(frozen=True)
class Outcome:
    retry_after: float | None = None  # come back after this many seconds (storage, Secret, pods)


def reconcile(rt: Runtime, body: Mapping[str, Any], ended_job: str | None = None) -> Outcome:
    """One pass over the StudyJob ``body``; serialised per StudyJob. ``ended_job``: a trial
    Job whose end brought the pass, whose pods are read from the start, beside the trials."""
    meta = body.get("metadata") or {}
    if meta.get("deletionTimestamp"):
        return Outcome()  # the delete handler owns the rest
    with rt.lock(names.owner_key(meta["namespace"], meta["name"])) as state:
        return _pass(_ref(rt, body, state), body, ended_job)


def _ref(rt: Runtime, body: Mapping[str, Any], state: StudyJobState) -> StudyJobRef:
    meta = body["metadata"]
    owner = {
        "apiVersion": body.get("apiVersion", names.API_VERSION),
        "kind": body.get("kind", names.KIND),
        "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "labels") if k in meta},
    }
    return StudyJobRef(rt, meta["namespace"], meta["name"], names.owner_key(meta["namespace"], meta["name"]),
                       meta.get("uid"), meta.get("generation"), owner, state)


@dataclass(frozen=True)
class _Study:
    """What a pass sets up before it looks at the trials; the same for all its rounds."""

    spec: StudyJobSpec
    config: Config
    n_trials: int  # search.n_trials, capped to the grid's size
    handle: StudyHandle
    results: ResultsVolume
    old: Mapping[str, Any]  # the last status


def _pass(ref: StudyJobRef, body: Mapping[str, Any], ended_job: str | None = None) -> Outcome:
    """Check, open the study, settle the trials, steer; a pass stopped short says why in the status."""
    old = dict(ref.state.last_status or body.get("status") or {})
    conditions: list[st.Condition] = []
    try:
        spec, config, config_text = _valid_spec(ref, body.get("spec") or {})
    except SpecError as exc:
        return _invalid(ref, old, conditions, exc)
    conditions.append(st.Condition(st.SPEC_VALID, True, "Valid", "the spec and its config are valid"))
    url = ""
    try:
        # Before a StudyJob's first trial: what would only fail once trial pods exist.
        preflight = not _started(old, _study_name(config))
        results = _check_claims_and_jobs(ref, spec, config, preflight, conditions)
        url = ref.rt.storage_url(ref.namespace, spec)
        handle, n_trials = _open_study(ref, config, url, preflight, conditions)
        act.ensure_config_map(ref, config, config_text)
        study = _Study(spec, config, n_trials, handle, results, old)
        # Before each batch, the StudyJob as it is now: the body this pass began with may be
        # older than a suspend or a delete, whose own pass then follows. For the first batch
        # it is read while the pass observes, off the way from a Job's end to the next Job.
        current: Future[dict[str, Any] | None] | None = ref.rt.pool.submit(
            ref.rt.kube.get_studyjob, ref.namespace, ref.name)
        snapshot, plan = _settle(ref, study, ended_job)
        while True:
            if (plan.launch or plan.launch_ahead or plan.ask_ahead) and _interrupted(ref, current):
                return Outcome()
            current = None
            plan.conditions[:0] = conditions
            act.steer(ref, snapshot, plan, handle, config)
            if not plan.more:
                return Outcome(retry_after=plan.retry_after)
            study = replace(study, old=ref.state.last_status or study.old)
            snapshot = _observe(ref, study, Memory(False, frozenset(ref.state.announced)))
            plan = decide(snapshot, settle_trials=False)
    except (JobRejected, StudyLost, SpecError, StorageProblem, SQLAlchemyError) as exc:
        return _setback(ref, old, conditions, exc, url)


def _valid_spec(ref: StudyJobRef, raw: Mapping[str, Any]) -> tuple[StudyJobSpec, Config, str]:
    """The parsed spec, its validated config and the config's YAML; SpecError if invalid."""
    spec = parse_spec(raw, ref.name, ref.rt.options.defaults)
    resolved, text = ref.state.resolve(spec, read_config(ref.rt.kube, ref.namespace, spec))
    if resolved.dropped_storage:
        ref.post(Event("Warning", "StorageIgnored", "search.storage is ignored in a StudyJob: the storage URL "
                       "comes from spec.storage.secretRef", once="storage-ignored"))
    return spec, resolved.config, text


def _study_name(config: Config) -> str:
    assert config.search is not None  # resolve_config requires a search section
    return config.search.study_name


def _check_claims_and_jobs(ref: StudyJobRef, spec: StudyJobSpec, config: Config, preflight: bool,
                           conditions: list[st.Condition]) -> ResultsVolume:
    """The results claim (its condition, a warning for a single-node one); with ``preflight``,
    also the data claim and a dry run of the trial Jobs."""
    if preflight:
        check_data_claim(ref.rt.kube, ref.namespace, spec)
    results = results_volume(ref.rt.kube, ref.namespace, spec)
    found = results.condition()
    if found is not None:
        conditions.append(found)
        if found.reason == "SingleNode":
            ref.post(Event("Warning", "SingleNodeResults", found.message, once=f"single-node:{results.claim}"))
    if preflight:
        act.check_trial_jobs(ref, spec, _study_name(config), single_node=results.single_node)
    return results


def _open_study(ref: StudyJobRef, config: Config, url: str, preflight: bool,
                conditions: list[st.Condition]) -> tuple[StudyHandle, int]:
    """The study's handle and its number of trials (``n_trials`` capped to a grid), kept in
    the storage for ml-search; the ``StorageReady`` condition."""
    search = config.search
    assert search is not None
    handle = ref.rt.study(ref.state, ref.key, url, config, started=lambda: not preflight or _has_trial_jobs(ref))
    n_trials = cap_to_grid(search, search.n_trials)
    if n_trials < search.n_trials:
        ref.post(Event("Normal", "GridSize", f"GridSampler: the grid has {n_trials} points, so the study runs "
                       f"{n_trials} trials, not search.n_trials={search.n_trials}", once=f"grid:{n_trials}"))
    handle.sync_target(n_trials)
    conditions.append(st.Condition(
        st.STORAGE_READY, True, "Connected", f"study `{handle.name}` in {describe_storage(url)}"))
    return handle, n_trials


def _settle(ref: StudyJobRef, study: _Study, ended_job: str | None = None) -> tuple[Snapshot, Plan]:
    """Observe, decide and act until the plan settles no more trials (at most MAX_ROUNDS):
    the snapshot and the plan that steering then follows."""
    first_pass = not ref.state.trials_seen
    for round_ in range(MAX_ROUNDS):
        snapshot = _observe(ref, study, Memory(first_pass, frozenset(ref.state.announced)),
                            ended_job if round_ == 0 else None)
        plan = decide(snapshot, settle_trials=round_ < MAX_ROUNDS - 1)
        act.settle(ref, snapshot, plan, study.handle)
        if not plan.settles:
            break
    return snapshot, plan


def _observe(ref: StudyJobRef, study: _Study, memory: Memory, ended_job: str | None = None) -> Snapshot:
    """One snapshot: the trials, the StudyJob's Jobs and the pods of those worth a look
    (``ended_job``'s read beside the Jobs, not after them: its usage is to be counted)."""
    # The Jobs (API) and the trials (storage) are read at the same time. Their order
    # does not matter: a trial is only failed while the storage still has it RUNNING
    # (Optuna refuses to change a finished trial), so a pod that told its result just
    # before its Job ended keeps that result.
    rt, spec, handle = ref.rt, study.spec, study.handle
    records = handle.usage.records()
    early = rt.pool.submit(read_pods, rt.kube, ref.namespace, ref.name, [ended_job]) if ended_job else None

    def jobs_and_ended_pods() -> tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]], bool]:
        # The pods of the Jobs that ended unaccounted are read while the trials are.
        jobs = rt.kube.list_jobs(ref.namespace, ref.name, ref.uid)
        ended = ended_unaccounted(latest_trial_jobs(jobs), records)
        return jobs, read_pods(rt.kube, ref.namespace, ref.name, [j for j in ended if j != ended_job]), \
            ended_job in ended

    listing = rt.pool.submit(jobs_and_ended_pods)
    trials = handle.trials()
    jobs, pods, counts_ended_job = listing.result()
    if early is not None and counts_ended_job:
        pods.update(early.result())
    trial_jobs = latest_trial_jobs(jobs)
    memory = replace(memory, was_ready=_note_ready(ref.state, trial_jobs))
    visualise = next((j for j in jobs if j["metadata"]["name"] == names.visualise_job_name(ref.name)), None)
    now = time.time()
    wanted = jobs_to_read(ref.name, trials, ref.key, trial_jobs, visualise, spec.trials.startup_timeout_seconds, now,
                          memory.was_ready)
    wanted += [job for job in unaccounted_jobs(trials, ref.key, trial_jobs, records) if job not in wanted]
    pods.update(read_pods(rt.kube, ref.namespace, ref.name, [job for job in wanted if job not in pods]))
    return Snapshot(
        namespace=ref.namespace, name=ref.name, key=ref.key, generation=ref.generation, spec=spec,
        config=study.config, n_trials=study.n_trials, study=handle.name, maximize=handle.maximize, grid=handle.grid,
        trials=trials, trial_jobs=trial_jobs, visualise=visualise, pods=pods,
        results=study.results, old_status=study.old, memory=memory, now=now, max_jobs=rt.options.max_jobs,
        kueue=read_workloads(rt.kube, ref.namespace, jobs), usage=records)


def _note_ready(state: StudyJobState, trial_jobs: Mapping[int, Mapping[str, Any]]) -> frozenset[str]:
    """The trial Jobs seen ready, now or before (while they exist)."""
    present = {job["metadata"]["name"]: job for job in trial_jobs.values()}
    state.ready_jobs = {name for name in state.ready_jobs if name in present} | {
        name for name, job in present.items() if (job.get("status") or {}).get("ready")}
    return frozenset(state.ready_jobs)


def _interrupted(ref: StudyJobRef, read: Future[dict[str, Any] | None] | None = None) -> bool:
    """The StudyJob (as ``read``, else read now) changed since the pass began (suspended,
    edited, deleted, replaced): stop launching and leave the rest to the pass its change brings."""
    current = read.result() if read is not None else ref.rt.kube.get_studyjob(ref.namespace, ref.name)
    if current is None:
        return True
    meta = current.get("metadata") or {}
    return bool(meta.get("deletionTimestamp") or meta.get("uid") != ref.uid
                or meta.get("generation") != ref.generation or (current.get("spec") or {}).get("suspend"))


def _has_trial_jobs(ref: StudyJobRef) -> bool:
    """Trial Jobs of this very StudyJob exist (its status may not have been written yet)."""
    return any(names.LABEL_TRIAL in (job["metadata"].get("labels") or {})
               for job in ref.rt.kube.list_jobs(ref.namespace, ref.name, ref.uid))


def _started(old: Mapping[str, Any], study_name: str) -> bool:
    """The last status counted trials of this study (or found it deleted): it must be in the storage."""
    if old.get("study") != study_name:
        return False
    counts = old.get("trials") or {}
    return any(counts.get(k) for k in ("running", "waiting", "complete", "pruned", "failed")) or any(
        c.get("reason") == STUDY_DELETED for c in old.get("conditions") or [])


# Passes that learn nothing about the trials --------------------------------------------

def _setback(ref: StudyJobRef, old: Mapping[str, Any], conditions: list[st.Condition], exc: Exception,
             url: str) -> Outcome:
    """The status of a pass that stopped short: the ``conditions`` it found, and why it stopped."""
    if isinstance(exc, JobRejected):
        return _rejected(ref, old, conditions, exc.failure)
    if isinstance(exc, StudyLost):
        return _lost(ref, old, conditions, exc)
    if isinstance(exc, SpecError):
        return _invalid(ref, old, conditions, exc)
    if isinstance(exc, StorageProblem):
        return _unavailable(ref, old, conditions, exc.reason, str(exc))
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__  # SQLAlchemyError
    return _unavailable(ref, old, conditions, "StorageUnavailable", redact(text, url)[:300])


def _kept_fields(old: Mapping[str, Any]) -> dict[str, Any]:
    """The last status minus what a pass always rewrites."""
    return {k: v for k, v in old.items() if k not in ("phase", "message", "conditions")}


def _invalid(ref: StudyJobRef, old: Mapping[str, Any], conditions: list[st.Condition], exc: SpecError) -> Outcome:
    message = str(exc)
    reason = exc.reason or ("ConfigMapNotFound" if exc.temporary else "InvalidSpec")
    if exc.condition:  # the spec is valid; what it names is missing (the results claim)
        conditions = [c for c in conditions if c.type == st.SPEC_VALID]
        conditions.append(st.Condition(exc.condition, False, reason, message))
    else:
        conditions = [st.Condition(st.SPEC_VALID, False, reason, message)]
    if not exc.temporary:
        conditions.append(st.Condition(st.FAILED_CONDITION, True, "InvalidSpec", message))
    ref.post(Event("Warning", reason, message, once=f"invalid:{message}"))
    phase = st.PENDING if exc.temporary else st.FAILED
    if exc.temporary and _finished(ref, old):
        # A finished StudyJob whose claim or ConfigMap went away afterwards stays finished.
        _keep_finished(ref, old, conditions)
        return Outcome()
    act.write_status(ref, old, phase, message, conditions, _kept_fields(old))
    return Outcome(retry_after=ref.rt.options.retry_seconds if exc.temporary else None)


def _finished(ref: StudyJobRef, old: Mapping[str, Any]) -> bool:
    """The last status ended this very spec (Succeeded or Failed, generation unchanged)."""
    return old.get("phase") in (st.SUCCEEDED, st.FAILED) and old.get("observedGeneration") == ref.generation


def _keep_finished(ref: StudyJobRef, old: Mapping[str, Any], conditions: list[st.Condition]) -> None:
    """Write ``conditions`` over a finished status, keeping its phase, message and other conditions."""
    kept = [c for c in old.get("conditions") or [] if c.get("type") not in {c.type for c in conditions}]
    conditions = conditions + [
        st.Condition(c["type"], c.get("status") == "True", c.get("reason", ""), c.get("message", "")) for c in kept]
    act.write_status(ref, old, old["phase"], old.get("message", ""), conditions, _kept_fields(old))


def _rejected(ref: StudyJobRef, old: Mapping[str, Any], conditions: list[st.Condition], failure: Failure) -> Outcome:
    """The API server refuses this spec's trial Jobs (HTTP 400, 422 or 403): every trial
    would meet the same answer, so the StudyJob fails until its spec changes."""
    conditions = [c for c in conditions if c.type != st.TRIALS_BLOCKED]
    conditions.append(st.Condition(st.TRIALS_BLOCKED, True, failure.reason, f"a trial Job could not start: {failure}"))
    conditions.append(st.Condition(st.FAILED_CONDITION, True, failure.reason, str(failure)))
    ref.post(Event("Warning", st.TRIALS_BLOCKED, str(failure), once=f"rejected:{failure}"))
    act.write_status(ref, old, st.FAILED, f"trial Jobs are refused: {failure}", conditions, _kept_fields(old))
    return Outcome()


def _lost(ref: StudyJobRef, old: Mapping[str, Any], conditions: list[st.Condition], exc: StudyLost) -> Outcome:
    """The study was deleted under the StudyJob: stop its Jobs and fail it (a Succeeded one
    stays Succeeded). Making the study again would start trial numbers over under the
    names of Jobs that exist."""
    ref.state.study = None  # the next pass opens the study again
    stopped = [job["metadata"]["name"] for job in ref.rt.kube.list_jobs(ref.namespace, ref.name, ref.uid)
               if job_outcome(job) is None]
    for name in stopped:
        ref.rt.kube.delete_job(ref.namespace, name)
    message = str(exc) + (f" (stopped Jobs: {', '.join(sorted(stopped))})" if stopped else "")
    conditions = [c for c in conditions if c.type in (st.SPEC_VALID, st.RESULTS_VOLUME)]
    conditions.append(st.Condition(st.STORAGE_READY, False, STUDY_DELETED, str(exc)))
    ref.post(Event("Warning", STUDY_DELETED, message, once="study-deleted"))
    if old.get("phase") == st.SUCCEEDED:
        act.write_status(ref, old, st.SUCCEEDED, old.get("message", ""), conditions, _kept_fields(old))
        return Outcome()
    conditions.append(st.Condition(st.FAILED_CONDITION, True, STUDY_DELETED, str(exc)))
    kept = {**_kept_fields(old), "study": exc.study_name}  # what keeps later passes from making it again
    if "trials" in kept:
        kept["trials"] = {**kept["trials"], "running": 0}
    act.write_status(ref, old, st.FAILED, str(exc), conditions, kept)
    return Outcome()


def _unavailable(ref: StudyJobRef, old: Mapping[str, Any], conditions: list[st.Condition], reason: str,
                 message: str) -> Outcome:
    conditions = [c for c in conditions if c.type == st.SPEC_VALID]
    conditions.append(st.Condition(st.STORAGE_READY, False, reason, message))
    ref.post(Event("Warning", reason, message, once=f"storage:{message}"))
    if _finished(ref, old):
        # Nothing is decided while the storage is away: a finished StudyJob stays finished
        # (a StudyDeleted one too), with StorageReady saying why it cannot be read.
        _keep_finished(ref, old, conditions)
        return Outcome(retry_after=ref.rt.options.retry_seconds)
    phase = old.get("phase") or st.PENDING
    if phase == st.FAILED:  # it failed on an earlier spec: the edited one waits for the storage
        phase = st.PENDING
    act.write_status(ref, old, phase, message, conditions, _kept_fields(old))
    return Outcome(retry_after=ref.rt.options.retry_seconds)
