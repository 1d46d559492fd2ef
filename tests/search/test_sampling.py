"""GridSampler covers its grid once across workers; MedianPruner prunes bad learning rates;
a crashing trial fails with its reason while the search goes on."""

from __future__ import annotations

import itertools

from optuna.trial import TrialState

from kubetune.search.attributes import FAIL_REASON_ATTR, TARGET_ATTR, WORKER_ATTR
from tests.conftest import run_cli
from tests.search.conftest import CLEAN_ENV, load_trials, search_section, small_base, write_config


def test_grid_2x3_runs_each_point_once_with_two_workers(fast_config, tmp_path, sqlite_url):
    lrs, batches = [0.05, 0.1], [16, 32, 64]
    search = search_section(study_name="grid", n_trials=20, sampler={"type": "GridSampler"},
                            search_space={
                                "optimizer.lr": {"type": "categorical", "choices": lrs},
                                "training.batch_size": {"type": "categorical", "choices": batches},
                            })
    config = write_config(tmp_path / "c.yaml", small_base(fast_config, epochs=3, fraction=0.2), search)
    result = run_cli("ml-search", "--config", str(config), "--n-jobs", "2", "--storage", sqlite_url,
                     cwd=tmp_path, env=CLEAN_ENV)
    assert result.returncode == 0, result.stderr
    study, trials = load_trials(sqlite_url, "grid")
    points = sorted((t.params["optimizer.lr"], t.params["training.batch_size"]) for t in trials)
    assert points == sorted(itertools.product(lrs, batches))  # six trials, each point once
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert study.user_attrs[TARGET_ATTR] == 6  # capped at the grid's size
    assert len({t.user_attrs[WORKER_ATTR] for t in trials}) == 2


def test_median_pruner_prunes_bad_lrs_and_a_nan_trial_fails(fast_config, tmp_path, sqlite_url):
    good, bad, diverging = [0.05, 0.1, 0.08], [1e-6, 2e-6], 1e10
    choices = [*good, *bad, diverging]
    search = search_section(
        study_name="prune", n_trials=len(choices), enqueue_config=False,
        pruner={"type": "MedianPruner", "n_startup_trials": 3, "n_warmup_steps": 1},
        search_space={"optimizer.lr": {"type": "categorical", "choices": choices}},
        # The order is fixed: the good rates complete first (pruning waits for all three,
        # so none of them is set against the others' median), then the bad ones meet it.
        enqueue_trials=[{"optimizer.lr": lr} for lr in [*good, *bad, diverging]],
    )
    config = write_config(tmp_path / "c.yaml", small_base(fast_config, epochs=3, fraction=0.3), search)
    result = run_cli("ml-search", "--config", str(config), "--storage", sqlite_url, cwd=tmp_path,
                     env=CLEAN_ENV)
    assert result.returncode == 0, result.stderr
    _, trials = load_trials(sqlite_url, "prune")
    by_lr = {t.params["optimizer.lr"]: t for t in trials}
    assert len(trials) == len(choices)
    for lr in good:
        assert by_lr[lr].state == TrialState.COMPLETE, lr
    for lr in bad:
        assert by_lr[lr].state == TrialState.PRUNED, lr
        assert by_lr[lr].last_step < 3  # stopped before its last epoch
    failed = by_lr[diverging]
    assert failed.state == TrialState.FAIL
    assert failed.user_attrs[FAIL_REASON_ATTR].startswith("NaN loss")
    assert "FAIL (NaN loss" in result.stderr
