"""Progress: a rich bar on a terminal, one plain line per epoch otherwise."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID


def format_metrics(metrics: dict[str, float]) -> str:
    return " ".join(
        f"{k}={v:.4g}" if k == "lr" else f"{k}={v:.4f}" for k, v in metrics.items()
    )


class EpochProgress:
    """Batch-level bar on a TTY (``enabled=None`` decides by ``isatty``) plus epoch lines.

    ``done``: epochs a resumed run already has.
    """

    def __init__(self, epochs: int, batches: int, enabled: bool | None = None,
                 lines: bool = True, done: int = 0) -> None:
        self.epochs = epochs
        self.done = done
        self.lines = lines
        self.batches = batches
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def __enter__(self) -> EpochProgress:
        if self.enabled:
            from rich.progress import Progress

            progress = self._progress = Progress(transient=True)
            progress.__enter__()
            self._task = progress.add_task(f"epoch {self.done + 1}",
                                                 total=self.epochs * self.batches,
                                                 completed=self.done * self.batches)
        return self

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)

    def advance(self) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.advance(self._task)

    def epoch_done(self, epoch: int, metrics: dict[str, float]) -> None:
        if not self.lines:
            return
        line = f"epoch {epoch}/{self.epochs} {format_metrics(metrics)}"
        if self._progress is not None and self._task is not None:
            self._progress.console.print(line)
            self._progress.update(self._task, description=f"epoch {min(epoch + 1, self.epochs)}")
        else:
            print(line, file=sys.stderr, flush=True)
