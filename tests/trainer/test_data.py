"""Datasets: the digits sample, both folder layouts, RGB and grayscale, stratified splits."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from kubetune.config.schema import DataConfig
from kubetune.data import inspect_dataset, write_digits
from kubetune.data.datasets import load_splits, stratified_folds
from kubetune.errors import ConfigError, DataError


def test_digits_sample_is_the_real_dataset(digits_dir):
    info = inspect_dataset(digits_dir)
    assert info.classes == [str(i) for i in range(10)]
    assert info.n_images == 1797
    assert info.image_size == (8, 8) and info.channels == 1
    assert info.layout == "single"


def test_digits_export_refuses_a_non_empty_folder(digits_dir):
    with pytest.raises(DataError, match="not empty"):
        write_digits(digits_dir)


def test_single_folder_is_split_stratified_and_seeded(digits_dir):
    cfg = DataConfig(path=str(digits_dir), image_size=8, val_split=0.2)
    a = load_splits(cfg, seed=0)
    b = load_splits(cfg, seed=0)
    c = load_splits(cfg, seed=1)
    assert len(a.val) == 360 and len(a.train) == 1437
    assert a.channels == 1 and a.num_classes == 10
    assert a.val.targets.tolist() == b.val.targets.tolist()
    assert not np.array_equal(a.val.images.numpy(), c.val.images.numpy())
    per_class = Counter(a.val.targets.tolist())
    assert min(per_class.values()) >= 34 and max(per_class.values()) <= 38
    image, label = a.train[0]
    assert image.shape == (1, 8, 8) and image.dtype.is_floating_point


def test_train_fraction_keeps_every_class(digits_dir):
    cfg = DataConfig(path=str(digits_dir), image_size=8, train_fraction=0.2)
    splits = load_splits(cfg, seed=0)
    assert 280 <= len(splits.train) <= 290
    assert len(set(splits.train.targets.tolist())) == 10
    assert len(splits.val) == 360  # validation untouched


def make_rgb_split_tree(root, size=(20, 12)):
    rng = np.random.default_rng(0)
    for split, count in (("train", 6), ("val", 2)):
        for cls in ("cat", "dog"):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.jpg")


def test_train_val_layout_with_rgb_images_resized(tmp_path):
    make_rgb_split_tree(tmp_path / "pets")
    info = inspect_dataset(tmp_path / "pets")
    assert info.layout == "split" and info.channels == 3
    assert info.counts == {"train": {"cat": 6, "dog": 6}, "val": {"cat": 2, "dog": 2}}
    assert info.image_size == (20, 12)
    splits = load_splits(DataConfig(path=str(tmp_path / "pets"), image_size=16), seed=0)
    assert len(splits.train) == 12 and len(splits.val) == 4
    assert splits.train[0][0].shape == (3, 16, 16)


def test_augmentation_changes_training_images_only(digits_dir):
    cfg = DataConfig(path=str(digits_dir), image_size=8,
                     augment={"random_crop_padding": 2, "rotation_degrees": 20})
    splits = load_splits(cfg, seed=0)
    torch.manual_seed(0)
    views = [splits.train[0][0] for _ in range(5)]
    assert any(not torch.equal(views[0], v) for v in views[1:])
    assert torch.equal(splits.val[0][0], splits.val[0][0])


def test_stratified_folds_cover_every_index_once(digits_dir):
    splits = load_splits(DataConfig(path=str(digits_dir), image_size=8), seed=0)
    targets = splits.train.targets.tolist()
    folds = stratified_folds(targets, 5, seed=0)
    held = np.concatenate([val for _, val in folds])
    assert sorted(held.tolist()) == list(range(len(targets)))


def test_missing_or_empty_dataset_folders_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        inspect_dataset(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no class sub-folders"):
        inspect_dataset(tmp_path / "empty")
    (tmp_path / "noimg" / "a").mkdir(parents=True)
    (tmp_path / "noimg" / "b").mkdir()
    with pytest.raises(DataError, match="holds no images"):
        inspect_dataset(tmp_path / "noimg")


def test_streaming_decodes_the_same_images_per_item(digits_dir):
    from kubetune.data.datasets import ImageFileDataset, ImageTensorDataset

    held = load_splits(DataConfig(path=str(digits_dir), image_size=12, train_fraction=0.5), seed=0)
    streamed = load_splits(DataConfig(path=str(digits_dir), image_size=12, train_fraction=0.5,
                                      in_memory=False), seed=0)
    assert held.in_memory and isinstance(held.train, ImageTensorDataset)
    assert not streamed.in_memory and isinstance(streamed.train, ImageFileDataset)
    assert streamed.train.targets.tolist() == held.train.targets.tolist()
    for i in (0, 7, 359):
        assert torch.equal(streamed.val[i][0], held.val[i][0])
        assert torch.equal(streamed.val.image(i), held.val.images[i])


def test_auto_streams_what_exceeds_the_memory_budget(digits_dir, monkeypatch):
    import kubetune.data.memory as memory

    cfg = DataConfig(path=str(digits_dir), image_size=8)
    decoded = 1797 * 64
    monkeypatch.setattr(memory, "memory_budget_bytes", lambda: decoded)
    assert load_splits(cfg, seed=0).in_memory
    monkeypatch.setattr(memory, "memory_budget_bytes", lambda: decoded - 1)
    assert not load_splits(cfg, seed=0).in_memory
    assert load_splits(cfg.model_copy(update={"in_memory": True}), seed=0).in_memory


def test_memory_budget_respects_a_container_limit(tmp_path, monkeypatch):
    import kubetune.data.memory as memory

    limit = tmp_path / "memory.max"
    monkeypatch.setattr(memory, "_CGROUP_LIMITS", (limit,))
    limit.write_text("max\n")
    physical = memory.host_memory_bytes()
    assert physical > 2**28
    limit.write_text(f"{2**26}\n")
    assert memory.host_memory_bytes() == 2**26


def test_in_memory_setting_is_validated():
    from kubetune.config import validate_config

    for value in ("auto", True, False):
        assert validate_config({"data": {"path": "d", "in_memory": value}}).data.in_memory == value
    with pytest.raises(ConfigError, match="data.in_memory") as info:
        validate_config({"data": {"path": "d", "in_memory": "sometimes"}})
    assert info.value.path == "data.in_memory" and "\n" not in str(info.value)


def copy_digits(digits_dir, root, per_class, classes=("0", "1", "2")):
    """A small ImageFolder of real digit PNGs: ``per_class`` digits (0, 1, ...) per class name."""
    import shutil

    for digit, cls in enumerate(classes):
        (root / cls).mkdir(parents=True)
        for path in sorted((digits_dir / str(digit)).glob("*.png"))[:per_class]:
            shutil.copy(path, root / cls / path.name)
    return root


def test_one_class_is_refused_wherever_a_dataset_is_read(digits_dir, tmp_path):
    root = copy_digits(digits_dir, tmp_path / "one", 20, classes=("3",))
    for load in (inspect_dataset, lambda r: load_splits(DataConfig(path=str(r), image_size=8))):
        with pytest.raises(DataError) as info:
            load(root)
        assert str(info.value) == f"{root} has 1 class folder (3); a classifier needs at least 2"
    split = tmp_path / "split"
    copy_digits(digits_dir, split / "train", 5, classes=("3",))
    copy_digits(digits_dir, split / "val", 2, classes=("3",))
    with pytest.raises(DataError, match=r"train has 1 class folder \(3\)"):
        load_splits(DataConfig(path=str(split), image_size=8))


@pytest.mark.parametrize("other", [None, "test"])
def test_half_a_split_layout_says_which_layouts_work(digits_dir, tmp_path, other):
    root = tmp_path / "half"
    copy_digits(digits_dir, root / "train", 5, classes=("0", "1"))
    if other:  # train/ + test/ would otherwise be two classes named train and test
        copy_digits(digits_dir, root / other, 2, classes=("0", "1"))
    for load in (inspect_dataset, lambda r: load_splits(DataConfig(path=str(r), image_size=8))):
        with pytest.raises(DataError) as info:
            load(root)
        message = str(info.value)
        assert message.startswith(f"{root} has train/ but no val/; expected {root}/train/<class>/<image>")
        assert f"{root}/<class>/<image> (split by data.val_split)" in message


@pytest.mark.parametrize("classes", [("bus", "train"), ("bus", "train", "val")])
def test_classes_named_train_and_val_are_still_classes(digits_dir, tmp_path, classes):
    root = copy_digits(digits_dir, tmp_path / "vehicles", 5, classes=classes)
    assert load_splits(DataConfig(path=str(root), image_size=8)).classes == list(classes)
    assert inspect_dataset(root).layout == "single"


@pytest.mark.parametrize(("per_class", "settings", "error", "path", "message"), [
    (1, {}, DataError, None,
     "has 3 images for 3 classes, too few to hold out validation images and keep one per class"),
    (3, {"train_fraction": 0.05}, ConfigError, "data.train_fraction",
     "`data.train_fraction` 0.05 of 7 training images leaves 0, fewer than the 3 classes; "
     "raise it to at least 0.43"),
    (3, {"val_split": 0.8}, ConfigError, "data.val_split",
     "`data.val_split` 0.8 of 9 images leaves 1 for training, fewer than the 3 classes; "
     "lower it to at most 0.66"),
])
def test_too_small_splits_name_the_setting_before_sklearn_sees_them(
        digits_dir, tmp_path, per_class, settings, error, path, message):
    root = copy_digits(digits_dir, tmp_path / "small", per_class)
    cfg = DataConfig(path=str(root), image_size=8, **settings)
    with pytest.raises(error) as info:
        load_splits(cfg, seed=0)
    assert message in str(info.value) and "\n" not in str(info.value)
    assert getattr(info.value, "path", None) == path
    if path:  # the suggested value is the bound: it loads, one step past it does not
        value = float(message.rsplit(" ", 1)[1])
        step = 0.01 if path == "data.train_fraction" else -0.01
        splits = load_splits(cfg.model_copy(update={path.split(".")[1]: value}), seed=0)
        assert len(splits.train) >= 3
        with pytest.raises(ConfigError):
            load_splits(cfg.model_copy(update={path.split(".")[1]: value - step}), seed=0)


def test_split_layout_with_fewer_training_images_than_classes(digits_dir, tmp_path):
    root = tmp_path / "split"
    copy_digits(digits_dir, root / "train", 1, classes=("0",))
    (root / "train" / "1").mkdir()
    copy_digits(digits_dir, root / "val", 1, classes=("0", "1"))
    with pytest.raises(DataError, match="has 1 images for 2 classes; a classifier needs at least one"):
        load_splits(DataConfig(path=str(root), image_size=8))


def test_trial_train_fraction_is_named_when_it_is_the_one_to_raise(digits_dir):
    from kubetune.data.sizes import check_data_sizes

    cfg = DataConfig(path=str(digits_dir), image_size=8, train_fraction=0.05)
    with pytest.raises(ConfigError) as info:
        check_data_sizes(cfg, trial_train_fraction=0.001)
    assert info.value.path == "search.trial_train_fraction"
    assert str(info.value) == (
        "`search.trial_train_fraction` 0.001 times `data.train_fraction` 0.05 of 1437 training "
        "images leaves 0, fewer than the 10 classes; raise it to at least 0.14")
    check_data_sizes(cfg, trial_train_fraction=0.14)
    with pytest.raises(ConfigError) as info:
        check_data_sizes(cfg.model_copy(update={"train_fraction": 0.001}), trial_train_fraction=0.5)
    assert str(info.value) == (  # the advice counts the trial's fraction too
        "`data.train_fraction` 0.001 times `search.trial_train_fraction` 0.5 of 1437 training "
        "images leaves 0, fewer than the 10 classes; raise it to at least 0.014")
    check_data_sizes(cfg.model_copy(update={"train_fraction": 0.014}), trial_train_fraction=0.5)
    # A trial's config (train_fraction = 0.05 * 0.001) still fails cleanly in load_splits.
    with pytest.raises(ConfigError, match="`data.train_fraction` 5e-05 of 1437 training images leaves 0"):
        load_splits(cfg.model_copy(update={"train_fraction": 0.05 * 0.001}))


def test_size_arithmetic_is_sklearns(digits_dir):
    from kubetune.data.datasets import stratified_split
    from kubetune.data.sizes import kept_after_holding_out

    for n in (3, 7, 21, 100, 1437):
        targets = [i % 3 for i in range(n)]
        for fraction in (0.001, 0.05, 0.2, 0.5, 0.66, 0.95, 0.999):
            if kept_after_holding_out(n, fraction) >= 3:
                kept, held = stratified_split(targets, fraction, seed=0)
                assert len(kept) == kept_after_holding_out(n, fraction)


def test_digits_export_refuses_a_file_or_an_unwritable_place(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="is a file"):
        write_digits(tmp_path / "file")
    with pytest.raises(DataError, match=f"cannot write the digits sample to {tmp_path}/file/digits"):
        write_digits(tmp_path / "file" / "digits")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]
