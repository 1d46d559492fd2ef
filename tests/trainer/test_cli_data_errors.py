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
