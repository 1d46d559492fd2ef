"""A real multi-objective ml-search on the digits sample: the front, its configs, pruning,
constraints and the goal."""

from __future__ import annotations

import optuna
import yaml

from tests.conftest import run_cli
from tests.search.conftest import CLEAN_ENV, load_trials, search_section, small_base, write_config

ACC = {"metric": "val_acc", "direction": "maximize"}
PARAMS = {"metric": "params", "direction": "minimize"}
LR_SPACE = {"optimizer.lr": {"type": "loguniform", "low": 1e-4, "high": 0.2}}


def _search(fast_config, tmp_path, sqlite_url, *, epochs: int, **search):
    config = write_config(tmp_path / "c.yaml", small_base(fast_config, epochs=epochs, fraction=0.3),
                          search_section(search_space=LR_SPACE, **search))
    return run_cli("ml-search", "--config", str(config), "--storage", sqlite_url, cwd=tmp_path, env=CLEAN_ENV)


def test_two_objectives_prune_a_dominated_trial_and_leave_the_front(fast_config, tmp_path, sqlite_url):
    # The config's own lr (0.05) first, then one that barely trains: at the first rung
    # (epoch 1 of 3) the second has the same size and a lower accuracy, so it is dominated.
    result = _search(fast_config, tmp_path, sqlite_url, epochs=3, study_name="mo", n_trials=3,
                     objectives=[ACC, PARAMS], pruner={"type": "SuccessiveHalvingPruner"},
                     enqueue_trials=[{"optimizer.lr": 1e-4}])
    assert result.returncode == 0, result.stderr
    study, trials = load_trials(sqlite_url, "mo")
    assert study.metric_names == ["val_acc", "params"]
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    assert trials[1].state == optuna.trial.TrialState.PRUNED, result.stderr
    assert "trial 1 PRUNED after epoch 1/3" in result.stderr
    assert trials[1].system_attrs["kubetune.pareto_rung_0"]["values"][1] == trials[0].values[1]
    front = study.best_trials
    assert trials[0].number in {t.number for t in front}
    # The summary prints one row per front trial, objectives named.
    assert "Pareto front of mo" in result.stdout and "val_acc" in result.stdout
    results = tmp_path / "runs" / "optuna_studies" / "mo"
    configs = sorted((results / "pareto").glob("trial-*.yaml"))
    assert [p.name for p in configs] == [f"trial-{t.number}.yaml" for t in sorted(front, key=lambda t: t.number)]
    best_number = max(front, key=lambda t: (t.values[0], -t.number)).number
    best = yaml.safe_load((results / "best_config.yaml").read_text())
    assert best == yaml.safe_load((results / "pareto" / f"trial-{best_number}.yaml").read_text())
    for path in configs:  # each front config trains as it is
        train = run_cli("ml-train", "--config", str(path), "--epochs", "1", "--no-progress", cwd=tmp_path,
                        env=CLEAN_ENV)
        assert train.returncode == 0, train.stderr
    header = (results / "trials.csv").read_text().splitlines()[0]
    assert header.startswith("number,state,val_acc,params,")


def test_a_broken_cost_constraint_marks_the_trial_infeasible(fast_config, tmp_path, sqlite_url):
    result = _search(fast_config, tmp_path, sqlite_url, epochs=2, study_name="tight", n_trials=1,
                     objectives=[ACC, PARAMS], constraints={"params": {"max": 1000}})
    study, trials = load_trials(sqlite_url, "tight")
    assert trials[0].state == optuna.trial.TrialState.COMPLETE, result.stderr
    assert trials[0].constraints["params.max"] > 0  # small_cnn has more than 1,000 parameters
    assert study.best_trials == []  # Optuna's front holds feasible trials only
    assert not (tmp_path / "runs" / "optuna_studies" / "tight" / "best_config.yaml").exists()


def test_the_goal_stops_the_study(fast_config, tmp_path, sqlite_url):
    result = _search(fast_config, tmp_path, sqlite_url, epochs=2, study_name="goal", n_trials=4,
                     objectives=[ACC, PARAMS], goal={"val_acc": 0.3})
    assert result.returncode == 0, result.stderr
    _, trials = load_trials(sqlite_url, "goal")
    assert len(trials) == 1 and trials[0].values[0] >= 0.3
    assert "trial 0 reached search.goal" in result.stdout
