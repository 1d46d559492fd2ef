"""Optuna's own plotly figures for one study, and the reasons a plot cannot be drawn.

Every figure comes from ``optuna.visualization``; nothing here redraws what Optuna draws.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import optuna
from optuna.trial import FrozenTrial, TrialState

from kubetune.errors import UsageError
from kubetune.search import pareto
from kubetune.visualise.study_info import counts_text, metric_name, state_counts

if TYPE_CHECKING:
    import plotly.graph_objects as go

log = logging.getLogger(__name__)

Target = Callable[[FrozenTrial], float]

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

# A study of several objectives draws Optuna's Pareto-front plot first, then each plot
# of PLOT_TYPES that shows an objective's values once per objective (``target``).
PARETO_FRONT = "pareto_front"


def plot_types_of(study: optuna.Study) -> tuple[str, ...]:
    """Every plot type the study's report draws: PLOT_TYPES, after the Pareto front for several objectives."""
    return (PARETO_FRONT, *PLOT_TYPES) if len(study.directions) > 1 else PLOT_TYPES


def objective_names(study: optuna.Study, default: str = "Objective Value") -> list[str]:
    """The objectives' names: Optuna's metric names, else ``default`` for one objective."""
    if len(study.directions) > 1:
        return pareto.objective_names(study)
    return [metric_name(study, default=default)]


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


def dashboard_importances(study: optuna.Study, params: Sequence[str] | None = None,
                          objective: int = 0) -> dict[str, float]:
    """The importances optuna-dashboard shows for the ``objective``-th objective: PED-ANOVA
    with its defaults, the objective turned into a loss where it is maximised as the
    dashboard does; empty when it cannot."""
    sign = -1.0 if study.directions[objective] == optuna.study.StudyDirection.MAXIMIZE else 1.0

    def loss(trial: FrozenTrial) -> float:
        return sign * float(trial.values[objective])

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PED-ANOVA warns whenever a target is given
            return optuna.importance.get_param_importances(
                study, evaluator=optuna.importance.PedAnovaImportanceEvaluator(),
                params=list(params) if params else None, target=loss)
    except (ValueError, RuntimeError) as exc:
        log.debug("no PED-ANOVA importances: %s", exc)
        return {}


def importances_figure(study: optuna.Study, params: Sequence[str] | None, target_name: str,
                       objective: int | None = None) -> go.Figure:
    """fANOVA's bars (the report's ranking, see :func:`importance_evaluator`) and, beside
    them, PED-ANOVA's, which optuna-dashboard shows: both named, so two views of one study
    that rank differently say why. ``objective``: which one, for a study of several."""
    figure = optuna.visualization.plot_param_importances(
        study, evaluator=importance_evaluator(), params=list(params) if params else None,
        target=None if objective is None else _value_of(objective), target_name=target_name)
    complete = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    bars = figure.data[0]
    bars.name = f"{REPORT_METHOD}: every completed trial (this report's ranking)"
    names = list(bars.y)
    dashboard = dashboard_importances(study, params, objective or 0)
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
    """The figures that could be drawn, and a one-line reason for each that could not.

    Keyed by figure name: the plot type, or ``<type>_<objective>`` for one of several
    objectives; ``kinds`` maps each name to its plot type.
    """

    figures: dict[str, go.Figure] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    params: list[str] = field(default_factory=list)
    kinds: dict[str, str] = field(default_factory=dict)


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


def _importances_reason(study: optuna.Study, complete: list[FrozenTrial], objective: int) -> str | None:
    if len(complete) < 2:
        return f"importances need at least two completed trials, but the study has {len(complete)}"
    values = {t.values[objective] for t in complete}
    if len(values) == 1:
        # fANOVA would stop with "Encountered zero total variance in all trees".
        metric = objective_names(study, "value")[objective]
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


def skip_reason(plot_type: str, study: optuna.Study, params: Sequence[str], objective: int = 0) -> str | None:
    """Why ``plot_type`` (of the ``objective``-th objective) cannot be drawn for this study
    and these params, or ``None``."""
    if plot_type == PARETO_FRONT and len(study.directions) == 1:
        return "the study has one objective"
    trials = study.get_trials(deepcopy=False)
    if not trials:
        return "the study has no trials yet"
    complete = [t for t in trials if t.state == TrialState.COMPLETE]  # no second storage read
    if (plot_type in _NEEDS_VALUES or plot_type == PARETO_FRONT) and not complete:
        return f"no trial has completed yet ({counts_text(state_counts(trials))})"
    if plot_type in _TAKES_PARAMS and not params:
        return "the study has no parameters"
    if plot_type == "param_importances":
        return _importances_reason(study, complete, objective)
    if plot_type == "contour":
        return _contour_reason(complete, params)
    if plot_type == "intermediate_values" and not any(t.intermediate_values for t in trials):
        return "no trial reported intermediate values"
    return None


def build_figure(plot_type: str, study: optuna.Study, params: Sequence[str] | None,
                 default_metric: str = "Objective Value", objective: int | None = None) -> go.Figure:
    """One of Optuna's plotly figures, by kubetune's plot-type name.

    The axes carry the study's metric name; ``default_metric`` (Optuna's own label by
    default) only for a study that records none. ``objective``: the index of the
    objective drawn, for a study of several (Optuna's ``target``/``target_name``).
    """
    vis = optuna.visualization
    names = objective_names(study, default_metric)
    if plot_type == PARETO_FRONT:
        return vis.plot_pareto_front(study, target_names=names)
    target: Target | None = None
    target_name = metric_name(study, default=default_metric)
    if objective is not None:
        target, target_name = _value_of(objective), names[objective]
    selected = list(params) if params else None
    if plot_type == "optimization_history":
        return vis.plot_optimization_history(study, target=target, target_name=target_name)
    if plot_type == "param_importances":
        return importances_figure(study, selected, target_name, objective)
    if plot_type == "slice":
        return vis.plot_slice(study, params=selected, target=target, target_name=target_name)
    if plot_type == "contour":
        return vis.plot_contour(study, params=selected, target=target, target_name=target_name)
    if plot_type == "parallel_coordinate":
        return vis.plot_parallel_coordinate(study, params=selected, target=target, target_name=target_name)
    if plot_type == "intermediate_values":
        return vis.plot_intermediate_values(study)
    if plot_type == "edf":
        return vis.plot_edf(study, target=target, target_name=target_name)
    if plot_type == "timeline":
        return vis.plot_timeline(study)
    raise ValueError(f"unknown plot type {plot_type!r}")


def _value_of(objective: int) -> Target:
    def value(trial: FrozenTrial) -> float:
        return float(trial.values[objective])

    return value


def figure_names(study: optuna.Study, plot_types: Sequence[str]) -> dict[str, tuple[str, int | None]]:
    """Each figure ``plot_types`` make for this study, in order: name -> (plot type, objective).

    A study of one objective: one figure per type, named by it. Of several: the plots of
    an objective's values once per objective, ``slice_val_acc``; the others once.
    """
    if len(study.directions) == 1:
        return {plot_type: (plot_type, None) for plot_type in plot_types}
    names = objective_names(study)
    out: dict[str, tuple[str, int | None]] = {}
    for plot_type in plot_types:
        if plot_type in _NEEDS_VALUES:
            out.update({f"{plot_type}_{name}": (plot_type, i) for i, name in enumerate(names)})
        else:
            out[plot_type] = (plot_type, None)
    return out


def build_figures(
    study: optuna.Study, plot_types: Sequence[str] | None = None, params: Sequence[str] | None = None,
    default_metric: str = "Objective Value",
) -> StudyFigures:
    """Draw every requested plot that this study allows; record why the others were skipped.

    ``plot_types``: None for every one the study's shape has (:func:`plot_types_of`).
    ``params`` are dotted keys (see :func:`resolve_params`); ``None`` means all of them.
    """
    chosen = list(params) if params else study_param_names(study)
    result = StudyFigures(params=chosen)
    for name, (plot_type, objective) in figure_names(study, plot_types or plot_types_of(study)).items():
        result.kinds[name] = plot_type
        reason = skip_reason(plot_type, study, chosen, objective or 0)
        if reason is None:
            try:
                result.figures[name] = build_figure(plot_type, study, params, default_metric, objective)
                continue
            except Exception as exc:  # noqa: BLE001 - a study shape not foreseen above
                # One plot must not cost the others and the report; -v shows the traceback.
                log.debug("optuna could not draw %s", name, exc_info=True)
                first = (str(exc).splitlines() or [""])[0]
                reason = f"Optuna could not draw it: {type(exc).__name__}: {first}"
        result.skipped[name] = reason
        log.debug("skipped %s: %s", name, reason)  # the CLI prints the one line
    return result
