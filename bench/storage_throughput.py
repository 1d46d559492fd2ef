"""Storage cost per trial: trials/s through ask/tell, PostgreSQL vs SQLite, 1/2/4 processes.

The objective is empty, so what is measured is the storage (and a RandomSampler,
which costs next to nothing). Two paths per backend:

- ``ask/tell``: plain ``study.ask(distributions)`` then ``study.tell(trial, 0.0)``;
- ``kubetune``: what an ml-search worker adds per trial: the study lock, stale-trial
  check and budget count before the ask (see ``kubetune.search.worker``).

Every measurement runs on a fresh database and a fixed total of trials split over
the processes, so the study sizes match.

    .venv/bin/python bench/storage_throughput.py [--trials 200] [--postgres URL]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import tempfile
import time
import uuid
import warnings
from pathlib import Path

DEFAULT_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def _worker(url: str, study_name: str, n: int, path: str, ready, start, done_queue) -> None:
    import optuna

    from kubetune.search.ledger import budget
    from kubetune.search.locking import StudyLock
    from kubetune.search.storage import make_storage

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.simplefilter("ignore")
    storage = make_storage(url, heartbeat=path == "kubetune")
    study = optuna.load_study(study_name=study_name, storage=storage,
                              sampler=optuna.samplers.RandomSampler())
    dists = {"x": optuna.distributions.FloatDistribution(0, 1),
             "y": optuna.distributions.CategoricalDistribution([16, 32, 64])}
    lock = StudyLock(url, study_name) if path == "kubetune" else None
    ready.put(os.getpid())
    start.wait()
    for _ in range(n):
        if lock is not None:
            with lock:
                optuna.storages.fail_stale_trials(study)
                budget(study)
                trial = study.ask(dists)
        else:
            trial = study.ask(dists)
        study.tell(trial, 0.0)
    if lock is not None:
        lock.close()
    done_queue.put(time.perf_counter())


def measure(url: str, processes: int, total: int, path: str) -> float:
    import optuna

    from kubetune.search.storage import make_storage

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    name = f"bench-{uuid.uuid4().hex[:8]}"
    optuna.create_study(study_name=name, storage=make_storage(url, heartbeat=False))
    ctx = multiprocessing.get_context("spawn")
    ready, start, queue = ctx.Queue(), ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(url, name, total // processes, path, ready, start, queue))
             for _ in range(processes)]
    for proc in procs:
        proc.start()
    for _ in procs:  # every process imported and connected before the clock starts
        ready.get(timeout=600)
    began = time.perf_counter()
    start.set()
    ends = [queue.get(timeout=600) for _ in procs]
    for proc in procs:
        proc.join()
    return (total // processes) * processes / (max(ends) - began)


class _Postgres:
    """A fresh database per measurement on the server of ``url``."""

    def __init__(self, url: str) -> None:
        import sqlalchemy

        self.admin = sqlalchemy.create_engine(url, isolation_level="AUTOCOMMIT")
        self.base = sqlalchemy.engine.make_url(url)

    def __enter__(self) -> str:
        import sqlalchemy

        self.name = f"ktbench_{uuid.uuid4().hex[:10]}"
        with self.admin.connect() as conn:
            conn.execute(sqlalchemy.text(f'CREATE DATABASE "{self.name}"'))
        return self.base.set(database=self.name).render_as_string(hide_password=False)

    def __exit__(self, *exc) -> None:
        import sqlalchemy

        with self.admin.connect() as conn:
            conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=200, help="trials per measurement (default 200)")
    parser.add_argument("--processes", default="1,2,4")
    parser.add_argument("--postgres", default=os.environ.get("KUBETUNE_TEST_POSTGRES_URL", DEFAULT_POSTGRES))
    parser.add_argument("--paths", default="ask/tell,kubetune")
    args = parser.parse_args(argv)
    counts = [int(n) for n in args.processes.split(",")]
    print(f"{args.trials} trials per cell, empty objective, RandomSampler; cpu cores: {os.cpu_count()}")
    print(f"{'backend':<11} {'path':<9} " + " ".join(f"{f'{n} proc':>9}" for n in counts) + "   (trials/s)")
    rows = {}
    for backend in ("sqlite", "postgresql"):
        for path in args.paths.split(","):
            rates = []
            for n in counts:
                if backend == "sqlite":
                    with tempfile.TemporaryDirectory() as tmp:
                        rates.append(measure(f"sqlite:///{Path(tmp) / 'bench.db'}", n, args.trials, path))
                else:
                    with _Postgres(args.postgres) as url:
                        rates.append(measure(url, n, args.trials, path))
            rows[(backend, path)] = rates
            print(f"{backend:<11} {path:<9} " + " ".join(f"{r:>9.1f}" for r in rates), flush=True)
    for path in args.paths.split(","):
        pg, lite = rows[("postgresql", path)], rows[("sqlite", path)]
        ratios = ", ".join(f"{n} proc {p / s:.2f}x" for n, p, s in zip(counts, pg, lite, strict=True))
        print(f"postgresql/sqlite ({path}): {ratios}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
