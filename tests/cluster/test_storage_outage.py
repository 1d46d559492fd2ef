"""A StudyJob rides out a storage outage on the real control plane.

The StudyJob's Secret names a PostgreSQL server of the test's own. Once a trial has
reported its first epoch the test stops that server for a few seconds: running trials
report and tell into the outage, a held trial's pod starts during it (and must open the
storage), and the operator's passes find the storage down. Every call is tried again until
the server is back; the study ends at its budget with nothing failed, lost or launched twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import optuna
import pytest
from optuna.trial import FrozenTrial, TrialState

from kubetune.search.attributes import FAIL_REASON_ATTR, JOB_ATTR
from kubetune.search.outage import OUTAGE_ENV
from tests.cluster.cluster import Cluster, wait_until
from tests.cluster.kubelet import TestKubelet
from tests.operator.conftest import digits_spec
from tests.polling import scaled
from tests.search.own_postgres import OwnPostgres

pytestmark = pytest.mark.slow

NAME, STUDY = "outage", "digits-op"
N_TRIALS, PARALLELISM = 8, 3
OUTAGE = 5.0  # seconds the server stays down: well under the bound the pods are given
BOUND = 120  # $KUBETUNE_STORAGE_OUTAGE for the trial pods


class Lines(logging.Handler):
    """The messages one logger emits while the test runs."""

    def __init__(self, logger: str) -> None:
        super().__init__(logging.WARNING)
        self.logger = logging.getLogger(logger)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())

    def __enter__(self) -> Lines:
        self.logger.addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        self.logger.removeHandler(self)

    def count(self, text: str) -> int:
        return sum(text in m for m in self.messages)


@pytest.fixture
def outage_lines() -> Iterator[Lines]:
    """What the operator (in this process) says about the storage's outages."""
    with Lines("kubetune.search.outage") as lines:
        yield lines


def trials(url: str) -> list[FrozenTrial]:
    storage = optuna.storages.RDBStorage(url, skip_table_creation=True, skip_compatibility_check=True)
    try:
        return optuna.load_study(study_name=STUDY, storage=storage).get_trials(deepcopy=False)
    except KeyError:
        return []
    finally:
        storage.engine.dispose()


def pod_logs(kube: Cluster, kubelet: TestKubelet, job: str) -> str:
    """What ``kubectl logs job/<job>`` shows, every pod of it."""
    return "".join(kubelet.logs(kube.namespace, pod["metadata"]["name"]) for pod in kube.job_pods(job))


def test_a_storage_outage_mid_studyjob_is_ridden_out(kube: Cluster, kubelet: TestKubelet, own_storage: OwnPostgres,
                                                     operator, digits_claims, outage_lines: Lines):
    # own_storage before operator: the operator stops before its server goes.
    url = own_storage.url
    held = f"{NAME}-trial-2"  # its pod starts while the storage is down
    kubelet.hold(lambda job: job == held)
    spec = digits_spec(n_trials=N_TRIALS, parallelism=PARALLELISM, env=[{"name": OUTAGE_ENV, "value": str(BOUND)}])
    spec["config"]["training"]["num_epochs"] = 3
    began = time.monotonic()
    kube.create_studyjob(NAME, spec)
    # The operator makes the storage's tables: only then does the test read them.
    wait_until(lambda: kube.status(NAME).get("trials"), scaled(60), "the first status")
    wait_until(lambda: any(t.intermediate_values for t in trials(url)), scaled(180), "a first epoch", interval=0.1)

    own_storage.stop()
    stopped = time.monotonic()
    try:
        kubelet.release(held)
        wait_until(lambda: outage_lines.count("is unreachable"), scaled(30), "the operator to find the storage down")
        wait_until(lambda: "is unreachable" in pod_logs(kube, kubelet, held), scaled(60),
                   lambda: f"{held}'s pod to find the storage down ({kube.job_pods(held)}, "
                           f"log: {pod_logs(kube, kubelet, held)[-2000:]!r})")
        time.sleep(max(0.0, OUTAGE - (time.monotonic() - stopped)))
    finally:
        own_storage.start()
    down = time.monotonic() - stopped

    status = kube.wait_phase(NAME, "Succeeded", scaled(300))
    wall = time.monotonic() - began
    told = trials(url)
    jobs = sorted(kube.trial_jobs(NAME))
    pods_riding = sum("is unreachable" in pod_logs(kube, kubelet, job) for job in jobs)
    print(f"\nstorage down {down:.1f} s mid-StudyJob: {len(told)} trials "
          f"({sum(t.state == TrialState.FAIL for t in told)} failed), {len(jobs)} Jobs, "
          f"{pods_riding} trial pods rode it out, {wall:.0f} s in all")

    assert len(told) == N_TRIALS  # none asked twice
    failed = {t.user_attrs[JOB_ATTR]: t.user_attrs.get(FAIL_REASON_ATTR) for t in told if t.state == TrialState.FAIL}
    assert not failed, (failed, [pod_logs(kube, kubelet, job)[-3000:] for job in failed])
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in told), [t.state for t in told]
    expected = [f"{NAME}-trial-{n}" for n in range(N_TRIALS)]
    assert jobs == sorted(expected)  # one Job per trial: nothing resumed
    assert [t.user_attrs[JOB_ATTR] for t in told] == expected
    assert status["trials"]["finished"] == N_TRIALS and status["trials"]["failed"] == 0
    assert status["trials"]["retried"] == 0 and status["trials"]["preempted"] == 0
    assert status["progress"] == f"{N_TRIALS}/{N_TRIALS}"
    assert outage_lines.count("is unreachable") == 1 and outage_lines.count("is back after") == 1, \
        outage_lines.messages
    assert "is back after" in pod_logs(kube, kubelet, held)  # started during the outage, then trained
