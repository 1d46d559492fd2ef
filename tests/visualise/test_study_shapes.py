"""ml-visualise on every study shape a newcomer can leave behind: never a traceback.

Each shape is a real SQLite study; the command runs as a subprocess, skips each plot
it cannot draw with one line saying why, and writes every other plot and the report.
"""

from __future__ import annotations

import re
import warnings

import optuna
import pytest

from kubetune.visualise import PLOT_TYPES
from tests.conftest import run_cli
from tests.visualise.conftest import make_study

LR_BS = ("optimizer.lr", "training.batch_size")
VALUE_PLOTS = {"optimization_history", "param_importances", "slice", "contour",
               "parallel_coordinate", "edf"}


def _trial(lr, bs, value=None, state="COMPLETE", reports=None):
    return {"params": {"optimizer.lr": lr, "training.batch_size": bs}, "value": value,
            "state": state, "reports": reports if reports is not None else ({1: value} if value else {})}


# name: (trials, expected {plot: reason} of the skipped plots, summary line on stdout)
SHAPES = {
    "zero-variance": (
        [_trial(0.01, 32, 1.0), _trial(0.05, 64, 1.0), _trial(0.1, 32, 1.0)],
        {"param_importances": "importances need completed trials that differ in val_acc, "
                              "but all 3 scored val_acc=1"},
        "best val_acc=1 (trial #0; 3 trials: 3 complete)",
    ),
    "one-complete": (
        [_trial(0.01, 32, 0.5), _trial(0.05, 64, state="PRUNED", reports={1: 0.1})],
        {"param_importances": "importances need at least two completed trials, but the study has 1",
         "contour": "contour needs two parameters that vary across completed trials, but only 0 of 2 do"},
        "best val_acc=0.5 (trial #0; 2 trials: 1 complete, 1 pruned)",
    ),
    "one-parameter": (
        [{"params": {"optimizer.lr": lr}, "value": v, "reports": {1: v}}
         for lr, v in ((0.01, 0.6), (0.05, 0.8), (0.1, 0.7))],
        {"contour": "contour needs at least two parameters, but got 1 (optimizer.lr)"},
        "best val_acc=0.8 (trial #1; 3 trials: 3 complete)",
    ),
    "all-pruned-or-failed": (
        [_trial(0.01, 32, state="PRUNED", reports={1: 0.2}),
         _trial(0.05, 64, state="PRUNED", reports={1: 0.3}), _trial(0.1, 32, state="FAIL")],
        {p: "no trial has completed yet (2 pruned, 1 failed)" for p in VALUE_PLOTS},
        "no completed trial yet (3 trials: 2 pruned, 1 failed)",
    ),
    "categorical-only": (
        [{"params": {"optimizer.type": o, "scheduler.type": s}, "value": v, "reports": {1: v}}
         for o, s, v in (("sgd", "step", 0.6), ("adam", "cosine", 0.9), ("sgd", "cosine", 0.7),
                         ("adam", "step", 0.8))],
        {},
        "best val_acc=0.9 (trial #1; 4 trials: 4 complete)",
    ),
    "running": (
        [_trial(0.01, 32, 0.5), _trial(0.05, 64, 0.7), _trial(0.1, 32, 0.6),
         _trial(0.02, 64, state="RUNNING", reports={1: 0.4})],
        {},
        "best val_acc=0.7 (trial #1; 4 trials: 3 complete, 1 running)",
    ),
    "only-running": (
        [_trial(0.02, 64, state="RUNNING", reports={1: 0.4})],
        {p: "no trial has completed yet (1 running)" for p in VALUE_PLOTS},
        "no completed trial yet (1 trial: 1 running)",
    ),
}


@pytest.mark.parametrize("shape", list(SHAPES))
def test_each_plot_is_drawn_or_skipped_with_one_line(shape, tmp_path):
    trials, expected, summary = SHAPES[shape]
    url = f"sqlite:///{tmp_path / 'shapes.db'}"
    study = make_study(url, shape, trials)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(["val_acc"])
    out = tmp_path / "plots"
    result = run_cli("ml-visualise", "--study-name", shape, "--storage", url, "--output", str(out),
                     "--format", "html")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert f"study {shape}: {summary}" in result.stdout
    skipped = dict(re.findall(r"^skipped (\w+): (.+)$", result.stderr, re.MULTILINE))
    assert skipped == expected
    assert result.stderr.count("\n") == len(expected)  # one line per skipped plot, nothing else
    drawn = {p.stem for p in out.glob("*.html")} - {"index"}
    assert drawn == set(PLOT_TYPES) - set(expected)
    index = (out / "index.html").read_text(encoding="utf-8")
    for plot_type, reason in expected.items():
        assert f"<b>{plot_type}</b>: {reason}" in index
    if "no completed trial" in summary:
        assert "No trial has completed yet." in index


def test_a_study_without_a_metric_name_takes_the_configs(tmp_path, digits_dir):
    """Studies made by other tools (no set_metric_names) open and get the config's metric as a name."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    trials = [_trial(0.01, 32, 0.6), _trial(0.05, 64, 0.8), _trial(0.1, 32, 0.7)]
    make_study(url, "old", trials)
    config = tmp_path / "config.yaml"
    config.write_text(
        f"data: {{path: {digits_dir}}}\nlogging: {{output_dir: {tmp_path / 'runs'}}}\n"
        f"search: {{study_name: old, storage: '{url}', metric: val_acc}}\n"
    )
    result = run_cli("ml-visualise", "--config", str(config), "--format", "html",
                     "--plot-type", "optimization_history", env={"KUBETUNE_STORAGE_URL": ""})
    assert result.returncode == 0, result.stderr
    assert "study old: best val_acc=0.8 (trial #1; 3 trials: 3 complete)" in result.stdout
    page = (tmp_path / "runs" / "optuna_studies" / "old" / "plots" / "optimization_history.html")
    assert '"text":"val_acc"' in page.read_text(encoding="utf-8").replace(" ", "")
