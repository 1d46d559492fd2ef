"""Every run measures what its model costs: metrics.json, TensorBoard, and the epoch callback."""

from __future__ import annotations

import json

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from kubetune.config import validate_config
from kubetune.config.search_schema import COST_METRICS
from kubetune.models import build_model
from kubetune.training import train
from kubetune.training.costs import flops_per_image, parameter_count


def test_a_run_records_its_costs(fast_config):
    fast_config["training"]["num_epochs"] = 2
    seen: list[dict[str, float]] = []
    result = train(validate_config(fast_config), progress=False, epoch_lines=False,
                   callback=lambda epoch, metrics: seen.append(metrics) and None)
    assert all(set(COST_METRICS) <= set(m) for m in seen)
    model = build_model(validate_config(fast_config).model, 10, 1)
    assert seen[0]["params"] == parameter_count(model) > 0
    # small_cnn on 8x8 images: at least two FLOPs per weight of its linear layers.
    assert seen[0]["flops"] >= 2 * sum(p.numel() for n, p in model.named_parameters() if "weight" in n and p.dim() == 2)
    assert 0 < seen[0]["latency_ms"] and 0 < seen[0]["latency_batch_ms"]
    assert 0 < seen[0]["train_seconds"] < seen[1]["train_seconds"]
    assert seen[1]["gpu_seconds"] == 0.0 and seen[1]["peak_memory_mb"] > 0
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert metrics["costs"] == pytest.approx({k: seen[-1][k] for k in COST_METRICS})
    assert metrics["cost_measurement"]["seconds"] > 0
    assert "params" not in metrics["epochs"][0]  # the history holds what training learned
    events = EventAccumulator(str(result.run_dir))
    events.Reload()
    assert [v.step for v in events.Scalars("cost/latency_ms")] == [1, 2]


def test_flops_count_a_linear_layer():
    layer = torch.nn.Linear(10, 4)
    assert flops_per_image(layer, torch.zeros(3, 10)) == 2 * 10 * 4
