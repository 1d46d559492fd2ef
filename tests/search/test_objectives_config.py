"""Config errors of several objectives, constraints, pick and goal: one line naming the key, exit 2."""

from __future__ import annotations

import pytest

from kubetune.cli.search import main as ml_search
from tests.search.conftest import search_section, small_base, write_config

ACC = {"metric": "val_acc", "direction": "maximize"}
LATENCY = {"metric": "latency_ms", "direction": "minimize"}

CASES = {
    "objectives with metric": ({"objectives": [ACC, LATENCY], "metric": "val_acc"},
                               "`search.objectives` replaces `search.metric`"),
    "unknown metric": ({"objectives": [ACC, {"metric": "latency", "direction": "minimize"}]},
                       "search.objectives.1.metric"),
    "missing direction": ({"objectives": [ACC, {"metric": "params"}]}, "search.objectives.1.direction"),
    "wrong direction": ({"objectives": [ACC, {"metric": "params", "direction": "maximize"}]},
                        "`search.objectives[1].direction` must be 'minimize' for metric params"),
    "repeated metric": ({"objectives": [ACC, ACC]}, "`search.objectives[1].metric` repeats `val_acc`"),
    "CMA-ES": ({"objectives": [ACC, LATENCY], "sampler": {"type": "CmaEsSampler"}},
               "`search.sampler.type` CmaEsSampler cannot search several objectives"),
    "median pruner": ({"objectives": [ACC, LATENCY], "pruner": {"type": "MedianPruner"}},
                      "`search.pruner.type` MedianPruner cannot judge `search.objectives`"),
    "cross-validation": ({"objectives": [ACC, LATENCY], "cross_validation": {"enabled": True}},
                         "`search.cross_validation` does not apply to `search.objectives`"),
    "unmeasured constraint": ({"objectives": [ACC, LATENCY], "constraints": {"energy": {"max": 1}}},
                              "`search.constraints.energy` must name a measured metric"),
    "empty constraint": ({"objectives": [ACC, LATENCY], "constraints": {"params": {}}},
                         "a constraint needs max, min or both"),
    "constraint without objectives": ({"constraints": {"params": {"max": 1}}},
                                      "`search.constraints` needs `search.objectives`"),
    "pick not an objective": ({"objectives": [ACC, LATENCY], "pick": "params"},
                              "`search.pick` must be one of the objectives (val_acc, latency_ms)"),
    "goal not an objective": ({"objectives": [ACC, LATENCY], "goal": {"params": 10}},
                              "`search.goal.params` must name an objective"),
    "goal on another metric": ({"goal": {"val_loss": 0.1}}, "`search.goal.val_loss` must name an objective (val_acc)"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_objectives_config_error_exits_2_and_writes_nothing(case, fast_config, tmp_path, capsys):
    overrides, message = CASES[case]
    config = write_config(tmp_path / "c.yaml", small_base(fast_config), search_section(**overrides))
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    assert ml_search(["--config", str(config), "--storage", url]) == 2
    stderr = capsys.readouterr().err
    assert message in stderr, stderr
    assert len(stderr.strip().splitlines()) == 1, stderr
    assert not (tmp_path / "studies.db").exists() and not (tmp_path / "runs").exists()


def test_a_resumed_study_keeps_its_objectives(fast_config, tmp_path, capsys):
    import optuna

    url = f"sqlite:///{tmp_path / 'studies.db'}"
    optuna.create_study(study_name="unit", storage=url, directions=["maximize", "minimize"])
    config = write_config(tmp_path / "c.yaml", small_base(fast_config), search_section())
    assert ml_search(["--config", str(config), "--storage", url, "--resume"]) == 2
    stderr = capsys.readouterr().err
    assert "`search.objectives` must have the directions ['maximize', 'minimize'] of study `unit`" in stderr, stderr
    assert optuna.load_study(study_name="unit", storage=url).trials == []


def test_a_resolved_config_of_several_objectives_reads_back(fast_config):
    """What ml-train saves and what a StudyJob's pods mount: without the metric and
    direction that search.objectives replaces."""
    from kubetune.config import config_to_yaml, validate_config
    from kubetune.config.yaml_io import parse_yaml
    from kubetune.search.checks import check_search

    raw = small_base(fast_config)
    raw["search"] = {"study_name": "mo", "objectives": [ACC, LATENCY], "goal": {"val_acc": 0.9},
                     "search_space": {"optimizer.lr": {"type": "loguniform", "low": 1e-3, "high": 0.1}}}
    config = validate_config(raw)
    text = config_to_yaml(config)
    again = validate_config(parse_yaml(text, "dump"))
    check_search(again)
    assert again.search.objectives == config.search.objectives and again.search.goal == {"val_acc": 0.9}
