"""What the study report holds between runs: each plot's figure, files and drawing time.

``report.json`` beside ``index.html`` records every plot the report shows.
``ml-visualise --plot-type X`` redraws X and keeps the other plots from it, so the
report stays whole and names when each plot was drawn and from how many trials; a run
over every plot type replaces the record and removes the files of plots it no longer
draws, so nothing stale stays behind.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import plotly.graph_objects as go

log = logging.getLogger(__name__)

STATE = "report.json"


@dataclass
class PlotRecord:
    """One plot of the report: when it was drawn, from which trials, its files and figure."""

    drawn: str  # "2026-01-31 14:05 UTC"
    trials: int
    complete: int
    params: list[str]
    files: dict[str, str]  # "html"/"png" -> file name in the plots folder
    figure: str  # the plotly figure as JSON, to embed it again without redrawing

    def stamp(self) -> str:
        return f"drawn {self.drawn} from {self.trials} trials ({self.complete} complete)"

    def load_figure(self) -> go.Figure:
        import plotly.io

        return plotly.io.from_json(self.figure)


def load(folder: Path) -> dict[str, PlotRecord]:
    """The recorded plots; an unreadable or foreign record counts as none."""
    path = folder / STATE
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return {name: PlotRecord(**entry) for name, entry in raw["plots"].items()}
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("ignoring %s (%s): the report shows only the plots drawn now", path, exc)
        return {}


def save(folder: Path, records: Mapping[str, PlotRecord]) -> None:
    data = {"plots": {name: asdict(record) for name, record in records.items()}}
    (folder / STATE).write_text(json.dumps(data), encoding="utf-8")


def merge(folder: Path, previous: Mapping[str, PlotRecord], drawn: Mapping[str, PlotRecord],
          order: Iterable[str], *, keep_others: bool) -> dict[str, PlotRecord]:
    """The plots the report shows now, in ``order``.

    ``keep_others``: the plots drawn now replace theirs and the others stay (while their
    files exist). Otherwise only the plots drawn now, and the files of the others go.
    """
    if keep_others:
        kept = {name: record for name, record in previous.items()
                if all((folder / f).is_file() for f in record.files.values())}
        merged = {**kept, **drawn}
    else:
        merged = dict(drawn)
        for name, record in previous.items():
            if name in drawn:
                continue
            for file in record.files.values():
                (folder / Path(file).name).unlink(missing_ok=True)
    return {name: merged[name] for name in order if name in merged}


def record(figure: go.Figure, files: Mapping[str, Path], drawn: str, counts: Mapping[str, int],
           params: Iterable[str]) -> PlotRecord:
    return PlotRecord(drawn=drawn, trials=sum(counts.values()), complete=counts.get("COMPLETE", 0),
                      params=list(params), files={kind: path.name for kind, path in files.items()},
                      figure=figure.to_json())

