"""Every search config error stops ml-search before the first trial: exit 2, storage untouched."""

from __future__ import annotations

import pytest

from kubetune.cli.search import main as ml_search
from tests.conftest import run_cli
from tests.search.conftest import CLEAN_ENV, search_section, small_base, table_names, write_config

LR = "optimizer.lr"

CASES = {
    "unknown key": (
        {"search_space": {"optimizer.lrr": {"type": "loguniform", "low": 1e-4, "high": 1e-1}}},
        "search.search_space.optimizer.lrr` does not name a config field (did you mean `optimizer.lr`?)",
    ),
    "low >= high": (
        {"search_space": {LR: {"type": "uniform", "low": 0.1, "high": 0.1}}},
        "low must be less than high",
    ),
    "loguniform low <= 0": (
        {"search_space": {LR: {"type": "loguniform", "low": 0.0, "high": 0.1}}},
        "low must be greater than 0 on a log scale",
    ),
    "empty choices": (
        {"search_space": {"training.batch_size": {"type": "categorical", "choices": []}}},
        "choices must be a non-empty list",
    ),
    "int with float bounds": (
        {"search_space": {"scheduler.step_size": {"type": "int", "low": 1.5, "high": 6}}},
        "low must be an integer for an int parameter",
    ),
    "unknown sampler": (
        {"sampler": {"type": "BayesSampler"}},
        "`search.sampler.type` must be 'TPESampler', 'RandomSampler', 'CmaEsSampler', 'GridSampler' or 'NSGAIISampler'",
    ),
    "unknown pruner": (
        {"pruner": {"type": "SuccessiveHalving"}},
        "`search.pruner.type` must be",
    ),
    "metric the trainer does not produce": (
        {"metric": "f1_score"},
        "`search.metric` must be 'val_acc', 'val_loss', 'train_acc' or 'train_loss'",
    ),
    "grid over a continuous range": (
        {"sampler": {"type": "GridSampler"}},
        "`search.search_space.optimizer.lr` is a continuous loguniform range, which GridSampler cannot enumerate",
    ),
    "direction against the metric": (
        {"metric": "val_loss", "direction": "maximize"},
        "`search.direction` must be 'minimize' for metric val_loss, but got 'maximize'",
    ),
    "range outside the field's values": (
        {"search_space": {"model.dropout": {"type": "uniform", "low": 0.1, "high": 1.5}}},
        "`search.search_space.model.dropout` must only produce valid values of `model.dropout`, but 1.5 is not",
    ),
    "float range on a whole-number field": (
        {"search_space": {"training.batch_size": {"type": "uniform", "low": 16, "high": 64}}},
        "`search.search_space.training.batch_size` must be an int or categorical parameter",
    ),
    "enqueued point outside the space": (
        {"enqueue_trials": [{LR: 5.0}]},
        "`search.enqueue_trials[0].optimizer.lr` must lie inside the search space, but got 5.0",
    ),
    "unknown pruner option": (
        {"pruner": {"type": "MedianPruner", "percentile": 30}},
        "percentile does not apply to MedianPruner",
    ),
    "median option without a type (successive halving is the default)": (
        {"pruner": {"n_warmup_steps": 5}},
        "n_warmup_steps does not apply to SuccessiveHalvingPruner, the default type; it is a field of "
        "MedianPruner or PercentilePruner",
    ),
    "step larger than the range": (
        {"search_space": {"model.dropout": {"type": "float", "low": 0.0, "high": 0.5, "step": 2}}},
        "`search.search_space.model.dropout`: step must be at most high - low (0.5), but got 2",
    ),
    "trials longer than the final run": (
        {"trial_epochs": 5},
        "`search.trial_epochs` must be at most `training.num_epochs` (2), but got 5",
    ),
    "TPE option on another sampler": (
        {"sampler": {"type": "RandomSampler", "n_ei_candidates": 8}},
        "n_ei_candidates does not apply to RandomSampler",
    ),
}


@pytest.mark.postgres
@pytest.mark.parametrize("case", list(CASES))
def test_config_error_exits_2_and_writes_nothing(case, fast_config, postgres_url, tmp_path, capsys):
    overrides, message = CASES[case]
    config = write_config(tmp_path / "c.yaml", small_base(fast_config), search_section(**overrides))
    # ml-search's entry point in-process (the subprocess path is tested below).
    assert ml_search(["--config", str(config), "--storage", postgres_url]) == 2
    stderr = capsys.readouterr().err
    assert message in stderr
    assert len(stderr.strip().splitlines()) == 1, stderr
    assert table_names(postgres_url) == []  # not even Optuna's schema
    assert not (tmp_path / "runs").exists()


def test_config_without_search_section(fast_config, tmp_path):
    config = write_config(tmp_path / "c.yaml", small_base(fast_config), None)
    result = run_cli("ml-search", "--config", str(config), cwd=tmp_path, env=CLEAN_ENV)
    assert result.returncode == 2
    assert "`search` is required" in result.stderr
    assert not (tmp_path / "optuna_studies.db").exists()


def test_data_error_stops_before_the_storage(fast_config, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("KUBETUNE_STORAGE_URL", raising=False)
    base = small_base(fast_config)
    base["data"]["path"] = str(tmp_path / "missing")
    config = write_config(tmp_path / "c.yaml", base, search_section())
    assert ml_search(["--config", str(config)]) == 2
    assert f"ml-search: error: data.path: dataset folder {tmp_path / 'missing'} does not exist" in capsys.readouterr().err
    assert not (tmp_path / "optuna_studies.db").exists()


def test_too_many_folds_for_the_data_is_an_error(fast_config, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("KUBETUNE_STORAGE_URL", raising=False)
    base = small_base(fast_config, fraction=0.05)  # ~7 images per class
    search = search_section(cross_validation={"enabled": True, "n_folds": 30})
    config = write_config(tmp_path / "c.yaml", base, search)
    assert ml_search(["--config", str(config)]) == 2
    assert "n_folds=30" in capsys.readouterr().err
    assert not (tmp_path / "optuna_studies.db").exists()


def test_bad_flags_are_usage_errors(fast_config, tmp_path):
    config = write_config(tmp_path / "c.yaml", small_base(fast_config), search_section())
    # --n-tri: no abbreviations, or the interrupt hint could not drop --n-trials
    for flags in (["--n-trials", "0"], ["--n-jobs", "x"], ["--set", "search.n_trial=3"], ["--n-tri", "3"]):
        result = run_cli("ml-search", "--config", str(config), *flags, cwd=tmp_path, env=CLEAN_ENV)
        assert result.returncode == 2, (flags, result.stderr)
    assert not (tmp_path / "optuna_studies.db").exists()


@pytest.mark.parametrize("flags, message", [
    (["--set", "training.device=cuda"], "`training.device` is cuda but no CUDA device is available"),
    (["--set", "model.architecture=resnet18", "--set", "model.pretrained=true"],
     "`model.pretrained` is true but the resnet18 weights are not in the local torch cache"),
    (["--set", "logging.output_dir=afile/runs"], "`logging.output_dir` afile/runs cannot hold runs: afile is a file"),
    (["--output-dir", "afile/results"], "--output-dir afile/results cannot hold the results: afile is a file"),
])
def test_what_the_first_trial_would_meet_stops_before_the_storage(flags, message, fast_config, tmp_path,
                                                                  monkeypatch, capsys):
    import torch

    if "training.device=cuda" in flags and torch.cuda.is_available():
        pytest.skip("this machine has the GPU the config asks for")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("KUBETUNE_STORAGE_URL", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-cache"))  # no pretrained weights in it
    (tmp_path / "afile").write_text("not a folder")
    config = write_config(tmp_path / "c.yaml", small_base(fast_config), search_section())
    assert ml_search(["--config", str(config), *flags]) == 2
    err = capsys.readouterr().err
    assert f"ml-search: error: {message}" in err and "Traceback" not in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "c.yaml"]  # no study, no runs


@pytest.mark.parametrize("flags, search, message", [
    (["--study-name", ""], {}, "--study-name must not be empty (leave it out to use search.study_name)"),
    (["--study-name", "a b"], {}, "--study-name: `search.study_name` is invalid: String should match pattern"),
    (["--epochs", "1"], {"trial_epochs": 2},
     "--epochs: `search.trial_epochs` must be at most `training.num_epochs` (1), but got 2: "
     "trials train fewer epochs than the final run"),
    ([], {"trial_epochs": 3}, "c.yaml: `search.trial_epochs` must be at most `training.num_epochs` (2), but got 3"),
    (["--set", "search.search_space.model.dropout={type: float, low: 0.0, high: 0.5, step: 2}"], {},
     "--set search.search_space.model.dropout: `search.search_space.model.dropout`: step must be at most "
     "high - low (0.5), but got 2, which leaves only low=0"),
    (["--set", "search.search_space.optimizer.lr={type: loguniform, low: 1e-4, high: .inf}"], {},
     "`search.search_space.optimizer.lr.high` must be a finite number, but got inf"),
])
def test_flag_and_space_mistakes_exit_2_before_the_storage(flags, search, message, fast_config, tmp_path,
                                                           monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("KUBETUNE_STORAGE_URL", raising=False)
    config = write_config(tmp_path / "c.yaml", small_base(fast_config), search_section(**search))
    assert ml_search(["--config", str(config), *flags]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "ml-search: error: " in err and message in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml"]  # no study, no runs


def test_a_config_that_is_not_utf8_exits_2(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.yaml").write_bytes(b"\xff\xfe\x00bad")
    assert ml_search(["--config", "c.yaml"]) == 2
    assert capsys.readouterr().err == ("ml-search: error: config file c.yaml is not UTF-8 text "
                                       "(byte 0xff at offset 0); save it as UTF-8\n")
