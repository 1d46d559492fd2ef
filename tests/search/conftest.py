"""Helpers for search tests: configs with a search section, reading studies back."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

# The Hyperparameter Tuning Guide's search section, verbatim.
GUIDE_SEARCH_YAML = """\
search:
  study_name: 'my_optimization'
  storage: 'sqlite:///optuna_studies.db'   # or postgresql+psycopg://user@host/db, or from $KUBETUNE_STORAGE_URL
  n_trials: 50
  direction: 'maximize'   # or 'minimize'
  metric: 'val_acc'       # or 'val_loss'
  sampler: {type: 'TPESampler', n_startup_trials: 10}      # RandomSampler, CmaEsSampler, GridSampler; seed
  pruner:  {type: 'MedianPruner', n_startup_trials: 5, n_warmup_steps: 5}  # SuccessiveHalvingPruner (the default), PercentilePruner (percentile), HyperbandPruner, none
  search_space:
    optimizer.lr:        {type: 'loguniform', low: 1e-5, high: 1e-1}
    training.batch_size: {type: 'categorical', choices: [16, 32, 64]}
    optimizer.momentum:  {type: 'uniform', low: 0.8, high: 0.99}
    scheduler.step_size: {type: 'int', low: 5, high: 15}     # optional step; log for int
  cross_validation: {enabled: true, n_folds: 5, aggregation: 'mean'}   # or median
"""

# Environment for CLI subprocesses: no storage URL leaking in from the outside.
CLEAN_ENV = {"KUBETUNE_STORAGE_URL": ""}


def small_base(fast_config: dict, *, epochs: int = 2, fraction: float = 0.3) -> dict:
    """fast_config shrunk further: a fraction of the digits training split, few epochs."""
    base = copy.deepcopy(fast_config)
    base["data"]["train_fraction"] = fraction
    base["training"]["num_epochs"] = epochs
    return base


def search_section(**overrides) -> dict:
    """A small search section over the learning rate and batch size; overrides replace keys."""
    section = {
        "study_name": "unit",
        "n_trials": 3,
        "sampler": {"type": "TPESampler", "seed": 0},
        "pruner": {"type": "none"},
        "search_space": {
            "optimizer.lr": {"type": "loguniform", "low": 0.01, "high": 0.2},
            "training.batch_size": {"type": "categorical", "choices": [32, 64]},
        },
    }
    section.update(overrides)
    return section


def write_config(path: Path, base: dict, search: dict | None) -> Path:
    data = copy.deepcopy(base)
    if search is not None:
        data["search"] = search
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def load_trials(url: str, study_name: str):
    """The study's trials, read with plain Optuna (no kubetune code in between)."""
    import optuna

    study = optuna.load_study(study_name=study_name, storage=url)
    return study, study.get_trials(deepcopy=False)


def table_names(url: str) -> list[str]:
    import sqlalchemy

    engine = sqlalchemy.create_engine(url)
    try:
        return sqlalchemy.inspect(engine).get_table_names()
    finally:
        engine.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'studies.db'}"


def start_search(config: Path, *args: str, cwd: Path, env: dict):
    """``ml-search --config CONFIG ARGS`` in the background, its output captured."""
    import os
    import subprocess

    from tests.conftest import BIN

    return subprocess.Popen(
        [str(BIN / "ml-search"), "--config", str(config), *args], cwd=cwd,
        env={**os.environ, **CLEAN_ENV, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def trials_now(url: str, study_name: str) -> list:
    """The study's trials, or [] while it does not exist or the server does not answer."""
    import optuna

    try:
        return optuna.load_study(study_name=study_name, storage=url).get_trials(deepcopy=False)
    except Exception:
        return []
