"""What trials held: records summed over attempts, and ml-search's record of a real search."""

from __future__ import annotations

import csv

from kubetune.search.attributes import USAGE_ATTR
from kubetune.search.usage import spent, with_attempts
from tests.conftest import run_cli
from tests.search.conftest import CLEAN_ENV, load_trials, search_section, small_base, write_config


def test_an_attempt_recorded_again_changes_nothing_and_totals_sum_attempts():
    first = with_attempts(None, {"pod-a": {"start": 0, "end": 10, "gpus": 1, "cpus": 2}}, "cuda:0")
    both = with_attempts(first, {"pod-b": {"start": 20, "end": 25, "gpus": 2, "cpus": 0}})
    assert with_attempts(both, {"pod-b": {"start": 20, "end": 25, "gpus": 2, "cpus": 0}}) == both
    assert (both["wall_seconds"], both["gpu_seconds"], both["cpu_seconds"]) == (15, 20, 20)
    assert both["device"] == "cuda:0"
    assert spent([both], until=22) == (10 + 2 * 2, 20)  # only what was spent before 22


def test_ml_search_records_wall_time_and_device_of_every_trial(fast_config, tmp_path, sqlite_url):
    config = write_config(tmp_path / "c.yaml", small_base(fast_config, epochs=1, fraction=0.2),
                          search_section(n_trials=2))
    done = run_cli("ml-search", "--config", str(config), "--storage", sqlite_url, cwd=tmp_path, env=CLEAN_ENV)
    assert done.returncode == 0, done.stderr
    _, trials = load_trials(sqlite_url, "unit")
    for trial in trials:
        usage = trial.user_attrs[USAGE_ATTR]
        assert usage["device"] == "cpu" and usage["gpu_seconds"] == 0
        assert 0 < usage["wall_seconds"] <= trial.duration.total_seconds()
    assert "usage: 2 trials" in done.stdout and "0.000 GPU-hours" in done.stdout and "on cpu" in done.stdout
    rows = list(csv.DictReader(open(tmp_path / "runs" / "optuna_studies" / "unit" / "trials.csv")))
    assert [row["device"] for row in rows] == ["cpu", "cpu"] and all(float(row["wall_s"]) > 0 for row in rows)
