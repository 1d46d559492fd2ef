"""Thin kopf handlers: every event on a StudyJob or one of its Jobs runs one reconcile pass.

Registered on a given registry (not at import time), so a test can run a fresh
operator, with fresh in-memory state, next to a killed one.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import kopf

from kubetune_operator import cleanup, names
from kubetune_operator import status as st
from kubetune_operator.failures import job_outcome
from kubetune_operator.kube import ApiError
from kubetune_operator.reconcile import Outcome, reconcile
from kubetune_operator.runtime import Runtime

logger = logging.getLogger("kubetune_operator")

STUDYJOBS = (names.GROUP, names.VERSION, names.PLURAL)
TRIAL_JOB_LABELS = {names.LABEL_MANAGED_BY: names.MANAGED_BY}
STUDYJOB_INDEX = "studyjob_bodies"
TRANSIENT_DELAY = 2.0  # seconds before a pass that met a transient API answer runs again
BACKOFF = 10.0  # seconds before a pass that failed unexpectedly runs again (kopf's default: 60)


def _reconcile(rt: Runtime, body: Mapping[str, Any]) -> Outcome:
    """One pass; an API answer that changes by itself brings the handler back soon."""
    try:
        return reconcile(rt, body)
    except ApiError as exc:
        if exc.transient:
            raise kopf.TemporaryError(str(exc), delay=TRANSIENT_DELAY) from None
        raise


def _pass(rt: Runtime, body: Mapping[str, Any]) -> None:
    outcome = _reconcile(rt, body)
    if outcome.retry_after is not None:
        raise kopf.TemporaryError("waiting for the storage or a referenced object", delay=outcome.retry_after)


def is_unfinished(status: Mapping[str, Any], **_: Any) -> bool:
    """The resync timer runs only for StudyJobs not yet Succeeded or Failed; a spec change
    (more trials, a fix) reaches a finished one through its update handler."""
    return (status or {}).get("phase") not in (st.SUCCEEDED, st.FAILED)


def is_ours(labels: Mapping[str, str]) -> bool:
    """A Job the operator made (the API may ignore the watch's label selector)."""
    return labels.get(names.LABEL_MANAGED_BY) == names.MANAGED_BY and names.LABEL_STUDYJOB in labels


def job_matters(event_type: str | None, body: Mapping[str, Any]) -> bool:
    """Only a Job's end or disappearance changes what the StudyJob should do."""
    return event_type == "DELETED" or job_outcome(body) is not None


def register(registry: kopf.OperatorRegistry, rt: Runtime) -> None:
    """Attach the operator's handlers, bound to ``rt``, to ``registry``."""

    @kopf.on.resume(*STUDYJOBS, backoff=BACKOFF, registry=registry)
    @kopf.on.create(*STUDYJOBS, backoff=BACKOFF, registry=registry)
    @kopf.on.update(*STUDYJOBS, backoff=BACKOFF, registry=registry)
    def studyjob_changed(body: kopf.Body, **_: Any) -> None:
        _pass(rt, body)

    @kopf.timer(*STUDYJOBS, interval=rt.options.resync_seconds, initial_delay=rt.options.resync_seconds,
                when=is_unfinished, registry=registry)
    def studyjob_resync(body: kopf.Body, **_: Any) -> None:
        # Safety net only: Job and StudyJob events drive the study.
        _reconcile(rt, body)

    @kopf.on.delete(*STUDYJOBS, retries=5, registry=registry)
    def studyjob_deleted(body: kopf.Body, **_: Any) -> None:
        cleanup.finalize(rt, body)

    @kopf.index(*STUDYJOBS, id=STUDYJOB_INDEX, registry=registry)
    def studyjob_bodies(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> dict[Any, Any]:
        # The latest StudyJob bodies, so a Job event needs no API call to find its owner.
        return {(namespace, name): dict(body)}

    @kopf.on.event("batch", "v1", "jobs", labels=TRIAL_JOB_LABELS, registry=registry)
    def job_event(type: str | None, body: kopf.Body, namespace: str | None, labels: Mapping[str, str],
                  **kwargs: Any) -> None:
        if not is_ours(labels):
            return
        found = list(kwargs[STUDYJOB_INDEX].get((namespace, labels[names.LABEL_STUDYJOB]), ()))
        if not found:
            return  # deleted: its Jobs go with it
        state = rt.studyjob_state(names.owner_key(str(namespace), labels[names.LABEL_STUDYJOB]))
        # A pod that stops being ready (its node stopped answering) is news at once.
        if not job_matters(type, body) and not (type != "DELETED" and state.note_readiness(body)):
            return
        studyjob = found[0]
        ended = str(body["metadata"]["name"]) if type != "DELETED" and job_outcome(body) is not None else None
        outcome = reconcile(rt, studyjob, ended)
        if outcome.retry_after is not None:
            logger.info("StudyJob %s/%s waits for its storage; the timer retries",
                        namespace, labels[names.LABEL_STUDYJOB])
