"""ml-search with ``search.command``: the user's own script as each trial.

The scripts here block torch, plotting and the Kubernetes client before ``import
kubetune``, so every run also proves the trial API needs none of them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from kubetune.config import validate_config
from kubetune.search.attributes import INTERRUPTED_ATTR
from kubetune.search.space import distributions
from tests.conftest import BIN, run_cli
from tests.search.conftest import CLEAN_ENV, load_trials, search_section, small_base, write_config

BLOCKER = """\
import sys
class _Blocked:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision", "kubernetes", "plotly", "matplotlib", "kaleido"):
            raise ImportError(f"{name} is blocked in this test")
sys.meta_path.insert(0, _Blocked())
import kubetune
"""

# Reports optimizer.lr as its val_acc for every epoch: the pruner's verdicts follow from the params.
REPORTS_LR = BLOCKER + """\
trial = kubetune.trial()
for epoch in range(trial.resume_epoch() + 1, trial.config["training"]["num_epochs"] + 1):
    trial.report(epoch, {"val_acc": trial.config["optimizer"]["lr"], "val_loss": 1.0})
"""


def _search(tmp_path: Path, fast_config: dict, url: str, script: str, **search) -> subprocess.CompletedProcess:
    (tmp_path / "train.py").write_text(textwrap.dedent(script), encoding="utf-8")
    section = search_section(storage=url, command=[sys.executable, "train.py"], **search)
    config = write_config(tmp_path / "config.yaml", small_base(fast_config, epochs=3), section)
    return run_cli("ml-search", "--config", str(config), cwd=tmp_path, env=CLEAN_ENV)


def _fail_reasons(url: str) -> list[str]:
    _, trials = load_trials(url, "unit")
    assert [t.state for t in trials] == [TrialState.FAIL]
    return [t.user_attrs["fail_reason"] for t in trials]


def test_the_pruner_stops_a_script_trial_and_the_best_is_reported(tmp_path, fast_config, sqlite_url):
    result = _search(tmp_path, fast_config, sqlite_url, REPORTS_LR, n_trials=3,
                     pruner={"type": "MedianPruner", "n_startup_trials": 1, "n_warmup_steps": 0},
                     enqueue_trials=[{"optimizer.lr": 0.15}, {"optimizer.lr": 0.02}])
    assert result.returncode == 0, result.stderr
    _, trials = load_trials(sqlite_url, "unit")
    by_lr = {t.params["optimizer.lr"]: t for t in trials}
    assert by_lr[0.15].state == TrialState.COMPLETE and by_lr[0.15].value == pytest.approx(0.15)
    assert by_lr[0.02].state == TrialState.PRUNED
    assert by_lr[0.02].intermediate_values == {1: pytest.approx(0.02)}  # pruned at its first epoch
    assert by_lr[0.15].intermediate_values == {1: 0.15, 2: 0.15, 3: 0.15}
    assert len(trials) == 3  # the exact budget
    best = tmp_path / "runs" / "optuna_studies" / "unit" / "best_config.yaml"
    assert "lr: 0.15" in best.read_text()
    assert f"(train it: {sys.executable} train.py --config {best})" in result.stdout


def test_two_workers_run_exactly_the_studys_total_of_script_trials(tmp_path, fast_config, sqlite_url):
    (tmp_path / "train.py").write_text(REPORTS_LR, encoding="utf-8")
    section = search_section(storage=sqlite_url, n_trials=5, command=[sys.executable, "train.py"])
    config = write_config(tmp_path / "config.yaml", small_base(fast_config, epochs=2), section)
    result = run_cli("ml-search", "--config", str(config), "--n-jobs", "2", cwd=tmp_path, env=CLEAN_ENV)
    assert result.returncode == 0, result.stderr
    _, trials = load_trials(sqlite_url, "unit")
    assert len(trials) == 5 and all(t.state == TrialState.COMPLETE for t in trials)
    workers = {t.user_attrs["kubetune.worker"] for t in trials}
    assert len(workers) == 2  # both workers ran script trials


def test_a_script_that_never_reports_fails_saying_so(tmp_path, fast_config, sqlite_url):
    result = _search(tmp_path, fast_config, sqlite_url, BLOCKER + "kubetune.trial()\n", n_trials=1)
    assert result.returncode == 1, result.stderr  # no trial completed
    assert "exited 0 without reporting `val_acc`" in _fail_reasons(sqlite_url)[0]


def test_a_script_reporting_another_metric_fails_saying_which(tmp_path, fast_config, sqlite_url):
    script = BLOCKER + "kubetune.trial().report(1, {'accuracy': 0.5, 'loss': 1.0})\n"
    result = _search(tmp_path, fast_config, sqlite_url, script, n_trials=1)
    assert result.returncode == 1, result.stderr  # no trial completed
    reason = _fail_reasons(sqlite_url)[0]
    assert "exited with code 1" in reason
    assert "the metrics lack `val_acc` (search.metric), but got accuracy, loss" in reason


def test_a_script_that_stops_early_without_a_final_value_fails(tmp_path, fast_config, sqlite_url):
    script = BLOCKER + "kubetune.trial().report(1, {'val_acc': 0.5})\n"
    result = _search(tmp_path, fast_config, sqlite_url, script, n_trials=1)
    assert result.returncode == 1, result.stderr  # no trial completed
    assert "exited 0 after reporting epoch 1 of 3 without a final value" in _fail_reasons(sqlite_url)[0]


def test_finish_gives_the_value_of_a_script_that_stops_early(tmp_path, fast_config, sqlite_url):
    script = BLOCKER + "t = kubetune.trial(); t.report(1, {'val_acc': 0.5}); t.finish({'val_acc': 0.75})\n"
    assert _search(tmp_path, fast_config, sqlite_url, script, n_trials=1).returncode == 0
    _, trials = load_trials(sqlite_url, "unit")
    assert [(t.state, t.value) for t in trials] == [(TrialState.COMPLETE, 0.75)]


def test_a_crashing_script_leaves_its_exit_code_and_last_stderr_lines(tmp_path, fast_config, sqlite_url):
    script = BLOCKER + "kubetune.trial()\nfor i in range(8): print(f'line {i}', file=sys.stderr)\nsys.exit(3)\n"
    result = _search(tmp_path, fast_config, sqlite_url, script, n_trials=1)
    assert result.returncode == 1, result.stderr  # no trial completed
    reason = _fail_reasons(sqlite_url)[0]
    assert reason.startswith(f"ScriptFailed: `{sys.executable} train.py` exited with code 3: line 3 |")
    assert reason.endswith("line 7")
    assert "line 2" not in reason


@pytest.mark.parametrize(("change", "message"), [
    ({"command": []}, "`search.command`: must be a non-empty list of non-empty strings"),
    ({"command": ["python", " "]}, "`search.command`: must be a non-empty list of non-empty strings"),
    ({"command": ["python", "train.py"], "cross_validation": {"enabled": True}},
     "cross_validation does not apply to a command"),
    ({"command": ["no-such-program-here", "train.py"]}, "`search.command` runs 'no-such-program-here', which is not found"),
])
def test_a_bad_search_command_is_one_line_before_any_trial(tmp_path, fast_config, sqlite_url, change, message):
    config = write_config(tmp_path / "config.yaml", small_base(fast_config), search_section(storage=sqlite_url, **change))
    result = run_cli("ml-search", "--config", str(config), cwd=tmp_path, env=CLEAN_ENV)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "studies.db").exists()  # nothing written


def test_import_kubetune_loads_no_torch_plotting_or_kubernetes():
    code = BLOCKER + "kubetune.trial, kubetune.Pruned\nprint(sorted(m for m in sys.modules if m.startswith(('optuna', 'pydantic'))))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"  # Optuna and the config models load when trial() is called


def test_what_runs_a_script_trial_in_a_pod_loads_no_torch_or_plotting():
    """kubetune[script] in a user's image: ml-train --trial and the runner, without torch."""
    code = BLOCKER + "import kubetune.cli.train, kubetune.search.single_trial, kubetune.script.runner\nprint('ok')"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_run_alone_the_script_trains_the_configs_own_values(tmp_path, fast_config):
    config = write_config(tmp_path / "config.yaml", small_base(fast_config, epochs=2), None)
    script = tmp_path / "train.py"
    script.write_text(REPORTS_LR + "print(trial.number, trial.params, trial.final, trial.checkpoint_dir.is_dir())\n")
    result = subprocess.run([sys.executable, str(script), "--config", str(config)], capture_output=True,
                            text=True, cwd=tmp_path, env={**os.environ, **CLEAN_ENV})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["None", "{}", "0.05", "True"]
    missing = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path)
    assert missing.returncode == 2
    assert missing.stderr.strip() == "kubetune.trial(): error: no config: pass --config PATH (or set $KUBETUNE_CONFIG)"


# Keeps its own checkpoint (the last epoch it finished) and reports slowly enough to be stopped.
CHECKPOINTED = BLOCKER + """\
import json, time
trial = kubetune.trial()
state = trial.checkpoint_dir / "state.json"
done = json.loads(state.read_text())["epoch"] if state.exists() else 0
print("start", done, trial.resume_epoch(), flush=True)
for epoch in range(done + 1, trial.config["training"]["num_epochs"] + 1):
    time.sleep(0.3)
    state.write_text(json.dumps({"epoch": epoch}))
    trial.report(epoch, {"val_acc": epoch / 100})
"""


def test_a_sigtermed_trial_pod_leaves_the_trial_running_and_the_next_resumes(tmp_path, fast_config):
    """What the operator's trial pod runs (``ml-train --trial``) with a ``search.command``."""
    url = f"sqlite:///{tmp_path / 'op.db'}"
    (tmp_path / "train.py").write_text(CHECKPOINTED, encoding="utf-8")
    section = search_section(study_name="op", command=[sys.executable, "train.py"])
    config_path = write_config(tmp_path / "c.yaml", small_base(fast_config, epochs=12), section)
    study = optuna.create_study(study_name="op", storage=url, direction="maximize")
    study.ask(distributions(validate_config(yaml.safe_load(config_path.read_text())).search.search_space))
    env = {**os.environ, **CLEAN_ENV, "KUBETUNE_STORAGE_URL": url}
    pod = subprocess.Popen([str(BIN / "ml-train"), "--config", str(config_path), "--trial", "op:0"], cwd=tmp_path,
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    started = time.monotonic()
    while len(study.get_trials()[0].intermediate_values) < 2:
        assert pod.poll() is None, pod.communicate()
        time.sleep(0.1)
    pace = (time.monotonic() - started) / 2
    pod.send_signal(signal.SIGTERM)
    out, err = pod.communicate(timeout=30 + 10 * pace)
    assert pod.returncode == 143, err
    stopped = study.get_trials()[0]
    assert stopped.state == TrialState.RUNNING
    last = max(stopped.intermediate_values)
    assert stopped.user_attrs[INTERRUPTED_ATTR] == f"terminated (SIGTERM) after epoch {last}"

    again = subprocess.run([str(BIN / "ml-train"), "--config", str(config_path), "--trial", "op:0"], cwd=tmp_path,
                           env=env, capture_output=True, text=True, timeout=60 + 30 * pace)
    assert again.returncode == 0, again.stderr
    start = next(line.split() for line in again.stdout.splitlines() if line.startswith("start"))
    assert int(start[1]) >= last and int(start[2]) == last  # its own checkpoint; what the storage holds
    done = study.get_trials()[0]
    assert done.state == TrialState.COMPLETE and done.value == pytest.approx(0.12)
    assert sorted(done.intermediate_values) == list(range(1, 13))
    assert done.user_attrs[INTERRUPTED_ATTR] == ""  # the next pod trains it: no longer interrupted
