"""Plots of Optuna studies and of training runs, as offline HTML and PNG (``ml-visualise``)."""

from kubetune.visualise.export import FORMATS, ChromiumMissing, find_chromium
from kubetune.visualise.plots import (
    PLOT_TYPES,
    build_figures,
    importance_evaluator,
    resolve_params,
    study_param_names,
)
from kubetune.visualise.study_info import open_study, summarise
from kubetune.visualise.study_report import StudyReport, render_study
from kubetune.visualise.training_curves import TrainingReport, render_training

__all__ = [
    "FORMATS",
    "PLOT_TYPES",
    "ChromiumMissing",
    "StudyReport",
    "TrainingReport",
    "build_figures",
    "find_chromium",
    "importance_evaluator",
    "open_study",
    "render_study",
    "render_training",
    "resolve_params",
    "study_param_names",
    "summarise",
]
