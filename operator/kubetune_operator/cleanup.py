"""What happens when a StudyJob is deleted.

Its Jobs and ConfigMaps carry ownerReferences, so Kubernetes' garbage collector
removes them. The Optuna study stays (it is the record of the search) unless
``spec.cleanup.deleteStudy`` is true; if it stays, the trials still RUNNING are
failed with the reason StudyJobDeleted, since nothing will ever tell them, and each is
queued again as a retry: like an evicted pod, a deletion costs no trial, so a StudyJob
re-applied under the same name (or ``ml-search``) runs them first and counts none of
the failures against its ``maxFailed``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from optuna.trial import TrialState
from sqlalchemy.exc import SQLAlchemyError

from kubetune.search.attributes import OWNER_ATTR
from kubetune.search.ledger import enqueue_retry, fail_trial
from kubetune_operator import names
from kubetune_operator.failures import Failure
from kubetune_operator.runtime import Runtime, StorageProblem, redact
from kubetune_operator.spec import (
    SpecError,
    StudyJobSpec,
    parse_cleanup_fields,
    parse_spec,
    read_config,
    resolve_config,
)
from kubetune_operator.studies import delete_study, release_study

logger = logging.getLogger("kubetune_operator")


def _study_name(rt: Runtime, body: Mapping[str, Any], spec: StudyJobSpec) -> str | None:
    try:
        config = resolve_config(read_config(rt.kube, body["metadata"]["namespace"], spec), spec).config
        return config.search.study_name if config.search else None
    except SpecError:
        return (body.get("status") or {}).get("study")


def finalize(rt: Runtime, body: Mapping[str, Any]) -> None:
    """Delete or close the study as the spec says; forget the StudyJob."""
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    key = names.owner_key(namespace, name)
    owner = {"apiVersion": names.API_VERSION, "kind": names.KIND, "metadata": dict(meta)}
    with rt.lock(key):
        try:
            spec = parse_spec(body.get("spec") or {}, name, rt.options.defaults)
            study_name = _study_name(rt, body, spec)
        except SpecError:
            # An edited spec that no longer parses: the study it ran is the one status names.
            study_name = (body.get("status") or {}).get("study")
            try:
                spec = parse_cleanup_fields(body.get("spec") or {}, rt.options.defaults)
            except SpecError:
                study_name = None
        if study_name is None:
            rt.forget(key)
            return  # it never ran
        url = ""
        try:
            url = rt.storage_url(namespace, spec)
            storage = rt.storage(url)
            if spec.cleanup.delete_study:
                if delete_study(storage, study_name, key):
                    rt.post_event(owner, "Normal", "StudyDeleted", f"study `{study_name}` deleted")
            else:
                _close_running(rt, storage, study_name, key)
        except StorageProblem as exc:
            # Do not hold the deletion hostage to a storage that may never come back.
            logger.warning("StudyJob %s: study left as it is: %s", key, exc)
        except SQLAlchemyError as exc:
            logger.warning("StudyJob %s: study left as it is: %s", key, redact(str(exc).splitlines()[0], url))
        rt.forget(key)


def _close_running(rt: Runtime, storage: Any, study_name: str, key: str) -> None:
    study = release_study(storage, study_name, key)  # another StudyJob may take it up later
    if study is None:
        return
    failure = Failure("StudyJobDeleted", "the StudyJob was deleted while the trial ran")
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if trial.user_attrs.get(OWNER_ATTR) == key:
            if fail_trial(study, trial, str(failure)):
                # Unmarked: whoever pops the retry runs it, in a Job of its own.
                enqueue_retry(study, trial, user_attrs={})
