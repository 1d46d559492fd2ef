"""Command-line flags every command shares: one-line usage errors with a hint."""

from __future__ import annotations

import pytest

from kubetune.cli import search, train


@pytest.mark.parametrize("module, argv, hint", [
    (search, ["--config", "c.yaml", "--n_trials", "2"], "unrecognized arguments: --n_trials 2 (did you mean `--n-trials`?)"),
    (train, ["--config", "c.yaml", "--lrr=0.1"], "unrecognized arguments: --lrr=0.1 (did you mean `--lr`?)"),
    (train, ["--config", "c.yaml", "--zzz", "1"], "unrecognized arguments: --zzz 1\n"),
])
def test_an_unknown_flag_is_exit_2_with_the_closest_one(capsys, module, argv, hint):
    with pytest.raises(SystemExit) as exited:
        module.build_parser().parse_args(argv)
    assert exited.value.code == 2
    assert hint in capsys.readouterr().err


COMMANDS = ["ml-init-config", "ml-train", "ml-search", "ml-visualise", "kubetune-operator"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_answers_version_and_parses_flags_the_same_way(command, tmp_path):
    from kubetune import __version__
    from tests.conftest import run_cli

    version = run_cli(command, "--version", cwd=tmp_path)
    assert (version.returncode, version.stdout) == (0, f"{command} {__version__}\n")
    # An abbreviation is refused everywhere, named in full; a misspelling gets the same hint.
    for typed in ("--verb", "--verbos"):
        result = run_cli(command, typed, cwd=tmp_path)
        assert result.returncode == 2, (typed, result.stderr)
        assert f"unrecognized arguments: {typed} (did you mean `--verbose`?)" in result.stderr
        assert "required" not in result.stderr and "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command, argv, hint", [
    ("ml-search", ["--conf", "x.yaml"], "--conf x.yaml (did you mean `--config`?)"),
    ("ml-search", ["--n-tri", "5", "--config", "x.yaml"], "--n-tri 5 (did you mean `--n-trials`?)"),
    ("ml-train", ["--epo", "3", "--config", "x.yaml"], "--epo 3 (did you mean `--epochs`?)"),
    ("ml-visualise", ["--plot", "history"], "(did you mean `--plot-type`?)"),
])
def test_a_near_flag_is_named_before_a_missing_required_one(command, argv, hint, tmp_path):
    from tests.conftest import run_cli

    result = run_cli(command, *argv, cwd=tmp_path)
    assert result.returncode == 2
    assert hint in result.stderr and "are required" not in result.stderr, result.stderr


def test_a_missing_required_flag_is_still_reported(capsys):
    with pytest.raises(SystemExit) as exited:
        search.build_parser().parse_args(["--resume"])
    assert exited.value.code == 2
    assert "the following arguments are required: --config/-c" in capsys.readouterr().err
