"""Search efficiency: kubetune's default sampler + pruner vs RandomSampler without pruning.

Digits is too easy at full size, so every trial trains the small CNN on a
stratified 20% subset of the training split (the validation split is the usual
one), 10 epochs per trial, until an epoch budget of 300 is spent (a pruned
trial costs the epochs it ran). Each method runs with its own independent
sampler seeds. Printed: mean best val_acc after 100/200/300 epochs and the
ratio of epochs needed to first reach val_acc >= 0.92 (ratio of the medians, of
the means, and the median over all kubetune x random seed pairs).

kubetune runs as ``ml-search`` does by default: the config's own point (sgd,
lr 0.01, momentum 0.9, batch 32, step 5) is its first trial. ``--no-enqueue-config``
measures the sampler and pruner alone; the bench then also prints how often one
uniformly drawn trial reaches the target, which bounds what any sampler can do
before it has seen a result.

    .venv/bin/python bench/search_efficiency.py                 # 16 seeds per method
    .venv/bin/python bench/search_efficiency.py --quick         # 6 seeds, a first look
    .venv/bin/python bench/search_efficiency.py --seeds 24 --workers 2
    .venv/bin/python bench/search_efficiency.py --no-enqueue-config   # sampler + pruner alone

Trials train in-process through ``kubetune.training.train(..., data=...)`` on
tensors normalised once; results are cached per run in ``--cache`` so an
interrupted bench continues where it stopped. The ``--tpe-*``/``--pruner-*``
flags try other defaults (how kubetune's were chosen).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import multiprocessing
import statistics
import sys
import tempfile
import time
from pathlib import Path

BUDGET = 300
EPOCHS = 10
TARGET = 0.92
SPACE = {
    "optimizer.lr": {"type": "loguniform", "low": 1e-5, "high": 1e-1},
    "training.batch_size": {"type": "categorical", "choices": [16, 32, 64]},
    "optimizer.momentum": {"type": "uniform", "low": 0.8, "high": 0.99},
    "scheduler.step_size": {"type": "int", "low": 5, "high": 15},
}

_STATE: dict = {}


class _BudgetSpent(Exception):
    pass


def _base_config(data_path: str, variant: dict):
    from kubetune.config import validate_config

    sampler = {"type": "TPESampler"}
    pruner = {"type": "MedianPruner"}
    for key in ("n_startup_trials", "multivariate"):
        if variant.get(f"tpe_{key}") is not None:
            sampler[key] = variant[f"tpe_{key}"]
    for key in ("n_startup_trials", "n_warmup_steps"):
        if variant.get(f"pruner_{key}") is not None:
            pruner[key] = variant[f"pruner_{key}"]
    return validate_config({
        "model": {"architecture": "small_cnn", "dropout": 0.1},
        "data": {"path": data_path, "image_size": 8, "channels": 1, "train_fraction": 0.2,
                 "normalize": {"mean": [0.3], "std": [0.37]}},
        "training": {"num_epochs": EPOCHS, "batch_size": 32, "seed": 0, "device": "cpu"},
        "optimizer": {"type": "sgd", "lr": 0.01, "momentum": 0.9},
        "scheduler": {"type": "step", "step_size": 5, "gamma": 0.1},
        "logging": {"output_dir": tempfile.gettempdir()},
        "search": {"study_name": "bench", "sampler": sampler, "pruner": pruner,
                   "search_space": SPACE},
    })


def _init_worker(data_path: str, variant: dict, enqueue_config: bool) -> None:
    import torch

    from kubetune.data.datasets import DataSplits, ImageTensorDataset, load_splits

    torch.set_num_threads(1)
    config = _base_config(data_path, variant)
    splits = load_splits(config.data, config.training.seed)

    def normalised(ds):  # the transforms once, not per item and epoch
        images = torch.stack([ds.transform(ds.images[i]) for i in range(len(ds))])
        return ImageTensorDataset(images, ds.targets)

    data = DataSplits(normalised(splits.train), normalised(splits.val), splits.classes, splits.channels)
    _STATE.update(config=config, data=data, enqueue_config=enqueue_config)


def run_search(method: str, seed: int) -> dict:
    """One seeded search: best val_acc so far after each of the BUDGET epochs, and its trials."""
    import optuna

    from kubetune.config import with_overrides
    from kubetune.search.checks import initial_points
    from kubetune.search.objective import EpochReporter, suggest_params
    from kubetune.search.pruners import build_pruner
    from kubetune.search.samplers import build_sampler
    from kubetune.search.space import distributions
    from kubetune.training import train

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    config, data = _STATE["config"], _STATE["data"]
    search = config.search.model_copy(deep=True)
    search.sampler.seed = seed
    if method == "kubetune":
        sampler, pruner = build_sampler(search), build_pruner(search)
    else:
        sampler, pruner = optuna.samplers.RandomSampler(seed=seed), optuna.pruners.NopPruner()
    study = optuna.create_study(direction="maximize", sampler=sampler, pruner=pruner)
    dists = distributions(search.search_space)
    base = config.model_copy(update={"search": None})
    timeline: list[float] = []
    trials: list[dict] = []
    best = 0.0
    if method == "kubetune" and _STATE["enqueue_config"]:
        for point in initial_points(config):
            study.enqueue_trial(point)
    while len(timeline) < BUDGET:
        trial = study.ask()
        params = suggest_params(trial, dists)
        reporter = EpochReporter(trial, "val_acc", True, statistics.fmean, [], 0, 1, EPOCHS)
        curve: list[float] = []
        trials.append({"params": params, "val_acc": curve})

        def callback(epoch: int, metrics: dict, reporter=reporter, curve=curve) -> None:
            nonlocal best
            best = max(best, metrics["val_acc"])
            curve.append(metrics["val_acc"])
            timeline.append(best)
            if len(timeline) >= BUDGET:
                raise _BudgetSpent
            reporter(epoch, metrics)

        with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stderr(io.StringIO()):
            try:
                result = train(with_overrides(base, params), data=data, run_dir=Path(tmp),
                               callback=callback, progress=False)
                study.tell(trial, result.best["val_acc"])
            except optuna.TrialPruned:
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            except _BudgetSpent:
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
            except Exception:  # a diverged trial costs its epochs and ends FAIL, as in ml-search
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
        trials[-1]["state"] = study.trials[-1].state.name
    return {"timeline": timeline[:BUDGET], "trials": trials}


def _task(job: tuple[str, int]) -> tuple[str, int, dict, float]:
    method, seed = job
    start = time.time()
    return method, seed, run_search(method, seed), time.time() - start


def epochs_to(timeline: list[float], target: float = TARGET) -> float:
    for i, value in enumerate(timeline):
        if value >= target:
            return i + 1
    return math.inf


def _summary(results: dict[str, list[list[float]]]) -> None:
    print(f"\nmean best val_acc after N epochs; epochs to first reach val_acc >= {TARGET}")
    print(f"{'method':<10} {'seeds':>5} {'@100':>7} {'@200':>7} {'@300':>7} "
          f"{'median':>7} {'mean':>7} {'worst':>6} {'not reached':>12}")
    medians, means = {}, {}
    for method, timelines in results.items():
        at = [statistics.fmean(t[n - 1] for t in timelines) for n in (100, 200, 300)]
        reach = [epochs_to(t) for t in timelines]
        medians[method] = statistics.median(reach)
        means[method] = statistics.fmean(reach)
        print(f"{method:<10} {len(timelines):>5} {at[0]:>7.4f} {at[1]:>7.4f} {at[2]:>7.4f} "
              f"{medians[method]:>7} {means[method]:>7.1f} {max(reach):>6} "
              f"{sum(math.isinf(r) for r in reach):>12}")
    k, r = results.get("kubetune", []), results.get("random", [])
    if k and r:
        # Seeds are independent per method, so every kubetune run is set against every
        # random run (a pairing by seed number would be arbitrary).
        pairs = [epochs_to(a) / epochs_to(b) for a in k for b in r
                 if not (math.isinf(epochs_to(a)) and math.isinf(epochs_to(b)))]
        print(f"\nepochs to val_acc>={TARGET}, kubetune/random: ratio of medians "
              f"{medians['kubetune'] / medians['random']:.2f}x, ratio of means "
              f"{means['kubetune'] / means['random']:.2f}x, median over all seed pairs "
              f"{statistics.median(pairs):.2f}x")


def _first_trial_bound(runs: list[dict]) -> None:
    """How often one uniformly drawn trial reaches the target within E epochs."""
    curves = [t["val_acc"] for run in runs for t in run["trials"] if len(t["val_acc"]) == EPOCHS]
    if not curves:
        return
    reach = [epochs_to(c) for c in curves]
    shares = ", ".join(f"<={e}: {sum(x <= e for x in reach) / len(reach):.0%}" for e in (4, 6, 8, 10))
    print(f"\none random trial reaches val_acc>={TARGET} within E epochs ({len(curves)} full trials): "
          f"{shares}.\nBelow 50% at E=8, no sampler that starts without a known-good point "
          "can reach the target in a median of 8 epochs: its first trial is drawn like these.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=16, help="seeds per method (default 16)")
    parser.add_argument("--quick", action="store_true", help="6 seeds per method")
    parser.add_argument("--workers", type=int, default=1, help="parallel processes")
    parser.add_argument("--data", help="digits ImageFolder (default: written to the cache)")
    parser.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "kubetune-bench" / "search_efficiency"),
                        help="per-run results, reused by later calls")
    parser.add_argument("--methods", default="kubetune,random")
    parser.add_argument("--enqueue-config", action=argparse.BooleanOptionalAction, default=True,
                        help="kubetune's first trial is the config's own point, as in ml-search (default: on)")
    parser.add_argument("--tpe-n-startup-trials", type=int)
    parser.add_argument("--tpe-multivariate", type=int, choices=(0, 1))
    parser.add_argument("--pruner-n-startup-trials", type=int)
    parser.add_argument("--pruner-n-warmup-steps", type=int)
    args = parser.parse_args(argv)
    seeds = 6 if args.quick else args.seeds
    variant = {
        "tpe_n_startup_trials": args.tpe_n_startup_trials,
        "tpe_multivariate": None if args.tpe_multivariate is None else bool(args.tpe_multivariate),
        "pruner_n_startup_trials": args.pruner_n_startup_trials,
        "pruner_n_warmup_steps": args.pruner_n_warmup_steps,
    }
    from kubetune.search.pruners import MEDIAN_STARTUP_TRIALS, MEDIAN_WARMUP_STEPS
    from kubetune.search.samplers import TPE_MULTIVARIATE, TPE_STARTUP_TRIALS

    effective = {
        "tpe_n_startup_trials": TPE_STARTUP_TRIALS, "tpe_multivariate": TPE_MULTIVARIATE,
        "pruner_n_startup_trials": MEDIAN_STARTUP_TRIALS, "pruner_n_warmup_steps": MEDIAN_WARMUP_STEPS,
    }
    effective.update({k: v for k, v in variant.items() if v is not None})
    tag = ("enq-" if args.enqueue_config else "") + (
        "tpe{tpe_n_startup_trials}-mv{tpe_multivariate:d}-prune{pruner_n_startup_trials}"
        "-warm{pruner_n_warmup_steps}").format(**effective)
    print(f"kubetune defaults under test: {effective}, enqueue_config={args.enqueue_config}", flush=True)
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    data_path = args.data
    if data_path is None:
        data_path = str(cache / "digits")
        if not Path(data_path).is_dir():
            from kubetune.data.sample import write_digits

            write_digits(Path(data_path))

    def cache_file(method: str, seed: int) -> Path:
        name = f"kubetune-{tag}" if method == "kubetune" else "random"
        return cache / f"{name}-seed{seed}.json"

    # Independent seeds per method: kubetune 0.., random 1000..
    jobs = [(m, s + (1000 if m == "random" else 0)) for m in args.methods.split(",") for s in range(seeds)]
    todo = [job for job in jobs if not cache_file(*job).exists()]
    print(f"{len(jobs) - len(todo)} runs cached, {len(todo)} to run", flush=True)
    if todo:
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(args.workers, initializer=_init_worker, initargs=(data_path, variant, args.enqueue_config)) as pool:
            for method, seed, run, seconds in pool.imap_unordered(_task, todo):
                cache_file(method, seed).write_text(json.dumps(run))
                timeline = run["timeline"]
                print(f"  {method} seed {seed}: best {timeline[-1]:.4f}, "
                      f"{TARGET} after {epochs_to(timeline)} epochs ({seconds:.0f}s)", flush=True)
    results: dict[str, list[list[float]]] = {}
    random_runs = []
    for method, seed in jobs:
        run = json.loads(cache_file(method, seed).read_text())
        results.setdefault(method, []).append(run["timeline"])
        if method == "random":
            random_runs.append(run)
    _summary(results)
    if not args.enqueue_config:
        _first_trial_bound(random_runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
