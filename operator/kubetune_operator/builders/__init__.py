"""Pure functions that turn a StudyJob into the plain dicts of its children."""

from kubetune_operator.builders.configmaps import best_config_map, config_map
from kubetune_operator.builders.jobs import trial_job, visualise_job

__all__ = ["best_config_map", "config_map", "trial_job", "visualise_job"]
