"""kopf settings for kubetune: its own finalizer and annotations, quiet events, no scanning."""

from __future__ import annotations

import logging

import kopf

from kubetune_operator import names
from kubetune_operator.names import WORKERS


def configure(settings: kopf.OperatorSettings, *, posting_level: int = logging.WARNING,
              workers: int = WORKERS) -> kopf.OperatorSettings:
    """Apply kubetune's choices to ``settings`` (and return it)."""
    # kopf keeps handler progress and the last handled spec in annotations under
    # kubetune.dev/, and blocks deletion with kubetune.dev/finalizer until the
    # delete handler has closed (or deleted) the study.
    settings.persistence.finalizer = names.FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=names.GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=names.GROUP, key="last-handled-configuration"
    )
    # Explicit events (trial started, failed, ...) always post; kopf's own log
    # lines only from this level up.
    settings.posting.level = posting_level
    settings.posting.reporting_component = names.MANAGED_BY
    settings.posting.event_name_prefix = "kubetune-event-"
    # Only our Jobs, selected on the server where it can (handlers filter again).
    settings.watching.label_selectors["batch/v1", "jobs"] = f"{names.LABEL_MANAGED_BY}={names.MANAGED_BY}"
    # Resources are known at start (the CRD is installed first): no CRD or
    # namespace watching, hence no RBAC for them.
    settings.scanning.disabled = True
    # Sync handlers (storage calls) run in this many threads.
    settings.execution.max_workers = workers
    settings.peering.standalone = True  # one replica, Deployment strategy Recreate
    return settings
