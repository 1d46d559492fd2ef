"""Storage cost per trial: trials/s through ask/tell, PostgreSQL vs SQLite, 1/2/4 processes.

The objective is empty, so what is measured is the storage (and a RandomSampler,
which costs next to nothing). Two paths per backend:

- ``ask/tell``: plain ``study.ask(distributions)`` then ``study.tell(trial, 0.0)``;
- ``kubetune``: what an ml-search worker adds per trial: the study lock, stale-trial
  check and budget count before the ask (see ``kubetune.search.worker``).

Every measurement runs on a fresh database and a fixed total of trials split over
the processes, so the study sizes match.

    .venv/bin/python bench/storage_throughput.py [--trials 200] [--postgres URL]

``--round-trips`` compares, on PostgreSQL, a whole ml-search trial against plain
Optuna doing the same work: 4 params, 10 steps of report and should_prune, a tell,
a RandomSampler and a MedianPruner. The ml-search side is the real worker
(``run_worker``: lock, stale-trial check, budget, ``TrialTrainer.objective`` with its
attributes and epoch reporter), with training replaced by 10 empty epochs. Both sides
draw the same params (RandomSampler seeded per process as ml-search seeds its workers),
so they prune alike; each cell runs on a database of its own. It prints
transactions per trial (the database's own count, ``pg_stat_database.xact_commit`` plus
``xact_rollback``: every transaction, reads included, however it ends), milliseconds of a process per trial, trials/s, and the
ratios against plain Optuna. Both sides are timed from opening the storage (ml-search's
worker opens it, takes its sampler session and waits for the others' last trials).

    .venv/bin/python bench/storage_throughput.py --round-trips [--trials 160] [--processes 1,4,16] [--repeats 3]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
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


STEPS = 10
SEED = 7  # both sides draw the same params, so they prune alike and run the same steps
SPACE = {
    "optimizer.lr": {"type": "loguniform", "low": 1e-4, "high": 1e-1},
    "optimizer.momentum": {"type": "uniform", "low": 0.5, "high": 0.99},
    "training.batch_size": {"type": "categorical", "choices": [16, 32, 64]},
    "scheduler.step_size": {"type": "int", "low": 2, "high": 8},
}


def _search_config(study_name: str, total: int):
    from kubetune.config import validate_config

    return validate_config({
        "model": {"architecture": "small_cnn"},
        "data": {"path": "unused", "image_size": 8, "channels": 1},
        "training": {"num_epochs": STEPS, "batch_size": 32, "device": "cpu"},
        "optimizer": {"type": "sgd", "lr": 0.01, "momentum": 0.9},
        "scheduler": {"type": "step", "step_size": 5},
        "logging": {"output_dir": tempfile.mkdtemp(prefix="ktbench-")},
        "search": {"study_name": study_name, "n_trials": total, "storage": "unused",
                   "sampler": {"type": "RandomSampler", "seed": SEED},
                   "pruner": {"type": "MedianPruner", "n_startup_trials": 3, "n_warmup_steps": 2},
                   "search_space": SPACE},
    })


def _fake_train(config, *, callback, **_):
    """Ten empty epochs through the real epoch callback (report, tie-break, prune)."""
    from kubetune.training.runner import TrainResult

    history = []
    for epoch in range(1, STEPS + 1):
        metrics = {"val_acc": 0.5 + 0.04 * epoch * config.optimizer.lr, "val_loss": 1.0 / epoch,
                   "train_loss": 1.0, "train_acc": 0.5, "lr": config.optimizer.lr}
        history.append({"epoch": epoch, **metrics})
        callback(epoch, metrics)
    return TrainResult(Path("."), history, history[-1])


def _round_trip_worker(url: str, study_name: str, path: str, share: int, total: int, session: int,
                       ready, start, done) -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.simplefilter("ignore")
    if path == "ml-search":
        import kubetune.training
        from kubetune.search.objective import TrialTrainer
        from kubetune.search.worker import run_worker

        kubetune.training.train = _fake_train  # type: ignore[assignment]
        TrialTrainer._splits = lambda self, cfg: None  # type: ignore[assignment,method-assign,return-value]
        config = _search_config(study_name, total)
        trainer = TrialTrainer(config, study_name, quiet_epochs=True)
        ready.put(os.getpid())
        start.wait()
        began = time.perf_counter()
        result = run_worker(config, url, study_name, progress=False, trainer=trainer)
        done.put((time.perf_counter() - began, result.trials))
        return
    from kubetune.search.samplers import session_seed
    from kubetune.search.space import distributions

    dists = distributions(_search_config(study_name, total).search.search_space)  # type: ignore[union-attr]
    ready.put(os.getpid())
    start.wait()
    began = time.perf_counter()  # from opening the storage, as run_worker's time is
    # Seeded as ml-search seeds its sampler sessions, one per process.
    study = optuna.load_study(study_name=study_name, storage=optuna.storages.RDBStorage(url),
                              sampler=optuna.samplers.RandomSampler(seed=session_seed(SEED, session)),
                              pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=2))
    for _ in range(share):
        trial = study.ask(dists)
        value, state = 0.0, optuna.trial.TrialState.COMPLETE
        for step in range(1, STEPS + 1):
            value = 0.5 + 0.04 * step * trial.params["optimizer.lr"]
            trial.report(value, step)
            if trial.should_prune():
                state = optuna.trial.TrialState.PRUNED
                break
        study.tell(trial, value if state == optuna.trial.TrialState.COMPLETE else None, state=state)
    done.put((time.perf_counter() - began, share))


def _transactions(admin, database: str) -> int:
    """Every transaction so far: a read that ends in ROLLBACK is as much a round trip as a COMMIT."""
    import sqlalchemy

    with admin.connect() as conn:
        conn.execute(sqlalchemy.text("SELECT pg_stat_force_next_flush()"))
        return int(conn.execute(sqlalchemy.text(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = :d"),
            {"d": database}).scalar_one())


def measure_round_trips(server: _Postgres, processes: int, total: int,
                        path: str) -> tuple[float, float, float, float]:
    """(transactions per trial, ms of a process per trial, trials/s, steps reported per trial)
    on a fresh database."""
    import optuna

    from kubetune.search.attributes import TARGET_ATTR

    with server as url:
        name = f"bench-{uuid.uuid4().hex[:8]}"
        study = optuna.create_study(study_name=name, storage=url, direction="maximize")
        study.set_user_attr(TARGET_ATTR, total)
        ctx = multiprocessing.get_context("spawn")
        ready, start, done = ctx.Queue(), ctx.Event(), ctx.Queue()
        share = total // processes
        procs = [ctx.Process(target=_round_trip_worker, args=(url, name, path, share, total, i, ready, start, done))
                 for i in range(processes)]
        for proc in procs:
            proc.start()
        for _ in procs:
            ready.get(timeout=600)
        time.sleep(1.5)  # the statistics of the connections made so far are flushed
        before = _transactions(server.admin, server.name)
        began = time.perf_counter()
        start.set()
        results = [done.get(timeout=1200) for _ in procs]
        wall = time.perf_counter() - began
        for proc in procs:
            proc.join()
        time.sleep(1.5)  # closed connections flush their counts
        xacts = _transactions(server.admin, server.name) - before
        trials = sum(n for _, n in results)
        busy = sum(seconds for seconds, _ in results)
        steps = sum(len(t.intermediate_values) for t in study.get_trials(deepcopy=False))
        return xacts / trials, 1000 * busy / trials, trials / wall, steps / trials


def round_trips(args: argparse.Namespace) -> int:
    counts = [int(n) for n in args.processes.split(",")]
    server = _Postgres(args.postgres)
    print(f"PostgreSQL, {args.trials} trials per cell, 4 params, {STEPS} report/prune steps, RandomSampler, "
          f"MedianPruner; {args.repeats} runs per cell, the sides alternating, medians shown; "
          f"cpu cores: {os.cpu_count()}")
    # steps/trial: the reports a trial made before it ended or was pruned; the sides' xacts
    # compare best where these match (with several processes, which trials get pruned varies).
    print(f"{'processes':>9} {'path':<10} {'xacts/trial':>13} {'ms/trial':>9} {'trials/s':>9} {'steps/trial':>11}")
    for n in counts:
        runs: dict[str, list[tuple[float, float, float, float]]] = {"optuna": [], "ml-search": []}
        for run in range(args.repeats):
            for path in ("optuna", "ml-search") if run % 2 == 0 else ("ml-search", "optuna"):
                runs[path].append(measure_round_trips(server, n, args.trials, path))
        rows = {path: tuple(statistics.median(column) for column in zip(*cells, strict=True))
                for path, cells in runs.items()}
        for path, (xacts, ms, rate, steps) in rows.items():
            print(f"{n:>9} {path:<10} {xacts:>13.1f} {ms:>9.1f} {rate:>9.1f} {steps:>11.1f}", flush=True)
        (c0, m0, r0, _), (c1, m1, r1, _) = rows["optuna"], rows["ml-search"]
        # Each run's trials/s against the other side's run beside it: the spread of the ratio.
        paired = sorted(a[2] / b[2] for a, b in zip(runs["ml-search"], runs["optuna"], strict=True))
        print(f"{n:>9} {'ratio':<10} {c1 / c0:>12.2f}x {m1 / m0:>8.2f}x {r1 / r0:>8.2f}x  (ml-search / optuna; "
              f"trials/s run by run {paired[0]:.2f}x-{paired[-1]:.2f}x)", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=200, help="trials per measurement (default 200)")
    parser.add_argument("--processes", default="1,2,4")
    parser.add_argument("--postgres", default=os.environ.get("KUBETUNE_TEST_POSTGRES_URL", DEFAULT_POSTGRES))
    parser.add_argument("--paths", default="ask/tell,kubetune")
    parser.add_argument("--repeats", type=int, default=3, help="runs per --round-trips cell (default 3)")
    parser.add_argument("--round-trips", action="store_true",
                        help="ml-search's whole trial against plain Optuna on PostgreSQL (default --processes 1,4,16)")
    args = parser.parse_args(argv)
    if args.round_trips:
        if args.processes == "1,2,4":
            args.processes = "1,4,16"
        return round_trips(args)
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
