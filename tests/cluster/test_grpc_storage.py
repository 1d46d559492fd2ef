"""A digits StudyJob whose storage Secret names Optuna's gRPC proxy, on the real control plane.

The operator asks trials through the proxy and the trial pods report through it; the
trials end up in the PostgreSQL database behind it.
"""

from __future__ import annotations

import time

import optuna
import pytest
from optuna.trial import TrialState

from tests.operator.conftest import digits_spec

NAME = "digits-grpc"


@pytest.mark.slow
def test_digits_studyjob_through_the_grpc_proxy(kube, operator, kubelet, digits_claims, grpc_url, postgres_url):
    kube.secret("kubetune-postgres", {"url": grpc_url})
    spec = digits_spec(n_trials=3, parallelism=2, study="digits-grpc")
    started = time.monotonic()
    kube.create_studyjob(NAME, spec)
    final = kube.wait_succeeded(NAME, kubelet)
    print(f"digits StudyJob through the gRPC proxy: {time.monotonic() - started:.1f} s")

    # Read behind the proxy: the trials are in PostgreSQL itself.
    study = optuna.load_study(study_name="digits-grpc", storage=optuna.storages.RDBStorage(postgres_url))
    assert len(study.trials) == 3
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials)
    assert final["trials"]["finished"] == 3
    assert final["best"]["trial"] == study.best_trial.number
    assert study.metric_names == ["val_acc"]
