"""Reconcile cost: one pass over a StudyJob with 1,000 finished trials and 50 running Jobs.

A pass (kubetune_operator.reconcile) reads the spec, lists the StudyJob's Jobs, reads
the trials from PostgreSQL, settles ended Jobs, starts trials and writes the status.
Timed here, against the same pass over an (almost) empty study:

- first pass over the StudyJob (a new runtime, no status yet): the study is opened, every
  trial read, the ConfigMap and the first status written (a restart is the table below);
- steady pass: nothing to start (parallelism 50, 50 Jobs running) and nothing to write;
- a trial ended: its Job succeeded, the pass starts the next trial (study.ask with
  TPE over all finished trials, one Job created, the status written).

The restart table times the first pass of a restarted operator (a new Runtime: no
cached storage, no cached trials) over the ``--studyjobs`` StudyJobs, one after
another, against the same pass with Optuna's own first read of each study (the
baseline, in the same process; the operator reads a study's rows without Optuna's ORM).
The StudyJobs' own first passes, which post the events of the trials filled in, come
before; a timed pass has no news to post.

The API server (``--api``, see bench/_operator_api.py):

- ``kmock`` (default): kmock's emulator in a process of its own
  (tests/operator/emulator.py); quick.
- ``kube``: a real etcd + kube-apiserver (TLS, RBAC, admission, the chart's CRD); the
  passes run as the chart's ServiceAccount, the bench's own calls as the admin. No
  controller-manager: the bench ends a trial's Job itself, writing the status the Job
  controller would (its stand-in), and the running Jobs stay without pods.

PostgreSQL from $KUBETUNE_TEST_POSTGRES_URL (default: the local test server), in a
database the bench creates and drops.

    .venv/bin/python bench/operator_reconcile.py
    .venv/bin/python bench/operator_reconcile.py --finished 2000 --running 100
    .venv/bin/python bench/operator_reconcile.py --api kube
    .venv/bin/python bench/operator_reconcile.py --api kube --studyjobs 10 --running 5
"""

from __future__ import annotations

import argparse
import copy
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench._operator_api import NAMESPACE  # noqa: E402 - after the path

EPOCHS = 10


def _config(study: str, n_trials: int) -> dict[str, Any]:
    from tests.operator.conftest import DIGITS_CONFIG

    config = copy.deepcopy(DIGITS_CONFIG)
    config["data"]["path"] = "/data"
    config["training"]["num_epochs"] = EPOCHS
    config["search"].update(study_name=study, n_trials=n_trials)
    config["search"]["sampler"] = {"type": "TPESampler", "seed": 0}  # kubetune's defaults otherwise
    return config


def _studyjob(kube, name: str, config: dict, parallelism: int, suspend: bool) -> dict:
    path = f"/apis/kubetune.dev/v1alpha1/namespaces/{NAMESPACE}/studyjobs"
    kube.request("POST", path, body={
        "apiVersion": "kubetune.dev/v1alpha1", "kind": "StudyJob",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"config": config, "suspend": suspend,
                 # 10% of the filled trials failed: keep the StudyJob running regardless.
                 "trials": {"parallelism": parallelism, "maxFailed": 100_000}},
    })
    return kube.get_studyjob(NAMESPACE, name)


def _fill(storage_url: str, owner_body: dict, config: dict, finished: int, running: int, kube) -> None:
    """``finished`` ended trials (70% complete, 20% pruned, 10% failed) and ``running`` with
    Jobs that StudyJob ``owner_body`` owns (its uid: a pass sees only the Jobs it owns)."""
    import optuna
    from optuna.trial import TrialState, create_trial

    from kubetune.config import validate_config
    from kubetune.search.attributes import FAIL_REASON_ATTR, JOB_ATTR, OWNER_ATTR
    from kubetune.search.space import distributions
    from kubetune.search.storage import make_storage
    from kubetune_operator import names
    from kubetune_operator.builders import trial_job
    from kubetune_operator.spec import parse_spec

    name = owner_body["metadata"]["name"]
    owner = names.owner_key(NAMESPACE, name)
    storage = make_storage(storage_url, heartbeat=False)
    study = optuna.create_study(study_name=config["search"]["study_name"], storage=storage,
                                direction="maximize")
    dists = distributions(validate_config(config).search.search_space)
    rng = random.Random(0)
    trials = []
    for number in range(finished):
        params = {"optimizer.lr": 10 ** rng.uniform(-4, -0.6), "model.dropout": rng.uniform(0, 0.5)}
        roll = rng.random()
        state = TrialState.COMPLETE if roll < 0.7 else TrialState.PRUNED if roll < 0.9 else TrialState.FAIL
        epochs = EPOCHS if state == TrialState.COMPLETE else rng.randint(1, EPOCHS - 1)
        curve = {step: min(0.99, 0.3 + 0.06 * step + rng.uniform(-0.05, 0.05)) for step in range(1, epochs + 1)}
        attrs = {OWNER_ATTR: owner,
                 JOB_ATTR: names.trial_job_name(name, number)}
        if state == TrialState.FAIL:
            attrs[FAIL_REASON_ATTR] = "OOMKilled: the trial container exceeded its memory limit"
        trials.append(create_trial(
            state=state, params=params, distributions=dists, user_attrs=attrs,
            value=curve[epochs] if state == TrialState.COMPLETE else None,
            intermediate_values=curve))
    study.add_trials(trials)
    spec = parse_spec({"config": config}, name)
    for _ in range(running):
        study.enqueue_trial({}, user_attrs={OWNER_ATTR: owner})
        trial = study.ask(dists)
        job = trial_job(owner_body, spec, config["search"]["study_name"], trial.number, "bench-image")
        kube.create(job, NAMESPACE)
        trial.set_user_attr(JOB_ATTR, job["metadata"]["name"])


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


def _measure(api, storage_url: str, name: str, steady: int, launches: int) -> dict[str, float]:
    """Time the three kinds of pass on StudyJob ``name`` (as the operator's identity)."""
    import optuna

    from bench._operator_api import succeeded_status
    from kubetune_operator import names
    from kubetune_operator.reconcile import reconcile
    from kubetune_operator.runtime import Options, Runtime

    kube = api.admin
    rt = Runtime(api.operator_kube, Options(trial_image="bench-image"))
    body = kube.get_studyjob(NAMESPACE, name)
    jobs = len(kube.list_jobs(NAMESPACE, name))
    first = _timed(lambda: reconcile(rt, body))
    body = kube.get_studyjob(NAMESPACE, name)
    reconcile(rt, body)  # settles the status written by the first pass
    steady_times = [_timed(lambda: reconcile(rt, body)) for _ in range(steady)]
    after = len(kube.list_jobs(NAMESPACE, name))
    assert after == jobs, f"{name}: the first and steady passes made {after - jobs} Jobs (expected none)"
    if body["spec"].get("suspend"):
        kube.request("PATCH", f"/apis/kubetune.dev/v1alpha1/namespaces/{NAMESPACE}/studyjobs/{name}",
                     body={"spec": {"suspend": False}}, content_type="application/merge-patch+json")
        reconcile(rt, kube.get_studyjob(NAMESPACE, name))  # starts the first trial
    study = optuna.load_study(study_name=body["spec"]["config"]["search"]["study_name"], storage=storage_url)
    launch_times = []
    for _ in range(launches):
        running = [t for t in study.get_trials(deepcopy=False)
                   if t.state == optuna.trial.TrialState.RUNNING]
        trial = running[0]
        study.tell(trial.number, 0.9)
        kube.request("PATCH", f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs/"
                     f"{names.trial_job_name(name, trial.number)}/status",
                     body={"status": succeeded_status()}, content_type="application/merge-patch+json")
        body = kube.get_studyjob(NAMESPACE, name)
        launch_times.append(_timed(lambda: reconcile(rt, body)))  # noqa: B023 - called at once
    rt.pool.shutdown()
    return {"first": first, "steady": statistics.median(steady_times),
            "launch": statistics.median(launch_times)}


def _restarts(api, studyjobs: list[str], rounds: int) -> dict[str, float]:
    """Median ms of a restarted operator's first passes over ``studyjobs``, with Optuna's
    own first read of each study (``optuna``) and with the operator's (``kubetune``)."""
    from kubetune.search import outage
    from kubetune_operator import studies
    from kubetune_operator.reconcile import reconcile
    from kubetune_operator.runtime import Options, Runtime

    kube = api.admin
    preload, read = studies.preload_trials, outage.read_trials

    def optunas_read(storage, study_id, deepcopy, states):
        return storage.get_all_trials(study_id, deepcopy=deepcopy, states=states)

    times: dict[str, list[float]] = {"optuna": [], "kubetune": []}
    for _ in range(rounds):
        for mode in times:
            studies.preload_trials = preload if mode == "kubetune" else (lambda study: False)
            outage.read_trials = read if mode == "kubetune" else optunas_read
            rt = Runtime(api.operator_kube, Options(trial_image="bench-image"))
            bodies = [kube.get_studyjob(NAMESPACE, name) for name in studyjobs]
            start = time.perf_counter()
            for body in bodies:
                reconcile(rt, body)
            times[mode].append((time.perf_counter() - start) * 1000)
            rt.pool.shutdown()
            for storage in rt._storages.values():
                getattr(storage, "rdb", storage).engine.dispose()  # behind the outage-riding wrapper
    studies.preload_trials, outage.read_trials = preload, read
    return {mode: statistics.median(values) for mode, values in times.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--finished", type=int, default=1000, help="finished trials (default 1000)")
    parser.add_argument("--running", type=int, default=50, help="running trial Jobs (default 50)")
    parser.add_argument("--repeats", type=int, default=20, help="steady passes timed (default 20)")
    parser.add_argument("--launches", type=int, default=10, help="trial-ended passes timed (default 10)")
    parser.add_argument("--studyjobs", type=int, default=1,
                        help="StudyJobs of --finished + --running trials each, for the restart table (default 1)")
    parser.add_argument("--rounds", type=int, default=5, help="restarts timed per read (default 5)")
    from bench._operator_api import BenchApi, add_api_option

    add_api_option(parser)
    args = parser.parse_args()

    import optuna

    from tests.operator.harness import temporary_database

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp, temporary_database() as storage_url, \
            BenchApi(args.api, Path(tmp)) as api:
        kube = api.admin
        api.secret("kubetune-postgres", {"url": storage_url})
        total = args.finished + args.running + args.launches + 10
        big = _config("big", total)
        owner = _studyjob(kube, "big", big, args.running, suspend=False)
        start = time.perf_counter()
        _fill(storage_url, owner, big, args.finished, args.running, kube)
        print(f"filled: {args.finished} finished trials, {args.running} running Jobs "
              f"({time.perf_counter() - start:.0f} s), API {args.api}")
        extra = [f"big-{i}" for i in range(1, args.studyjobs)]
        for name in extra:
            config = _config(name, total)
            _fill(storage_url, _studyjob(kube, name, config, args.running, suspend=False), config,
                  args.finished, args.running, kube)
        _studyjob(kube, "empty", _config("empty", total), 1, suspend=True)
        empty = _measure(api, storage_url, "empty", args.repeats, args.launches)
        loaded = _measure(api, storage_url, "big", args.repeats, args.launches)
        _restarts(api, extra, 1)  # their own first passes (events of the filled trials) before the timing
        restart = _restarts(api, ["big", *extra], args.rounds)

    print(f"\none reconcile pass (median ms)              empty study   "
          f"{args.finished} finished + {args.running} running   ratio")
    rows = [("first pass of a new StudyJob (no status)", "first"),
            ("steady: nothing to start or write", "steady"),
            ("a trial ended: start the next one", "launch")]
    for label, key in rows:
        print(f"  {label:<40} {empty[key]:9.1f}   {loaded[key]:24.1f}   {loaded[key] / empty[key]:5.1f}x")
    print(f"\nfirst passes after a restart over {args.studyjobs} StudyJob(s) of {args.finished} finished + "
          f"{args.running} running (median of {args.rounds}, ms)")
    print(f"  Optuna's own first read (baseline)   {restart['optuna']:9.1f}")
    print(f"  kubetune's read                      {restart['kubetune']:9.1f}   "
          f"{restart['optuna'] / restart['kubetune']:5.1f}x faster")
    return 0


if __name__ == "__main__":
    sys.exit(main())
