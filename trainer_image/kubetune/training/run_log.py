"""Where a run writes: its folder, TensorBoard events with hparams, metrics.json."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kubetune.config.loader import config_to_dict, config_to_yaml
from kubetune.config.schema import Config
from kubetune.fileio import write_text_atomic

SCALARS = ("train_loss", "train_acc", "val_loss", "val_acc")
# Beside a search's parameters, the keys runs are usually told apart by in HParams.
COMPARED = ("model.architecture", "optimizer.type", "optimizer.lr", "training.batch_size",
            "training.num_epochs")
STATE_KEY = "state"


def new_run_dir(config: Config) -> Path:
    """``<output_dir>/<experiment>/<run>``, created now and never an existing folder."""
    experiment = config.logging.experiment_name or Path(config.data.path).resolve().name
    base = Path(config.logging.output_dir) / experiment
    name = config.logging.run_name or time.strftime("%Y%m%d-%H%M%S")
    base.mkdir(parents=True, exist_ok=True)
    for attempt in range(1000):
        candidate = base / (name if attempt == 0 else f"{name}-{attempt}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
    raise RuntimeError(f"no free run folder name under {base}")


def flat_hparams(config: Config) -> dict[str, Any]:
    """Config leaves as ``dotted.key: scalar`` for TensorBoard's HParams tab."""
    out: dict[str, Any] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(f"{prefix}{key}.", value)
        elif isinstance(node, bool | int | float | str):
            out[prefix[:-1]] = node
        else:
            out[prefix[:-1]] = str(node)

    walk("", config_to_dict(config, include_search=False))
    return out


def tensorboard_hparams(flat: dict[str, Any], searched: Sequence[str], state: str) -> dict[str, Any]:
    """What HParams shows: the searched parameters, then :data:`COMPARED`, then the run's
    state (completed, stopped, pruned, failed) to filter by; never all the config's keys,
    which would push the searched ones off-screen."""
    keys = list(dict.fromkeys([*searched, *COMPARED]))
    return {**{k: flat[k] for k in keys if k in flat}, STATE_KEY: state}


def _session_status(state: str) -> int:
    from tensorboard.plugins.hparams.api_pb2 import Status

    name = {"completed": "STATUS_SUCCESS", "stopped": "STATUS_SUCCESS", "failed": "STATUS_FAILURE"}
    return int(Status.Value(name.get(state, "STATUS_UNKNOWN")))  # pruned: neither success nor failure


class RunLog:
    """TensorBoard scalars and hparams plus ``metrics.json`` for one run folder.

    ``history`` (epochs a resumed run already has) starts the log: with
    ``continues_here`` the folder already holds their events and TensorBoard purges
    any later steps an interrupted writer left; otherwise they are written again, so
    a run continued in a new folder shows whole curves.

    The HParams entry (:func:`tensorboard_hparams`) is written when the run ends, with its
    state; an interrupted run writes none, its resumed run does.
    """

    def __init__(self, run_dir: Path, config: Config, history: list[dict[str, float]] | None = None,
                 *, continues_here: bool = False, searched: Sequence[str] = ()) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.run_dir = run_dir
        self._searched = list(searched)
        self.history: list[dict[str, float]] = list(history or [])
        self.costs: dict[str, float] = {}  # the run's latest costs (kubetune.training.costs)
        self.cost_measurement: dict[str, float] = {}  # what measuring them took
        (run_dir / "config.yaml").write_text(config_to_yaml(config), encoding="utf-8")
        purge_step = self.history[-1]["epoch"] + 1 if continues_here and self.history else None
        self.writer = SummaryWriter(log_dir=str(run_dir), purge_step=purge_step)
        self._hparams = flat_hparams(config)
        if purge_step is None:
            for entry in self.history:
                self._scalars(int(entry["epoch"]), {k: v for k, v in entry.items() if k != "epoch"})
            self.writer.flush()

    def _add_summary(self, summary: Any) -> None:
        file_writer = self.writer.file_writer
        assert file_writer is not None  # SummaryWriter makes it in its constructor
        file_writer.add_summary(summary)

    def _scalars(self, epoch: int, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, epoch)
            if key in SCALARS:
                self.writer.add_scalar(f"hparam/{key}", value, epoch)

    def log_epoch(self, epoch: int, metrics: dict[str, float], costs: dict[str, float] | None = None) -> None:
        """Write one epoch's scalars (also under ``hparam/`` for the HParams tab) and the
        run's costs so far (scalars under ``cost/``; ``costs`` in metrics.json)."""
        self._scalars(epoch, metrics)
        for key, value in (costs or {}).items():
            self.writer.add_scalar(f"cost/{key}", value, epoch)
        self.costs = dict(costs or {})
        self.writer.flush()
        self.history.append({"epoch": epoch, **metrics})
        self.write_metrics(status="running")

    def write_metrics(self, status: str, best: dict[str, Any] | None = None) -> None:
        write_text_atomic(
            self.run_dir / "metrics.json",
            json.dumps(
                {"status": status, "best": best, "epochs": self.history, "hparams": self._hparams,
                 "costs": self.costs, "cost_measurement": self.cost_measurement},
                indent=2,
            ),
        )

    def close(self, status: str, best: dict[str, Any] | None) -> None:
        self.write_metrics(status, best)
        if status != "interrupted":
            self._write_hparams(status)
        self.writer.close()

    def _write_hparams(self, status: str) -> None:
        from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData
        from torch.utils.tensorboard.summary import hparams

        shown = tensorboard_hparams(self._hparams, self._searched, status)
        experiment, start, end = hparams(shown, {f"hparam/{k}": 0 for k in SCALARS})
        data = HParamsPluginData.FromString(end.value[0].metadata.plugin_data.content)
        data.session_end_info.status = _session_status(status)
        end.value[0].metadata.plugin_data.content = data.SerializeToString()
        for summary in (experiment, start, end):
            self._add_summary(summary)
