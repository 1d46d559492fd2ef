"""A real study for the plots: a few trials of the small CNN on digits, one of them pruned."""

from __future__ import annotations

import base64
import json
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml

STUDY = "digits-vis"
# Three startup trials complete (MedianPruner never prunes them); the fourth has
# an lr far too small to learn in two epochs and falls below the median at epoch 2.
ENQUEUED = [
    {"optimizer.lr": 0.05, "training.batch_size": 32},
    {"optimizer.lr": 0.1, "training.batch_size": 64},
    {"optimizer.lr": 0.02, "training.batch_size": 32},
    {"optimizer.lr": 1e-4, "training.batch_size": 64},
]
N_TRIALS = 5  # the last one is sampled


def fast_config_dict(digits_dir: Path, output_dir: Path) -> dict:
    """conftest's ``fast_config`` (function-scoped) for a session-scoped study, made smaller."""
    return {
        "model": {"architecture": "small_cnn", "dropout": 0.1},
        "data": {
            "path": str(digits_dir),
            "image_size": 8,
            "channels": 1,
            "normalize": {"mean": [0.3], "std": [0.37]},
            "train_fraction": 0.3,
        },
        "training": {"num_epochs": 3, "batch_size": 64, "seed": 0, "device": "cpu"},
        "optimizer": {"type": "sgd", "lr": 0.05, "momentum": 0.9},
        "scheduler": {"type": "cosine"},
        "logging": {"output_dir": str(output_dir), "experiment_name": "digits"},
        "search": {
            "study_name": STUDY,
            "direction": "maximize",
            "search_space": {
                "optimizer.lr": {"type": "loguniform", "low": 1e-4, "high": 0.2},
                "training.batch_size": {"type": "categorical", "choices": [32, 64]},
            },
        },
    }


@dataclass
class SearchStudy:
    url: str
    name: str
    root: Path  # what the config's logging.output_dir is
    config_path: Path  # a config whose search section names this study (storage unset)
    runs: Path  # runs/<study>/trial-<n>/ with TensorBoard events


def run_search(url: str, config_dict: dict, runs: Path, n_trials: int = N_TRIALS):
    """Real training under Optuna: report val_acc each epoch, prune on should_prune."""
    import optuna
    import torch

    from kubetune.config import validate_config, with_overrides
    from kubetune.data.datasets import load_splits
    from kubetune.training import train

    base = validate_config(config_dict)
    data = load_splits(base.data, base.training.seed)
    study = optuna.create_study(
        study_name=STUDY, storage=url, direction="maximize",
        sampler=optuna.samplers.RandomSampler(seed=1),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(["val_acc"])  # what the plots call the objective
    for params in ENQUEUED:
        study.enqueue_trial(params)

    def objective(trial: optuna.Trial) -> float:
        lr = trial.suggest_float("optimizer.lr", 1e-4, 0.2, log=True)
        batch_size = trial.suggest_categorical("training.batch_size", [32, 64])
        config = with_overrides(base, {"optimizer.lr": lr, "training.batch_size": batch_size})

        def report(epoch: int, metrics: dict) -> None:
            trial.report(metrics["val_acc"], epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()

        result = train(config, callback=report, data=data, run_dir=runs / f"trial-{trial.number}",
                       progress=False)
        return result.best["val_acc"]

    # Two shared cores: one torch thread per process is several times faster than many.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study.optimize(objective, n_trials=n_trials)
    finally:
        torch.set_num_threads(threads)
    return study


@pytest.fixture(scope="session")
def search_study(digits_dir: Path, tmp_path_factory) -> SearchStudy:
    import optuna

    root = tmp_path_factory.mktemp("visualise")
    url = f"sqlite:///{root / 'studies.db'}"
    config = fast_config_dict(digits_dir, root / "runs")
    runs = root / "runs" / STUDY
    study = run_search(url, config, runs)
    states = [t.state for t in study.trials]
    assert states.count(optuna.trial.TrialState.COMPLETE) >= 3, states
    assert optuna.trial.TrialState.PRUNED in states, states
    config_path = root / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    return SearchStudy(url=url, name=STUDY, root=root / "runs", config_path=config_path, runs=runs)


# -- reading plots back ------------------------------------------------------------------

_NEW_PLOT = re.compile(r'Plotly\.newPlot\(\s*"[^"]+",\s*')


def _decode(node):
    """Plotly 6+ writes numeric arrays as ``{"dtype", "bdata"}``: turn them back into lists."""
    if isinstance(node, dict):
        if "bdata" in node and "dtype" in node:
            return np.frombuffer(base64.b64decode(node["bdata"]), dtype=node["dtype"]).tolist()
        return {k: _decode(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_decode(v) for v in node]
    return node


def figure_from_html(text: str) -> tuple[list[dict], dict]:
    """The ``(data, layout)`` of the first plotly figure in an HTML page."""
    match = _NEW_PLOT.search(text)
    assert match, "no Plotly.newPlot call in the page"
    decoder = json.JSONDecoder()
    data, end = decoder.raw_decode(text, match.end())
    rest = text[end:].lstrip()
    assert rest.startswith(",")
    layout, _ = decoder.raw_decode(rest[1:].lstrip())
    return _decode(data), _decode(layout)


def all_figures_from_html(text: str) -> list[tuple[list[dict], dict]]:
    """Every plotly figure on a page (index.html embeds several)."""
    figures = []
    for match in _NEW_PLOT.finditer(text):
        figures.append(figure_from_html(text[match.start():]))
    return figures


def numbers(node) -> list[float]:
    """Every number anywhere in a decoded trace or layout, flattened."""
    out: list[float] = []
    if isinstance(node, dict):
        for value in node.values():
            out.extend(numbers(value))
    elif isinstance(node, list):
        for value in node:
            out.extend(numbers(value))
    elif isinstance(node, int | float) and not isinstance(node, bool):
        out.append(float(node))
    return out


def make_study(url: str, name: str, trials: list[dict], direction: str = "maximize"):
    """A study of hand-made trials (no training) for the shapes a real search rarely leaves.

    Each trial: ``{"params": {...}, "value": v, "state": "COMPLETE", "reports": {step: v}}``.
    """
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    dists = {
        "optimizer.lr": FloatDistribution(1e-4, 0.2, log=True),
        "training.batch_size": CategoricalDistribution([32, 64]),
        "optimizer.type": CategoricalDistribution(["sgd", "adam"]),
        "scheduler.type": CategoricalDistribution(["step", "cosine"]),
    }
    study = optuna.create_study(study_name=name, storage=url, direction=direction)
    for spec in trials:
        state = getattr(optuna.trial.TrialState, spec.get("state", "COMPLETE"))
        study.add_trial(
            optuna.trial.create_trial(
                params=spec["params"],
                distributions={k: dists[k] for k in spec["params"]},
                value=spec.get("value") if state != optuna.trial.TrialState.RUNNING else None,
                state=state,
                intermediate_values=spec.get("reports", {}),
            )
        )
    return study
