"""ml-init-config through real subprocesses: inspect, write, refuse to overwrite, train as written."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml

from tests.conftest import run_cli


def test_sample_then_config_that_trains_without_edits(tmp_path):
    result = run_cli("ml-init-config", "--sample", "digits", "data/digits", "--yes", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "10 classes, 1797 images, 8x8 px, 1 channel" in result.stdout
    config_path = tmp_path / "configs" / "digits_config.yaml"
    text = config_path.read_text()
    assert text.startswith("# kubetune config")  # commented
    config = yaml.safe_load(text)
    assert config["data"]["path"] == "data/digits"
    assert config["data"]["channels"] == 1 and config["model"]["architecture"] == "small_cnn"
    assert "search" not in config

    trained = run_cli("ml-train", "--config", "configs/digits_config.yaml", cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    metrics_files = list((tmp_path / "runs" / "digits").glob("*/metrics.json"))
    assert len(metrics_files) == 1
    epochs = json.loads(metrics_files[0].read_text())["epochs"]
    assert len(epochs) == 10
    assert max(e["val_acc"] for e in epochs) >= 0.90


def test_optuna_section_and_overwrite_protection(tmp_path, digits_dir):
    out = tmp_path / "c.yaml"
    first = run_cli("ml-init-config", str(digits_dir), "--optuna", "--yes", "-o", str(out))
    assert first.returncode == 0, first.stderr
    search = yaml.safe_load(out.read_text())["search"]
    assert search["study_name"] == "digits_optimization"
    assert search["sampler"]["type"] == "TPESampler"
    assert search["pruner"]["type"] == "SuccessiveHalvingPruner"
    assert set(search["search_space"]) == {
        "optimizer.lr", "optimizer.weight_decay", "model.dropout", "training.batch_size",
    }
    assert yaml.safe_load(out.read_text())["data"]["train_fraction"] == 1.0  # the demo's 0.1 is the sample's

    before = out.read_text()
    again = run_cli("ml-init-config", str(digits_dir), "--yes", "-o", str(out))
    assert again.returncode == 2
    assert "--force" in again.stderr and str(out) in again.stderr
    assert out.read_text() == before
    forced = run_cli("ml-init-config", str(digits_dir), "--yes", "-o", str(out), "--force")
    assert forced.returncode == 0
    assert "search" not in yaml.safe_load(out.read_text())


def test_missing_dataset_is_exit_2_and_writes_nothing(tmp_path):
    result = run_cli("ml-init-config", "nowhere", "--yes", cwd=tmp_path)
    assert result.returncode == 2
    assert "nowhere" in result.stderr and "does not exist" in result.stderr
    assert f"(relative to the working folder {tmp_path})" in result.stderr  # where it was looked for
    assert not (tmp_path / "configs").exists()


def small_folder(digits_dir, root, per_class, n_classes):
    """Real digit PNGs: ``per_class`` of each of the first ``n_classes`` digits."""
    for digit in range(n_classes):
        (root / str(digit)).mkdir(parents=True)
        for path in sorted((digits_dir / str(digit)).glob("*.png"))[:per_class]:
            shutil.copy(path, root / str(digit) / path.name)
    return root


def tree(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def assert_one_line_error(result, *parts):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ml-init-config: error: "), result.stderr
    for part in parts:
        assert part in lines[0]


@pytest.mark.parametrize(("per_class", "n_classes", "flags", "expected"), [
    (20, 1, [], "data/small has 1 class folder (0); a classifier needs at least 2"),
    (1, 2, [], "data/small has 2 images for 2 classes, too few to hold out validation images"),
    # --sample on a folder holding something else uses it as it is, with the demo's fraction
    (3, 3, ["--sample", "digits", "--optuna"],
     "`data.train_fraction` 0.05 of 7 training images leaves 0, fewer than the 3 classes"),
    (1, 1, ["--sample", "digits"], "data/small has 1 class folder (0); a classifier needs at least 2"),
])
def test_unusable_dataset_writes_no_config(digits_dir, tmp_path, per_class, n_classes, flags, expected):
    small_folder(digits_dir, tmp_path / "data" / "small", per_class, n_classes)
    before = tree(tmp_path)
    result = run_cli("ml-init-config", "data/small", "--yes", *flags, cwd=tmp_path)
    assert_one_line_error(result, expected)
    assert tree(tmp_path) == before  # no config, no configs/, the folder untouched


def test_train_folder_without_val_says_which_layouts_work(digits_dir, tmp_path):
    small_folder(digits_dir, tmp_path / "data" / "train", 5, 2)
    result = run_cli("ml-init-config", "data", "--yes", cwd=tmp_path)
    assert_one_line_error(result, "data has train/ but no val/; expected data/train/<class>/<image> "
                                  "and data/val/<class>/<image>, or data/<class>/<image>")
    assert not (tmp_path / "configs").exists()


@pytest.mark.parametrize(("args", "expected"), [
    (["-o", "taken.yaml/c.yaml"], "cannot write taken.yaml/c.yaml: taken.yaml is a file, not a folder"),
    (["-o", "taken.yaml/sub/c.yaml"], "taken.yaml is a file, not a folder"),
    (["-o", "configs"], "--output configs is a folder; give a file such as configs/config.yaml"),
    (["-o", "configs", "--force"], "--output configs is a folder"),
    # the sample is not written when the config could not be
    (["--sample", "digits", "-o", "taken.yaml/c.yaml"], "taken.yaml is a file, not a folder"),
    (["--sample", "digits", "-o", "configs"], "--output configs is a folder"),
])
def test_impossible_output_is_exit_2_and_writes_nothing(digits_dir, tmp_path, args, expected):
    (tmp_path / "taken.yaml").write_text("mine\n")
    (tmp_path / "configs").mkdir()
    dataset = "new_digits" if "--sample" in args else str(digits_dir)
    before = tree(tmp_path)
    result = run_cli("ml-init-config", dataset, "--yes", *args, cwd=tmp_path)
    assert_one_line_error(result, expected)
    assert tree(tmp_path) == before
    assert (tmp_path / "taken.yaml").read_text() == "mine\n"


def test_sample_into_an_impossible_folder_is_exit_2(tmp_path):
    (tmp_path / "taken").write_text("mine\n")
    for target, expected in (("taken", "taken is a file"),
                             ("taken/digits", "cannot write the digits sample to taken/digits")):
        result = run_cli("ml-init-config", "--sample", "digits", target, "--yes", "-o", "c.yaml",
                         cwd=tmp_path)
        assert_one_line_error(result, expected)
    assert tree(tmp_path) == ["taken"]
