"""What ``trial.report`` costs a user's script, on SQLite and PostgreSQL.

The script side of ``search.command``, in one process: the study is created as
ml-search creates it (successive halving, the default pruner), each trial is asked
as ml-search asks it, handed over through the environment, opened with
``kubetune.trial()`` and reports ``--epochs`` epochs; the trials' values fall
trial after trial, so the pruner stops the later ones. Printed per backend:

- SQL statements per report (every statement the engine sends: the round trips);
- milliseconds per report (writing the value, the tie-break loss, asking the pruner);
- milliseconds from a report to the pruning decision it ends with (the reports that
  raised ``kubetune.Pruned``), and how many there were;
- milliseconds of ``kubetune.trial()`` itself (opening the study and the trial).

    .venv/bin/python bench/script_report.py [--trials 8] [--epochs 20] [--postgres URL]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path

DEFAULT_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def _fresh_postgres(server: str) -> tuple[str, object]:
    import sqlalchemy

    name = f"bench_{uuid.uuid4().hex[:10]}"
    admin = sqlalchemy.create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    url = sqlalchemy.engine.make_url(server).set(database=name).render_as_string(hide_password=False)
    return url, (admin, name)


def _drop(handle: object) -> None:
    import sqlalchemy

    admin, name = handle  # type: ignore[misc]
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def measure(url: str, folder: Path, trials: int, epochs: int) -> dict[str, float]:
    """Run ``trials`` script trials of ``epochs`` reports against ``url``."""
    import sqlalchemy
    from optuna.trial import TrialState

    import kubetune
    from kubetune.config.loader import config_to_yaml, validate_config
    from kubetune.script import handover
    from kubetune.search.objective import suggest_params
    from kubetune.search.space import distributions
    from kubetune.search.study import start_study

    config = validate_config({
        "data": {"path": str(folder)}, "training": {"num_epochs": epochs},
        "logging": {"output_dir": str(folder / "runs")},
        "search": {"study_name": "bench", "storage": url, "n_trials": trials, "command": ["true"],
                   "enqueue_config": False, "sampler": {"type": "RandomSampler", "seed": 0},
                   "search_space": {"optimizer.lr": {"type": "loguniform", "low": 1e-3, "high": 0.1}}},
    })
    config_file = folder / "config.yaml"
    config_file.write_text(config_to_yaml(config))
    study = start_study(config, url, "bench", resume=False, n_trials=trials).study
    statements = 0

    def count(*_: object) -> None:
        nonlocal statements
        statements += 1

    sqlalchemy.event.listen(sqlalchemy.engine.Engine, "before_cursor_execute", count)
    opens, reports, decisions, per_report = [], [], [], []
    try:
        for k in range(trials):
            trial = study.ask()
            suggest_params(trial, distributions(config.search.search_space))  # type: ignore[union-attr]
            trial.set_user_attr("trial_steps", epochs)
            os.environ.update({handover.STORAGE_ENV: url, handover.STUDY_ENV: "bench",
                               handover.TRIAL_NUMBER_ENV: str(trial.number),
                               handover.CONFIG_ENV: str(config_file),
                               handover.TRIAL_DIR_ENV: str(folder / f"trial-{trial.number}")})
            start = time.perf_counter()
            script_trial = kubetune.trial()
            opens.append(time.perf_counter() - start)
            for epoch in range(1, epochs + 1):
                before, start = statements, time.perf_counter()
                try:
                    script_trial.report(epoch, {"val_acc": 0.9 - 0.05 * k + 0.001 * epoch, "val_loss": 1.0})
                except kubetune.Pruned:
                    decisions.append(time.perf_counter() - start)
                    study.tell(trial, state=TrialState.PRUNED)
                    break
                reports.append(time.perf_counter() - start)
                per_report.append(statements - before)
            else:
                study.tell(trial, script_trial.final)
    finally:
        sqlalchemy.event.remove(sqlalchemy.engine.Engine, "before_cursor_execute", count)
        for name in (handover.STORAGE_ENV, handover.STUDY_ENV, handover.TRIAL_NUMBER_ENV,
                     handover.CONFIG_ENV, handover.TRIAL_DIR_ENV):
            os.environ.pop(name, None)
    return {
        "statements": statistics.fmean(per_report),
        "report_ms": 1000 * statistics.median(reports),
        "decision_ms": 1000 * statistics.median(decisions) if decisions else float("nan"),
        "pruned": len(decisions),
        "open_ms": 1000 * statistics.median(opens),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--postgres", default=os.environ.get("KUBETUNE_TEST_POSTGRES_URL", DEFAULT_POSTGRES))
    args = parser.parse_args(argv)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    print(f"{args.trials} trials x {args.epochs} epochs, successive halving")
    print(f"{'storage':<11}{'SQL/report':>11}{'ms/report':>11}{'ms report->pruned':>19}{'pruned':>8}{'ms trial()':>12}")
    with tempfile.TemporaryDirectory() as tmp:
        rows = [("sqlite", f"sqlite:///{tmp}/bench.db", None)]
        url, handle = _fresh_postgres(args.postgres)
        rows.append(("postgresql", url, handle))
        for name, url, handle in rows:
            folder = Path(tmp) / name
            folder.mkdir()
            try:
                r = measure(url, folder, args.trials, args.epochs)
            finally:
                if handle is not None:
                    _drop(handle)
            print(f"{name:<11}{r['statements']:>11.1f}{r['report_ms']:>11.2f}{r['decision_ms']:>19.2f}"
                  f"{r['pruned']:>8}{r['open_ms']:>12.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
