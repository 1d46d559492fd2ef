"""The README's Quick Start, run as a user types it: the commands parsed out of README.md.

They run one after another as subprocesses in a fresh folder, so the README, the
Makefile's demo and the commands themselves cannot drift apart. The run must show
what tuning is for: completed trials that differ, importances drawn, and a retrained
best config that beats the config's own values.
"""

from __future__ import annotations

import csv
import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from tests.conftest import BIN

ROOT = Path(__file__).resolve().parents[1]
STUDY_DIR = Path("runs/optuna_studies/digits_optimization")


def quick_start_commands() -> list[str]:
    """The lines of the first bash block under README's "### Quick Start", comments cut."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("### Quick Start"):]
    block = re.search(r"```bash\n(.*?)```", section, re.DOTALL)
    assert block, "no bash block under ### Quick Start"
    return [line.split("  #")[0].strip() for line in block.group(1).splitlines() if line.strip()]


def makefile_demo_commands() -> list[str]:
    """The ml-* commands of the Makefile's demo recipe."""
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    recipe = text[text.index("\ndemo:"):].split("\n\n")[0]
    return [line.strip().removesuffix("\\").strip().removesuffix("&&").strip()
            for line in recipe.splitlines() if line.strip().startswith("ml-")]


def test_the_makefile_demo_runs_the_readme_quick_start():
    commands = quick_start_commands()
    assert [c.split()[0] for c in commands] == ["ml-init-config", "ml-search", "ml-visualise", "ml-train"]
    assert makefile_demo_commands() == commands


def completed_values(trials_csv: Path) -> dict[int, float]:
    with trials_csv.open(newline="") as handle:
        return {int(r["number"]): float(r["value"]) for r in csv.DictReader(handle)
                if r["state"] == "COMPLETE"}


@pytest.mark.slow
def test_the_quick_start_as_printed(tmp_path):
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    env.pop("KUBETUNE_STORAGE_URL", None)  # the default storage, as on a newcomer's machine
    outputs = []
    for command in quick_start_commands():
        result = subprocess.run(shlex.split(command), cwd=tmp_path, env=env, capture_output=True,
                                text=True, timeout=900)
        assert result.returncode == 0, f"{command}\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
        assert "Traceback" not in result.stdout + result.stderr, command
        # Off a terminal: plain lines, no live progress line, no library log lines (those need -v).
        assert "\x1b[K" not in result.stderr and not re.search(r"^INFO ", result.stderr, re.M), command
        outputs.append(result)
    _, search, visualise, train = outputs

    values = completed_values(tmp_path / STUDY_DIR / "trials.csv")
    assert len(values) >= 3, values
    assert max(values.values()) - min(values.values()) >= 0.05, values
    own = values[0]  # trial 0 is the config's own values (search.enqueue_config)
    assert "the config's own values (trial 0)" in search.stdout

    plots = tmp_path / STUDY_DIR / "plots"
    assert (plots / "param_importances.html").stat().st_size > 1000
    assert "skipped param_importances" not in visualise.stderr
    best = max(values.items(), key=lambda kv: kv[1])
    assert f"best val_acc={best[1]:.6g} (trial #{best[0]};" in visualise.stdout
    assert str(STUDY_DIR / "plots" / "index.html") in visualise.stdout

    retrained = float(re.search(r"best val_acc=([0-9.]+)", train.stdout).group(1))
    assert retrained > own, (retrained, own)
    # Trials train exactly what best_config.yaml holds, so the retrained run reproduces the best.
    assert retrained == pytest.approx(best[1], abs=1e-4), (retrained, best)
    assert "tensorboard --logdir runs" in train.stdout
    # What the four commands leave in the folder, and nothing else (no lock file).
    assert sorted(p.name for p in tmp_path.iterdir()) == ["configs", "data", "optuna_studies.db", "runs"]
    assert re.search(r"PRUNED after epoch \d+/\d+ ", search.stderr) and " at step " not in search.stderr
