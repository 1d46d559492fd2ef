"""One reconcile pass over a StudyJob: observe, decide, act.

A pass reads and validates the spec, opens the study and the results claim, then
:mod:`~kubetune_operator.observe` takes one snapshot (trials, Jobs, the pods that
matter), :func:`~kubetune_operator.decide.decide` turns it into a plan without any
I/O, and :mod:`~kubetune_operator.act` makes the calls. When the plan settles trials
(fails, resumes or retries them), the pass observes and decides again, so the phase,
the launches and the status are always decided on settled trials. Nothing is
remembered between passes that the API and the storage do not hold but what is only
news once (events), so a restarted operator picks up exactly where the old one stopped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from kubetune.search.checks import cap_to_grid
from kubetune_operator import act, names
from kubetune_operator import status as st
from kubetune_operator.act import JobRejected, StudyJobRef
from kubetune_operator.decide import Event, decide
from kubetune_operator.failures import Failure, job_outcome
from kubetune_operator.observe import Memory, Snapshot, jobs_to_read, latest_trial_jobs, read_pods
from kubetune_operator.runtime import Runtime, StorageProblem, describe_storage, redact
from kubetune_operator.spec import SpecError, StudyJobSpec, config_from_configmap, parse_spec
from kubetune_operator.studies import StudyLost
from kubetune_operator.volumes import check_data_claim, results_volume

logger = logging.getLogger("kubetune_operator")

STUDY_DELETED = "StudyDeleted"  # the reason when the study went from under the StudyJob
MAX_ROUNDS = 3  # observe-decide-act rounds in one pass (settling, then steering)

__all__ = ["JobRejected", "Outcome", "reconcile"]


@dataclass(frozen=True)
class Outcome:
    retry_after: float | None = None  # come back after this many seconds (storage, Secret, pods)


def reconcile(rt: Runtime, body: Mapping[str, Any]) -> Outcome:
    """One pass over the StudyJob ``body``; serialised per StudyJob."""
    meta = body.get("metadata") or {}
    if meta.get("deletionTimestamp"):
        return Outcome()  # the delete handler owns the rest
    key = names.owner_key(meta["namespace"], meta["name"])
    with rt.lock(key):
        return _pass(rt, body)


def _ref(rt: Runtime, body: Mapping[str, Any]) -> StudyJobRef:
    meta = body["metadata"]
    owner = {
        "apiVersion": body.get("apiVersion", names.API_VERSION),
        "kind": body.get("kind", names.KIND),
        "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "labels") if k in meta},
    }
    return StudyJobRef(rt, meta["namespace"], meta["name"], names.owner_key(meta["namespace"], meta["name"]),
                       meta.get("uid"), meta.get("generation"), owner)


def _pass(rt: Runtime, body: Mapping[str, Any]) -> Outcome:
    ref = _ref(rt, body)
    old = dict(rt.last_status.get(ref.key) or body.get("status") or {})
    conditions: list[st.Condition] = []
    url = ""
    try:
        spec = parse_spec(body.get("spec") or {}, ref.name, rt.options.defaults)
        resolved, config_text = rt.resolve(ref.key, spec, _raw_config(ref, spec))
    except SpecError as exc:
        return _invalid(ref, old, conditions, exc)
    conditions.append(st.Condition(st.SPEC_VALID, True, "Valid", "the spec and its config are valid"))
    if resolved.dropped_storage:
        ref.post(Event("Warning", "StorageIgnored", "search.storage is ignored in a StudyJob: the storage URL "
                       "comes from spec.storage.secretRef", once="storage-ignored"))
    config = resolved.config
    assert config.search is not None
    # Before a StudyJob's first trial: what would only fail once trial pods exist.
    preflight = not _started(old, config.search.study_name)
    try:
        if preflight:
            check_data_claim(rt.kube, ref.namespace, spec)
        results = results_volume(rt.kube, ref.namespace, spec)
        found = results.condition()
        if found is not None:
            conditions.append(found)
            if found.reason == "SingleNode":
                ref.post(Event("Warning", "SingleNodeResults", found.message, once=f"single-node:{results.claim}"))
        if preflight:
            act.check_trial_jobs(ref, spec, config.search.study_name, single_node=results.single_node)
        url = rt.storage_url(ref.namespace, spec)
        handle = rt.study(ref.key, url, config, started=lambda: not preflight or _has_trial_jobs(ref))
        n_trials = cap_to_grid(config.search, config.search.n_trials)
        if n_trials < config.search.n_trials:
            ref.post(Event("Normal", "GridSize", f"GridSampler: the grid has {n_trials} points, so the study runs "
                           f"{n_trials} trials, not search.n_trials={config.search.n_trials}", once=f"grid:{n_trials}"))
        handle.sync_target(n_trials)
        conditions.append(st.Condition(
            st.STORAGE_READY, True, "Connected", f"study `{handle.name}` in {describe_storage(url)}"))
        act.ensure_config_map(ref, config, config_text)
        first_pass = ref.key not in rt.announced
        for round_ in range(MAX_ROUNDS):
            memory = Memory(first_pass, frozenset(rt.announced.get(ref.key, ())),
                            frozenset(rt.examined.get(ref.key, ())))
            # The Jobs (API) and the trials (storage) are read at the same time. Their order
            # does not matter: a trial is only failed while the storage still has it RUNNING
            # (Optuna refuses to change a finished trial), so a pod that told its result just
            # before its Job ended keeps that result.
            listing = rt.pool.submit(rt.kube.list_jobs, ref.namespace, ref.name, ref.uid)
            trials = handle.trials()
            jobs = listing.result()
            trial_jobs = latest_trial_jobs(jobs)
            visualise = next((j for j in jobs if j["metadata"]["name"] == names.visualise_job_name(ref.name)), None)
            now = time.time()
            wanted = jobs_to_read(ref.name, trials, ref.key, trial_jobs, visualise, memory.examined,
                                  spec.trials.startup_timeout_seconds, now)
            snapshot = Snapshot(
                namespace=ref.namespace, name=ref.name, key=ref.key, generation=ref.generation, spec=spec,
                config=config, n_trials=n_trials, study=handle.name, maximize=handle.maximize, grid=handle.grid,
                trials=trials, trial_jobs=trial_jobs, visualise=visualise,
                pods=read_pods(rt.kube, ref.namespace, wanted), results=results, old_status=old, memory=memory,
                now=now)
            plan = decide(snapshot, settle_trials=round_ < MAX_ROUNDS - 1)
            act.settle(ref, snapshot, plan, handle)
            if not plan.settles:
                break
        plan.conditions[:0] = conditions
        act.steer(ref, snapshot, plan, handle, config)
        return Outcome(retry_after=plan.retry_after)
    except JobRejected as exc:
        return _rejected(ref, old, conditions, exc.failure)
    except StudyLost as exc:
        return _lost(ref, old, conditions, exc)
    except SpecError as exc:
        return _invalid(ref, old, conditions, exc)
    except StorageProblem as exc:
        return _unavailable(ref, old, conditions, exc.reason, str(exc))
    except SQLAlchemyError as exc:
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return _unavailable(ref, old, conditions, "StorageUnavailable", redact(text, url)[:300])


def _raw_config(ref: StudyJobRef, spec: StudyJobSpec) -> dict[str, Any]:
    if spec.config is not None:
        return spec.config
    config_ref = spec.config_map_ref
    assert config_ref is not None
    found = ref.rt.kube.get("ConfigMap", ref.namespace, config_ref.name)
    if found is None:
        raise SpecError(
            f"`spec.configMapRef`: ConfigMap `{config_ref.name}` not found in namespace `{ref.namespace}`",
            field="spec.configMapRef.name", temporary=True,
        )
    return config_from_configmap(found.get("data"), config_ref)


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
    ref.rt.drop_study(ref.key)
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
