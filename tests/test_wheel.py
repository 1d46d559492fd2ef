"""The wheel: what it ships, its metadata, and the Quick Start run from it in a clean venv.

The clean venv holds the wheel alone and takes the dependencies of the `optuna` extra
from this environment's site-packages (a .pth line: no several-GB torch copy), so the
commands import the wheel's kubetune, never the checkout's; the extras' requirements are
checked against what is installed.
"""

from __future__ import annotations

import email
import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from kubetune import __version__
from tests.test_quick_start import quick_start_commands

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ["pyproject.toml", "README.md", "trainer_image/kubetune", "operator/kubetune_operator"]
COMMANDS = ["ml-init-config", "ml-train", "ml-search", "ml-visualise", "kubetune-operator"]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """``python -m build --wheel`` from the package's sources alone, checked by twine."""
    source = tmp_path_factory.mktemp("source")
    for name in SOURCES:
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy
        copy(ROOT / name, source / name)
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), str(source)],
                   check=True, capture_output=True, text=True)
    (built,) = out.glob("*.whl")
    checked = subprocess.run([sys.executable, "-m", "twine", "check", "--strict", str(built)],
                             capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    return built


def test_the_wheel_ships_the_two_packages_and_complete_metadata(wheel):
    assert wheel.name == f"kubetune-{__version__}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        meta = email.message_from_bytes(archive.read(f"kubetune-{__version__}.dist-info/METADATA"))
        entry_points = archive.read(f"kubetune-{__version__}.dist-info/entry_points.txt").decode()
    assert {n.split("/")[0] for n in names} == {"kubetune", "kubetune_operator", f"kubetune-{__version__}.dist-info"}
    assert not [n for n in names if n.split("/")[1:2] in (["tests"], ["bench"], ["scripts"]) or "/test_" in n]
    assert meta["License-Expression"] == "Apache-2.0" and meta["Requires-Python"] == ">=3.10"
    assert meta["Description-Content-Type"] == "text/markdown" and "### Quick Start" in meta.get_payload()
    assert len(meta.get_all("Classifier")) >= 5 and len(meta.get_all("Project-URL")) >= 2
    assert {"optuna", "operator", "dashboard", "dev", "train"} <= set(meta.get_all("Provides-Extra"))
    for command in COMMANDS:
        assert f"{command} = " in entry_points


def _clean_venv(folder: Path, wheel: Path) -> Path:
    """A venv with only the wheel installed; dependencies visible from this environment."""
    venv.EnvBuilder(with_pip=False).create(folder)
    python = folder / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                          capture_output=True, text=True, check=True).stdout.strip()
    # A plain path line: the other site-packages' own .pth files (the checkout's editable
    # install among them) are not processed, so only the wheel provides kubetune.
    Path(site, "dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n", encoding="utf-8")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps",
                    "--ignore-installed", "--no-compile", str(wheel)], check=True, capture_output=True, text=True)
    return python


def _unmet(wheel: Path, extras: list[str]) -> list[str]:
    """Requirements of the wheel (with ``extras``) that nothing installed here meets."""
    with zipfile.ZipFile(wheel) as archive:
        meta = email.message_from_bytes(archive.read(f"kubetune-{__version__}.dist-info/METADATA"))
    unmet = []
    for requirement in map(Requirement, meta.get_all("Requires-Dist")):
        if requirement.marker and not any(requirement.marker.evaluate({"extra": e}) for e in extras):
            continue
        if requirement.name == "kubetune":
            continue  # an extra naming another extra: its requirements are in the list too
        try:
            version = metadata.version(requirement.name)
        except metadata.PackageNotFoundError:
            unmet.append(str(requirement))
            continue
        if not requirement.specifier.contains(version, prereleases=True):
            unmet.append(f"{requirement} (installed {version})")
    return unmet


@pytest.mark.slow
def test_the_quick_start_runs_from_the_wheel_in_a_clean_venv(wheel, tmp_path):
    assert _unmet(wheel, ["optuna", "train", "dashboard"]) == []
    python = _clean_venv(tmp_path / "venv", wheel)
    bin_dir = python.parent
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "KUBETUNE_STORAGE_URL", "VIRTUAL_ENV")}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    work = tmp_path / "work"
    work.mkdir()
    where = subprocess.run([str(python), "-c", "import kubetune, kubetune_operator; print(kubetune.__file__); "
                            "print(kubetune_operator.__file__)"], cwd=work, env=env, capture_output=True, text=True,
                           check=True).stdout.split()
    assert all(Path(p).is_relative_to(tmp_path / "venv") for p in where), where
    for command in COMMANDS:
        result = subprocess.run([str(bin_dir / command), "--version"], cwd=work, env=env, capture_output=True, text=True)
        assert result.stdout == f"{command} {__version__}\n", result.stderr
    for command in quick_start_commands():
        result = subprocess.run(shlex.split(command), cwd=work, env=env, capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, f"{command}\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
        assert "Traceback" not in result.stdout + result.stderr, command
    assert (work / "runs" / "optuna_studies" / "digits_optimization" / "best_config.yaml").is_file()
    assert sorted(p.name for p in work.iterdir()) == ["configs", "data", "optuna_studies.db", "runs"]


def test_the_extras_are_met_here(wheel):
    # What the clean venv borrows from this environment covers the wheel's extras.
    assert _unmet(wheel, ["optuna", "train", "dashboard", "operator", "timm"]) == []
