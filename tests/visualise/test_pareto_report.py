"""ml-visualise on a study of several objectives: the Pareto front plot, per-objective plots, the report."""

from __future__ import annotations

import optuna
import pytest

from kubetune.cli.visualise import main as ml_visualise


def test_a_multi_objective_study_gets_its_front_and_a_plot_per_objective(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'mo.db'}"
    study = optuna.create_study(study_name="mo", storage=url, directions=["maximize", "minimize"])
    with pytest.warns(optuna.exceptions.ExperimentalWarning):
        study.set_metric_names(["val_acc", "latency_ms"])
    lr = optuna.distributions.FloatDistribution(1e-4, 1, log=True)
    for value, acc, latency in [(0.1, 0.9, 2.0), (0.01, 0.95, 5.0), (0.001, 0.8, 6.0)]:
        study.add_trial(optuna.trial.create_trial(params={"optimizer.lr": value}, distributions={"optimizer.lr": lr},
                                                  values=[acc, latency]))
    out = tmp_path / "plots"
    assert ml_visualise(["--study-name", "mo", "--storage", url, "--format", "html", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Pareto front of 2 trial(s)" in printed and "trial #2" not in printed  # trial 2 is dominated
    for stem in ("pareto_front", "optimization_history_val_acc", "optimization_history_latency_ms",
                 "slice_val_acc", "edf_latency_ms"):
        assert (out / f"{stem}.html").is_file(), stem
    assert "latency_ms" in (out / "pareto_front.html").read_text()  # the axes are named
    index = (out / "index.html").read_text()
    assert "Pareto front: 2 trials" in index and "<td>0.95</td>" in index
