"""optuna-dashboard serves a study that ml-search wrote: metric name, epochs, trial states.

The dashboard's own WSGI app (``optuna_dashboard.wsgi``) runs in-process and is called
the way a WSGI server calls it; nothing listens on a port.
"""

from __future__ import annotations

import io
import json
import wsgiref.util

import optuna
import pytest
import yaml

from tests.conftest import run_cli

STUDY = "dash"
EPOCHS = 2


@pytest.fixture(scope="module")
def searched(digits_dir, tmp_path_factory):
    """Two trials by ml-search: the config's own point completes, a hopeless lr is pruned."""
    root = tmp_path_factory.mktemp("dashboard")
    config = {
        "model": {"architecture": "small_cnn", "dropout": 0.1},
        "data": {"path": str(digits_dir), "image_size": 8, "channels": 1,
                 "normalize": {"mean": [0.3], "std": [0.37]}, "train_fraction": 0.3},
        "training": {"num_epochs": EPOCHS, "batch_size": 32, "seed": 0, "device": "cpu"},
        "optimizer": {"type": "sgd", "lr": 0.1, "momentum": 0.9},
        "logging": {"output_dir": str(root / "runs")},
        "search": {
            "study_name": STUDY, "n_trials": 2,
            "pruner": {"type": "MedianPruner", "n_startup_trials": 1, "n_warmup_steps": 0},
            "search_space": {"optimizer.lr": {"type": "loguniform", "low": 1e-6, "high": 0.3}},
            "enqueue_trials": [{"optimizer.lr": 1e-6}],
        },
    }
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    url = f"sqlite:///{root / 'studies.db'}"
    result = run_cli("ml-search", "--config", str(path), "--storage", url, "-q")
    assert result.returncode == 0, result.stderr
    return url


def call(app, path: str) -> tuple[str, bytes]:
    environ: dict = {}
    wsgiref.util.setup_testing_defaults(environ)
    environ.update(REQUEST_METHOD="GET", PATH_INFO=path, QUERY_STRING="", **{"wsgi.input": io.BytesIO()})
    seen = {}

    def start_response(status, headers, exc_info=None):
        seen["status"] = status

    body = b"".join(app(environ, start_response))
    return seen["status"], body


def test_the_dashboard_reads_back_metric_name_epochs_and_states(searched):
    from optuna_dashboard import wsgi

    app = wsgi(searched)
    status, body = call(app, "/api/studies")
    assert status.startswith("200"), body[:300]
    (summary,) = json.loads(body)["study_summaries"]
    assert summary["study_name"] == STUDY
    status, body = call(app, f"/api/studies/{summary['study_id']}")
    assert status.startswith("200"), body[:300]
    detail = json.loads(body)
    assert detail["objective_names"] == ["val_acc"]
    assert detail["has_intermediate_values"] is True
    trials = {t["number"]: t for t in detail["trials"]}
    assert {n: t["state"] for n, t in trials.items()} == {0: "Complete", 1: "Pruned"}

    # The same numbers Optuna holds: one report per epoch, the pruned trial stopped at epoch 1.
    study = optuna.load_study(study_name=STUDY, storage=searched)
    for trial in study.trials:
        served = {iv["step"]: iv["value"] for iv in trials[trial.number]["intermediate_values"]}
        assert served == pytest.approx(trial.intermediate_values)
    assert sorted(trials[0]["intermediate_values"], key=lambda iv: iv["step"])[-1]["step"] == EPOCHS
    assert [iv["step"] for iv in trials[1]["intermediate_values"]] == [1]
    assert trials[0]["values"] == pytest.approx([study.trials[0].value])
    (best,) = detail["best_trials"]
    assert best["number"] == 0

    status, body = call(app, "/dashboard")
    assert status.startswith("200") and b"<html" in body.lower()
