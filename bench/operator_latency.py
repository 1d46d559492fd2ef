"""Operator latency: from a trial Job's completion to the next trial Job's creation.

The real operator (kopf, kubetune's handlers and settings) runs in this process;
the kmock emulator (tests/operator/emulator.py) serves the API from another process,
as an API server would; PostgreSQL is the storage; one trial runs at a time. A minimal
kubelet tells each trial COMPLETE through Optuna (as the trial pod would), then
marks its Job succeeded and notes the time; the emulator notes when the next trial
Job is created. Printed: median and p90 over the trials (target: p90 < 100 ms,
which only an event-driven operator meets: a timer costs its interval).

    .venv/bin/python bench/operator_latency.py              # 50 trials
    .venv/bin/python bench/operator_latency.py --trials 100

PostgreSQL from $KUBETUNE_TEST_POSTGRES_URL (default: the local test server); the
bench creates and drops its own database.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
NAMESPACE = "kt"


def _spec(n_trials: int) -> dict:
    from tests.operator.conftest import DIGITS_CONFIG

    config = copy.deepcopy(DIGITS_CONFIG)
    config["data"]["path"] = "/data"
    config["search"].update(n_trials=n_trials, study_name="latency")
    return {"config": config, "trials": {"parallelism": 1}}


async def _kubelet(url: str, storage: str, n_jobs: int, completed_at: dict[str, float]) -> None:
    """Watch trial Jobs; tell each trial COMPLETE, then mark its Job succeeded and note when."""
    import json

    import aiohttp
    import optuna

    from kubetune.search.storage import make_storage
    from kubetune_operator import names

    study = None
    jobs = f"{url}/apis/batch/v1/namespaces/{NAMESPACE}/jobs"
    headers = {"User-Agent": "kmock/bench", "Content-Type": "application/merge-patch+json"}
    async with aiohttp.ClientSession(headers={"User-Agent": "kmock/bench"}) as session:
        async with session.get(jobs, params={"watch": "true"}, timeout=aiohttp.ClientTimeout()) as stream:
            async for line in stream.content:
                if not line.strip():
                    continue
                event = json.loads(line)
                job = event["object"]
                name = job["metadata"]["name"]
                if event["type"] != "ADDED" or name in completed_at:
                    continue
                if study is None:
                    study = optuna.load_study(study_name="latency",
                                              storage=make_storage(storage, heartbeat=False))
                number = int(job["metadata"]["labels"][names.LABEL_TRIAL])
                await asyncio.to_thread(study.tell, number, 0.5 + number / 1000)
                completed_at[name] = time.perf_counter()
                status = {"status": {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}}
                async with session.patch(f"{jobs}/{name}/status", data=json.dumps(status), headers=headers):
                    pass
                if len(completed_at) >= n_jobs:
                    return


async def _run(url: str, storage: str, n_trials: int, created_log: Path) -> list[float]:
    from kubetune_operator.kube import Kube
    from tests.operator.harness import OperatorThread

    kube = Kube.from_host(url)
    kube.create({"apiVersion": "v1", "kind": "Secret",
                 "metadata": {"name": "kubetune-postgres", "namespace": NAMESPACE},
                 "data": {"url": base64.b64encode(storage.encode()).decode()}}, NAMESPACE)
    operator = await OperatorThread(url, NAMESPACE).start()
    completed_at: dict[str, float] = {}
    try:
        kube.request("POST", f"/apis/kubetune.dev/v1alpha1/namespaces/{NAMESPACE}/studyjobs", body={
            "apiVersion": "kubetune.dev/v1alpha1", "kind": "StudyJob",
            "metadata": {"name": "latency", "namespace": NAMESPACE}, "spec": _spec(n_trials + 1)})
        await asyncio.wait_for(_kubelet(url, storage, n_trials, completed_at), timeout=900)
        last = f"latency-trial-{n_trials}"
        deadline = time.monotonic() + 30
        while last not in _creations(created_log):
            assert time.monotonic() < deadline, "the last trial Job never came"
            await asyncio.sleep(0.01)
    finally:
        await operator.stop()
    created = _creations(created_log)
    return [(created[f"latency-trial-{n + 1}"] - completed_at[f"latency-trial-{n}"]) * 1000
            for n in range(n_trials)]


def _ask_alone(storage: str, n_trials: int) -> float:
    """Median time of one study.ask (the bench's sampler and space) for scale."""
    import optuna

    from kubetune.config import validate_config
    from kubetune.search.samplers import build_sampler
    from kubetune.search.space import distributions
    from kubetune.search.storage import make_storage

    config = validate_config({**_spec(n_trials)["config"]})
    config.search.study_name = "ask-alone"
    study = optuna.create_study(study_name="ask-alone", storage=make_storage(storage, heartbeat=False),
                                sampler=build_sampler(config.search), direction="maximize")
    space = distributions(config.search.search_space)
    times = []
    for number in range(n_trials):
        start = time.perf_counter()
        trial = study.ask(space)
        times.append((time.perf_counter() - start) * 1000)
        study.tell(trial, 0.5 + number / 1000)
    return statistics.median(times)


def _creations(path: Path) -> dict[str, float]:
    result = {}
    for line in path.read_text().splitlines() if path.exists() else []:
        plural, name, when = line.split()
        if plural == "jobs":
            result[name] = float(when)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=50, help="completions measured (default 50)")
    args = parser.parse_args()
    from tests.operator.harness import EmulatorProcess, temporary_database

    with tempfile.TemporaryDirectory() as tmp, temporary_database() as storage:
        created_log = Path(tmp) / "created.log"
        with EmulatorProcess(created_log) as url:
            latencies = asyncio.run(_run(url, storage, args.trials, created_log))
        ask = _ask_alone(storage, args.trials)
    ordered = sorted(latencies)
    p90 = ordered[max(0, int(round(0.9 * len(ordered))) - 1)]
    median = statistics.median(ordered)
    print(f"Job completion -> next trial Job created, {len(ordered)} trials, parallelism 1:")
    print(f"  median {median:6.1f} ms")
    print(f"  p90    {p90:6.1f} ms   (target < 100 ms: {'met' if p90 < 100 else 'MISSED'})")
    print(f"  min {ordered[0]:.1f} ms, max {ordered[-1]:.1f} ms")
    print(f"  p90 / 100 ms target = {p90 / 100:.2f}")
    print(f"for scale: one study.ask alone (same sampler, space and storage) median {ask:.1f} ms, "
          f"{ask / median:.0%} of the median latency")
    return 0


if __name__ == "__main__":
    sys.exit(main())
