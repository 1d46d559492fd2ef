"""ml-visualise --mode search through real subprocesses, on a study of real digits training."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest
import sqlalchemy
import yaml
from optuna.trial import TrialState
from PIL import Image

from kubetune.visualise import PLOT_TYPES
from kubetune.visualise.study_report import PNG_SIZE
from tests.conftest import run_cli, sqlite_files_without_optuna_tables
from tests.visualise.conftest import all_figures_from_html, figure_from_html, make_study

PARAMS = ["optimizer.lr", "training.batch_size"]
REMOTE_SCRIPT = re.compile(r"<script[^>]*\bsrc\s*=\s*[\"']?\s*(https?:)?//", re.IGNORECASE)


def visualise(*args: str, **kwargs):
    return run_cli("ml-visualise", *args, **kwargs)


def load(search_study) -> optuna.Study:
    return optuna.load_study(study_name=search_study.name, storage=search_study.url)


def check_figure(plot_type: str, data: list[dict], layout: dict, study: optuna.Study) -> None:
    """The figure holds this study's own numbers, not just a frame."""
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    values = sorted(t.value for t in complete)
    lrs = sorted(t.params["optimizer.lr"] for t in complete)
    if plot_type == "optimization_history":
        objective = next(t for t in data if t.get("name") == "val_acc")
        assert sorted(objective["y"]) == pytest.approx(values)
    elif plot_type == "param_importances":
        assert sorted(data[0]["y"]) == PARAMS
        assert sum(data[0]["x"]) == pytest.approx(1.0)
    elif plot_type == "slice":
        assert sorted(data[0]["x"]) == pytest.approx(lrs)
        assert sorted(data[0]["y"]) == pytest.approx(values)
    elif plot_type == "contour":
        assert any(t["type"] == "contour" for t in data)
        points = next(t for t in data if t.get("name") == "Feasible Trial")
        assert sorted(points["x"]) == pytest.approx(lrs)
    elif plot_type == "parallel_coordinate":
        assert layout["xaxis"]["ticktext"] == ["val_acc", *PARAMS]
        assert len([t for t in data if t.get("customdata")]) == len(complete)
    elif plot_type == "intermediate_values":
        reported = {f"Trial{t.number}": [t.intermediate_values[s] for s in sorted(t.intermediate_values)]
                    for t in study.trials if t.intermediate_values}
        drawn = {t["name"]: t["y"] for t in data if t.get("name", "").startswith("Trial")}
        assert drawn.keys() == reported.keys()
        for name, ys in reported.items():
            assert drawn[name] == pytest.approx(ys)
    elif plot_type == "edf":
        xs = data[0]["x"]
        assert min(xs) == pytest.approx(values[0]) and max(xs) == pytest.approx(values[-1])
    elif plot_type == "timeline":
        by_state = {t["name"]: sorted(t["y"]) for t in data}
        assert by_state["COMPLETE"] == [t.number for t in complete]
        assert by_state["PRUNED"] == [t.number for t in study.trials if t.state == TrialState.PRUNED]
    else:
        raise AssertionError(plot_type)


def check_png(path: Path, size: tuple[int, int] = PNG_SIZE) -> None:
    with Image.open(path) as image:
        image.load()
        assert image.size == size, path
        gray = np.asarray(image.convert("L"), dtype=float)
    assert gray.std() > 5, f"{path.name} looks blank (std {gray.std():.2f})"
    assert len(np.unique(gray)) > 20, f"{path.name} has almost no distinct shades"


def assert_offline(folder: Path) -> None:
    for page in folder.glob("*.html"):
        assert not REMOTE_SCRIPT.search(page.read_text(encoding="utf-8")), page.name


@pytest.fixture(scope="module")
def html_run(search_study, tmp_path_factory):
    out = tmp_path_factory.mktemp("html") / "plots"
    result = visualise("--mode", "search", "--study-name", search_study.name,
                       "--storage", search_study.url, "--output", str(out), "--format", "html")
    assert result.returncode == 0, result.stderr
    return result, out


@pytest.fixture(scope="module")
def png_run(search_study, chromium, tmp_path_factory):
    out = tmp_path_factory.mktemp("png") / "plots"
    result = visualise("--study-name", search_study.name, "--storage", search_study.url,
                       "--output", str(out), "--format", "png", env={"BROWSER_PATH": chromium})
    assert result.returncode == 0, result.stderr
    return result, out


def test_every_plot_type_writes_html_holding_its_data(html_run, search_study):
    result, out = html_run
    study = load(search_study)
    for plot_type in PLOT_TYPES:
        page = out / f"{plot_type}.html"
        assert page.stat().st_size > 1000, plot_type
        data, layout = figure_from_html(page.read_text(encoding="utf-8"))
        check_figure(plot_type, data, layout, study)
    assert not list(out.glob("*.png"))  # --format html
    assert (out / "plotly.min.js").stat().st_size > 1_000_000  # the pages work offline
    best = study.best_trial
    assert f"best val_acc={best.value:.6g} (trial #{best.number}; 5 trials: 3 complete, 2 pruned)" in result.stdout


def test_index_links_every_plot_and_shows_the_best_trial(html_run, search_study):
    _, out = html_run
    study = load(search_study)
    index = (out / "index.html").read_text(encoding="utf-8")
    for plot_type in PLOT_TYPES:
        assert f'href="{plot_type}.html"' in index, plot_type
    assert len(all_figures_from_html(index)) == len(PLOT_TYPES)  # every plot embedded
    best = study.best_trial
    assert f"Trial <b>#{best.number}</b>" in index
    assert f'class="best-value">{best.value:.6g}<' in index
    for name, value in best.params.items():
        assert f"<td>{name}</td><td>{value:.6g}</td>" in index
    assert "<td>COMPLETE</td><td class=num>3</td>" in index
    assert "<td>PRUNED</td>" in index
    assert re.findall(r"<script[^>]*src=\"([^\"]+)\"", index) == ["plotly.min.js"]
    assert_offline(out)


def test_every_plot_type_writes_a_png_of_the_expected_size(png_run):
    result, out = png_run
    for plot_type in PLOT_TYPES:
        check_png(out / f"{plot_type}.png")
    assert [p.name for p in out.glob("*.html")] == ["index.html"]
    index = (out / "index.html").read_text(encoding="utf-8")
    for plot_type in PLOT_TYPES:
        assert f'href="{plot_type}.png"' in index and f'<img src="{plot_type}.png"' in index
    assert_offline(out)


def test_short_params_narrow_the_plots_and_contour_is_skipped(search_study, tmp_path):
    out = tmp_path / "plots"
    result = visualise("--study-name", search_study.name, "--storage", search_study.url,
                       "--output", str(out), "--format", "html",
                       "--plot-type", "contour", "slice", "--params", "lr")
    assert result.returncode == 0, result.stderr
    assert "skipped contour: contour needs at least two parameters, but got 1 (optimizer.lr)" in result.stderr
    assert sorted(p.name for p in out.glob("*.html")) == ["index.html", "slice.html"]
    data, _ = figure_from_html((out / "slice.html").read_text(encoding="utf-8"))
    assert len(data) == 1  # lr only
    index = (out / "index.html").read_text(encoding="utf-8")
    assert "<b>contour</b>: contour needs at least two parameters" in index


def test_a_thin_study_skips_what_it_cannot_draw_and_draws_the_rest(tmp_path):
    url = f"sqlite:///{tmp_path / 'thin.db'}"
    make_study(url, "thin", [
        {"params": {"optimizer.lr": 0.01, "training.batch_size": 32}, "value": 0.4},
        {"params": {"optimizer.lr": 0.03, "training.batch_size": 64}, "state": "FAIL"},
    ])
    out = tmp_path / "plots"
    result = visualise("--study-name", "thin", "--storage", url, "--output", str(out), "--format", "html")
    assert result.returncode == 0, result.stderr
    skipped = dict(re.findall(r"^skipped (\w+): (.+)$", result.stderr, re.MULTILINE))
    assert skipped == {
        "param_importances": "importances need at least two completed trials, but the study has 1",
        "contour": "contour needs two parameters that vary across completed trials, but only 0 of 2 do",
        "intermediate_values": "no trial reported intermediate values",
    }
    drawn = {p.stem for p in out.glob("*.html")} - {"index"}
    assert drawn == set(PLOT_TYPES) - set(skipped)


def test_unknown_study_lists_the_studies_in_the_storage(search_study, tmp_path):
    result = visualise("--study-name", "digits-viz", "--storage", search_study.url,
                       "--output", str(tmp_path / "plots"))
    assert result.returncode == 2
    line = result.stderr.strip()
    assert "`digits-viz`" in line and f"studies there: `{search_study.name}`" in line
    assert "\n" not in line and "Traceback" not in line
    assert not (tmp_path / "plots").exists()


def test_unknown_and_ambiguous_params_exit_2_listing_the_choices(search_study, tmp_path):
    out = tmp_path / "plots"
    unknown = visualise("--study-name", search_study.name, "--storage", search_study.url,
                        "--output", str(out), "--params", "lr", "momentum")
    assert unknown.returncode == 2
    assert "`momentum`" in unknown.stderr and "`optimizer.lr`, `training.batch_size`" in unknown.stderr
    url = f"sqlite:///{tmp_path / 'types.db'}"
    make_study(url, "types", [
        {"params": {"optimizer.type": "sgd", "scheduler.type": "step"}, "value": 0.1},
        {"params": {"optimizer.type": "adam", "scheduler.type": "cosine"}, "value": 0.2},
    ])
    ambiguous = visualise("--study-name", "types", "--storage", url, "--output", str(out),
                          "--params", "type")
    assert ambiguous.returncode == 2
    assert "ambiguous" in ambiguous.stderr
    assert "`optimizer.type`, `scheduler.type`" in ambiguous.stderr
    assert not out.exists()


def _hide_chromium() -> dict[str, str]:
    # Only the venv's bin on PATH, and no $BROWSER_PATH: no Chromium to be found.
    return {"PATH": str(Path(sys.executable).parent), "BROWSER_PATH": ""}


def test_missing_chromium_by_default_writes_html_and_warns_once(search_study, tmp_path):
    out = tmp_path / "plots"
    result = visualise("--study-name", search_study.name, "--storage", search_study.url,
                       "--output", str(out), env=_hide_chromium())
    assert result.returncode == 0, result.stderr
    warning = [line for line in result.stderr.splitlines() if "warning" in line]
    assert len(warning) == 1 and warning[0].startswith("ml-visualise: warning: "), result.stderr
    assert "Chromium was not found" in warning[0] and "apt-get install chromium" in warning[0]
    assert "$BROWSER_PATH" in warning[0] and "pass --format html to silence" in warning[0]
    assert "error" not in result.stderr and "Traceback" not in result.stderr
    assert f"wrote {len(PLOT_TYPES)} plot(s) (html) to {out}" in result.stdout
    for plot_type in PLOT_TYPES:
        assert (out / f"{plot_type}.html").stat().st_size > 1000
    assert not list(out.glob("*.png"))
    assert 'href="contour.png"' not in (out / "index.html").read_text(encoding="utf-8")

    silenced = visualise("--study-name", search_study.name, "--storage", search_study.url,
                         "--output", str(tmp_path / "html"), "--format", "html", env=_hide_chromium())
    assert silenced.returncode == 0 and "warning" not in silenced.stderr, silenced.stderr


@pytest.mark.parametrize("fmt", ["png", "both"])
def test_png_asked_for_without_chromium_exits_2_and_writes_nothing(search_study, tmp_path, fmt):
    out = tmp_path / "plots"
    result = visualise("--study-name", search_study.name, "--storage", search_study.url,
                       "--output", str(out), "--format", fmt, env=_hide_chromium())
    assert result.returncode == 2
    line = _one_error_line(result)
    assert line.startswith("PNG export needs Chromium, but none of chromium")
    assert "apt-get install chromium" in line and "HTML output still works (--format html)" in line
    assert result.stdout == ""
    assert not out.exists()  # nothing half-written


def test_a_browser_path_that_cannot_run_fails_even_without_format(search_study, tmp_path):
    out = tmp_path / "plots"
    result = visualise("--study-name", search_study.name, "--storage", search_study.url,
                       "--output", str(out), env={**_hide_chromium(), "BROWSER_PATH": str(tmp_path / "none")})
    assert result.returncode == 2
    assert _one_error_line(result).startswith(f"PNG export needs Chromium, but $BROWSER_PATH='{tmp_path}/none'")
    assert not out.exists()


def test_an_output_that_cannot_hold_the_plots_exits_2_before_writing(search_study, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("keep\n")
    for output in (afile, afile / "plots"):
        result = visualise("--study-name", search_study.name, "--storage", search_study.url,
                           "--output", str(output), "--format", "html")
        assert result.returncode == 2
        assert _one_error_line(result) == (
            f"--output {output} cannot hold the plots: {afile} is a file, not a folder"
        )
        assert result.stdout == ""
    # The default folder (runs/optuna_studies/<study>/plots) under a file named runs.
    (tmp_path / "runs").write_text("keep\n")
    default = visualise("--study-name", search_study.name, "--format", "html", cwd=tmp_path,
                        env={"KUBETUNE_STORAGE_URL": search_study.url})
    assert default.returncode == 2
    assert _one_error_line(default) == (
        f"the plots folder runs/optuna_studies/{search_study.name}/plots cannot be written: "
        "runs is a file, not a folder; choose another with --output DIR"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "runs"]
    assert afile.read_text() == "keep\n" and (tmp_path / "runs").read_text() == "keep\n"


def test_optuna_log_lines_stay_out_of_the_output_unless_verbose(tmp_path):
    url = f"sqlite:///{tmp_path / 'one.db'}"
    make_study(url, "one", [
        {"params": {"optimizer.lr": lr, "training.batch_size": bs, "optimizer.type": "sgd"}, "value": v}
        for lr, bs, v in [(0.01, 32, 0.5), (0.05, 64, 0.7), (0.1, 32, 0.6)]
    ])
    quiet = visualise("--study-name", "one", "--storage", url, "--output", str(tmp_path / "q"),
                      "--format", "html")
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr == "skipped intermediate_values: no trial reported intermediate values\n"
    verbose = visualise("--study-name", "one", "--storage", url, "--output", str(tmp_path / "v"),
                        "--format", "html", "-v")
    assert verbose.returncode == 0, verbose.stderr
    assert "Param optimizer.type unique value length is less than 2." in verbose.stderr


def test_a_sqlite_file_without_optuna_tables_is_refused_and_left_unchanged(tmp_path):
    files = sqlite_files_without_optuna_tables(tmp_path)
    before = {path: path.read_bytes() for path in files}
    for db_file in files:
        result = visualise("--study-name", "x", "--storage", f"sqlite:///{db_file}",
                           "--output", str(tmp_path / "plots"), cwd=tmp_path)
        assert result.returncode == 2
        assert _one_error_line(result) == (
            f"no Optuna storage in {db_file} (sqlite:///{db_file} from --storage): "
            "the file has no Optuna tables; run ml-search first or pass --storage"
        )
    assert {path: path.read_bytes() for path in files} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.db", "other.db"]


def test_config_gives_the_study_name_storage_and_output_folder(search_study, tmp_path):
    config = yaml.safe_load(search_study.config_path.read_text())
    config["search"]["storage"] = search_study.url
    config["logging"]["output_dir"] = str(tmp_path / "results")
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    result = visualise("--config", str(path), "--format", "html", "--plot-type", "edf",
                       env={"KUBETUNE_STORAGE_URL": ""})
    assert result.returncode == 0, result.stderr
    plots = tmp_path / "results" / "optuna_studies" / search_study.name / "plots"
    assert (plots / "edf.html").is_file() and (plots / "index.html").is_file()


def test_storage_from_the_environment_and_the_default_output_folder(search_study, tmp_path):
    result = visualise("--study-name", search_study.name, "--format", "html",
                       "--plot-type", "optimization_history", cwd=tmp_path,
                       env={"KUBETUNE_STORAGE_URL": search_study.url})
    assert result.returncode == 0, result.stderr
    plots = tmp_path / "runs" / "optuna_studies" / search_study.name / "plots"
    assert (plots / "optimization_history.html").is_file()


def test_usage_errors_exit_2_and_a_missing_sqlite_file_is_not_created(tmp_path):
    no_name = visualise("--storage", f"sqlite:///{tmp_path / 'x.db'}", cwd=tmp_path)
    assert no_name.returncode == 2 and "--study-name is required" in no_name.stderr
    bad_type = visualise("--study-name", "s", "--plot-type", "histogram")
    assert bad_type.returncode == 2 and "invalid choice" in bad_type.stderr
    logdir = visualise("--study-name", "s", "--logdir", str(tmp_path))
    assert logdir.returncode == 2 and "--logdir only applies to --mode training" in logdir.stderr
    missing = visualise("--study-name", "s", cwd=tmp_path, env={"KUBETUNE_STORAGE_URL": ""})
    assert missing.returncode == 2
    assert missing.stderr == (
        "ml-visualise: error: no Optuna storage at optuna_studies.db (sqlite:///optuna_studies.db): "
        "run ml-search first or pass --storage\n"
    )
    assert list(tmp_path.iterdir()) == []  # no empty database, no plots folder


def _one_error_line(result) -> str:
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("ml-visualise: error: "), result.stderr
    return lines[0].removeprefix("ml-visualise: error: ")


def test_a_study_with_no_trials_is_an_error_and_writes_nothing(tmp_path):
    url = f"sqlite:///{tmp_path / 'shape.db'}"
    make_study(url, "S", [])
    out = tmp_path / "plots"
    result = visualise("--mode", "search", "--study-name", "S", "--storage", url,
                       "--output", str(out), "--format", "html")
    assert result.returncode == 1
    assert _one_error_line(result) == "no plot of study S could be drawn: it has no trials yet"
    assert result.stdout == ""
    assert not out.exists()


def test_flags_that_select_no_drawable_plot_exit_2_and_write_nothing(search_study, tmp_path):
    out = tmp_path / "plots"
    contour = visualise("--study-name", search_study.name, "--storage", search_study.url,
                        "--output", str(out), "--format", "html",
                        "--plot-type", "contour", "--params", "lr")
    assert contour.returncode == 2
    assert _one_error_line(contour) == (
        f"`--plot-type contour --params lr` draws no plot of study {search_study.name}: "
        "contour: contour needs at least two parameters, but got 1 (optimizer.lr)"
    )
    assert contour.stdout == "" and not out.exists()

    url = f"sqlite:///{tmp_path / 'thin.db'}"
    make_study(url, "thin", [{"params": {"optimizer.lr": 0.01, "training.batch_size": 32}, "value": 0.4}])
    both = visualise("--study-name", "thin", "--storage", url, "--output", str(out), "--format", "html",
                     "--plot-type", "intermediate_values", "param_importances")
    assert both.returncode == 2
    line = _one_error_line(both)
    assert line.startswith("`--plot-type intermediate_values param_importances` draws no plot of study thin: ")
    assert "intermediate_values: no trial reported intermediate values; " in line
    assert "param_importances: importances need at least two completed trials" in line
    assert not out.exists()


def test_an_empty_default_selection_is_not_blamed_on_flags(tmp_path):
    """Without --plot-type or --params the library's own error stands (exit 1), nothing written."""
    from kubetune.visualise.study_report import NothingToPlot, render_study

    url = f"sqlite:///{tmp_path / 'thin.db'}"
    study = make_study(url, "thin", [{"params": {"optimizer.lr": 0.01}, "value": 0.4}])
    with pytest.raises(NothingToPlot) as info:
        render_study(study, tmp_path / "plots", plot_types=["intermediate_values"], fmt="html")
    assert info.value.exit_code == 1
    assert str(info.value) == ("no plot of study thin could be drawn: "
                               "intermediate_values: no trial reported intermediate values")
    assert not (tmp_path / "plots").exists()


def _config_with_storage(search_study, tmp_path, storage: str) -> Path:
    config = yaml.safe_load(search_study.config_path.read_text())
    config["search"]["storage"] = storage
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_bad_storage_urls_exit_2_naming_where_the_url_came_from(search_study, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not a database\n")
    out = tmp_path / "plots"
    cases = [
        (["--storage", "bogus://x"], {}, "`--storage` must be a sqlite://, postgresql:// or grpc:// URL, "
                                         "but got 'bogus://x' (no database kind 'bogus')"),
        ([], {"KUBETUNE_STORAGE_URL": "nonsense"}, "`$KUBETUNE_STORAGE_URL` must be a database URL such as "),
        (["--config", str(_config_with_storage(search_study, tmp_path, "bogus://x"))],
         {"KUBETUNE_STORAGE_URL": ""}, "`search.storage` must be a sqlite://"),
        (["--storage", f"sqlite:///{tmp_path}/no/dir/x.db"], {},
         f"no Optuna storage at {tmp_path}/no/dir/x.db (sqlite:///{tmp_path}/no/dir/x.db from --storage): "
         "run ml-search first or pass --storage"),
        (["--storage", f"sqlite:///{notes}"], {},
         f"`--storage` must name a SQLite database, but {notes} is not one (file is not a database)"),
    ]
    for args, env, expected in cases:
        result = visualise("--study-name", search_study.name, "--output", str(out), "--format", "html",
                           *args, cwd=tmp_path, env=env)
        assert result.returncode == 2, (args, env, result.stderr)
        line = _one_error_line(result)
        assert line.startswith(expected), (line, expected)
        assert "plugin" not in line and "sqlalchemy" not in line.lower()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml", "notes.txt"]
    assert notes.read_text() == "not a database\n"


def test_a_storage_server_that_is_down_exits_1_on_one_line(tmp_path):
    result = visualise("--study-name", "S", "--storage", "postgresql://kt:hunter2@127.0.0.1:1/optuna",
                       "--output", str(tmp_path / "plots"))
    assert result.returncode == 1
    line = _one_error_line(result)
    assert line.startswith("cannot open storage postgresql+psycopg://kt:***@127.0.0.1:1/optuna: ")
    assert "hunter2" not in result.stderr
    assert not (tmp_path / "plots").exists()


@pytest.mark.postgres
def test_renders_a_study_held_in_postgresql(search_study, postgres_url, chromium, tmp_path):
    optuna.copy_study(from_study_name=search_study.name, from_storage=search_study.url,
                      to_storage=postgres_url)
    out = tmp_path / "pvc" / "plots"
    result = visualise("--mode", "search", "--study-name", search_study.name,
                       "--storage", postgres_url, "--output", str(out), "--format", "both",
                       env={"BROWSER_PATH": chromium})
    assert result.returncode == 0, result.stderr
    study = optuna.load_study(study_name=search_study.name, storage=postgres_url)
    for plot_type in PLOT_TYPES:
        data, layout = figure_from_html((out / f"{plot_type}.html").read_text(encoding="utf-8"))
        check_figure(plot_type, data, layout, study)
        check_png(out / f"{plot_type}.png")
    index = (out / "index.html").read_text(encoding="utf-8")
    for plot_type in PLOT_TYPES:
        assert f'href="{plot_type}.html"' in index and f'href="{plot_type}.png"' in index
    assert_offline(out)


@pytest.mark.postgres
def test_a_missing_database_or_refused_login_exits_2_naming_where_the_url_came_from(
        search_study, postgres_server_url, tmp_path):
    server = sqlalchemy.engine.make_url(postgres_server_url)
    nosuchdb = server.set(database="kt_nosuchdb").render_as_string(hide_password=False)
    nobody = server.set(username="kt_nosuchrole").render_as_string(hide_password=False)
    out = tmp_path / "plots"
    where = f"{server.host}:{server.port or 5432}"
    cases = [
        (["--storage", nosuchdb], {}, f"`--storage` names database 'kt_nosuchdb', which does not exist "
                                      f"on the PostgreSQL server at {where} ("),
        ([], {"KUBETUNE_STORAGE_URL": nosuchdb}, "`$KUBETUNE_STORAGE_URL` names database 'kt_nosuchdb', "),
        (["--config", str(_config_with_storage(search_study, tmp_path, nosuchdb))],
         {"KUBETUNE_STORAGE_URL": ""}, "`search.storage` names database 'kt_nosuchdb', "),
        (["--storage", nobody], {}, f"`--storage` names a login the PostgreSQL server at {where} refuses: "
                                    "user 'kt_nosuchrole' to database "),
    ]
    for args, env, expected in cases:
        result = visualise("--study-name", search_study.name, "--output", str(out), *args,
                           cwd=tmp_path, env=env)
        assert result.returncode == 2, (args, result.stderr)
        line = _one_error_line(result)
        assert line.startswith(expected), (line, expected)
        assert "(psycopg" not in line and "OperationalError" not in line and "FATAL" not in line
    assert not out.exists()


@pytest.mark.postgres
def test_a_database_without_optuna_tables_is_a_usage_error_and_stays_empty(postgres_url, tmp_path):
    result = visualise("--study-name", "S", "--storage", postgres_url, "--output", str(tmp_path / "plots"))
    assert result.returncode == 2, result.stderr
    line = _one_error_line(result)
    assert line.startswith("no Optuna storage in postgresql+psycopg://") and "no Optuna tables" in line
    engine = sqlalchemy.create_engine(postgres_url)
    try:
        assert sqlalchemy.inspect(engine).get_table_names() == []  # reading made no storage
    finally:
        engine.dispose()
    assert not (tmp_path / "plots").exists()
