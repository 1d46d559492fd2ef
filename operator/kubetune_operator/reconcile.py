"""One reconcile pass over a StudyJob, from the storage and the Jobs alone.

A pass: read and validate the spec; open the study; list the StudyJob's Jobs;
settle trials whose Job ended or vanished without a result (fail them, maybe
retry); start trials while fewer than ``parallelism`` run and fewer than
``n_trials`` have finished or run; when all are done, visualise and write the
best config; then write the status (only if it changed) and post the events.
Nothing is remembered between passes that the API and the storage do not hold,
so a restarted operator picks up exactly where the old one stopped.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import kopf
import optuna
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.exc import SQLAlchemyError

from kubetune.config import Config
from kubetune.search.checks import cap_to_grid
from kubetune_operator import finish, names
from kubetune_operator import status as st
from kubetune_operator.builders import config_map, trial_job
from kubetune_operator.failures import STARTUP_REASONS, Failure, may_be_stuck, startup_failure
from kubetune_operator.kube import ApiError, owned_by
from kubetune_operator.runtime import Runtime, StorageProblem, describe_storage, redact
from kubetune_operator.settle import Settler
from kubetune_operator.spec import SpecError, StudyJobSpec, config_from_configmap, parse_spec
from kubetune_operator.studies import StudyHandle, Summary, summarise
from kubetune_operator.volumes import ResultsVolume, results_volume

logger = logging.getLogger("kubetune_operator")


class JobRejected(Exception):
    """The API server refused a trial Job (invalid spec, admission, RBAC)."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(str(failure))
        self.failure = failure


@dataclass(frozen=True)
class Outcome:
    retry_after: float | None = None  # come back after this many seconds (storage, Secret)


def reconcile(rt: Runtime, body: Mapping[str, Any]) -> Outcome:
    """One pass over the StudyJob ``body``; serialised per StudyJob."""
    meta = body.get("metadata") or {}
    if meta.get("deletionTimestamp"):
        return Outcome()  # the delete handler owns the rest
    key = names.owner_key(meta["namespace"], meta["name"])
    with rt.lock(key):
        return Pass(rt, body).run()


def latest_trial_jobs(jobs: Iterable[Mapping[str, Any]]) -> dict[int, dict[str, Any]]:
    """Trial number -> its newest Job (a resumed trial has one per disruption)."""
    found: dict[int, tuple[int, dict[str, Any]]] = {}
    for job in jobs:
        labels = job["metadata"].get("labels") or {}
        if names.LABEL_TRIAL not in labels:
            continue
        number, resume = int(labels[names.LABEL_TRIAL]), int(labels.get(names.LABEL_RESUME, 0))
        if number not in found or resume > found[number][0]:
            found[number] = (resume, dict(job))
    return {number: job for number, (_, job) in found.items()}


def format_params(params: Mapping[str, Any]) -> str:
    parts = [f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()]
    return ", ".join(parts) or "no params"


class Pass:
    """The state of one pass; its methods run in the order :meth:`run` calls them."""

    def __init__(self, rt: Runtime, body: Mapping[str, Any]) -> None:
        meta = body["metadata"]
        self.rt, self.kube = rt, rt.kube
        self.namespace, self.name = meta["namespace"], meta["name"]
        self.key = names.owner_key(self.namespace, self.name)
        self.generation = meta.get("generation")
        self.uid = meta.get("uid")
        self.body = body
        self.owner = {
            "apiVersion": body.get("apiVersion", names.API_VERSION),
            "kind": body.get("kind", names.KIND),
            "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "labels") if k in meta},
        }
        self.old_status: dict[str, Any] = dict(rt.last_status.get(self.key) or body.get("status") or {})
        self.conditions: list[st.Condition] = []
        self.events: list[tuple[str, str, str]] = []
        self.url = ""
        self.config_text = ""
        self.results = ResultsVolume(None)  # the output claim's access modes, read each pass

    def event(self, type_: str, reason: str, message: str) -> None:
        self.events.append((type_, reason, message))

    def blocked(self, failure: Failure, what: str) -> None:
        """Trials cannot start (a pod that never starts, a Job the API server refuses):
        say why in a condition and in the status message."""
        if self._blocked() is None:
            text = f"{what} could not start: {failure}"
            self.conditions.append(st.Condition(st.TRIALS_BLOCKED, True, failure.reason, text))

    def _blocked(self) -> st.Condition | None:
        return next((c for c in self.conditions if c.type == st.TRIALS_BLOCKED), None)

    def old_condition(self, type_: str, reasons: Iterable[str]) -> Mapping[str, Any] | None:
        """The last status's condition ``type_``, if this generation set it with one of ``reasons``."""
        for condition in self.old_status.get("conditions") or []:
            if (condition.get("type") == type_ and condition.get("reason") in reasons
                    and condition.get("observedGeneration") == self.generation):
                return condition
        return None

    def not_starting(self, job: Mapping[str, Any], timeout: float) -> Failure | None:
        """Why ``job``'s pod has not started ``timeout`` seconds after it was made, or None
        (the pods are listed only for a Job old enough and not started)."""
        if not may_be_stuck(job, timeout):
            return None
        return startup_failure(job, self.kube.list_job_pods(self.namespace, job["metadata"]["name"]), timeout)

    def run(self) -> Outcome:
        try:
            return self._run()
        finally:
            for type_, reason, message in self.events:
                self.rt.post_event(self.owner, type_, reason, message)

    def _run(self) -> Outcome:
        try:
            spec = parse_spec(self.body.get("spec") or {}, self.name, self.rt.options.defaults)
            resolved, self.config_text = self.rt.resolve(self.key, spec, self._raw_config(spec))
        except SpecError as exc:
            return self._invalid(exc)
        self.conditions.append(st.Condition(st.SPEC_VALID, True, "Valid", "the spec and its config are valid"))
        if resolved.dropped_storage and self.rt.warn_once(self.key, "storage-ignored"):
            self.event("Warning", "StorageIgnored",
                       "search.storage is ignored in a StudyJob: the storage URL comes from "
                       "spec.storage.secretRef")
        try:
            self._check_results(spec)
            return self._with_storage(spec, resolved.config)
        except JobRejected as exc:
            return self._rejected(exc.failure)
        except SpecError as exc:
            return self._invalid(exc)
        except StorageProblem as exc:
            return self._unavailable(exc.reason, str(exc))
        except SQLAlchemyError as exc:
            text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            return self._unavailable("StorageUnavailable", redact(text, self.url)[:300])

    def _raw_config(self, spec: StudyJobSpec) -> dict[str, Any]:
        if spec.config is not None:
            return spec.config
        ref = spec.config_map_ref
        assert ref is not None
        found = self.kube.get("ConfigMap", self.namespace, ref.name)
        if found is None:
            raise SpecError(
                f"`spec.configMapRef`: ConfigMap `{ref.name}` not found in namespace `{self.namespace}`",
                field="spec.configMapRef.name", temporary=True,
            )
        return config_from_configmap(found.get("data"), ref)

    def _check_results(self, spec: StudyJobSpec) -> None:
        """Condition ``ResultsVolume``; a single-node claim makes its pods share a node."""
        self.results = results_volume(self.kube, self.namespace, spec)
        condition = self.results.condition()
        if condition is None:
            return
        self.conditions.append(condition)
        if condition.reason == "SingleNode" and self.rt.warn_once(self.key, f"single-node:{self.results.claim}"):
            self.event("Warning", "SingleNodeResults", condition.message)

    # The pass proper -----------------------------------------------------------
    def _with_storage(self, spec: StudyJobSpec, config: Config) -> Outcome:
        assert config.search is not None
        self.url = self.rt.storage_url(self.namespace, spec)
        handle = self.rt.study(self.key, self.url, config)
        n_trials = cap_to_grid(config.search, config.search.n_trials)
        if n_trials < config.search.n_trials and self.rt.warn_once(self.key, f"grid:{n_trials}"):
            self.event("Normal", "GridSize", f"GridSampler: the grid has {n_trials} points, so the "
                       f"study runs {n_trials} trials, not search.n_trials={config.search.n_trials}")
        handle.sync_target(n_trials)
        self.conditions.append(st.Condition(
            st.STORAGE_READY, True, "Connected", f"study `{handle.name}` in {describe_storage(self.url)}"))
        self._ensure_config_map(config)
        # The Jobs (API) and the trials (storage) are read at the same time. Their order
        # does not matter: a trial is only failed while the storage still has it RUNNING
        # (Optuna refuses to change a finished trial), so a pod that told its result just
        # before its Job ended keeps that result.
        listing = self.rt.pool.submit(self.kube.list_jobs, self.namespace, self.name, self.uid)
        trials = handle.trials()
        jobs = listing.result()
        trial_jobs = latest_trial_jobs(jobs)
        visualise = next((j for j in jobs if j["metadata"]["name"] == names.visualise_job_name(self.name)), None)
        settler = Settler(self, spec, handle, trial_jobs, lambda t, r: self._start_job(spec, handle, t, r))
        if settler.settle(trials):
            trials = handle.trials()
        summary = summarise(trials, self.key, handle.maximize)
        self._note_blocked(trials)
        settler.announce(trials, summary, config.search.metric)
        running = len(summary.owned_running)
        best_config = None
        if summary.counted_failed > spec.trials.max_failed:
            phase = st.FAILED
            self.conditions.append(st.Condition(
                st.FAILED_CONDITION, True, "MaxFailedExceeded",
                f"{summary.counted_failed} trials failed, more than spec.trials.maxFailed="
                f"{spec.trials.max_failed}; no new trials start"))
        elif summary.finished >= n_trials and not summary.owned_running:
            self.conditions.append(st.Condition(
                st.TRIALS_DONE, True, "AllTrialsFinished", f"{summary.finished} of {n_trials} trials finished"))
            if summary.best is None:
                phase = st.FAILED
                self.conditions.append(st.Condition(
                    st.FAILED_CONDITION, True, "NoCompletedTrial", "every trial was pruned or failed"))
            else:
                finisher = finish.Finisher(self, spec, config, handle.name)
                phase, best_config = finisher.run(summary, visualise)
        else:
            self.conditions.append(st.Condition(
                st.TRIALS_DONE, False, "TrialsRemaining", f"{summary.finished} of {n_trials} trials finished"))
            if spec.suspend:
                phase = st.SUSPENDED
            else:
                running += self._launch(spec, handle, summary, n_trials)
                phase = st.RUNNING if running or summary.finished else st.PENDING
        self.conditions.append(st.Condition(
            st.SUSPENDED_CONDITION, spec.suspend, "Suspended" if spec.suspend else "NotSuspended",
            "spec.suspend is true: no new trials start" if spec.suspend else ""))
        self._write_status(phase, self._message(phase, summary, running, config), {
            "study": handle.name,
            "progress": f"{summary.finished}/{n_trials}",
            "trials": st.trials_block(summary, n_trials, running),
            "best": st.best_block(summary.best),
            "bestConfig": best_config or self.old_status.get("bestConfig"),
        })
        return Outcome()

    def _note_blocked(self, trials: list[FrozenTrial]) -> None:
        """While the latest trial to end is one whose pod never started, say so (a condition
        and the status message), from the storage alone: it holds across passes and restarts."""
        ended = [t for t in trials if t.state.is_finished() and t.user_attrs.get(names.ATTR_OWNER) == self.key]
        if not ended:
            return
        last = max(ended, key=lambda t: (t.datetime_complete or t.datetime_start or datetime.min, t.number))
        reason, _, message = (last.user_attrs.get(names.ATTR_FAIL_REASON) or "").partition(": ")
        if last.state == TrialState.FAIL and reason in STARTUP_REASONS:
            self.blocked(Failure(reason, message), f"trial {last.number}")

    def _ensure_config_map(self, config: Config) -> None:
        """``<name>-config`` holds the config every pod mounts; rewritten when it changes."""
        text = self.config_text
        if self.rt.config_written.get(self.key) == text:
            return
        body = config_map(self.owner, config)
        if not self.kube.create(body, self.namespace):
            existing = self.kube.get("ConfigMap", self.namespace, body["metadata"]["name"]) or {}
            if (existing.get("data") or {}) != body["data"]:
                self.kube.patch("ConfigMap", self.namespace, body["metadata"]["name"], {"data": body["data"]})
        self.rt.config_written[self.key] = text

    def _launch(self, spec: StudyJobSpec, handle: StudyHandle, summary: Summary, n_trials: int) -> int:
        refused = self.old_condition(st.FAILED_CONDITION, ("JobRejected",))
        if refused is not None:  # this generation's Jobs were refused: ask for no more trials
            raise JobRejected(Failure("JobRejected", refused.get("message", "").partition(": ")[2]))
        running = len(summary.owned_running)
        used = summary.finished + summary.running
        waiting = summary.waiting
        launched = 0
        while running < spec.trials.parallelism and used < n_trials:
            trial = handle.ask(waiting=waiting > 0)
            if trial is None:
                break  # the grid is covered
            waiting = max(0, waiting - 1)
            self._start_job(spec, handle, trial)
            running, used, launched = running + 1, used + 1, launched + 1
        return launched

    def _start_job(self, spec: StudyJobSpec, handle: StudyHandle, trial: optuna.Trial | FrozenTrial,
                   resume: int = 0) -> None:
        job_name = names.trial_job_name(self.name, trial.number, resume)
        job = trial_job(self.owner, spec, handle.name, trial.number, self.rt.options.trial_image, resume,
                        single_node=self.results.single_node)
        try:
            created = self.kube.create(job, self.namespace)
        except ApiError as exc:
            if exc.status == 403 and "exceeded quota" in str(exc):
                # A quota on Job count: room comes back as other Jobs go. The trial stays
                # unmarked and gets its Job on a later pass.
                raise kopf.TemporaryError(f"Job {job_name}: {exc}", delay=10) from None
            if exc.transient or exc.status not in (400, 403, 422):  # 400: a body it cannot decode
                raise
            failure = Failure("JobRejected", f"the API server refused Job {job_name}: {exc}")
            handle.tell_fail(trial, failure)
            raise JobRejected(failure) from None
        if not created:
            existing = [j for j in self.kube.list_jobs(self.namespace, self.name)
                        if j["metadata"]["name"] == job_name]
            if self.uid and existing and not owned_by(existing[0], self.uid):
                # A StudyJob of this name was deleted and re-applied: its Job is still
                # being garbage-collected. The trial stays unmarked and gets its Job later.
                raise kopf.TemporaryError(f"Job {job_name} of an earlier StudyJob `{self.name}` "
                                          "is still being deleted", delay=2)
        # Only now: a RUNNING trial without this mark and without a Job was asked by an
        # operator that stopped before creating the Job, and gets its Job; one with the
        # mark but no Job lost it (deleted) and fails.
        handle.mark_job(trial, job_name)
        if resume:
            return  # the TrialPreempted event told it
        retry_of = trial.user_attrs.get(names.ATTR_RETRY_OF)
        note = f" (retry of trial {retry_of})" if retry_of is not None else ""
        self.event("Normal", "TrialStarted",
                   f"trial {trial.number} started as Job {job_name}{note}: {format_params(trial.params)}")

    # Status ------------------------------------------------------------------
    def _message(self, phase: str, summary: Summary, running: int, config: Config) -> str:
        metric = config.search.metric if config.search else "value"
        best = f"; best {metric}={summary.best.value:.4g} (trial {summary.best.number})" if summary.best else ""
        blocked = self._blocked()
        why = f"; {blocked.message}" if blocked is not None else ""
        return f"{running} running, {summary.finished} finished{best}{why}"

    def _write_status(self, phase: str, message: str, fields: Mapping[str, Any]) -> None:
        status = {k: v for k, v in fields.items() if v is not None}
        status["phase"] = phase
        status["message"] = message
        status["conditions"] = st.conditions_list(self.conditions, self.old_status.get("conditions") or [],
                                                  self.generation)
        if self.generation is not None:
            status["observedGeneration"] = self.generation
        old_phase = self.old_status.get("phase")
        if phase != old_phase:
            failed = [c for c in self.conditions if c.type == st.FAILED_CONDITION and c.status]
            detail = failed[0].message if failed else message
            self.event("Warning" if phase == st.FAILED else "Normal", phase, f"{phase}: {detail}")
        if st.same_status(self.old_status, status):
            return
        self.kube.patch_studyjob_status(self.namespace, self.name, st.merge_patch(self.old_status, status))
        self.rt.last_status[self.key] = status

    def _invalid(self, exc: SpecError) -> Outcome:
        message = str(exc)
        reason = exc.reason or ("ConfigMapNotFound" if exc.temporary else "InvalidSpec")
        if exc.condition:  # the spec is valid; what it names is missing (the results claim)
            self.conditions = [c for c in self.conditions if c.type == st.SPEC_VALID]
            self.conditions.append(st.Condition(exc.condition, False, reason, message))
        else:
            self.conditions = [st.Condition(st.SPEC_VALID, False, reason, message)]
        if not exc.temporary:
            self.conditions.append(st.Condition(st.FAILED_CONDITION, True, "InvalidSpec", message))
        if self.rt.warn_once(self.key, f"invalid:{message}"):
            self.event("Warning", reason, message)
        phase = st.PENDING if exc.temporary else st.FAILED
        self._write_status(phase, message, self._kept_fields())
        return Outcome(retry_after=self.rt.options.retry_seconds if exc.temporary else None)

    def _rejected(self, failure: Failure) -> Outcome:
        """The API server refuses this spec's trial Jobs (HTTP 400, 422 or 403): every trial
        would meet the same answer, so the StudyJob fails until its spec changes."""
        self.blocked(failure, "a trial Job")
        self.conditions.append(st.Condition(st.FAILED_CONDITION, True, failure.reason, str(failure)))
        self.event("Warning", st.TRIALS_BLOCKED, str(failure))
        self._write_status(st.FAILED, f"trial Jobs are refused: {failure}", self._kept_fields())
        return Outcome()

    def _kept_fields(self) -> dict[str, Any]:
        """The last status minus what a pass always rewrites (for passes that learn nothing new)."""
        return {k: v for k, v in self.old_status.items() if k not in ("phase", "message", "conditions")}

    def _unavailable(self, reason: str, message: str) -> Outcome:
        self.conditions = [c for c in self.conditions if c.type == st.SPEC_VALID]
        self.conditions.append(st.Condition(st.STORAGE_READY, False, reason, message))
        if self.rt.warn_once(self.key, f"storage:{message}"):
            self.event("Warning", reason, message)
        phase = self.old_status.get("phase") or st.PENDING
        if phase == st.FAILED:
            phase = st.PENDING
        self._write_status(phase, message, self._kept_fields())
        return Outcome(retry_after=self.rt.options.retry_seconds)
