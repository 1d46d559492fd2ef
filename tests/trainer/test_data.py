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
from kubetune.errors import DataError


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
    from kubetune.errors import ConfigError

    for value in ("auto", True, False):
        assert validate_config({"data": {"path": "d", "in_memory": value}}).data.in_memory == value
    with pytest.raises(ConfigError, match="data.in_memory") as info:
        validate_config({"data": {"path": "d", "in_memory": "sometimes"}})
    assert info.value.path == "data.in_memory" and "\n" not in str(info.value)
