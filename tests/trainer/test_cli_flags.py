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
