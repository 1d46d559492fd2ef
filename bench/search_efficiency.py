"""Search efficiency: the anytime picture of kubetune's search defaults against plain Optuna 5.

Five methods, each with its own independent sampler seeds (16 by default), search
the same space on problems where tuning is hard, until an epoch budget is spent
(a pruned or diverged trial costs the epochs it ran; a trial's value is its best
epoch). For every method the bench prints the mean best val_acc after 50, 100,
200 and 300 epochs, how many seeds reach each of three thresholds, and the median
epochs to the first threshold:

- ``kubetune``       kubetune's defaults as ``ml-search`` runs them: the config's own
                     point is the first trial (``enqueue_config``, on by default)
- ``kubetune-cold``  kubetune's defaults from a random first trial
- ``optuna``         plain Optuna 5: ``TPESampler()`` + ``MedianPruner(5, 2)``, given the
                     same first point (the baseline a user would otherwise write)
- ``optuna-cold``    the same without it
- ``random``         ``RandomSampler()`` without pruning

Then it checks the targets: ``kubetune`` is at least ``optuna`` at every checkpoint
and threshold, and reaches the first threshold in at most half the median epochs of
``random``. Each difference of means is printed with its standard error (seeds are
independent), so a reader can tell a lead from seed noise; the ratio of median
epochs, with how far it moves when each method's seeds are drawn again (bootstrap).
That ratio is the noisiest figure here: random search's seeds reach the first
threshold in clusters (one good trial early, or none for many trials), and with 32
seeds its median can fall in the gap between two clusters.

The problems (``--problems``), digits at 8x8 with the default 20% validation split:

- ``digits20``  a 20% stratified subset of the training split (287 images), 10
                epochs per trial, thresholds 0.92 / 0.95 / 0.97
- ``digits10``  a 10% subset (143 images), 5 epochs per trial: fewer images, shorter
                trials, so a warm-up that suits 10 epochs is tested on 5; thresholds
                0.68 / 0.73 / 0.77
- ``digits30``  a 30% subset (431 images), 20 epochs per trial: longer trials, so only
                15 fit in the budget unpruned; thresholds 0.93 / 0.96 / 0.975
- ``digits40``  a 40% subset (575 images), 16 epochs per trial, the learning rate x0.1
                every 4 epochs instead of 5; thresholds 0.96 / 0.97 / 0.98
- ``digits15``  a 15% subset (215 images), 8 epochs per trial, the rate x0.1 every 3;
                thresholds 0.80 / 0.85 / 0.90
- ``noisy20``   digits20 with a fifth of its training labels replaced by another
                class (the same ones for every trial; validation stays clean), so
                the best epoch comes before the end and regularisation matters;
                thresholds 0.88 / 0.90 / 0.92

The thresholds come from random search alone: the best val_acc its seeds reach by 300
epochs in about 7/8, 2/3 and 1/5 of them, rounded down. Which problems each default
was chosen on, which are held out, and every figure: docs/benchmarks.md.

Space: lr log-uniform 1e-5..1e-1, batch size {16, 32, 64}, momentum 0.8..0.99,
weight decay log-uniform 1e-6..1e-2, dropout 0..0.5; SGD with the config's default
step schedule (x0.1 every 5 epochs; every 4 on digits40, 3 on digits15). Every trial
carries its length and the epoch its rate first drops, and reports its val_loss beside
its val_acc, as ``ml-search``'s objective does (successive halving ranks trials tied
on val_acc by their val_loss; Optuna's own pruners ignore all three). The config's point: lr 0.05, batch 32,
momentum 0.9, weight decay 1e-4, dropout 0.2.

How it stays affordable on two CPU cores, and what that changes:

- Trials train in-process with the bench's own loop on tensors normalised once
  (no DataLoader, TensorBoard or checkpoints), one thread per process, seeds in
  parallel with ``--workers``. The network is kubetune's ``small_cnn`` at a quarter
  of its width (8/16/32 channels): the same three conv blocks, BatchNorm, pooling and
  dropout, 16x fewer multiply-adds. The search problem is this network's, not
  ``small_cnn``'s.
- **Trial curves are cached.** Every trial trains with the config's seed, as in
  ``ml-search``, and on the CPU with one thread the same params give the same
  curve bit for bit, so a trial whose params were trained before (the enqueued
  point, or a re-run) replays that curve instead of training again. Every method
  gets the curve it would have trained; only the wall clock changes.
- Finished searches are cached per method, seed and ``--tag`` in ``--cache``, so
  an interrupted bench continues where it stopped.

    .venv/bin/python bench/search_efficiency.py --workers 2              # 16 seeds, all problems
    .venv/bin/python bench/search_efficiency.py --seeds 4 --problems digits20
    .venv/bin/python bench/search_efficiency.py --workers 2 --seeds 96 --problems digits20,digits15 \
        --methods kubetune,optuna,random                                    # the ratio, with less noise
    .venv/bin/python bench/search_efficiency.py --kubetune-from levers:median_half --tag half

``--kubetune-from MODULE:FUNCTION`` tries other defaults (how kubetune's were
chosen): the function takes the seed and returns ``(sampler, pruner)``; the module
is imported from the working folder.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import math
import multiprocessing
import os
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

CHECKPOINTS = (50, 100, 200, 300)
TRAIN_SEED = 0  # the config's training.seed: every trial trains with it, as in ml-search
SPACE = {
    "optimizer.lr": {"type": "loguniform", "low": 1e-5, "high": 1e-1},
    "training.batch_size": {"type": "categorical", "choices": [16, 32, 64]},
    "optimizer.momentum": {"type": "uniform", "low": 0.8, "high": 0.99},
    "optimizer.weight_decay": {"type": "loguniform", "low": 1e-6, "high": 1e-2},
    "model.dropout": {"type": "uniform", "low": 0.0, "high": 0.5},
}
CONFIG_POINT = {"optimizer.lr": 0.05, "training.batch_size": 32, "optimizer.momentum": 0.9,
                "optimizer.weight_decay": 1e-4, "model.dropout": 0.2}
WIDTH = 8  # first conv block's channels; small_cnn has 32
GAMMA = 0.1  # the config's default scheduler: StepLR, x0.1 every step_size epochs


@dataclass(frozen=True)
class Problem:
    train_fraction: float
    epochs: int
    budget: int
    thresholds: tuple[float, float, float]
    step_size: int = 5  # the config's default
    label_noise: float = 0.0  # the share of training labels replaced by another class


PROBLEMS = {
    "digits20": Problem(0.2, 10, 300, (0.92, 0.95, 0.97)),
    "digits10": Problem(0.1, 5, 300, (0.68, 0.73, 0.77)),
    "digits30": Problem(0.3, 20, 300, (0.93, 0.96, 0.975)),
    "digits40": Problem(0.4, 16, 300, (0.96, 0.97, 0.98), step_size=4),
    "digits15": Problem(0.15, 8, 300, (0.80, 0.85, 0.90), step_size=3),
    "noisy20": Problem(0.2, 10, 300, (0.88, 0.90, 0.92), label_noise=0.2),
}
# method: (strategy, config's point enqueued first), seeds offset so none is shared
METHODS = {
    "kubetune": ("kubetune", True),
    "kubetune-cold": ("kubetune", False),
    "optuna": ("optuna", True),
    "optuna-cold": ("optuna", False),
    "random": ("random", False),
}
SEED_BASE = {"kubetune": 0, "kubetune-cold": 1000, "optuna": 2000, "optuna-cold": 3000, "random": 4000}

_STATE: dict = {}


class _BudgetSpent(Exception):
    pass


def _load_data(data_path: str, problem: Problem):
    import torch

    from kubetune.config.schema import DataConfig
    from kubetune.data.datasets import load_splits

    cfg = DataConfig(path=data_path, image_size=8, channels=1, train_fraction=problem.train_fraction,
                     in_memory=True, normalize={"mean": [0.3], "std": [0.37]})  # tensors() reads .images
    splits = load_splits(cfg, TRAIN_SEED)

    def tensors(ds):  # the transforms once, not per item and epoch
        return torch.stack([ds.transform(ds.images[i]) for i in range(len(ds))]), ds.targets.long()

    x, y = tensors(splits.train)
    if problem.label_noise:  # the same wrong labels for every trial; validation stays clean
        gen = torch.Generator().manual_seed(TRAIN_SEED)
        wrong = torch.randperm(len(y), generator=gen)[:round(problem.label_noise * len(y))]
        y = y.clone()
        y[wrong] = (y[wrong] + torch.randint(1, 10, (len(wrong),), generator=gen)) % 10
    return (x, y, *tensors(splits.val))


def _network(dropout: float):
    from torch import nn

    def block(c_in: int, c_out: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
                             nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))

    w = WIDTH
    return nn.Sequential(block(1, w), block(w, 2 * w), nn.MaxPool2d(2), block(2 * w, 4 * w),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(4 * w, 10))


def _train(params: dict, epochs: int, step_size: int, data):
    """Yield [val_acc, val_loss] after each epoch; None for an epoch whose loss diverged (then stop)."""
    import torch
    import torch.nn.functional as F

    x, y, xv, yv = data
    torch.manual_seed(TRAIN_SEED)
    model = _network(params["model.dropout"])
    opt = torch.optim.SGD(model.parameters(), lr=params["optimizer.lr"],
                          momentum=params["optimizer.momentum"],
                          weight_decay=params["optimizer.weight_decay"])
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size, GAMMA)
    gen = torch.Generator().manual_seed(TRAIN_SEED)
    bs = int(params["training.batch_size"])
    for _ in range(epochs):
        model.train()
        loss_sum = torch.zeros(())
        for idx in torch.randperm(len(y), generator=gen).split(bs):
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.detach()
        if not math.isfinite(loss_sum.item()):
            yield None  # ml-search ends such a trial as FAIL ("NaN loss")
            return
        sched.step()
        model.eval()
        with torch.no_grad():
            out = model(xv)
            yield [(out.argmax(1) == yv).float().mean().item(), F.cross_entropy(out, yv).item()]


class CurveCache:
    """Per-epoch [val_acc, val_loss] by params, shared by all processes through files.

    Sound because each trial trains with the same seed: same params, same curve."""

    def __init__(self, folder: Path, problem: Problem, data) -> None:
        self.folder, self.problem, self.data = folder, problem, data
        folder.mkdir(parents=True, exist_ok=True)
        self.hits = self.misses = 0

    def _path(self, params: dict) -> Path:
        key = json.dumps(params, sort_keys=True)
        return self.folder / (hashlib.sha1(key.encode()).hexdigest() + ".json")

    def curve(self, params: dict):
        path = self._path(params)
        known: list = json.loads(path.read_text()) if path.exists() else []
        done = len(known) == self.problem.epochs or (known and known[-1] is None)
        yield from known
        if done:
            self.hits += 1
            return
        self.misses += 1
        seen = list(known)
        try:
            for epoch, acc in enumerate(_train(params, self.problem.epochs, self.problem.step_size, self.data)):
                if epoch < len(known):
                    continue  # replayed above; retrained only to get past it
                seen.append(acc)
                yield acc
        finally:  # also when the search stops consuming (pruned, budget spent)
            if len(seen) > len(known):
                tmp = path.with_suffix(f".{os.getpid()}.tmp")
                tmp.write_text(json.dumps(seen))
                tmp.replace(path)


def _init_worker(data_path: str, cache: str, problems: list[str], kubetune_from: str | None) -> None:
    import optuna
    import torch

    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    sys.path.insert(0, os.getcwd())
    for name in problems:
        problem = PROBLEMS[name]
        folder = Path(cache) / "curves" / f"{name}-w{WIDTH}-loss"
        _STATE[name] = CurveCache(folder, problem, _load_data(data_path, problem))
    _STATE["kubetune_from"] = kubetune_from


def _search_config(seed: int):
    from kubetune.config.search_schema import SearchConfig

    return SearchConfig(study_name="bench", sampler={"type": "TPESampler", "seed": seed}, search_space=SPACE)


def _strategy(strategy: str, seed: int):
    import optuna

    from kubetune.search.pruners import build_pruner
    from kubetune.search.samplers import build_sampler

    if strategy == "kubetune":
        if _STATE["kubetune_from"]:
            module, func = _STATE["kubetune_from"].split(":")
            return getattr(importlib.import_module(module), func)(seed)
        search = _search_config(seed)  # the sampler names only its type, the pruner nothing: the defaults
        return build_sampler(search), build_pruner(search)
    if strategy == "optuna":
        return optuna.samplers.TPESampler(seed=seed), optuna.pruners.MedianPruner(5, 2)
    return optuna.samplers.RandomSampler(seed=seed), optuna.pruners.NopPruner()


def run_search(problem_name: str, method: str, seed: int) -> dict:
    """One seeded search: best val_acc so far after each epoch of the budget, and its trials."""
    import optuna

    from kubetune.config.schema import SchedulerConfig
    from kubetune.search.attributes import LR_DROP_ATTR, TRIAL_STEPS_ATTR
    from kubetune.search.objective import EpochReporter, suggest_params
    from kubetune.search.space import distributions
    from kubetune.training.optim import first_lr_drop

    problem, cache = PROBLEMS[problem_name], _STATE[problem_name]
    strategy, enqueue = METHODS[method]
    sampler, pruner = _strategy(strategy, seed)
    study = optuna.create_study(direction="maximize", sampler=sampler, pruner=pruner)
    if enqueue:
        study.enqueue_trial(CONFIG_POINT)
    dists = distributions(_search_config(seed).search_space)
    timeline: list[float] = []
    states: list[str] = []
    best = 0.0
    drop = first_lr_drop(SchedulerConfig(type="step", step_size=problem.step_size, gamma=GAMMA), problem.epochs)
    while len(timeline) < problem.budget:
        trial = study.ask()
        params = suggest_params(trial, dists)
        trial.set_user_attr(TRIAL_STEPS_ATTR, problem.epochs)  # as ml-search's objective does; Optuna's
        if drop is not None:                                   # own pruners ignore both
            trial.set_user_attr(LR_DROP_ATTR, drop)
        # ml-search's reporter: running best at step = epoch, then the pruner's verdict
        reporter = EpochReporter(trial, "val_acc", True, statistics.fmean, [], 0, 1, problem.epochs)
        curve = cache.curve(params)
        state = optuna.trial.TrialState.COMPLETE
        try:
            for epoch, point in enumerate(curve, 1):
                acc = None if point is None else point[0]
                if acc is not None:
                    best = max(best, acc)
                timeline.append(best)
                if len(timeline) >= problem.budget:
                    raise _BudgetSpent
                if acc is None:
                    state = optuna.trial.TrialState.FAIL
                    break
                reporter(epoch, {"val_acc": acc, "val_loss": point[1]})
        except optuna.TrialPruned:
            state = optuna.trial.TrialState.PRUNED
        except _BudgetSpent:
            state = optuna.trial.TrialState.FAIL
        finally:
            curve.close()
        if state == optuna.trial.TrialState.COMPLETE:
            study.tell(trial, reporter.best)
        else:
            study.tell(trial, state=state)
        states.append(state.name)
    return {"timeline": timeline[:problem.budget], "states": states,
            "cache_hits": cache.hits, "cache_misses": cache.misses}


def _task(job: tuple[str, str, int]) -> tuple[str, str, int, dict, float]:
    start = time.time()
    return (*job, run_search(*job), time.time() - start)


def epochs_to(timeline: list[float], target: float) -> float:
    for i, value in enumerate(timeline):
        if value >= target:
            return i + 1
    return math.inf


def _median_epochs(timelines: list[list[float]], target: float) -> float:
    return statistics.median(epochs_to(t, target) for t in timelines)


def _fmt_epochs(value: float, budget: int) -> str:
    return f">{budget}" if math.isinf(value) else f"{value:g}"


def summarise(problem_name: str, results: dict[str, list[list[float]]]) -> bool:
    """Print the anytime table for one problem and the target checks; True if all hold."""
    problem = PROBLEMS[problem_name]
    t1, t2, t3 = problem.thresholds
    checkpoints = [c for c in CHECKPOINTS if c <= problem.budget]
    print(f"\n== {problem_name}: digits {problem.train_fraction:.0%} training subset, "
          f"{problem.epochs} epochs per trial, {problem.budget}-epoch budget ==")
    head = " / ".join(f"@{c}" for c in checkpoints)
    print(f"{'method':<14} {'seeds':>5}  mean best val_acc {head:<22}  "
          f"seeds reaching {t1} / {t2} / {t3}   median epochs to {t1}")
    rows, spread = {}, {}
    for method, timelines in results.items():
        at = [[t[c - 1] for t in timelines] for c in checkpoints]
        means = [statistics.fmean(v) for v in at]
        spread[method] = [statistics.variance(v) / len(v) if len(v) > 1 else 0.0 for v in at]
        reach = [sum(epochs_to(t, th) <= problem.budget for t in timelines) for th in problem.thresholds]
        median = _median_epochs(timelines, t1)
        rows[method] = (means, reach, median)
        print(f"{method:<14} {len(timelines):>5}  {' / '.join(f'{m:.4f}' for m in means):<40}  "
              f"{' / '.join(str(r) for r in reach):<28}  {_fmt_epochs(median, problem.budget)}")
    ok = True
    if "kubetune" in rows and "optuna" in rows:
        (km, kr, kmed), (om, orr, omed) = rows["kubetune"], rows["optuna"]
        errors = [math.sqrt(a + b) for a, b in zip(spread["kubetune"], spread["optuna"], strict=True)]
        diffs = ", ".join(f"@{c} {a - b:+.4f} (±{e:.4f})"
                          for c, a, b, e in zip(checkpoints, km, om, errors, strict=True))
        reach = ", ".join(f"{th}: {a - b:+d}" for th, a, b in zip(problem.thresholds, kr, orr, strict=True))
        at_least = all(a >= b for a, b in zip(km, om, strict=True)) and all(
            a >= b for a, b in zip(kr, orr, strict=True))
        ok &= at_least
        print(f"kubetune - optuna: mean best {diffs}; seeds reaching {reach}; median epochs to {t1} "
              f"{_fmt_epochs(kmed, problem.budget)} vs {_fmt_epochs(omed, problem.budget)} "
              f"-> {'holds' if at_least else 'FAILS'} (at least as good everywhere)")
    if "kubetune" in rows and "random" in rows:
        kmed, rmed = rows["kubetune"][2], rows["random"][2]
        ratio = _ratio(kmed, rmed)
        ok &= ratio <= 0.5
        low, high, below = _bootstrap_ratio([epochs_to(t, t1) for t in results["kubetune"]],
                                            [epochs_to(t, t1) for t in results["random"]])
        print(f"median epochs to {t1}, kubetune / random: {_fmt_epochs(kmed, problem.budget)} / "
              f"{_fmt_epochs(rmed, problem.budget)} = {ratio:.2f}x "
              f"-> {'holds' if ratio <= 0.5 else 'FAILS'} (at most 0.5x); seeds resampled: "
              f"{low:.2f}x to {high:.2f}x (10th to 90th percentile), at most 0.5x in {below:.0%}")
    return ok


def _ratio(ours: float, theirs: float) -> float:
    return ours / theirs if math.isfinite(theirs) else 0.0


def _bootstrap_ratio(ours: list[float], theirs: list[float], draws: int = 4000) -> tuple[float, float, float]:
    """How far the ratio of median epochs moves when each method's seeds are drawn again
    (with replacement): its 10th and 90th percentiles, and the share of draws at most 0.5.
    A median of 32 seeds of random search can sit in a gap between two clusters of seeds."""
    rng = random.Random(0)
    ratios = sorted(_ratio(statistics.median(rng.choices(ours, k=len(ours))),
                           statistics.median(rng.choices(theirs, k=len(theirs)))) for _ in range(draws))
    return ratios[draws // 10], ratios[draws * 9 // 10], sum(r <= 0.5 for r in ratios) / draws


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=16, help="independent seeds per method (default 16)")
    parser.add_argument("--workers", type=int, default=1, help="parallel processes")
    parser.add_argument("--problems", default=",".join(PROBLEMS), help="comma-separated (default: all)")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated (default: all)")
    parser.add_argument("--data", help="digits ImageFolder (default: written to the cache)")
    parser.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "kubetune-bench" / "search_efficiency"),
                        help="trial curves and finished searches, reused by later calls")
    parser.add_argument("--tag", default="defaults",
                        help="names the kubetune runs in the cache; change it when the defaults change")
    parser.add_argument("--kubetune-from", metavar="MODULE:FUNCTION",
                        help="try other defaults: FUNCTION(seed) -> (sampler, pruner)")
    args = parser.parse_args(argv)
    problems = args.problems.split(",")
    methods = args.methods.split(",")
    for name, known in ((problems, PROBLEMS), (methods, METHODS)):
        for item in name:
            if item not in known:
                parser.error(f"unknown {item!r}; choose from {', '.join(known)}")
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    data_path = args.data
    if data_path is None:
        data_path = str(cache / "digits")
        if not Path(data_path).is_dir():
            from kubetune.data.sample import write_digits

            write_digits(Path(data_path))

    def run_file(problem: str, method: str, seed: int) -> Path:
        name = f"{method}-{args.tag}" if METHODS[method][0] == "kubetune" else method
        return cache / "runs" / f"{problem}-w{WIDTH}" / f"{name}-seed{seed}.json"

    jobs = [(p, m, SEED_BASE[m] + s) for p in problems for m in methods for s in range(args.seeds)]
    todo = [job for job in jobs if not run_file(*job).exists()]
    print(f"{len(jobs)} searches: {len(jobs) - len(todo)} cached, {len(todo)} to run "
          f"({args.workers} workers); trial curves are cached by params (see the docstring)", flush=True)
    if todo:
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(args.workers, initializer=_init_worker,
                      initargs=(data_path, str(cache), problems, args.kubetune_from)) as pool:
            for problem, method, seed, run, seconds in pool.imap_unordered(_task, todo):
                path = run_file(problem, method, seed)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(run))
                print(f"  {problem} {method} seed {seed}: best {run['timeline'][-1]:.4f} after "
                      f"{len(run['states'])} trials ({seconds:.0f}s)", flush=True)
    ok = True
    for problem in problems:
        results: dict[str, list[list[float]]] = {}
        for p, method, seed in jobs:
            if p == problem:
                results.setdefault(method, []).append(json.loads(run_file(p, method, seed).read_text())["timeline"])
        ok &= summarise(problem, results)
    if {"kubetune", "optuna", "random"} <= set(methods):
        print(f"\ntargets: {'all hold' if ok else 'NOT all hold'}")
    else:
        print("\ntargets: not checked (they need kubetune, optuna and random)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
