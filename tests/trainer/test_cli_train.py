"""ml-train through real subprocesses: overrides, --print-config, exit codes, no half-written runs."""

from __future__ import annotations

import json

import yaml

from tests.conftest import run_cli


def write_config(tmp_path, data) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_print_config_shows_the_resolved_values(tmp_path, fast_config):
    path = write_config(tmp_path, fast_config)
    result = run_cli(
        "ml-train", "--config", path, "--print-config", "--lr", "0.02", "--batch_size", "16",
        "--set", "optimizer.momentum=0.95", "--set", "scheduler.step_size=3", "--epochs", "7",
    )
    assert result.returncode == 0, result.stderr
    printed = yaml.safe_load(result.stdout)
    assert printed["optimizer"]["lr"] == 0.02
    assert printed["optimizer"]["momentum"] == 0.95
    assert printed["training"]["batch_size"] == 16
    assert printed["training"]["num_epochs"] == 7
    assert printed["scheduler"]["step_size"] == 3
    assert printed["model"]["dropout"] == 0.1  # from the file
    hyphens = run_cli("ml-train", "--config", path, "--print-config", "--batch-size", "32", "--weight-decay", "0.001")
    assert hyphens.returncode == 0, hyphens.stderr  # the flags' other spelling, as --n-trials has
    assert yaml.safe_load(hyphens.stdout)["training"]["batch_size"] == 32
    assert yaml.safe_load(hyphens.stdout)["optimizer"]["weight_decay"] == 0.001


def test_config_errors_exit_2_with_one_line_and_no_run_folder(tmp_path, fast_config):
    runs = tmp_path / "runs"
    cases = [
        (["--set", "optimizer.lrr=0.1"], "optimizer.lrr", "did you mean `optimizer.lr`"),
        (["--lr", "-1"], "optimizer.lr", "error: --lr: `optimizer.lr` must be greater than 0"),  # not the file
        (["--set", "training.num_epochs=many"], "training.num_epochs", "must be a whole number, but got 'many'"),
        (["--optimizer", "lion"], "optimizer.type", "must be"),
        (["--set", "data.path=" + str(tmp_path / "missing")], "data.path", "does not exist"),
        (["--set", f"logging.output_dir={tmp_path / 'afile' / 'runs'}"], "logging.output_dir",
         "afile is a file, not a folder"),
    ]
    path = write_config(tmp_path, fast_config)
    (tmp_path / "afile").write_text("not a folder")
    for args, key, fragment in cases:
        result = run_cli("ml-train", "--config", path, *args)
        assert result.returncode == 2, (args, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert key in lines[0] and fragment in lines[0], lines[0]
        assert "Traceback" not in result.stderr
        assert not runs.exists() or not any(runs.rglob("events.out.*")), args
    bad_flag = run_cli("ml-train", "--config", path, "--batch_size", "lots")
    assert bad_flag.returncode == 2 and "--batch_size" in bad_flag.stderr


def test_train_cli_writes_a_run_folder(tmp_path, fast_config):
    fast_config["training"]["num_epochs"] = 2
    path = write_config(tmp_path, fast_config)
    result = run_cli("ml-train", "--config", path, "--set", "logging.run_name=first")
    assert result.returncode == 0, result.stderr
    run_dir = tmp_path / "runs" / "digits" / "first"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "completed"
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2]
    assert "epoch 2/2" in result.stderr  # plain lines when not on a terminal
    assert "tensorboard --logdir" in result.stdout
    quiet = run_cli("ml-train", "--config", path, "--set", "logging.run_name=quiet", "-q")
    assert quiet.returncode == 0 and "epoch" not in quiet.stderr  # -q: the result line only
    assert "best val_acc=" in quiet.stdout
    assert len(json.loads((run_dir.parent / "quiet" / "metrics.json").read_text())["epochs"]) == 2


def test_progress_bar_on_a_terminal(tmp_path, fast_config):
    import os
    import pty
    import subprocess

    from tests.conftest import BIN

    fast_config["training"]["num_epochs"] = 2
    path = write_config(tmp_path, fast_config)
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [str(BIN / "ml-train"), "--config", path],
        stdin=follower, stdout=follower, stderr=follower, close_fds=True,
        env={**os.environ, "COLUMNS": "100", "TERM": "xterm"},
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 4096)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    assert proc.wait(timeout=300) == 0
    import re

    output = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", b"".join(chunks).decode(errors="replace"))
    assert "epoch 2/2" in output
    assert "━" in output  # rich's bar, drawn only on a terminal


def test_names_that_would_leave_the_output_folder_and_a_stray_storage_exit_2_writing_nothing(
        tmp_path, fast_config):
    fast_config["training"]["num_epochs"] = 1
    path = write_config(tmp_path, fast_config)
    (tmp_path / "latin1.yaml").write_bytes(b"\xff\xfe\x00bad")
    cases = [
        (["--set", f"logging.run_name={tmp_path / 'outside' / 'r'}"],
         "--set logging.run_name: `logging.run_name` must be a relative folder name"),
        (["--set", "logging.experiment_name=../outside"],
         "--set logging.experiment_name: `logging.experiment_name` must be a relative folder name"),
        (["--storage", f"sqlite:///{tmp_path / 'outside.db'}"], "--storage applies only with --trial"),
        (["--lr", "1e300"], "--lr: `optimizer.lr` must fit a 32-bit float"),
        (["--lr", "inf"], "--lr: `optimizer.lr` must be a finite number, but got inf"),
    ]
    for args, message in cases:
        result = run_cli("ml-train", "--config", path, *args, cwd=tmp_path)
        assert result.returncode == 2, (args, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"ml-train: error: {message}"), result.stderr
    result = run_cli("ml-train", "--config", str(tmp_path / "latin1.yaml"), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == (f"ml-train: error: config file {tmp_path / 'latin1.yaml'} is not UTF-8 text "
                             "(byte 0xff at offset 0); save it as UTF-8\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml", "latin1.yaml"]  # no runs, no outside
