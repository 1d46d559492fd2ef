"""The end of a study: the visualisation Job, then ConfigMap ``<name>-best-config``.

The visualisation Job writes best_config.yaml, trials.csv and every plot into
``/results/<name>`` on the results volume; without ``spec.output`` there is no
volume to keep them, so only the ConfigMap is written. A failed visualisation
does not fail the study: the condition ``Visualised`` says so and why. Nor does one
whose pod never starts (``spec.trials.startupTimeoutSeconds``): its Job is removed and
not made again until the spec changes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kubetune.config import Config
from kubetune_operator import names
from kubetune_operator import status as st
from kubetune_operator.builders import best_config_map, visualise_job
from kubetune_operator.failures import STARTUP_REASONS, job_outcome
from kubetune_operator.spec import StudyJobSpec
from kubetune_operator.studies import Summary

if TYPE_CHECKING:
    from kubetune_operator.reconcile import Pass


class Finisher:
    def __init__(self, run: Pass, spec: StudyJobSpec, config: Config, study_name: str) -> None:
        self.run_, self.spec, self.config, self.study_name = run, spec, config, study_name

    def run(self, summary: Summary, visualise: dict[str, Any] | None) -> tuple[str, dict[str, Any] | None]:
        """The phase and, once written, ``status.bestConfig``."""
        p = self.run_
        output = self.spec.output
        if output is not None and output.persistent_volume_claim:
            phase = self._visualise(summary, visualise)
            if phase is not None:
                return phase, None
        else:
            p.conditions.append(st.Condition(
                st.VISUALISED, False, "NoOutputVolume",
                "spec.output.persistentVolumeClaim is not set: no plots are kept"))
        return st.SUCCEEDED, self._best_config(summary)

    def _visualise(self, summary: Summary, job: dict[str, Any] | None) -> str | None:
        """Visualising while the Job runs; None once it ended (either way)."""
        p = self.run_
        name = names.visualise_job_name(p.name)
        if job is not None:
            annotations = job["metadata"].get("annotations") or {}
            if annotations.get(names.ANNOTATION_FINISHED) != str(summary.finished):
                # Made for fewer trials (n_trials was raised since): replace it. Its
                # deletion event brings the next pass, which creates the new one.
                p.kube.delete_job(p.namespace, name)
                p.conditions.append(st.Condition(st.VISUALISED, False, "Outdated", "replacing the plots"))
                return st.VISUALISING
        if job is None:
            gave_up = p.old_condition(st.VISUALISED, STARTUP_REASONS)
            if gave_up is not None:  # its pod never started; not made again for this generation
                p.conditions.append(st.Condition(st.VISUALISED, False, gave_up["reason"], gave_up.get("message", "")))
                return None
            options = p.rt.options
            body = visualise_job(p.owner, self.spec, self.study_name, summary.finished,
                                 options.cpu_image or options.trial_image, single_node=p.results.single_node)
            p.kube.create(body, p.namespace)
            p.event("Normal", "VisualisationStarted",
                    f"all {summary.finished} trials finished; Job {name} writes the plots and "
                    f"best_config.yaml to /results/{p.name}")
            p.conditions.append(st.Condition(st.VISUALISED, False, "Running", f"Job {name} is running"))
            return st.VISUALISING
        outcome = job_outcome(job)
        if outcome is None:
            stuck = p.not_starting(job, self.spec.trials.startup_timeout_seconds)
            if stuck is not None:
                message = f"Job {name} could not start: {stuck}"
                p.kube.delete_job(p.namespace, name)
                p.conditions.append(st.Condition(st.VISUALISED, False, stuck.reason, message))
                p.event("Warning", "VisualisationFailed", message)
                return None
            p.conditions.append(st.Condition(st.VISUALISED, False, "Running", f"Job {name} is running"))
            return st.VISUALISING
        if outcome == "failed":
            message = f"Job {name} failed; see kubectl logs job/{name}"
            p.conditions.append(st.Condition(st.VISUALISED, False, "VisualisationFailed", message))
            if p.rt.warn_once(p.key, f"visualise:{job['metadata'].get('uid')}"):
                p.event("Warning", "VisualisationFailed", message)
        else:
            p.conditions.append(st.Condition(
                st.VISUALISED, True, "Visualised", f"plots and best_config.yaml in /results/{p.name}"))
        return None

    def _best_config(self, summary: Summary) -> dict[str, Any]:
        """Write ``<name>-best-config`` (once per best trial) and describe it for the status."""
        from kubetune.search.results import best_config_dict

        p = self.run_
        best = summary.best
        assert best is not None and best.value is not None
        body = best_config_map(p.owner, best_config_dict(self.config, dict(best.params)), best.number, best.value)
        name = body["metadata"]["name"]
        text = body["data"][names.BEST_CONFIG_KEY]
        if p.rt.best_written.get(p.key) != text:
            if not p.kube.create(body, p.namespace):
                existing = p.kube.get("ConfigMap", p.namespace, name) or {}
                if (existing.get("data") or {}) != body["data"]:
                    p.kube.patch("ConfigMap", p.namespace, name, {
                        "data": body["data"],
                        "metadata": {"annotations": body["metadata"]["annotations"]},
                    })
            p.rt.best_written[p.key] = text
            p.event("Normal", "BestConfig",
                    f"best config (trial {best.number}) in ConfigMap {name}, key {names.BEST_CONFIG_KEY}")
        result: dict[str, Any] = {"configMap": name, "key": names.BEST_CONFIG_KEY, "trial": best.number}
        if self.spec.output is not None and self.spec.output.persistent_volume_claim:
            result["path"] = f"{names.RESULTS_DIR}/{p.name}/{names.BEST_CONFIG_KEY}"
        return result
