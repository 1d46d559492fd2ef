"""One version: ``kubetune.__version__``; everything that has to carry a literal agrees with it."""

from __future__ import annotations

import yaml

from kubetune import __version__
from tests.chart.helpers import CHART, ROOT
from tests.conftest import run_cli


def test_the_chart_carries_the_version():
    # Helm reads Chart.yaml as it is, so the literals stay there; this keeps them in step.
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text(encoding="utf-8"))
    assert chart["version"] == __version__, "set `version` in charts/kubetune/Chart.yaml to kubetune.__version__"
    assert chart["appVersion"] == __version__, "set `appVersion` in charts/kubetune/Chart.yaml to kubetune.__version__"


def test_setuptools_reads_the_version_without_importing_kubetune():
    # An import would pull in whatever kubetune/__init__.py imports: the literal keeps it static.
    code = (
        "import sys\n"
        "from setuptools.config.pyprojecttoml import read_configuration\n"
        "config = read_configuration('pyproject.toml')\n"
        "print(config['project']['version'])\n"
        "assert 'kubetune' not in sys.modules, 'setuptools imported kubetune to read its version'\n"
    )
    result = run_cli("python", "-c", code, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == __version__


def test_the_operator_reports_the_version():
    import kubetune_operator

    assert kubetune_operator.__version__ == __version__


def test_the_docs_build_images_through_make_and_name_no_other_tag():
    # `make images`/`make push` tag with __version__ (tests/chart/test_images.py); a page that
    # spells a tag out must spell this one.
    import re

    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    assert "make push REGISTRY=" in (ROOT / "README.md").read_text(encoding="utf-8")
    tags = {(page.relative_to(ROOT).as_posix(), tag) for page in pages
            for tag in re.findall(r"kubetune-(?:operator|trainer-cpu|trainer-cuda):([\w.-]+)", page.read_text(encoding="utf-8"))}
    assert {tag for _, tag in tags} <= {__version__}, sorted(tags)
