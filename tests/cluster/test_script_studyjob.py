"""examples/custom_script/train.py as a StudyJob's trials (``spec.trials.command``) on the
real control plane: the test kubelet runs each pod's ``ml-train --trial``, which runs the
script; one pod is evicted mid-trial and the next resumes from the script's own checkpoint."""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState

from kubetune.search.attributes import PREEMPTED_ATTR
from tests.cluster.cluster import Cluster, wait_until
from tests.cluster.kubelet import TestKubelet
from tests.cluster.test_resume import running_pod
from tests.operator.conftest import digits_spec

pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "custom_script" / "train.py"
EPOCHS = 30  # still training when the test sees the checkpoint of epoch 2 and evicts the pod
RESUMED = re.compile(r"resuming after epoch (\d+) \(the storage has (\d+)\)")


def script_checkpoint_epoch(path: Path) -> int:
    try:
        return int(torch.load(path, map_location="cpu")["epoch"])
    except (FileNotFoundError, EOFError, RuntimeError, KeyError, OSError):
        return -1


def test_an_evicted_script_trial_resumes_from_the_scripts_checkpoint(kube: Cluster, kubelet: TestKubelet, operator,
                                                                      digits_claims, storage):
    shutil.copy(EXAMPLE, digits_claims["datasets"] / "digits" / "train.py")  # mounted at /data
    # The interpreter of this environment: the one the "image" has torch and kubetune in.
    spec = digits_spec(n_trials=1, parallelism=1, retries=1, output=True, command=[sys.executable, "/data/train.py"])
    spec["config"]["training"]["num_epochs"] = EPOCHS
    spec["config"]["search"]["pruner"] = {"type": "none"}
    kube.create_studyjob("script", spec)

    checkpoint = digits_claims["results"] / "digits-op" / "trial-0" / "checkpoints" / "last.pt"
    evicted_after: list[int] = []

    def evict_once_checkpointed() -> bool:
        epoch = script_checkpoint_epoch(checkpoint)
        pod = running_pod(kube, "script-trial-0") if epoch >= 2 else None
        if pod is not None:
            kube.evict(pod["metadata"]["name"])
            evicted_after.append(epoch)
        return bool(evicted_after)

    def what() -> str:
        pods = kube.job_pods("script-trial-0")
        logs = [kubelet.logs(kube.namespace, p["metadata"]["name"])[-3000:] for p in pods]
        trials = optuna.load_study(study_name="digits-op", storage=storage).trials
        return (f"a running trial pod with the script's checkpoint of epoch 2 (trials: "
                f"{[(t.state.name, t.user_attrs) for t in trials]}; logs: {logs})")

    wait_until(evict_once_checkpointed, 300, what)
    status = kube.wait_phase("script", "Succeeded", 600)

    (trial,) = optuna.load_study(study_name="digits-op", storage=storage).trials
    assert trial.state == TrialState.COMPLETE  # resumed as the same trial, not failed
    assert trial.user_attrs[PREEMPTED_ATTR] == 1 and status["trials"]["preempted"] == 1
    assert sorted(trial.intermediate_values) == list(range(1, EPOCHS + 1))  # no gap, no duplicate
    pod = kube.job_pods("script-trial-0-r1")[0]
    found = RESUMED.search(kubelet.logs(kube.namespace, pod["metadata"]["name"]))
    assert found is not None, "the second pod did not resume from the script's checkpoint"
    assert int(found.group(1)) >= evicted_after[0]
