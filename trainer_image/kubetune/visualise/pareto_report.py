"""``ml-visualise --mode search`` for a study of several objectives.

Optuna's Pareto-front plot with the objectives named, then each plot that needs one
objective drawn once per objective (``target`` and ``target_name``), and an
``index.html`` that lists the front and links every plot.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import optuna
from optuna.trial import FrozenTrial, TrialState

from kubetune.fileio import write_text_atomic
from kubetune.search.pareto import front, objective_names
from kubetune.visualise.export import (
    PngJob,
    ensure_output_dir,
    find_chromium,
    wants_png,
    write_figures,
)

if TYPE_CHECKING:
    import plotly.graph_objects as go

log = logging.getLogger(__name__)

PNG_SIZE = (1000, 600)
# The single-objective plots drawn once per objective.
PER_OBJECTIVE = ("optimization_history", "slice", "parallel_coordinate", "edf")


@dataclass
class ParetoReport:
    files: dict[str, dict[str, Path]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    front: list[FrozenTrial] = field(default_factory=list)
    index: Path | None = None


def _per_objective(plot_type: str, study: optuna.Study, index: int, name: str) -> go.Figure:
    vis = optuna.visualization

    def target(t: FrozenTrial) -> float:
        return t.values[index]

    draw: dict[str, Callable[[], go.Figure]] = {
        "optimization_history": lambda: vis.plot_optimization_history(study, target=target, target_name=name),
        "slice": lambda: vis.plot_slice(study, target=target, target_name=name),
        "parallel_coordinate": lambda: vis.plot_parallel_coordinate(study, target=target, target_name=name),
        "edf": lambda: vis.plot_edf(study, target=target, target_name=name),
    }
    return draw[plot_type]()


def pareto_figures(study: optuna.Study) -> tuple[dict[str, go.Figure], dict[str, str]]:
    """Figures by file stem, and why a plot was skipped."""
    names = objective_names(study)
    figures: dict[str, go.Figure] = {}
    skipped: dict[str, str] = {}
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return figures, {"pareto_front": "no trial has completed yet"}
    figures["pareto_front"] = optuna.visualization.plot_pareto_front(study, target_names=names)
    for plot_type in PER_OBJECTIVE:
        for index, name in enumerate(names):
            stem = f"{plot_type}_{name}"
            try:
                figures[stem] = _per_objective(plot_type, study, index, name)
            except Exception as exc:  # noqa: BLE001 - one plot must not cost the others
                log.debug("optuna could not draw %s", stem, exc_info=True)
                skipped[stem] = f"Optuna could not draw it: {type(exc).__name__}"
    return figures, skipped


def _index_html(study: optuna.Study, trials: list[FrozenTrial], files: dict[str, dict[str, Path]]) -> str:
    names = objective_names(study)
    keys = sorted({k for t in trials for k in t.params})
    head = "".join(f"<th>{html.escape(h)}</th>" for h in ["trial", *names, *keys])
    rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(v))}</td>"
                         for v in [t.number, *(f"{x:.6g}" for x in t.values), *(t.params.get(k) for k in keys)])
        + "</tr>" for t in trials)
    links = "".join(f'<li><a href="{html.escape(paths["html"].name)}">{html.escape(stem)}</a></li>'
                    for stem, paths in files.items() if "html" in paths)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(study.study_name)}</title>"
            f"</head><body><h1>Study {html.escape(study.study_name)}</h1>"
            f"<h2>Pareto front: {len(trials)} trials</h2><table><tr>{head}</tr>{rows}</table>"
            f"<h2>Plots</h2><ul>{links}</ul></body></html>\n")


def render_pareto(study: optuna.Study, output_dir: Path, fmt: str = "both") -> ParetoReport:
    """Write the plots of a multi-objective study and its ``index.html``."""
    chromium = find_chromium() if wants_png(fmt) else None
    figures, skipped = pareto_figures(study)
    report = ParetoReport(skipped=skipped, front=front(study))
    ensure_output_dir(output_dir)
    jobs = [PngJob(figure, output_dir / f"{stem}.png", *PNG_SIZE) for stem, figure in figures.items()]
    report.files, png_error = write_figures(jobs, fmt, chromium)
    report.index = output_dir / "index.html"
    write_text_atomic(report.index, _index_html(study, report.front, report.files))
    if png_error is not None:
        raise type(png_error)(f"{png_error}; wrote the HTML plots and index.html to {output_dir}")
    return report
