"""Between a worker's trials the GPU's memory is given back; on the CPU nothing is collected."""

from __future__ import annotations

import gc

import pytest
import torch

from kubetune.search import objective


@pytest.fixture
def calls(monkeypatch) -> list[str]:
    seen: list[str] = []
    monkeypatch.setattr(objective.gc, "collect", lambda *a: seen.append("collect") or 0)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: seen.append("empty_cache"))
    return seen


def test_a_cpu_trial_leaves_collection_to_python(calls):
    objective.free_accelerator_memory("cpu")
    assert calls == []


@pytest.mark.parametrize("setting", ["cuda", "auto"])
def test_a_gpu_trial_is_collected_and_the_cache_emptied(monkeypatch, calls, setting):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    objective.free_accelerator_memory(setting)
    assert calls == ["collect", "empty_cache"]


def test_a_pruned_trials_model_waits_for_a_collection():
    # Why the worker collects after Optuna has told the trial: the exception a pruned trial
    # ends with holds its frames, and the frame that caught it holds the exception.
    import weakref

    class Model:
        pass

    def train() -> None:
        model = Model()
        seen.append(weakref.ref(model))
        raise RuntimeError("pruned")

    def run_trial() -> None:
        caught = None
        try:
            train()
        except RuntimeError as exc:
            caught = exc
        assert caught is not None

    seen: list[weakref.ref] = []
    gc.disable()
    try:
        run_trial()
        assert seen[0]() is not None
        gc.collect()
        assert seen[0]() is None
    finally:
        gc.enable()
