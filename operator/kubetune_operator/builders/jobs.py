"""Trial and visualisation Jobs as plain dicts.

A trial Job runs exactly one pod (``backoffLimit: 0``): a failed pod is a failed
trial, and the operator (not the Job controller) decides whether to retry it with
the same params as a new trial.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kopf

from kubetune_operator import names
from kubetune_operator.builders.pods import container, pod_spec
from kubetune_operator.spec import StudyJobSpec


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
    return [
        "ml-visualise", "--mode", "search", "--config", names.CONFIG_PATH,
        "--output", f"{names.RESULTS_DIR}/{studyjob}/plots",
    ]


def _job(
    owner: Mapping[str, Any],
    name: str,
    labels: dict[str, str],
    annotations: dict[str, str],
    pod: dict[str, Any],
    deadline: int | None,
) -> dict[str, Any]:
    job_spec: dict[str, Any] = {
        "backoffLimit": 0,
        "template": {"metadata": {"labels": dict(labels), "annotations": dict(annotations)}, "spec": pod},
    }
    if deadline:
        job_spec["activeDeadlineSeconds"] = deadline
    job: dict[str, Any] = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": labels, "annotations": annotations},
        "spec": job_spec,
    }
    kopf.adopt(job, owner=dict(owner))
    return job


def trial_job(
    owner: Mapping[str, Any], spec: StudyJobSpec, study_name: str, number: int, image: str
) -> dict[str, Any]:
    """Job ``<name>-trial-<number>``: trains trial ``number`` of ``study_name`` and tells it."""
    studyjob = owner["metadata"]["name"]
    labels = {**names.child_labels(studyjob, "trial"), names.LABEL_TRIAL: str(number)}
    annotations = {names.ANNOTATION_STUDY: study_name}
    image = spec.trials.image or image
    trial = container(spec, "trial", image, trial_command(study_name, number, spec), resources=True)
    pod = pod_spec(spec, studyjob, image, [trial])
    return _job(
        owner, names.trial_job_name(studyjob, number), labels, annotations, pod,
        spec.trials.active_deadline_seconds,
    )


def visualise_job(
    owner: Mapping[str, Any], spec: StudyJobSpec, study_name: str, finished: int, image: str
) -> dict[str, Any]:
    """Job ``<name>-visualise``: best_config.yaml and trials.csv, then every plot.

    The export runs as an init container, the plots as the main container: two
    argv commands, no shell. ``finished`` records which state of the study it shows.
    """
    studyjob = owner["metadata"]["name"]
    labels = names.child_labels(studyjob, "visualise")
    annotations = {names.ANNOTATION_STUDY: study_name, names.ANNOTATION_FINISHED: str(finished)}
    image = spec.trials.image or image
    export = container(spec, "export", image, export_command(studyjob), resources=False)
    plots = container(spec, "plots", image, plots_command(studyjob), resources=False)
    pod = pod_spec(spec, studyjob, image, [plots], init_containers=[export], node_selector=False)
    return _job(
        owner, names.visualise_job_name(studyjob), labels, annotations, pod,
        spec.trials.active_deadline_seconds,
    )
