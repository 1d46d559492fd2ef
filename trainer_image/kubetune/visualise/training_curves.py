"""``--mode training``: loss and accuracy curves of one or more runs, from TensorBoard events."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from kubetune.errors import DataError
from kubetune.visualise.export import (
    FORMATS,
    PngJob,
    ensure_output_dir,
    find_chromium,
    wants_png,
    write_figures,
)

if TYPE_CHECKING:
    import plotly.graph_objects as go

log = logging.getLogger(__name__)

# What kubetune.training writes once per epoch (step = epoch).
LOSS_TAGS = ("train_loss", "val_loss")
ACC_TAGS = ("train_acc", "val_acc")
EVENT_PREFIX = "events.out.tfevents."
PNG_SIZE = (1400, 600)
FIGURE_STEM = "training_curves"


@dataclass
class Run:
    """One run folder's per-epoch scalars: ``{tag: [(epoch, value), ...]}``."""

    label: str
    path: Path
    scalars: dict[str, list[tuple[int, float]]] = field(default_factory=dict)


def _has_events(folder: Path) -> bool:
    return any(p.is_file() and p.name.startswith(EVENT_PREFIX) for p in folder.iterdir())


def find_runs(logdirs: Sequence[Path]) -> list[tuple[str, Path]]:
    """Every folder with event files under the logdirs, as ``(label, path)``.

    A logdir may itself be a run, or hold many runs (``runs/<study>/trial-3``).
    Labels are paths relative to the logdir, prefixed by its name when there are several.
    """
    found: list[tuple[str, Path]] = []
    for logdir in logdirs:
        if not logdir.is_dir():
            raise DataError(f"`--logdir` must be a folder, but {logdir} is not one")
        folders = sorted(p for p in [logdir, *logdir.rglob("*")] if p.is_dir() and _has_events(p))
        for folder in folders:
            rel = folder.relative_to(logdir).as_posix()
            label = logdir.resolve().name if rel == "." else rel
            if len(logdirs) > 1 and rel != ".":
                label = f"{logdir.resolve().name}/{rel}"
            found.append((label, folder))
    if not found:
        joined = ", ".join(str(d) for d in logdirs)
        raise DataError(
            f"`--logdir` must hold TensorBoard event files ({EVENT_PREFIX}*), but {joined} has none"
        )
    return found


def read_run(label: str, folder: Path) -> Run:
    """Read the loss and accuracy scalars of one run with TensorBoard's EventAccumulator."""
    from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={SCALARS: 0})  # 0: keep every point
    acc.Reload()
    tags = set(acc.Tags().get(SCALARS, []))
    run = Run(label=label, path=folder)
    for tag in (*LOSS_TAGS, *ACC_TAGS):
        if tag in tags:
            by_step = {event.step: float(event.value) for event in acc.Scalars(tag)}  # last write wins
            run.scalars[tag] = sorted(by_step.items())
    return run


def read_runs(logdirs: Sequence[Path]) -> tuple[list[Run], dict[str, str]]:
    """The runs that hold curves, and ``{label: reason}`` for those that hold none."""
    runs, skipped = [], {}
    for label, folder in find_runs(logdirs):
        run = read_run(label, folder)
        if run.scalars:
            runs.append(run)
        else:
            skipped[label] = f"no {'/'.join((*LOSS_TAGS, *ACC_TAGS))} scalars"
            log.info("skipped run %s: %s", label, skipped[label])
    if not runs:
        raise DataError(
            "`--logdir` must hold runs written by kubetune (scalars "
            f"{', '.join((*LOSS_TAGS, *ACC_TAGS))}), but no run has any"
        )
    return runs, skipped


def curves_figure(runs: Sequence[Run]) -> go.Figure:
    """Loss (left) and accuracy (right); one colour per run, dashed train, solid val."""
    import plotly.colors
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=("Loss", "Accuracy"), horizontal_spacing=0.08)
    palette = plotly.colors.qualitative.Plotly
    for i, run in enumerate(runs):
        color = palette[i % len(palette)]
        for col, tags in ((1, LOSS_TAGS), (2, ACC_TAGS)):
            for tag in tags:
                points = run.scalars.get(tag)
                if not points:
                    continue
                split = tag.split("_")[0]
                fig.add_trace(
                    go.Scatter(
                        x=[step for step, _ in points], y=[value for _, value in points],
                        mode="lines+markers", name=f"{run.label} {split}",
                        legendgroup=run.label, showlegend=col == 1,
                        line={"color": color, "dash": "dash" if split == "train" else "solid"},
                        hovertemplate=f"{run.label}<br>{tag}: %{{y:.4f}}<br>epoch %{{x}}<extra></extra>",
                    ),
                    row=1, col=col,
                )
    last_epoch = max((step for run in runs for points in run.scalars.values() for step, _ in points), default=1)
    fig.update_xaxes(title_text="epoch", dtick=1 if last_epoch <= 20 else None)  # whole epochs
    fig.update_yaxes(title_text="loss", row=1, col=1)
    fig.update_yaxes(title_text="accuracy", row=1, col=2)
    fig.update_layout(title=f"Training curves ({len(runs)} run{'s' if len(runs) != 1 else ''})",
                      legend={"title": {"text": "run (dashed: train, solid: val)"}})
    return fig


@dataclass
class TrainingReport:
    """What ``render_training`` wrote."""

    output_dir: Path
    runs: list[Run]
    files: dict[str, Path] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


def render_training(logdirs: Sequence[Path], output_dir: Path, *, fmt: str = "both") -> TrainingReport:
    """Write ``training_curves.html`` and/or ``.png`` for the runs under ``logdirs``.

    Chromium missing with ``fmt="png"`` or ``"both"``: :class:`ChromiumMissing`, before
    anything is written. Chromium failing to render with ``"both"``: the HTML is written,
    then the error is raised.
    """
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, but got {fmt!r}")
    runs, skipped = read_runs(logdirs)
    chromium = find_chromium() if wants_png(fmt) else None  # ChromiumMissing: nothing written yet
    figure = curves_figure(runs)
    report = TrainingReport(output_dir=ensure_output_dir(output_dir), runs=runs, skipped=skipped)
    files, png_error = write_figures([PngJob(figure, output_dir / f"{FIGURE_STEM}.png", *PNG_SIZE)], fmt, chromium)
    report.files = files[FIGURE_STEM]
    if png_error is not None:
        raise type(png_error)(f"{png_error}; wrote {report.files['html']}") from None
    return report
