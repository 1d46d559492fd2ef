"""Write figures: interactive HTML (offline) and static PNG through kaleido 1.x and Chromium."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from kubetune.errors import KubetuneError

if TYPE_CHECKING:
    import plotly.graph_objects as go

log = logging.getLogger(__name__)

FORMATS = ("html", "png", "both")
# kaleido's (and choreographer's) own override of the browser it starts.
BROWSER_ENV = "BROWSER_PATH"
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
PLOTLY_JS = "plotly.min.js"
RENDER_TIMEOUT = 120  # seconds for one image; a cold Chromium on a busy node is slow


class ChromiumMissing(KubetuneError):
    """No Chromium to render PNGs with; HTML output does not need one.

    Exit 2: PNGs were asked for on a machine that cannot make them, which the user fixes
    (install Chromium, set ``$BROWSER_PATH`` or ask for HTML). ``detail`` says what was
    looked for, ``remedy`` how to get one.
    """

    exit_code = 2

    def __init__(self, message: str, detail: str = "", remedy: str = "") -> None:
        super().__init__(message)
        self.detail = detail
        self.remedy = remedy


@dataclass(frozen=True)
class PngJob:
    """One figure to render: where (its HTML goes next to it), and at which size in pixels."""

    figure: go.Figure
    path: Path
    width: int
    height: int


def wants_html(fmt: str) -> bool:
    return fmt in ("html", "both")


def wants_png(fmt: str) -> bool:
    return fmt in ("png", "both")


def _missing(detail: str) -> ChromiumMissing:
    remedy = f"install Chromium (`apt-get install chromium`) or set ${BROWSER_ENV} to a Chrome/Chromium binary"
    return ChromiumMissing(
        f"PNG export needs Chromium, but {detail}; {remedy}; HTML output still works (--format html)",
        detail=f"Chromium was not found: {detail}", remedy=remedy,
    )


def find_chromium() -> str:
    """The Chromium kaleido will start: ``$BROWSER_PATH`` if set, else the first on ``PATH``."""
    explicit = os.environ.get(BROWSER_ENV)
    if explicit:
        if os.path.isfile(explicit) and os.access(explicit, os.X_OK):
            return explicit
        raise _missing(f"${BROWSER_ENV}={explicit!r} is not an executable file")
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    raise _missing(f"none of {', '.join(CHROMIUM_NAMES)} is on PATH")


def ensure_output_dir(path: Path) -> Path:
    """Create ``path``; a folder that cannot be created is the user's to fix."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise KubetuneError(f"cannot create output folder {path}: {exc.strerror or exc}") from None
    return path


def write_html(figure: go.Figure, path: Path) -> Path:
    """A standalone interactive page that needs no network.

    plotly.js is written once per folder (``plotly.min.js``, next to the page) and
    referenced by a relative ``<script src>``, instead of 4.6 MB inlined in every file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.write_html(
        str(path), include_plotlyjs="directory", full_html=True, include_mathjax=False,
        config={"displaylogo": False, "responsive": True},
    )
    return path


def write_pngs(jobs: Sequence[PngJob], chromium: str | None = None) -> list[Path]:
    """Render every job with one Chromium started once for all of them."""
    if not jobs:
        return []
    chromium = chromium or find_chromium()
    import kaleido
    from choreographer.errors import BrowserFailedError, ChromeNotFoundError

    specs = [
        {"fig": job.figure, "path": job.path,
         "opts": {"format": "png", "width": job.width, "height": job.height, "scale": 1}}
        for job in jobs
    ]
    for job in jobs:
        job.path.parent.mkdir(parents=True, exist_ok=True)
    # mathjax=False: kaleido would otherwise load MathJax from a CDN, which an
    # offline pod cannot reach. plotly.js comes from the installed plotly package.
    kopts = {"path": chromium, "mathjax": False, "timeout": RENDER_TIMEOUT}
    log.info("rendering %d PNG(s) with %s", len(jobs), chromium)
    try:
        kaleido.write_fig_from_object_sync(specs, kopts=kopts, cancel_on_error=True)
    except ChromeNotFoundError:
        raise _missing(f"kaleido found no browser at {chromium}") from None
    except BrowserFailedError as exc:
        raise KubetuneError(
            f"Chromium at {chromium} failed to start: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}; "
            "HTML output still works (--format html)"
        ) from None
    return [job.path for job in jobs]


def write_figures(jobs: Sequence[PngJob], fmt: str,
                  chromium: str | None) -> tuple[dict[str, dict[str, Path]], KubetuneError | None]:
    """Write each job's figure as HTML (``fmt`` "html" or "both") and PNG (with ``chromium``).

    Returns the paths written, ``{stem: {"html": path, "png": path}}``, and the error of a
    Chromium that failed to render under "both": the HTML files are written by then and
    usable, so the caller says so. Under "png" that error is raised.
    """
    files: dict[str, dict[str, Path]] = {job.path.stem: {} for job in jobs}
    if wants_html(fmt):
        for job in jobs:
            files[job.path.stem]["html"] = write_html(job.figure, job.path.with_suffix(".html"))
    if chromium is None:
        return files, None
    try:
        for job, path in zip(jobs, write_pngs(jobs, chromium), strict=True):
            files[job.path.stem]["png"] = path
    except KubetuneError as exc:
        if not wants_html(fmt):
            raise
        return files, exc
    return files, None
