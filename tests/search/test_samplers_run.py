"""The other samplers and pruners run whole searches; trial-only shortcuts stay out of best_config."""

from __future__ import annotations

import pytest
import yaml
from optuna.trial import TrialState

from kubetune.cli.search import main as ml_search
from tests.search.conftest import load_trials, search_section, small_base, write_config


@pytest.mark.parametrize("sampler, pruner", [
    ({"type": "CmaEsSampler", "seed": 1}, {"type": "HyperbandPruner", "min_resource": 1, "max_resource": 2}),
    ({"type": "RandomSampler", "seed": 1}, {"type": "PercentilePruner", "percentile": 25.0}),
])
def test_sampler_and_pruner_run_a_search(sampler, pruner, fast_config, tmp_path, sqlite_url, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("KUBETUNE_STORAGE_URL", raising=False)
    base = small_base(fast_config, epochs=4, fraction=0.5)
    search = search_section(study_name="other", n_trials=3, sampler=sampler, pruner=pruner,
                            trial_epochs=2, trial_train_fraction=0.4,
                            search_space={"optimizer.lr": {"type": "loguniform", "low": 0.01, "high": 0.2},
                                          "optimizer.momentum": {"type": "uniform", "low": 0.8, "high": 0.95}})
    config = write_config(tmp_path / "c.yaml", base, search)
    assert ml_search(["--config", str(config), "--storage", sqlite_url, "-q"]) == 0
    _, trials = load_trials(sqlite_url, "other")
    assert len(trials) == 3
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    assert all(t.last_step <= 2 for t in trials)  # search.trial_epochs
    trained = yaml.safe_load((tmp_path / "runs" / "other" / "trial-1" / "config.yaml").read_text())
    assert trained["training"]["num_epochs"] == 2
    assert trained["data"]["train_fraction"] == pytest.approx(0.2)  # 0.5 of the data, 0.4 of that
    best = yaml.safe_load((tmp_path / "runs" / "optuna_studies" / "other" / "best_config.yaml").read_text())
    assert best["training"]["num_epochs"] == 4 and best["data"]["train_fraction"] == 0.5
