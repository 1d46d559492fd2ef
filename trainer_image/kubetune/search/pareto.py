"""The Pareto front of a study of ``search.objectives``: its trials, the picked one, its configs.

Torch-free. The front is Optuna's ``study.best_trials``: the COMPLETE trials no other
dominates, among the feasible ones when trials carry constraint values. The picked
trial (``best_config.yaml``) is the front's best on ``search.pick``, by default the
first objective; ties go to the earlier trial.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial

from kubetune.config.schema import Config
from kubetune.config.yaml_io import dump_yaml
from kubetune.fileio import write_text_atomic
from kubetune.search.optuna_internals import pareto_front

if TYPE_CHECKING:
    from rich.table import Table


def objective_names(study: optuna.Study) -> list[str]:
    return list(study.metric_names or [f"value{i}" for i in range(len(study.directions))])


def front(study: optuna.Study) -> list[FrozenTrial]:
    """The Pareto-optimal trials, by trial number."""
    return front_of(study.get_trials(deepcopy=False), study.directions)


def front_of(trials: Sequence[FrozenTrial], directions: Sequence[StudyDirection]) -> list[FrozenTrial]:
    """:func:`front` over trials already read (the operator's snapshot)."""
    return sorted(pareto_front(trials, directions), key=lambda t: t.number)


def picked_trial(study: optuna.Study, pick: str | None = None) -> FrozenTrial | None:
    """The front's best trial on objective ``pick`` (default: the first); None without one."""
    return pick_from(front(study), objective_names(study), study.directions, pick)


def ranked(trials: Sequence[FrozenTrial], names: Sequence[str], directions: Sequence[StudyDirection],
           pick: str | None = None) -> list[FrozenTrial]:
    """``trials`` best first on objective ``pick`` (default: the first), ties to the earlier trial."""
    index = list(names).index(pick) if pick else 0
    sign = -1.0 if directions[index] == StudyDirection.MAXIMIZE else 1.0
    return sorted(trials, key=lambda t: (sign * t.values[index], t.number))


def pick_from(trials: Sequence[FrozenTrial], names: Sequence[str], directions: Sequence[StudyDirection],
              pick: str | None = None) -> FrozenTrial | None:
    """The best of front ``trials`` on objective ``pick`` (default: the first); None if empty."""
    return next(iter(ranked(trials, names, directions, pick)), None)


def values_text(study: optuna.Study, trial: FrozenTrial) -> str:
    """``val_acc=0.9611 latency_ms=0.41``."""
    return format_values(objective_names(study), trial.values)


def format_values(names: Sequence[str], values: Sequence[float]) -> str:
    """``val_acc=0.9611 latency_ms=0.41``."""
    return " ".join(f"{name}={value:.4g}" for name, value in zip(names, values, strict=True))


def config_text(config: Config, study: optuna.Study, trial: FrozenTrial, what: str) -> str:
    """A complete config for ``trial`` with a header saying what it is."""
    return trial_config_text(config, study.study_name, objective_names(study), trial, what)


def trial_config_text(config: Config, study_name: str, names: Sequence[str], trial: FrozenTrial, what: str) -> str:
    """:func:`config_text` for a study known by its name and objectives' names."""
    from kubetune.search.results import best_config_dict

    header = (f"# {what} trial {trial.number} of study {study_name}: {format_values(names, trial.values)}.\n"
              "# Train it: ml-train --config <this file>\n")
    return header + dump_yaml(best_config_dict(config, trial.params))


def picked_what(names: Sequence[str], pick: str | None) -> str:
    """What the picked trial's config header calls it."""
    return f"Picked (best {pick or names[0]} on the Pareto front)"


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
        write_text_atomic(path, config_text(config, study, best, picked_what(objective_names(study), pick)))
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
