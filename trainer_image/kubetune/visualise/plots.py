"""Optuna's own plotly figures for one study, and the reasons a plot cannot be drawn.

Every figure comes from ``optuna.visualization``; nothing here redraws what Optuna draws.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import optuna
from optuna.trial import FrozenTrial, TrialState

from kubetune.errors import UsageError
from kubetune.visualise.study_info import counts_text, metric_name, state_counts

if TYPE_CHECKING:
    import plotly.graph_objects as go

log = logging.getLogger(__name__)

# The guide's six, then edf and timeline; also the order of the report.
PLOT_TYPES: tuple[str, ...] = (
    "optimization_history",
    "param_importances",
    "slice",
    "contour",
    "parallel_coordinate",
    "intermediate_values",
    "edf",
    "timeline",
)

# Plots that take Optuna's ``params`` argument, i.e. that --params narrows.
_TAKES_PARAMS = {"param_importances", "slice", "contour", "parallel_coordinate"}


def importance_evaluator() -> optuna.importance.BaseImportanceEvaluator:
    """The evaluator behind ``param_importances``: fANOVA with a fixed seed.

    Optuna 5 defaults to PED-ANOVA, which scores how much each parameter matters
    for reaching the top ``target_quantile`` (10 %) of trials and, by its own
    documentation, wants at least five trials inside that quantile, i.e. about
    fifty completed trials. kubetune studies are usually a few dozen trials of
    real training, where PED-ANOVA's top-10 % holds one to three trials and its
    importances are mostly noise. fANOVA (a random forest over every completed
    trial, the evaluator of Optuna before 5 and of the tuning guide) uses all of
    them, and ``seed=0`` makes a rerun draw the same bars (the operator's
    visualisation Job reruns on every finish). kubetune search spaces are flat,
    so fANOVA's one limit, parameters present in every completed trial, holds.
    """
    return optuna.importance.FanovaImportanceEvaluator(seed=0)


# The methods, as the report names them (optuna-dashboard's is fixed: PED-ANOVA).
REPORT_METHOD = "fANOVA"
DASHBOARD_METHOD = "PED-ANOVA"


def dashboard_importances(study: optuna.Study, params: Sequence[str] | None = None) -> dict[str, float]:
    """The importances optuna-dashboard shows: PED-ANOVA with its defaults, the objective
    turned into a loss for a maximised study as the dashboard does; empty when it cannot."""
    sign = -1.0 if study.direction == optuna.study.StudyDirection.MAXIMIZE else 1.0

    def loss(trial: FrozenTrial) -> float:
        return sign * float(trial.values[0])

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PED-ANOVA warns whenever a target is given
            return optuna.importance.get_param_importances(
                study, evaluator=optuna.importance.PedAnovaImportanceEvaluator(),
                params=list(params) if params else None, target=loss)
    except (ValueError, RuntimeError) as exc:
        log.debug("no PED-ANOVA importances: %s", exc)
        return {}


def importances_figure(study: optuna.Study, params: Sequence[str] | None, target_name: str) -> go.Figure:
    """fANOVA's bars (the report's ranking, see :func:`importance_evaluator`) and, beside
    them, PED-ANOVA's, which optuna-dashboard shows: both named, so two views of one study
    that rank differently say why."""
    figure = optuna.visualization.plot_param_importances(
        study, evaluator=importance_evaluator(), params=list(params) if params else None,
        target_name=target_name)
    complete = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    bars = figure.data[0]
    bars.name = f"{REPORT_METHOD}: every completed trial (this report's ranking)"
    names = list(bars.y)
    dashboard = dashboard_importances(study, params)
    if dashboard:
        figure.add_bar(x=[dashboard.get(p, 0.0) for p in names], y=names, orientation="h",
                       name=f"{DASHBOARD_METHOD}: top 10 % against the rest (optuna-dashboard's view)",
                       texttemplate="%{x:.2f}", textposition="outside", marker_color="#bbbbbb")
    figure.update_layout(
        barmode="group", showlegend=True, legend={"orientation": "h", "y": -0.15},
        title=f"Hyperparameter importances for {target_name} by {REPORT_METHOD} "
              f"({complete} completed trials)" + (f", with {DASHBOARD_METHOD}" if dashboard else ""))
    return figure


@dataclass
class StudyFigures:
    """The figures that could be drawn, and a one-line reason for each that could not."""

    figures: dict[str, go.Figure] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    params: list[str] = field(default_factory=list)


def study_param_names(study: optuna.Study) -> list[str]:
    """Every parameter name any trial of the study holds, sorted."""
    names: set[str] = set()
    for trial in study.get_trials(deepcopy=False):
        names.update(trial.params)
    return sorted(names)


def resolve_params(names: Sequence[str], choices: Sequence[str]) -> list[str]:
    """Short names (``lr``) to the dotted keys they end with (``optimizer.lr``).

    A full dotted key is taken as it is. Unknown or ambiguous names are a
    :class:`UsageError` that lists the study's parameters.
    """
    resolved: list[str] = []
    listing = ", ".join(f"`{c}`" for c in choices) or "none"
    for name in names:
        if name in choices:
            matches = [name]
        else:
            matches = [c for c in choices if c.endswith(f".{name}")]
        if not matches:
            raise UsageError(
                f"`--params` must name parameters of the study, but got `{name}`; "
                f"the study's parameters are: {listing}"
            )
        if len(matches) > 1:
            options = ", ".join(f"`{m}`" for m in matches)
            raise UsageError(
                f"`--params` name `{name}` is ambiguous: it matches {options}; pass the full dotted key"
            )
        if matches[0] not in resolved:
            resolved.append(matches[0])
    return resolved


# Plots of the objective's values: nothing to draw until a trial completes.
_NEEDS_VALUES = {
    "optimization_history", "param_importances", "slice", "contour", "parallel_coordinate", "edf",
}


def _importances_reason(study: optuna.Study, complete: list[FrozenTrial]) -> str | None:
    if len(complete) < 2:
        return f"importances need at least two completed trials, but the study has {len(complete)}"
    values = {t.value for t in complete}
    if len(values) == 1:
        # fANOVA would stop with "Encountered zero total variance in all trees".
        metric = metric_name(study)
        return (
            f"importances need completed trials that differ in {metric}, but all "
            f"{len(complete)} scored {metric}={values.pop():.6g}"
        )
    return None


def _contour_reason(complete: list[FrozenTrial], params: Sequence[str]) -> str | None:
    if len(params) < 2:
        return f"contour needs at least two parameters, but got {len(params)} ({', '.join(params)})"
    varying = [p for p in params if len({repr(t.params.get(p)) for t in complete if p in t.params}) > 1]
    if len(varying) < 2:
        return (
            "contour needs two parameters that vary across completed trials, "
            f"but only {len(varying)} of {len(params)} do"
        )
    return None


def skip_reason(plot_type: str, study: optuna.Study, params: Sequence[str]) -> str | None:
    """Why ``plot_type`` cannot be drawn for this study and these params, or ``None``."""
    trials = study.get_trials(deepcopy=False)
    if not trials:
        return "the study has no trials yet"
    complete = [t for t in trials if t.state == TrialState.COMPLETE]  # no second storage read
    if plot_type in _NEEDS_VALUES and not complete:
        return f"no trial has completed yet ({counts_text(state_counts(trials))})"
    if plot_type in _TAKES_PARAMS and not params:
        return "the study has no parameters"
    if plot_type == "param_importances":
        return _importances_reason(study, complete)
    if plot_type == "contour":
        return _contour_reason(complete, params)
    if plot_type == "intermediate_values" and not any(t.intermediate_values for t in trials):
        return "no trial reported intermediate values"
    return None


def build_figure(plot_type: str, study: optuna.Study, params: Sequence[str] | None,
                 default_metric: str = "Objective Value") -> go.Figure:
    """One of Optuna's plotly figures, by kubetune's plot-type name.

    The axes carry the study's metric name; ``default_metric`` (Optuna's own label by
    default) only for a study that records none.
    """
    vis = optuna.visualization
    target_name = metric_name(study, default=default_metric)
    selected = list(params) if params else None
    if plot_type == "optimization_history":
        return vis.plot_optimization_history(study, target_name=target_name)
    if plot_type == "param_importances":
        return importances_figure(study, selected, target_name)
    if plot_type == "slice":
        return vis.plot_slice(study, params=selected, target_name=target_name)
    if plot_type == "contour":
        return vis.plot_contour(study, params=selected, target_name=target_name)
    if plot_type == "parallel_coordinate":
        return vis.plot_parallel_coordinate(study, params=selected, target_name=target_name)
    if plot_type == "intermediate_values":
        return vis.plot_intermediate_values(study)
    if plot_type == "edf":
        return vis.plot_edf(study, target_name=target_name)
    if plot_type == "timeline":
        return vis.plot_timeline(study)
    raise ValueError(f"unknown plot type {plot_type!r}")


def build_figures(
    study: optuna.Study, plot_types: Sequence[str] = PLOT_TYPES, params: Sequence[str] | None = None,
    default_metric: str = "Objective Value",
) -> StudyFigures:
    """Draw every requested plot that this study allows; record why the others were skipped.

    ``params`` are dotted keys (see :func:`resolve_params`); ``None`` means all of them.
    """
    chosen = list(params) if params else study_param_names(study)
    result = StudyFigures(params=chosen)
    for plot_type in plot_types:
        reason = skip_reason(plot_type, study, chosen)
        if reason is None:
            try:
                result.figures[plot_type] = build_figure(plot_type, study, params, default_metric)
                continue
            except Exception as exc:  # noqa: BLE001 - a study shape not foreseen above
                # One plot must not cost the others and the report; -v shows the traceback.
                log.debug("optuna could not draw %s", plot_type, exc_info=True)
                first = (str(exc).splitlines() or [""])[0]
                reason = f"Optuna could not draw it: {type(exc).__name__}: {first}"
        result.skipped[plot_type] = reason
        log.debug("skipped %s: %s", plot_type, reason)  # the CLI prints the one line
    return result
