"""Datasets a classifier cannot train on stop ml-train and ml-search with one line, exit 2, no output."""

from __future__ import annotations

import shutil

import pytest

from tests.conftest import run_cli


@pytest.fixture
def workdir(digits_dir, tmp_path):
    """A config for the digits (with a search section) and two unusable folders beside it."""
    for digit in (3, 4):  # data/one: a single class; data/tiny: one image per class
        one, tiny = tmp_path / "data" / "one" / "3", tmp_path / "data" / "tiny" / str(digit)
        one.mkdir(parents=True, exist_ok=True)
        tiny.mkdir(parents=True)
        images = sorted((digits_dir / str(digit)).glob("*.png"))
        for path in images[:10]:
            shutil.copy(path, one / path.name)
        shutil.copy(images[0], tiny / images[0].name)
    result = run_cli("ml-init-config", str(digits_dir), "--optuna", "--yes", "-o", "c.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    return tmp_path


def assert_fails_cleanly(workdir, command, *args, expected):
    before = sorted(p.name for p in workdir.iterdir())
    result = run_cli(command, "--config", "c.yaml", "--set", "training.num_epochs=1",
                     "--set", "training.device=cpu", *args, cwd=workdir)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines == [f"{command}: error: {expected}"]
    assert sorted(p.name for p in workdir.iterdir()) == before  # no runs/, no study database


@pytest.mark.parametrize("command", ["ml-train", "ml-search"])
def test_one_class_and_too_few_images_stop_before_training(workdir, command):
    assert_fails_cleanly(workdir, command, "--set", "data.path=data/one",
                         expected="data/one has 1 class folder (3); a classifier needs at least 2")
    assert_fails_cleanly(workdir, command, "--set", "data.path=data/tiny",
                         expected="data/tiny has 2 images for 2 classes, too few to hold out "
                                  "validation images and keep one per class for training; add "
                                  "images (or use train/ and val/ folders)")


def test_too_small_trial_train_fraction_stops_the_search(workdir):
    before = sorted(p.name for p in workdir.iterdir())
    result = run_cli("ml-search", "--config", "c.yaml", "--set", "search.trial_train_fraction=0.001",
                     cwd=workdir)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "train_fraction" in lines[0]
    assert "of 1437 training images leaves 1, fewer than the 10 classes" in lines[0]
    assert sorted(p.name for p in workdir.iterdir()) == before


def test_a_searched_train_fraction_that_goes_too_low_stops_the_search(workdir):
    space = '{type: uniform, low: 0.001, high: 0.5}'
    assert_fails_cleanly(
        workdir, "ml-search", "--set", f"search.search_space.data.train_fraction={space}",
        expected="`search.search_space.data.train_fraction` reaches 0.001, and `data.train_fraction` 0.001 of "
                 "1437 training images leaves 1, fewer than the 10 classes; raise it to at least 0.007")


@pytest.fixture
def unreadable(digits_dir, tmp_path):
    """Three digit classes, one of them holding a file that is not a PNG and a cut-off one."""
    root = tmp_path / "data" / "bad"
    for digit in (0, 1, 2):
        folder = root / str(digit)
        folder.mkdir(parents=True)
        for path in sorted((digits_dir / str(digit)).glob("*.png"))[:30]:
            shutil.copy(path, folder / path.name)
    good = next((root / "1").glob("*.png")).read_bytes()
    (root / "1" / "zz_text.png").write_text("not an image\n")
    (root / "2" / "zz_cut.png").write_bytes(good[:60])
    return root


def test_ml_init_config_names_an_unreadable_image(unreadable, tmp_path):
    result = run_cli("ml-init-config", str(unreadable), "--yes", "-o", "bad.yaml", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"ml-init-config: error: cannot read image {unreadable}/")
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "bad.yaml").exists()


def test_an_unreadable_image_found_by_a_dataloader_worker_is_one_line(workdir, unreadable):
    result = run_cli("ml-train", "--config", "c.yaml", "--set", f"data.path={unreadable}",
                     "--set", "data.in_memory=false", "--set", "data.num_workers=2",
                     "--set", "training.num_epochs=1", "--set", "training.device=cpu",
                     "--no-progress", cwd=workdir)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "worker" not in result.stderr, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(
        f"ml-train: error: cannot read image {unreadable}/"), result.stderr
