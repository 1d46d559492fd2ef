"""The guide's search section, verbatim, on SQLite and on PostgreSQL."""

from __future__ import annotations

import csv

import pytest
import yaml
from sqlalchemy.engine import make_url

from kubetune.search.attributes import TARGET_ATTR
from tests.conftest import run_cli
from tests.search.conftest import CLEAN_ENV, GUIDE_SEARCH_YAML, load_trials, small_base

STUDY = "my_optimization"


def _guide_config(tmp_path, fast_config):
    base = small_base(fast_config, epochs=1, fraction=0.3)
    text = yaml.safe_dump(base, sort_keys=False) + GUIDE_SEARCH_YAML
    path = tmp_path / "my_config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def _check_outputs(tmp_path, result, n_trials: int):
    assert result.returncode == 0, result.stderr
    assert f"{n_trials}/{n_trials} done" in result.stderr
    assert "best val_acc=" in result.stderr
    assert "Top trials of my_optimization" in result.stdout
    out = tmp_path / "runs" / "optuna_studies" / STUDY
    rows = list(csv.DictReader((out / "trials.csv").open()))
    assert [int(r["number"]) for r in rows] == list(range(n_trials))
    assert {r["state"] for r in rows} == {"COMPLETE"}
    best = yaml.safe_load((out / "best_config.yaml").read_text())
    assert "search" not in best
    # Five folds of the training split, each with its own TensorBoard folder.
    folds = sorted(p.name for p in (tmp_path / "runs" / STUDY / "trial-0").iterdir())
    assert folds == [f"fold-{k}" for k in range(1, 6)]
    assert list((tmp_path / "runs" / STUDY / "trial-0" / "fold-1").glob("events.out.tfevents.*"))


def test_guide_yaml_on_sqlite(fast_config, tmp_path):
    config = _guide_config(tmp_path, fast_config)
    result = run_cli("ml-search", "--config", str(config), "--n-trials", "3", cwd=tmp_path, env=CLEAN_ENV)
    _check_outputs(tmp_path, result, 3)
    url = f"sqlite:///{tmp_path / 'optuna_studies.db'}"  # the guide's storage, relative to the cwd
    study, trials = load_trials(url, STUDY)
    # Trial 0 is the config's own point (lr 0.05, batch 64, momentum 0.9, step 5): inside the space.
    assert trials[0].params == {"optimizer.lr": 0.05, "training.batch_size": 64,
                                "optimizer.momentum": 0.9, "scheduler.step_size": 5}
    assert study.user_attrs[TARGET_ATTR] == 3

    again = run_cli("ml-search", "--config", str(config), cwd=tmp_path, env=CLEAN_ENV)
    assert again.returncode == 2
    assert "already exists" in again.stderr and "--resume" in again.stderr
    assert len(load_trials(url, STUDY)[1]) == 3

    export = tmp_path / "export"
    result = run_cli("ml-search", "--config", str(config), "--export-only", "--output-dir", str(export),
                     cwd=tmp_path, env=CLEAN_ENV)
    assert result.returncode == 0, result.stderr
    assert (export / "best_config.yaml").read_text() == (
        tmp_path / "runs" / "optuna_studies" / STUDY / "best_config.yaml").read_text()
    assert len((export / "trials.csv").read_text().splitlines()) == 4
    assert len(load_trials(url, STUDY)[1]) == 3
    # Only --output-dir is written to, so a logging.output_dir that could hold no runs is fine.
    (tmp_path / "afile").write_text("not a folder")
    elsewhere = run_cli("ml-search", "--config", str(config), "--export-only", "--output-dir", str(tmp_path / "e2"),
                        "--set", "logging.output_dir=afile/runs", cwd=tmp_path, env=CLEAN_ENV)
    assert elsewhere.returncode == 0, elsewhere.stderr
    assert (tmp_path / "e2" / "best_config.yaml").is_file()


@pytest.mark.postgres
def test_guide_yaml_on_postgres_from_the_environment(fast_config, tmp_path, postgres_url):
    config = _guide_config(tmp_path, fast_config)
    # The test server trusts local users, so a password is accepted and ignored: it must never show.
    secret_url = make_url(postgres_url).set(password="s3cret-pw").render_as_string(hide_password=False)
    result = run_cli("ml-search", "--config", str(config), "--n-trials", "2", "-v", cwd=tmp_path,
                     env={"KUBETUNE_STORAGE_URL": secret_url})
    _check_outputs(tmp_path, result, 2)
    assert "s3cret-pw" not in result.stdout + result.stderr
    assert ":***@" in result.stderr  # the URL is logged, masked
    assert not (tmp_path / "optuna_studies.db").exists()  # the environment beats the config
    _, trials = load_trials(postgres_url, STUDY)
    # Cross-validation reports the running aggregate after every epoch of every fold.
    assert sorted(trials[0].intermediate_values) == [1, 2, 3, 4, 5]
    assert trials[0].intermediate_values[5] == pytest.approx(trials[0].value)


@pytest.mark.parametrize("argv, expected", [
    (["-c", "my config.yaml", "--n-trials", "6", "--lr", "0.1"], "ml-search -c 'my config.yaml' --lr 0.1 --resume"),
    (["--config", "c.yaml", "--resume", "--n-trials=4", "--set", "a.b=1"],
     "ml-search --config c.yaml --resume --set a.b=1"),
])
def test_the_interrupt_hint_resumes_with_the_same_flags(argv, expected):
    from kubetune.cli.search import resume_command

    assert resume_command(argv) == expected
