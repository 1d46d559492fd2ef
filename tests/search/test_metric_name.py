"""A study records its metric as Optuna's metric name, new or resumed."""

from __future__ import annotations

import optuna

from kubetune.config import validate_config
from kubetune.search.study import start_study


def _config(digits_dir, metric: str):
    return validate_config({
        "data": {"path": str(digits_dir)},
        "search": {"study_name": "named", "metric": metric,
                   "direction": "minimize" if metric.endswith("loss") else "maximize",
                   "search_space": {"optimizer.lr": {"type": "loguniform", "low": 1e-3, "high": 0.1}}},
    })


def test_a_new_study_names_its_metric(digits_dir, tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    start = start_study(_config(digits_dir, "val_loss"), url, "named", resume=False, n_trials=None)
    assert start.study.metric_names == ["val_loss"]
    assert optuna.load_study(study_name="named", storage=url).metric_names == ["val_loss"]


def test_a_study_without_a_name_gets_it_on_resume(digits_dir, tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    old = optuna.create_study(study_name="named", storage=url, direction="maximize")  # another tool's
    assert old.metric_names is None
    start_study(_config(digits_dir, "val_acc"), url, "named", resume=True, n_trials=1)
    assert optuna.load_study(study_name="named", storage=url).metric_names == ["val_acc"]
