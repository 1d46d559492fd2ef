"""Trial and visualisation Jobs as plain dicts.

A trial Job runs exactly one pod (``backoffLimit: 0``): a failed pod is a failed
trial, and the operator (not the Job controller) decides whether to retry it with
the same params as a new trial.

Evicted, preempted and node-lost pods are often deleted before the Job fails, which
would leave only ``BackoffLimitExceeded`` to read. A ``podFailurePolicy`` rule on the
pod's ``DisruptionTarget`` condition makes the Job fail with reason
``PodFailurePolicy`` and the disruption in its message, so the reason survives.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import kopf

from kubetune.search.interruption import TERMINATED_EXIT
from kubetune_operator import names
from kubetune_operator.builders.pods import container, fixed_resources, pod_spec, results_labels
from kubetune_operator.spec import StudyJobSpec

# Every container has requests and limits, so the Jobs run under a ResourceQuota.
EXPORT_RESOURCES = fixed_resources(cpu="500m", memory="512Mi", memory_limit="1Gi")
PLOTS_RESOURCES = fixed_resources(cpu="1", memory="1Gi", memory_limit="2Gi")


def trial_command(study_name: str, number: int, spec: StudyJobSpec) -> list[str]:
    """The one-trial entry point as an argv list (no shell)."""
    command = [
        "ml-train", "--config", names.CONFIG_PATH,
        "--trial", f"{study_name}:{number}", "--no-progress",
    ]
    if spec.data_path is not None:
        command += ["--set", f"data.path={spec.data_path}"]
    command += ["--set", f"logging.output_dir={names.RESULTS_DIR}"]
    return command


def export_command(studyjob: str) -> list[str]:
    return [
        "ml-search", "--config", names.CONFIG_PATH, "--export-only",
        "--output-dir", f"{names.RESULTS_DIR}/{studyjob}",
    ]


def plots_command(studyjob: str) -> list[str]:
    # --format both: the CPU image has Chromium, so a PNG that cannot be drawn fails the Job
    # (without --format, ml-visualise would fall back to HTML with a warning).
    return [
        "ml-visualise", "--mode", "search", "--config", names.CONFIG_PATH,
        "--output", f"{names.RESULTS_DIR}/{studyjob}/plots", "--format", "both",
    ]


def kueue_labels(spec: StudyJobSpec) -> dict[str, str]:
    """Kueue's labels for the StudyJob's Jobs: none without ``spec.trials.queueName``."""
    trials = spec.trials
    if not trials.queue_name:
        return {}
    labels = {names.LABEL_KUEUE_QUEUE: trials.queue_name}
    if trials.workload_priority_class_name:
        labels[names.LABEL_KUEUE_PRIORITY] = trials.workload_priority_class_name
    return labels


def _job(
    owner: Mapping[str, Any],
    spec: StudyJobSpec,
    name: str,
    labels: dict[str, str],
    annotations: dict[str, str],
    pod: dict[str, Any],
    deadline: int | None,
    ttl: int | None = None,
) -> dict[str, Any]:
    job_spec: dict[str, Any] = {
        "backoffLimit": 0,
        "podFailurePolicy": {"rules": [
            {"action": "FailJob", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
        ]},
        "template": {"metadata": {"labels": dict(labels), "annotations": dict(annotations)}, "spec": pod},
    }
    if deadline:
        job_spec["activeDeadlineSeconds"] = deadline
    if ttl is not None:
        job_spec["ttlSecondsAfterFinished"] = ttl
    queue = kueue_labels(spec)
    if queue:
        job_spec["suspend"] = True
    job: dict[str, Any] = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": {**labels, **queue}, "annotations": annotations},
        "spec": job_spec,
    }
    kopf.adopt(job, owner=kopf.Body(cast(kopf.RawBody, dict(owner))))
    return job


def trial_job(
    owner: Mapping[str, Any], spec: StudyJobSpec, study_name: str, number: int, image: str, resume: int = 0,
    *, single_node: bool = False, deadline: int | None = None,
) -> dict[str, Any]:
    """Job ``<name>-trial-<number>``: trains trial ``number`` of ``study_name`` and tells it.

    ``resume`` > 0: the trial was disrupted; this Job (``-r<resume>``) runs the same command,
    which continues from the trial's last checkpoint. ``single_node``: the results claim is
    not ReadWriteMany, so the pod requires the node of the claim's other pods. ``deadline``:
    what a resumed trial has left of ``spec.trials.activeDeadlineSeconds``.
    """
    studyjob = owner["metadata"]["name"]
    labels = {**names.child_labels(studyjob, "trial"), names.LABEL_TRIAL: str(number),
              names.LABEL_RESUME: str(resume), **results_labels(spec)}
    annotations = {names.ANNOTATION_STUDY: study_name}
    image = spec.trials.image or image
    trial = container(spec, "trial", image, trial_command(study_name, number, spec),
                      resources=spec.trials.resources.model_dump(exclude_defaults=True))
    pod = pod_spec(spec, studyjob, image, [trial], single_node=single_node)
    job = _job(
        owner, spec, names.trial_job_name(studyjob, number, resume), labels, annotations, pod,
        deadline if deadline is not None else spec.trials.active_deadline_seconds,
        spec.trials.ttl_seconds_after_finished,
    )
    if spec.trials.queue_name:
        # Kueue preempts by suspending the Job, whose controller then stops the pod: the
        # trainer exits TERMINATED_EXIT (SIGTERM) with its trial RUNNING. That is no failure
        # of the Job, which makes a new pod (resuming from the checkpoint) once re-admitted.
        job["spec"]["podFailurePolicy"]["rules"].append(
            {"action": "Ignore", "onExitCodes": {"containerName": "trial", "operator": "In",
                                                 "values": [TERMINATED_EXIT]}})
    return job


def visualise_job(
    owner: Mapping[str, Any], spec: StudyJobSpec, study_name: str, finished: int, image: str,
    *, single_node: bool = False,
) -> dict[str, Any]:
    """Job ``<name>-visualise``: best_config.yaml and trials.csv, then every plot.

    The export runs as an init container, the plots as the main container: two
    argv commands, no shell. ``finished`` records which state of the study it shows.
    ``single_node`` as for :func:`trial_job`.
    """
    studyjob = owner["metadata"]["name"]
    labels = {**names.child_labels(studyjob, "visualise"), **results_labels(spec)}
    annotations = {names.ANNOTATION_STUDY: study_name, names.ANNOTATION_FINISHED: str(finished)}
    # Always the CPU image (the operator's --cpu-image), whatever spec.trials.image says:
    # it has Chromium for PNGs and needs no GPU node.
    export = container(spec, "export", image, export_command(studyjob), resources=EXPORT_RESOURCES)
    plots = container(spec, "plots", image, plots_command(studyjob), resources=PLOTS_RESOURCES)
    pod = pod_spec(spec, studyjob, image, [plots], init_containers=[export], node_selector=False,
                   single_node=single_node)
    return _job(
        owner, spec, names.visualise_job_name(studyjob), labels, annotations, pod,
        spec.trials.active_deadline_seconds,
    )
