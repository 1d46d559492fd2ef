"""ml-visualise on a study of several objectives: the single report's mode with Optuna's
Pareto-front plot, each objective's plots, the front listed, --plot-type and PNGs."""

from __future__ import annotations

import json

import optuna
import pytest

from kubetune.cli.visualise import main as ml_visualise
from kubetune.visualise.report_state import STATE
from kubetune.visualise.study_info import summarise
from kubetune.visualise.study_report import render_study

LR = optuna.distributions.FloatDistribution(1e-4, 1, log=True)
WIDTH = optuna.distributions.IntDistribution(8, 128)


def _study(url: str, rows: list[tuple[float, int, float, float]]) -> optuna.Study:
    study = optuna.create_study(study_name="mo", storage=url, directions=["maximize", "minimize"])
    with pytest.warns(optuna.exceptions.ExperimentalWarning):
        study.set_metric_names(["val_acc", "latency_ms"])
    _add(study, rows)
    return study


def _add(study: optuna.Study, rows: list[tuple[float, int, float, float]]) -> None:
    for lr, width, acc, latency in rows:
        study.add_trial(optuna.trial.create_trial(
            params={"optimizer.lr": lr, "model.width": width},
            distributions={"optimizer.lr": LR, "model.width": WIDTH}, values=[acc, latency]))


ROWS = [(0.1, 16, 0.9, 2.0), (0.01, 64, 0.95, 5.0), (0.001, 32, 0.8, 6.0), (0.03, 8, 0.85, 1.0)]


def test_a_multi_objective_study_gets_its_front_and_a_plot_per_objective(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'mo.db'}"
    _study(url, ROWS)
    out = tmp_path / "plots"
    assert ml_visualise(["--study-name", "mo", "--storage", url, "--format", "html", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Pareto front of 3 trial(s) (4 trials: 4 complete)" in printed
    assert "trial #2" not in printed  # trial 2 is dominated by trial 0
    for stem in ("pareto_front", "optimization_history_val_acc", "optimization_history_latency_ms",
                 "slice_val_acc", "param_importances_latency_ms", "contour_val_acc", "edf_latency_ms",
                 "timeline"):
        assert (out / f"{stem}.html").is_file(), stem
    assert not (out / "slice.html").exists()
    assert "latency_ms" in (out / "pareto_front.html").read_text()  # the axes are named
    assert "latency_ms" in (out / "slice_latency_ms.html").read_text()
    index = (out / "index.html").read_text()
    assert "3 Pareto-optimal trials (maximize, minimize)" in index and "<td class=num>0.95</td>" in index
    assert "Slice: latency_ms" in index and "drawn " in index and "from 4 trials (4 complete)" in index
    assert "Best trial" not in index


def test_plot_type_redraws_one_objective_plot_and_keeps_the_front_dated(tmp_path):
    url = f"sqlite:///{tmp_path / 'mo.db'}"
    study = _study(url, ROWS)
    out = tmp_path / "plots"
    render_study(study, out, fmt="html")
    _add(study, [(0.05, 12, 0.97, 1.5)])
    render_study(study, out, fmt="html", plot_types=["slice"], keep_others=True)
    state = json.loads((out / STATE).read_text(encoding="utf-8"))["plots"]
    assert (state["slice_val_acc"]["trials"], state["slice_latency_ms"]["trials"]) == (5, 5)
    assert (state["pareto_front"]["trials"], state["edf_val_acc"]["trials"]) == (4, 4)
    assert list(state)[0] == "pareto_front"  # the report keeps its order
    # A full run draws the front again from every trial; only the plots it draws remain.
    render_study(study, out, fmt="html", plot_types=["pareto_front"])
    assert sorted(p.name for p in out.glob("*.html")) == ["index.html", "pareto_front.html"]


def test_the_summary_lists_the_front_and_one_objective_has_no_pareto_plot(tmp_path):
    url = f"sqlite:///{tmp_path / 'mo.db'}"
    summary = summarise(_study(url, ROWS))
    assert [t.number for t in summary.front or []] == [0, 1, 3]
    assert summary.objectives == ["val_acc", "latency_ms"] and summary.best_trial is None

    single = optuna.create_study(storage=url, study_name="one", direction="maximize")
    single.add_trial(optuna.trial.create_trial(params={"optimizer.lr": 0.1}, distributions={"optimizer.lr": LR},
                                               value=0.5))
    report = render_study(single, tmp_path / "one", fmt="html", plot_types=["pareto_front", "timeline"])
    assert report.skipped == {"pareto_front": "the study has one objective"}
    assert summarise(single).front is None


def test_pngs_of_a_multi_objective_study(tmp_path):
    from kubetune.visualise.export import ChromiumMissing, find_chromium

    try:
        find_chromium()
    except ChromiumMissing as exc:
        pytest.skip(f"no Chromium for PNG export: {exc}")
    url = f"sqlite:///{tmp_path / 'mo.db'}"
    out = tmp_path / "plots"
    report = render_study(_study(url, ROWS), out, fmt="png", plot_types=["pareto_front", "slice"])
    assert sorted(report.files) == ["pareto_front", "slice_latency_ms", "slice_val_acc"]
    for paths in report.files.values():
        assert paths["png"].read_bytes().startswith(b"\x89PNG")


def test_each_objectives_importances_show_the_dashboards_values_for_it(tmp_path, monkeypatch):
    import random

    from optuna_dashboard import _importance
    from optuna_dashboard._importance import get_param_importance_from_trials_cache
    from optuna_dashboard._inmemory_cache import InMemoryCache

    # optuna-dashboard caches importances by study id and trial count, process-wide.
    monkeypatch.setattr(_importance, "param_importance_cache", {})

    from kubetune.visualise.plots import DASHBOARD_METHOD, importances_figure

    rng = random.Random(0)
    rows = []
    for _ in range(24):
        lr, width = 10 ** rng.uniform(-4, 0), rng.randint(8, 128)
        rows.append((lr, width, 0.95 - abs(lr - 0.05) + rng.uniform(0, 0.01), width ** 2 / 1000 + rng.uniform(0, 0.1)))
    url = f"sqlite:///{tmp_path / 'mo.db'}"
    study = _study(url, rows)
    storage = optuna.storages.get_storage(url)
    study_id = storage.get_study_id_from_name("mo")
    for objective, name in enumerate(("val_acc", "latency_ms")):
        fanova, ped = importances_figure(study, None, name, objective).data
        assert DASHBOARD_METHOD in ped.name
        shown = get_param_importance_from_trials_cache(InMemoryCache(), storage, study_id, objective,
                                                       storage.get_all_trials(study_id))
        assert dict(zip(ped.y, ped.x, strict=True)) == pytest.approx(
            {item["name"]: item["importance"] for item in shown})
    # The objectives rank the params apart: the lr decides val_acc, the width latency_ms.
    assert list(importances_figure(study, None, "val_acc", 0).data[0].y)[-1] == "optimizer.lr"
    assert list(importances_figure(study, None, "latency_ms", 1).data[0].y)[-1] == "model.width"
