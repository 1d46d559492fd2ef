"""The environment a trial script finds: the contract between its runner and its API.

Standard library only: a user's script imports it through ``import kubetune``.
"""

from __future__ import annotations

from pathlib import Path

STORAGE_ENV = "KUBETUNE_STORAGE_URL"  # the Optuna storage (what trial pods already get)
STUDY_ENV = "KUBETUNE_STUDY"
TRIAL_NUMBER_ENV = "KUBETUNE_TRIAL_NUMBER"
# The trial's config file: the config with the trial's values applied, its search
# section kept (the pruner is built from it). Run alone, the script's own config.
CONFIG_ENV = "KUBETUNE_CONFIG"
TRIAL_DIR_ENV = "KUBETUNE_TRIAL_DIR"  # <output_dir>/<study>/trial-<n>: logs, TensorBoard
CHECKPOINT_DIR_ENV = "KUBETUNE_CHECKPOINT_DIR"

CONFIG_FILE = "trial_config.yaml"


def checkpoint_dir(trial_dir: Path) -> Path:
    """Where a trial's script keeps what resuming needs: beside its logs, on the results volume."""
    return trial_dir / "checkpoints"
