"""Fixtures for operator tests: the emulated cluster, operators, a fake kubelet, a digits spec."""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Any

import kmock
import pytest
import pytest_asyncio

from tests.operator.emulator import KubetuneEmulator
from tests.operator.harness import (
    STUDYJOBS,
    Cluster,
    FakeKubelet,
    OperatorThread,
    crd_resource_info,
)

DIGITS_CONFIG: dict[str, Any] = {
    "model": {"architecture": "small_cnn", "dropout": 0.1},
    "data": {"image_size": 8, "channels": 1, "train_fraction": 0.3,
             "normalize": {"mean": [0.3], "std": [0.37]}},
    "training": {"num_epochs": 2, "batch_size": 64, "seed": 0, "device": "cpu"},
    "optimizer": {"type": "sgd", "lr": 0.05, "momentum": 0.9},
    "scheduler": {"type": "cosine"},
    "logging": {"experiment_name": "digits"},
    "search": {
        "study_name": "digits-op",
        "n_trials": 4,
        "direction": "maximize",
        "metric": "val_acc",
        "sampler": {"type": "TPESampler", "seed": 0, "n_startup_trials": 2},
        "pruner": {"type": "MedianPruner", "n_startup_trials": 1, "n_warmup_steps": 0},
        "search_space": {
            "optimizer.lr": {"type": "loguniform", "low": 1.0e-4, "high": 0.3},
            "model.dropout": {"type": "uniform", "low": 0.0, "high": 0.5},
        },
    },
}


def digits_spec(*, n_trials: int = 4, parallelism: int = 2, study: str = "digits-op",
                output: bool = False, **trials: Any) -> dict[str, Any]:
    """A StudyJob spec that trains the small CNN on the digits PVC (see ``claims``)."""
    config = copy.deepcopy(DIGITS_CONFIG)
    config["search"]["n_trials"] = n_trials
    config["search"]["study_name"] = study
    spec: dict[str, Any] = {
        "config": config,
        "trials": {"parallelism": parallelism, **trials},
        "storage": {"secretRef": {"name": "kubetune-postgres", "key": "url"}},
        "data": {"persistentVolumeClaim": "datasets", "subPath": "digits"},
    }
    if output:
        spec["output"] = {"persistentVolumeClaim": "results"}
    return spec


@pytest_asyncio.fixture
async def cluster():
    """An emulated API server with the built-in resources, the StudyJob CRD and claim ``datasets``."""
    async with KubetuneEmulator() as emulator, kmock.Server(emulator) as server:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # kmock's importlib use
            emulator.resources.load_bundled()
        emulator.resources[STUDYJOBS] = crd_resource_info()
        cluster = Cluster(emulator, str(server.url).rstrip("/"))
        await cluster.create("v1/persistentvolumeclaims", {  # digits_spec's data claim
            "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "datasets"},
            "spec": {"accessModes": ["ReadOnlyMany"], "resources": {"requests": {"storage": "1Gi"}}}})
        yield cluster


@pytest_asyncio.fixture
async def storage_secret(cluster: Cluster, postgres_url: str) -> str:
    """Secret ``kubetune-postgres`` (key ``url``) pointing at a fresh PostgreSQL database."""
    await cluster.create_secret("kubetune-postgres", {"url": postgres_url})
    return postgres_url


@pytest_asyncio.fixture
async def start_operator(cluster: Cluster):
    """``await start_operator(**options)``: a running operator; all are stopped at the end."""
    started: list[OperatorThread] = []

    async def start(**options: Any) -> OperatorThread:
        operator = await OperatorThread(cluster.url, cluster.namespace, **options).start()
        started.append(operator)
        return operator

    yield start
    for operator in started:
        if operator.thread.is_alive():
            await operator.stop()


@pytest.fixture
def claims(tmp_path: Path, digits_dir: Path) -> dict[str, Path]:
    """PersistentVolumeClaims as local folders: ``datasets`` holds ``digits/``."""
    results = tmp_path / "results"
    results.mkdir()
    return {"datasets": digits_dir.parent, "results": results}


@pytest_asyncio.fixture
async def make_kubelet(cluster: Cluster, tmp_path: Path, claims: dict[str, Path]):
    """``async with make_kubelet(fate) as kubelet``: the Job controller and kubelet."""

    def make(fate=None) -> FakeKubelet:
        return FakeKubelet(cluster, tmp_path / "node", claims, fate)

    return make
