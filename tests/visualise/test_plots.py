"""In-process: which plots a study allows, --params resolution, summaries, Chromium lookup."""

from __future__ import annotations

import os
import stat
import warnings

import optuna
import pytest

from kubetune.errors import UsageError
from kubetune.visualise import (
    PLOT_TYPES,
    ChromiumMissing,
    build_figures,
    find_chromium,
    importance_evaluator,
    resolve_params,
    study_param_names,
    summarise,
)
from kubetune.visualise.plots import skip_reason
from tests.visualise.conftest import make_study

PARAMS = ["optimizer.lr", "training.batch_size"]


def test_cli_lists_the_same_plot_types_as_the_library():
    from kubetune.cli import visualise as cli

    assert cli.PLOT_TYPES == PLOT_TYPES
    assert len(PLOT_TYPES) == 8


def test_short_names_resolve_to_the_dotted_keys_they_end_with():
    assert resolve_params(["lr", "batch_size"], PARAMS) == PARAMS
    assert resolve_params(["optimizer.lr"], PARAMS) == ["optimizer.lr"]
    assert resolve_params(["lr", "optimizer.lr"], PARAMS) == ["optimizer.lr"]  # no duplicates


def test_unknown_param_lists_the_choices():
    with pytest.raises(UsageError) as info:
        resolve_params(["momentum"], PARAMS)
    message = str(info.value)
    assert "`momentum`" in message and "`optimizer.lr`" in message and "`training.batch_size`" in message
    assert info.value.exit_code == 2
    # a suffix must end at a dot: `r` is not `optimizer.lr`
    with pytest.raises(UsageError):
        resolve_params(["r"], PARAMS)


def test_ambiguous_param_lists_the_matches():
    with pytest.raises(UsageError) as info:
        resolve_params(["type"], ["optimizer.type", "scheduler.type", "optimizer.lr"])
    message = str(info.value)
    assert "ambiguous" in message and "`optimizer.type`" in message and "`scheduler.type`" in message
    assert "optimizer.lr" not in message


def test_importances_use_seeded_fanova():
    evaluator = importance_evaluator()
    assert isinstance(evaluator, optuna.importance.FanovaImportanceEvaluator)


def test_real_study_draws_every_plot(search_study):
    study = optuna.load_study(study_name=search_study.name, storage=search_study.url)
    drawn = build_figures(study)
    assert drawn.skipped == {}
    assert list(drawn.figures) == list(PLOT_TYPES)
    assert drawn.params == PARAMS == study_param_names(study)
    # importances come from the chosen evaluator: same bars as asking Optuna directly
    bars = drawn.figures["param_importances"].data[0]
    expected = optuna.importance.get_param_importances(study, evaluator=importance_evaluator())
    assert dict(zip(bars.y, bars.x, strict=True)) == pytest.approx(expected)


def test_params_narrow_the_plots_that_take_them(search_study):
    study = optuna.load_study(study_name=search_study.name, storage=search_study.url)
    drawn = build_figures(study, ["slice", "contour", "param_importances"], ["optimizer.lr"])
    assert set(drawn.figures) == {"slice", "param_importances"}
    assert drawn.skipped["contour"] == "contour needs at least two parameters, but got 1 (optimizer.lr)"
    assert list(drawn.figures["param_importances"].data[0].y) == ["optimizer.lr"]
    assert len(drawn.figures["slice"].data) == 1  # one panel, lr only


def _storage(tmp_path):
    return f"sqlite:///{tmp_path / 'synthetic.db'}"


def test_one_completed_trial_skips_importances_and_contour(tmp_path):
    study = make_study(_storage(tmp_path), "one", [
        {"params": {"optimizer.lr": 0.01, "training.batch_size": 32}, "value": 0.5, "reports": {1: 0.5}},
        {"params": {"optimizer.lr": 0.02, "training.batch_size": 64}, "state": "PRUNED", "reports": {1: 0.1}},
    ])
    drawn = build_figures(study)
    assert drawn.skipped["param_importances"] == (
        "importances need at least two completed trials, but the study has 1"
    )
    assert drawn.skipped["contour"].startswith("contour needs two parameters that vary")
    assert set(drawn.figures) == set(PLOT_TYPES) - {"param_importances", "contour"}


def test_no_reports_skips_intermediate_values(tmp_path):
    study = make_study(_storage(tmp_path), "no-reports", [
        {"params": {"optimizer.lr": 0.01 * (i + 1), "training.batch_size": [32, 64][i % 2]}, "value": 0.1 * i}
        for i in range(3)
    ])
    assert skip_reason("intermediate_values", study, PARAMS) == "no trial reported intermediate values"
    drawn = build_figures(study)
    assert list(drawn.skipped) == ["intermediate_values"]


def test_a_study_with_one_parameter_skips_contour(tmp_path):
    study = make_study(_storage(tmp_path), "lr-only", [
        {"params": {"optimizer.lr": lr}, "value": v} for lr, v in ((0.01, 0.3), (0.05, 0.6), (0.1, 0.4))
    ])
    drawn = build_figures(study, ["contour", "slice"])
    assert drawn.skipped == {"contour": "contour needs at least two parameters, but got 1 (optimizer.lr)"}


def test_summary_counts_states_and_ranks_by_direction(tmp_path):
    trials = [
        {"params": {"optimizer.lr": 0.01}, "value": 0.3},
        {"params": {"optimizer.lr": 0.02}, "value": 0.1},
        {"params": {"optimizer.lr": 0.03}, "value": 0.2},
        {"params": {"optimizer.lr": 0.04}, "state": "PRUNED"},
        {"params": {"optimizer.lr": 0.05}, "state": "FAIL"},
    ]
    high = summarise(make_study(_storage(tmp_path), "max", trials))
    assert high.counts == {"COMPLETE": 3, "PRUNED": 1, "FAIL": 1}
    assert [t.value for t in high.top_trials] == [0.3, 0.2, 0.1]
    low = summarise(make_study(_storage(tmp_path), "min", trials, direction="minimize"), top=2)
    assert [t.value for t in low.top_trials] == [0.1, 0.2]
    assert low.best_trial.params == {"optimizer.lr": 0.02}


def test_a_study_without_a_finished_trial_has_no_best_trial(tmp_path):
    study = make_study(_storage(tmp_path), "pruned-only", [
        {"params": {"optimizer.lr": 0.01}, "state": "PRUNED", "reports": {1: 0.1}},
    ])
    summary = summarise(study)
    assert summary.best_trial is None and summary.top_trials == []
    assert summary.counts == {"PRUNED": 1}
    empty = summarise(optuna.create_study(study_name="empty", storage=_storage(tmp_path)))
    assert empty.best_trial is None and empty.counts == {}


def test_the_metric_name_comes_from_optuna_else_a_default(tmp_path):
    trials = [{"params": {"optimizer.lr": lr}, "value": v} for lr, v in ((0.01, 0.3), (0.02, 0.5))]
    named = make_study(_storage(tmp_path), "named", trials)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        named.set_metric_names(["val_loss"])
    anonymous = make_study(_storage(tmp_path), "anonymous", trials)
    assert summarise(named).metric == "val_loss"
    assert summarise(anonymous).metric == "value"
    for study, label in ((named, "val_loss"), (anonymous, "Objective Value")):
        figure = build_figures(study, ["optimization_history"]).figures["optimization_history"]
        assert figure.layout.yaxis.title.text == label
        assert any(trace.name == label for trace in figure.data)


def test_find_chromium_honours_browser_path_then_path(tmp_path, monkeypatch):
    fake = tmp_path / "bin" / "chromium"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.delenv("BROWSER_PATH", raising=False)
    monkeypatch.setenv("PATH", str(fake.parent))
    assert find_chromium() == str(fake)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(ChromiumMissing) as info:
        find_chromium()
    message = str(info.value)
    assert "apt-get install chromium" in message and "HTML output still works" in message
    monkeypatch.setenv("BROWSER_PATH", str(tmp_path / "nowhere" / "chrome"))
    with pytest.raises(ChromiumMissing, match="BROWSER_PATH"):
        find_chromium()
    monkeypatch.setenv("BROWSER_PATH", str(fake))
    assert find_chromium() == str(fake)
    assert os.access(fake, os.X_OK)


def test_png_sizes_grow_with_the_panels_a_plot_draws():
    from kubetune.visualise.study_report import PNG_SIZE, png_size

    assert png_size("optimization_history", 9) == PNG_SIZE
    assert png_size("slice", 2) == PNG_SIZE
    assert png_size("slice", 5) == (1600, PNG_SIZE[1])
    assert png_size("contour", 2) == PNG_SIZE
    assert png_size("contour", 4) == (1280, 1280)
    assert png_size("contour", 40) == (3200, 3200)
