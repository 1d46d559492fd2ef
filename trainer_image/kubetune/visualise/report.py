"""``index.html``: one offline page with the study's best trial, its trials and every plot."""

from __future__ import annotations

import datetime as dt
import html
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kubetune.search.results import format_value
from kubetune.visualise.export import PLOTLY_JS
from kubetune.visualise.study_info import StudySummary, trial_row

if TYPE_CHECKING:
    import plotly.graph_objects as go

TITLES = {
    "pareto_front": "Pareto front",
    "optimization_history": "Optimization history",
    "param_importances": "Parameter importances (fANOVA, beside optuna-dashboard's PED-ANOVA)",
    "slice": "Slice",
    "contour": "Contour",
    "parallel_coordinate": "Parallel coordinates",
    "intermediate_values": "Intermediate values",
    "edf": "Empirical distribution (EDF)",
    "timeline": "Timeline",
}

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
section.plot { margin: 2em 0; }
.skipped { color: #8a5a00; }
.stamp { color: #666; }
nav a { margin-right: 1em; }
"""


def _table(header: list[str], rows: list[list[Any]], numeric: set[int] | None = None) -> str:
    numeric = numeric or set()
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(
            f'<td{" class=num" if i in numeric else ""}>{html.escape(format_value(cell, 6, "–"))}</td>'
            for i, cell in enumerate(row)
        ) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def title(name: str) -> str:
    """A figure's heading: its plot type's title, with the objective for one of several."""
    if name in TITLES:
        return TITLES[name]
    kind = next((k for k in TITLES if name.startswith(f"{k}_")), None)
    return f"{TITLES[kind]}: {name[len(kind) + 1:]}" if kind else name


def _front_html(summary: StudySummary) -> str:
    front = summary.front or []
    names = summary.param_names
    rows = [[t.number, *t.values, *(t.params.get(p) for p in names)] for t in front]
    numeric = set(range(1 + len(summary.objectives)))
    table = _table(["trial", *summary.objectives, *names], rows, numeric)
    return f"""<h2 id="front">Pareto front</h2>
<p>{len(front)} Pareto-optimal trials ({html.escape(summary.direction)}): no other trial is as good on every
objective and better on one.</p>
{table}"""


def _best_html(summary: StudySummary) -> str:
    best = summary.best_trial
    if best is None:
        return '<h2 id="best">Best trial</h2>\n<p class="skipped">No trial has completed yet.</p>'
    best_params = _table(["parameter", "value"], [[k, v] for k, v in sorted(best.params.items())])
    return f"""<h2 id="best">Best trial</h2>
<p>Trial <b>#{best.number}</b>: {html.escape(summary.metric)} = <b class="best-value">{format_value(best.value, 6, "–")}</b>
({html.escape(summary.direction)})</p>
{best_params}"""


def _summary_html(summary: StudySummary) -> str:
    counts = _table(["state", "trials"], [[s, n] for s, n in summary.counts.items()], {1})
    if summary.front is not None:
        return f"""
{_front_html(summary)}
<h2 id="trials">Trials by state</h2>
<p>{summary.n_trials} trials in all.</p>
{counts}"""
    names = summary.param_names
    rows = []
    for trial in summary.top_trials:
        row = trial_row(trial)
        used = summary.usage.get(trial.number)
        rows.append([row["number"], row["value"], row["duration_s"], used.gpu_seconds if used else None,
                     (used.device or None) if used else None, *(row["params"].get(p) for p in names)])
    top = _table(["trial", summary.metric, "seconds", "GPU seconds", "device", *names], rows, {0, 1, 2, 3})
    usage = f"\n<p>{html.escape(summary.usage_line)}</p>" if summary.usage_line else ""
    return f"""
{_best_html(summary)}
<h2 id="trials">Trials by state</h2>
<p>{summary.n_trials} trials in all.</p>{usage}
{counts}
<h2 id="top">Top {len(summary.top_trials)} completed trials</h2>
{top}"""


def _plot_section(
    plot_type: str, figure: go.Figure, files: Mapping[str, Path], embed_interactive: bool, stamp: str = "",
) -> str:
    heading = html.escape(title(plot_type))
    links = " · ".join(
        f'<a href="{html.escape(path.name)}">{kind.upper()}</a>' for kind, path in files.items()
    )
    if embed_interactive:
        body = figure.to_html(
            full_html=False, include_plotlyjs=False, default_height="560px",
            config={"displaylogo": False},
        )
    elif "png" in files:
        body = f'<img src="{html.escape(files["png"].name)}" alt="{heading}" style="max-width:100%">'
    else:
        body = ""
    when = f'<span class="stamp">{html.escape(stamp)}</span> · ' if stamp else ""
    return f'<section class="plot" id="{plot_type}"><h3>{heading}</h3><p>{when}{links}</p>{body}</section>'


def write_index(
    path: Path,
    summary: StudySummary,
    figures: Mapping[str, go.Figure],
    files: Mapping[str, Mapping[str, Path]],
    skipped: Mapping[str, str],
    notes: list[str] | None = None,
    stamps: Mapping[str, str] | None = None,
) -> Path:
    """Write the report. ``files`` maps each plot type to ``{"html": path, "png": path}``;
    ``stamps`` says, per plot, when it was drawn and from how many trials.

    Plots are embedded as live figures when their HTML files exist (the page then
    loads the folder's ``plotly.min.js`` once, by a relative path), as images otherwise.
    """
    embed = (path.parent / PLOTLY_JS).is_file() and any("html" in f for f in files.values())
    script = f'<script src="{PLOTLY_JS}" charset="utf-8"></script>' if embed else ""
    sections = [
        _plot_section(t, figures[t], files.get(t, {}), embed and "html" in files.get(t, {}),
                      (stamps or {}).get(t, ""))
        for t in figures
    ]
    skipped_html = ""
    if skipped:
        items = "".join(
            f'<li class="skipped"><b>{html.escape(t)}</b>: {html.escape(r)}</li>' for t, r in skipped.items()
        )
        skipped_html = f'<h2 id="skipped">Skipped plots</h2><ul>{items}</ul>'
    notes_html = "".join(f'<p class="skipped">{html.escape(n)}</p>' for n in notes or [])
    nav = "".join(f'<a href="#{t}">{html.escape(title(t))}</a>' for t in figures)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    name = html.escape(summary.name)
    page = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Study {name} — kubetune</title>
<style>{_STYLE}</style>
{script}
</head>
<body>
<h1>Study <code>{name}</code></h1>
<p>Generated by ml-visualise, {stamp}.</p>
{notes_html}
{_summary_html(summary)}
<h2 id="plots">Plots</h2>
<nav>{nav}</nav>
{"".join(sections)}
{skipped_html}
</body>
</html>
"""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path
