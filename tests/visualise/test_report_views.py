"""The report and optuna-dashboard agree on what they show, and --plot-type keeps the report whole."""

from __future__ import annotations

import json
import random

import optuna
import pytest

from kubetune.visualise.plots import DASHBOARD_METHOD, REPORT_METHOD, importances_figure
from kubetune.visualise.report_state import STATE
from kubetune.visualise.study_report import render_study
from tests.visualise.conftest import make_study


def _trials(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        lr, batch = 10 ** rng.uniform(-4, -0.7), rng.choice([32, 64])
        out.append({"params": {"optimizer.lr": lr, "training.batch_size": batch},
                    "value": 0.9 - abs(lr - 0.01) * 2 + (0.01 if batch == 32 else 0) + rng.uniform(0, 0.01),
                    "reports": {1: 0.5}})
    return out


def test_the_importances_plot_names_both_methods_and_shows_the_dashboards_values(tmp_path):
    from optuna_dashboard._importance import get_param_importance_from_trials_cache
    from optuna_dashboard._inmemory_cache import InMemoryCache

    url = f"sqlite:///{tmp_path / 's.db'}"
    study = make_study(url, "views", _trials(24))
    figure = importances_figure(study, None, "val_acc")
    assert REPORT_METHOD in figure.layout.title.text and "24 completed trials" in figure.layout.title.text
    fanova, ped = figure.data
    assert REPORT_METHOD in fanova.name and DASHBOARD_METHOD in ped.name and "optuna-dashboard" in ped.name
    # What optuna-dashboard's own code computes for this study, bar for bar.
    storage = optuna.storages.get_storage(url)
    study_id = storage.get_study_id_from_name("views")
    shown = get_param_importance_from_trials_cache(InMemoryCache(), storage, study_id, 0,
                                                   storage.get_all_trials(study_id))
    dashboard = {item["name"]: item["importance"] for item in shown}
    assert dict(zip(ped.y, ped.x, strict=True)) == pytest.approx(dashboard)


def _sections(index: str) -> list[str]:
    return [part.split('"', 1)[0] for part in index.split('<section class="plot" id="')[1:]]


def test_plot_type_refreshes_one_plot_and_keeps_the_others_dated(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    study = make_study(url, "whole", _trials(6))
    out = tmp_path / "plots"
    render_study(study, out, fmt="html")
    everything = _sections((out / "index.html").read_text(encoding="utf-8"))
    assert {"optimization_history", "param_importances", "slice", "timeline"} <= set(everything)
    assert "from 6 trials (6 complete)" in (out / "index.html").read_text(encoding="utf-8")

    dists = {"optimizer.lr": optuna.distributions.FloatDistribution(1e-4, 0.2, log=True),
             "training.batch_size": optuna.distributions.CategoricalDistribution([32, 64])}
    for spec in _trials(4, seed=1):
        study.add_trial(optuna.trial.create_trial(params=spec["params"], value=spec["value"], distributions=dists))
    render_study(study, out, fmt="html", plot_types=["slice"], keep_others=True)
    index = (out / "index.html").read_text(encoding="utf-8")
    assert _sections(index) == everything, "the report lost plots it did not redraw"
    state = json.loads((out / STATE).read_text(encoding="utf-8"))["plots"]
    assert (state["slice"]["trials"], state["timeline"]["trials"]) == (10, 6)
    assert index.count("from 10 trials (10 complete)") == 1 and index.count("from 6 trials (6 complete)") == len(everything) - 1
    for name in everything:
        assert (out / f"{name}.html").is_file()


def test_a_full_run_removes_the_files_of_plots_it_no_longer_shows(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    study = make_study(url, "full", _trials(6))
    out = tmp_path / "plots"
    render_study(study, out, fmt="html")
    assert (out / "contour.html").is_file()
    render_study(study, out, fmt="html", plot_types=["slice", "timeline"])
    assert sorted(p.name for p in out.glob("*.html")) == ["index.html", "slice.html", "timeline.html"]
    assert _sections((out / "index.html").read_text(encoding="utf-8")) == ["slice", "timeline"]
