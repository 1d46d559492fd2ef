"""Training on a CUDA device: held data, channels_last, fp16 autocast, compile, resume.

Skipped without a CUDA device (CI has none); a GPU machine runs them with
``pytest -m cuda``. The CPU paths are covered by the other trainer tests.
"""

from __future__ import annotations

import pytest
import torch

from kubetune.config import validate_config
from kubetune.training import runner, train

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.fixture
def cuda_config(fast_config) -> dict:
    fast_config["training"].update(device="cuda", trainer="mixed_precision")
    fast_config["data"]["augment"] = {"random_crop_padding": 2, "horizontal_flip": False}
    return fast_config


@pytest.fixture
def seen_batches(monkeypatch) -> list[dict]:
    """What each epoch's first training batch and the model looked like."""
    seen: list[dict] = []
    real = runner.train_one_epoch

    def recording(loader, model, precision):
        for i, (images, targets) in enumerate(loader):
            if i == 0:
                conv = next(m for m in model.modules()  # one input channel: both layouts agree
                            if isinstance(m, torch.nn.Conv2d) and m.in_channels > 1)
                seen.append({
                    "loader": type(loader).__name__,
                    "device": images.device.type,
                    "pinned": images.is_pinned(),
                    "weights_channels_last": conv.weight.is_contiguous(memory_format=torch.channels_last),
                    "scaler": precision.scaler is not None,
                    "dtype": precision.dtype,
                })
            yield images, targets

    def spy(model, loader, optimizer, criterion, precision, on_batch=None):
        return real(model, recording(loader, model, precision), optimizer, criterion, precision, on_batch)

    monkeypatch.setattr(runner, "train_one_epoch", spy)
    return seen


def test_held_data_trains_on_the_gpu_in_channels_last_with_fp16(cuda_config, seen_batches):
    cuda_config["data"]["in_memory"] = True
    result = train(validate_config(cuda_config), progress=False)
    first = seen_batches[0]
    assert first["loader"] == "DeviceBatches" and first["device"] == "cuda", first
    assert first["weights_channels_last"] and first["scaler"] and first["dtype"] == torch.float16, first
    assert result.final["val_acc"] > 0.8, result.history
    state = torch.load(result.run_dir / "last.pt", map_location="cpu", weights_only=True)
    assert state["scaler_state"]["scale"] > 0
    assert all(t.device.type == "cpu" for t in state["model_state"].values())


def test_streamed_data_pins_memory_and_trains_on_the_gpu(cuda_config, seen_batches):
    from kubetune.data.datasets import load_splits
    from kubetune.training.batches import make_batches

    cuda_config["data"].update(in_memory=False, num_workers=2)
    config = validate_config(cuda_config)
    loader, _ = make_batches(load_splits(config.data, 0), 64, torch.device("cuda"), 0, 2)
    assert loader.pin_memory and loader.persistent_workers
    result = train(config, progress=False)
    first = seen_batches[0]
    assert first["loader"] == "DataLoader" and first["pinned"] and first["weights_channels_last"], first
    assert result.final["val_acc"] > 0.8, result.history


def test_the_default_model_passes_90_percent_within_3_epochs_at_32px(cuda_config):
    cuda_config["data"].update(image_size=32, in_memory=True)
    cuda_config["training"]["num_epochs"] = 3
    result = train(validate_config(cuda_config), progress=False)
    assert max(e["val_acc"] for e in result.history) >= 0.9, result.history


def test_compile_with_inductor_trains_on_the_gpu(cuda_config):
    cuda_config["training"].update(num_epochs=2, compile=True)
    result = train(validate_config(cuda_config), progress=False)
    assert result.final["val_acc"] > 0.5, result.history
    state = torch.load(result.run_dir / "last.pt", map_location="cpu", weights_only=True)["model_state"]
    assert not any(key.startswith("_orig_mod") for key in state)


def test_a_gpu_run_resumes_from_its_checkpoint(cuda_config):
    cuda_config["training"]["num_epochs"] = 4
    config = validate_config(cuda_config)
    first = train(config, progress=False, callback=lambda epoch, _: epoch == 2)
    assert first.stopped_early and len(first.history) == 2
    trained = []
    result = train(config, progress=False, resume=first.run_dir / "last.pt",
                   callback=lambda epoch, _: trained.append(epoch))
    assert trained == [3, 4] and result.history[:2] == first.history
    assert result.final["val_acc"] > 0.8, result.history


def test_a_workers_trials_give_the_gpu_memory_back(cuda_config, tmp_path):
    import optuna

    from kubetune.search.study import start_study
    from kubetune.search.worker import run_worker

    url = f"sqlite:///{tmp_path / 's.db'}"
    cuda_config["search"] = {
        "study_name": "gpu", "n_trials": 3, "storage": url, "sampler": {"type": "RandomSampler", "seed": 0},
        "pruner": {"type": "SuccessiveHalvingPruner", "min_resource": 1},
        "search_space": {"optimizer.lr": {"type": "loguniform", "low": 0.001, "high": 0.5}},
    }
    config = validate_config(cuda_config)
    start_study(config, url, "gpu", resume=False, n_trials=None)
    before = torch.cuda.memory_allocated()
    run_worker(config, url, "gpu", progress=False)
    assert len(optuna.load_study(study_name="gpu", storage=url).trials) == 3
    assert torch.cuda.memory_allocated() <= before  # no trial's model or batches left behind
