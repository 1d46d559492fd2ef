"""ml-visualise --mode training: curves of the study's real trial runs, read from TensorBoard."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from kubetune.visualise.training_curves import PNG_SIZE
from tests.conftest import run_cli
from tests.visualise.conftest import figure_from_html
from tests.visualise.test_cli_search import assert_offline, check_png


def visualise(*args: str, **kwargs):
    return run_cli("ml-visualise", "--mode", "training", *args, **kwargs)


def history(run: Path) -> dict[str, list[float]]:
    """What kubetune.training recorded in metrics.json, per metric, by epoch."""
    epochs = json.loads((run / "metrics.json").read_text())["epochs"]
    return {key: [e[key] for e in epochs] for key in ("train_loss", "val_loss", "train_acc", "val_acc")}


def curves(page: Path) -> dict[tuple[str, str], list[float]]:
    """``{(trace name, "loss"|"acc"): y}`` from the figure in the page."""
    data, layout = figure_from_html(page.read_text(encoding="utf-8"))
    assert [a["text"] for a in layout["annotations"]] == ["Loss", "Accuracy"]  # side by side
    panel = {"x": "loss", "x2": "acc"}
    return {(t["name"], panel[t.get("xaxis", "x")]): t["y"] for t in data}


def test_curves_of_every_run_in_a_logdir_as_html_and_png(search_study, chromium, tmp_path):
    out = tmp_path / "curves"
    result = visualise("--logdir", str(search_study.runs), "--output", str(out),
                       env={"BROWSER_PATH": chromium})
    assert result.returncode == 0, result.stderr
    runs = sorted(p for p in search_study.runs.iterdir() if p.name.startswith("trial-"))
    assert len(runs) == 5
    assert f"curves of {len(runs)} run(s)" in result.stdout
    drawn = curves(out / "training_curves.html")
    for run in runs:
        recorded = history(run)
        for split in ("train", "val"):
            assert drawn[(f"{run.name} {split}", "loss")] == pytest.approx(recorded[f"{split}_loss"], rel=1e-6)
            assert drawn[(f"{run.name} {split}", "acc")] == pytest.approx(recorded[f"{split}_acc"], rel=1e-6)
    check_png(out / "training_curves.png", PNG_SIZE)
    assert_offline(out)


def test_several_logdirs_and_the_default_output_folder(search_study, tmp_path):
    first, second = tmp_path / "trial-0", tmp_path / "trial-3"
    shutil.copytree(search_study.runs / "trial-0", first)
    shutil.copytree(search_study.runs / "trial-3", second)  # pruned after one epoch
    result = visualise("--logdir", str(first), str(second), "--format", "html")
    assert result.returncode == 0, result.stderr
    page = first / "plots" / "training_curves.html"
    drawn = curves(page)
    assert {name for name, _ in drawn} == {"trial-0 train", "trial-0 val", "trial-3 train", "trial-3 val"}
    assert len(drawn[("trial-3 val", "acc")]) == 1
    assert drawn[("trial-0 val", "acc")] == pytest.approx(history(first)["val_acc"], rel=1e-6)
    assert not (first / "plots" / "training_curves.png").exists()


def test_missing_chromium_writes_the_html_curves_and_says_so(search_study, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(search_study.runs / "trial-1", run)
    env = {"PATH": str(Path(sys.executable).parent), "BROWSER_PATH": ""}
    result = visualise("--logdir", str(run), env=env)
    assert result.returncode == 0, result.stderr  # no --format: HTML, and one warning
    warning = result.stderr.splitlines()
    assert len(warning) == 1 and warning[0].startswith("ml-visualise: warning: "), result.stderr
    assert "Chromium was not found" in warning[0] and "apt-get install chromium" in warning[0]
    assert "$BROWSER_PATH" in warning[0] and "--format html" in warning[0]
    assert (run / "plots" / "training_curves.html").is_file()
    assert not (run / "plots" / "training_curves.png").exists()

    explicit = tmp_path / "explicit"
    for fmt in ("png", "both"):  # PNGs asked for by name: exit 2 before anything is written
        result = visualise("--logdir", str(run), "--output", str(explicit), "--format", fmt, env=env)
        assert result.returncode == 2, (fmt, result.stderr)
        assert "apt-get install chromium" in result.stderr and "Traceback" not in result.stderr
        assert not explicit.exists()


def test_an_output_that_is_a_file_exits_2_naming_the_flag(search_study, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(search_study.runs / "trial-1", run)
    afile = tmp_path / "afile"
    afile.write_text("keep\n")
    for output in (afile, afile / "plots"):
        result = visualise("--logdir", str(run), "--output", str(output), "--format", "html")
        assert result.returncode == 2, result.stderr
        assert result.stderr == (f"ml-visualise: error: --output {output} cannot hold the plots: "
                                 f"{afile} is a file, not a folder\n")
    assert afile.read_text() == "keep\n" and not (run / "plots").exists()


def test_training_mode_errors_exit_2(tmp_path):
    (tmp_path / "empty").mkdir()
    empty = visualise("--logdir", str(tmp_path / "empty"))
    assert empty.returncode == 2
    assert "must hold TensorBoard event files" in empty.stderr
    assert not (tmp_path / "empty" / "plots").exists()
    missing = visualise("--logdir", str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and "must be a folder" in missing.stderr
    no_logdir = visualise()
    assert no_logdir.returncode == 2 and "--mode training needs --logdir" in no_logdir.stderr
    search_flags = visualise("--logdir", str(tmp_path), "--study-name", "s", "--params", "lr")
    assert search_flags.returncode == 2
    assert "--study-name, --params apply only to --mode search" in search_flags.stderr
    one_flag = visualise("--logdir", str(tmp_path), "--study-name", "s")
    assert one_flag.returncode == 2
    assert one_flag.stderr == "ml-visualise: error: --study-name applies only to --mode search\n"


def test_a_chromium_that_fails_to_render_leaves_the_html_and_says_where(search_study, tmp_path,
                                                                        monkeypatch):
    from kubetune.errors import KubetuneError
    from kubetune.visualise import export, training_curves

    def broken(jobs, chromium):
        raise KubetuneError("Chromium crashed")

    monkeypatch.setattr(training_curves, "find_chromium", lambda: "/usr/bin/chromium")
    monkeypatch.setattr(export, "write_pngs", broken)
    out = tmp_path / "curves"
    with pytest.raises(KubetuneError) as info:
        training_curves.render_training([search_study.runs], out, fmt="both")
    assert str(info.value) == f"Chromium crashed; wrote {out / 'training_curves.html'}"
    assert (out / "training_curves.html").stat().st_size > 1000
    with pytest.raises(KubetuneError, match="^Chromium crashed$"):
        training_curves.render_training([search_study.runs], tmp_path / "png", fmt="png")
