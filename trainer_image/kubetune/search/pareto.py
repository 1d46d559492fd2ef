"""The Pareto front of a study of ``search.objectives``: its trials, the picked one, its configs.

Torch-free. The front is Optuna's ``study.best_trials``: the COMPLETE trials no other
dominates, among the feasible ones when trials carry constraint values. The picked
trial (``best_config.yaml``) is the front's best on ``search.pick``, by default the
first objective; ties go to the earlier trial.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial

from kubetune.config.schema import Config
from kubetune.config.yaml_io import dump_yaml
from kubetune.fileio import write_text_atomic

if TYPE_CHECKING:
    from rich.table import Table


def objective_names(study: optuna.Study) -> list[str]:
    return list(study.metric_names or [f"value{i}" for i in range(len(study.directions))])


def front(study: optuna.Study) -> list[FrozenTrial]:
    """The Pareto-optimal trials, by trial number."""
    return sorted(study.best_trials, key=lambda t: t.number)


def picked_trial(study: optuna.Study, pick: str | None = None) -> FrozenTrial | None:
    """The front's best trial on objective ``pick`` (default: the first); None without one."""
    trials = front(study)
    if not trials:
        return None
    index = objective_names(study).index(pick) if pick else 0
    sign = -1.0 if study.directions[index] == StudyDirection.MAXIMIZE else 1.0
    return min(trials, key=lambda t: (sign * t.values[index], t.number))


def values_text(study: optuna.Study, trial: FrozenTrial) -> str:
    """``val_acc=0.9611 latency_ms=0.41``."""
    return " ".join(f"{name}={value:.4g}" for name, value in zip(objective_names(study), trial.values, strict=True))


def config_text(config: Config, study: optuna.Study, trial: FrozenTrial, what: str) -> str:
    """A complete config for ``trial`` with a header saying what it is."""
    from kubetune.search.results import best_config_dict

    header = (f"# {what} trial {trial.number} of study {study.study_name}: {values_text(study, trial)}.\n"
              "# Train it: ml-train --config <this file>\n")
    return header + dump_yaml(best_config_dict(config, trial.params))


def export_front(config: Config, study: optuna.Study, target: Path, pick: str | None) -> dict[str, Path]:
    """``pareto/trial-<n>.yaml`` for every front trial and ``best_config.yaml`` for the picked one."""
    written: dict[str, Path] = {}
    folder = target / "pareto"
    trials = front(study)
    if folder.exists():
        for stale in folder.glob("trial-*.yaml"):  # trials that left the front
            stale.unlink()
    for trial in trials:
        path = folder / f"trial-{trial.number}.yaml"
        write_text_atomic(path, config_text(config, study, trial, "Pareto-optimal"))
        written[f"pareto_{trial.number}"] = path
    best = picked_trial(study, pick)
    if best is not None:
        path = target / "best_config.yaml"
        what = f"Picked (best {pick or objective_names(study)[0]} on the Pareto front)"
        write_text_atomic(path, config_text(config, study, best, what))
        written["best_config"] = path
    return written


def front_table(study: optuna.Study) -> Table:
    """A rich Table with one row per Pareto-optimal trial: its objectives and params."""
    from rich.table import Table

    from kubetune.search.results import format_value

    trials = front(study)
    names = objective_names(study)
    keys: list[str] = []
    for t in trials:
        keys.extend(k for k in t.params if k not in keys)
    table = Table(title=f"Pareto front of {study.study_name}",
                  caption=f"{len(trials)} Pareto-optimal of {len(study.get_trials(deepcopy=False))} trials")
    table.add_column("trial", justify="right")
    for name in names:
        table.add_column(name, justify="right")
    for key in keys:
        table.add_column(key.rsplit(".", 1)[-1], justify="right")
    for t in trials:
        table.add_row(str(t.number), *(format_value(v) for v in t.values),
                      *(format_value(t.params.get(k)) for k in keys))
    return table
