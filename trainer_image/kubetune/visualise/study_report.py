"""Everything ``ml-visualise --mode search`` writes for one study, in one call.

A study of several objectives is the same report: Optuna's Pareto-front plot, then
each plot of an objective's values once per objective, and the front listed in place
of the best trial.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import optuna

from kubetune.errors import KubetuneError
from kubetune.visualise import report_state
from kubetune.visualise.export import (
    FORMATS,
    PngJob,
    ensure_output_dir,
    find_chromium,
    wants_png,
    write_figures,
)
from kubetune.visualise.plots import PARETO_FRONT, PLOT_TYPES, build_figures, figure_names
from kubetune.visualise.report import write_index
from kubetune.visualise.study_info import StudySummary, summarise

log = logging.getLogger(__name__)

PNG_SIZE = (1000, 600)  # width, height in pixels of a plot with up to two parameters
PANEL_PX = 320  # per parameter, for the plots that draw one panel (slice) or a grid (contour)
MAX_PX = 3200


def png_size(plot_type: str, n_params: int) -> tuple[int, int]:
    """The pixel size of a plot's PNG: wider for many slice panels, square for a contour grid."""
    width, height = PNG_SIZE
    if plot_type == "slice":
        return min(MAX_PX, max(width, PANEL_PX * n_params)), height
    if plot_type == "contour" and n_params > 2:
        side = min(MAX_PX, max(width, PANEL_PX * n_params))
        return side, side
    return width, height


class NothingToPlot(KubetuneError):
    """Every requested plot was skipped: ``skipped`` says why, per plot type."""

    def __init__(self, message: str, skipped: dict[str, str]) -> None:
        super().__init__(message)
        self.skipped = skipped


def skipped_text(skipped: dict[str, str]) -> str:
    """``contour: contour needs …; edf: …``: every skipped plot and its reason, on one line."""
    return "; ".join(f"{plot_type}: {reason}" for plot_type, reason in skipped.items())


@dataclass
class StudyReport:
    """What was written: files per plot type, skipped plots with reasons, the index."""

    output_dir: Path
    summary: StudySummary
    files: dict[str, dict[str, Path]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    index: Path | None = None


def render_study(
    study: optuna.Study,
    output_dir: Path,
    *,
    plot_types: Sequence[str] | None = None,
    params: Sequence[str] | None = None,
    fmt: str = "both",
    top: int = 10,
    default_metric: str | None = None,
    keep_others: bool = False,
) -> StudyReport:
    """Write ``<type>.html``/``<type>.png`` for each drawable plot, and ``index.html``.

    ``plot_types``: None for every plot the study's shape has; a study of several
    objectives names a plot of one objective's values ``<type>_<objective>``.

    ``params`` are dotted keys; ``default_metric`` names the objective of a study that
    records no metric name (one the operator created from a config's ``search.metric``).
    With ``fmt="png"`` or ``"both"`` a missing Chromium (:class:`ChromiumMissing`) fails
    before anything is written; a Chromium that fails to render under ``"both"`` leaves
    the HTML files and the index written, then its error is raised. A study (or a
    selection of plots) that draws no plot at all raises :class:`NothingToPlot` and
    writes nothing; a study still running or with only failed trials gets what it can
    draw (its timeline, its reported epochs).

    ``keep_others`` (``--plot-type``): the report keeps the plots it showed before that
    are not drawn now (see :mod:`kubetune.visualise.report_state`); each plot says when
    it was drawn and from how many trials.
    """
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, but got {fmt!r}")
    summary = summarise(study, top=top, default_metric=default_metric or "value")
    chromium = find_chromium() if wants_png(fmt) else None  # ChromiumMissing: nothing written yet
    drawn = build_figures(study, plot_types, params, default_metric or "Objective Value")
    if not drawn.figures:
        why = "it has no trials yet" if summary.n_trials == 0 else skipped_text(drawn.skipped)
        raise NothingToPlot(f"no plot of study {summary.name} could be drawn: {why}", drawn.skipped)
    report = StudyReport(output_dir=ensure_output_dir(output_dir), summary=summary, skipped=drawn.skipped)
    jobs = [
        PngJob(figure, output_dir / f"{name}.png", *png_size(drawn.kinds[name], len(drawn.params)))
        for name, figure in drawn.figures.items()
    ]
    report.files, png_error = write_figures(jobs, fmt, chromium)
    notes = [f"PNG files were not written: {png_error}"] if png_error else []
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    fresh = {name: report_state.record(figure, report.files.get(name, {}), now, summary.counts, drawn.params)
             for name, figure in drawn.figures.items()}
    order = figure_names(study, (PARETO_FRONT, *PLOT_TYPES))
    shown = report_state.merge(output_dir, report_state.load(output_dir), fresh, order, keep_others=keep_others)
    report_state.save(output_dir, shown)
    figures = {name: drawn.figures[name] if name in drawn.figures else entry.load_figure()
               for name, entry in shown.items()}
    files = {name: {kind: output_dir / file for kind, file in entry.files.items()} for name, entry in shown.items()}
    report.index = write_index(
        output_dir / "index.html", summary, figures, files, drawn.skipped, notes,
        stamps={name: entry.stamp() for name, entry in shown.items()},
    )
    if png_error is not None:
        # The HTML half is done and usable: say so in the one line the user sees.
        raise type(png_error)(f"{png_error}; wrote the HTML plots and index.html to {output_dir}")
    return report
