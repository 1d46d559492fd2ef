"""Multi-objective search: non-dominated halving against unpruned TPE and random search.

Three methods search the same two objectives (accuracy up, a cost down) for 300
epochs (``pruned`` until ``--budget``), each with its own sampler seeds; a pruned trial
costs the epochs it ran, and only COMPLETE trials make the front:

- ``pruned``  kubetune's multi-objective search: multivariate TPE (kubetune's
              defaults) and :class:`~kubetune.search.pareto_pruner.ParetoHalvingPruner`
              (rungs at epochs 2, 6 and 18 of 20)
- ``tpe``     Optuna's multi-objective TPE with the same settings, no pruning
- ``random``  ``RandomSampler``, no pruning
- ``oracle``  a bound, not a method: the same TPE with a pruner that knows each
              trial's final values and stops, after its first epoch, every trial
              that a completed trial already dominates. A rule that sees only the
              epochs run cannot tell sooner which trials will not join the front,
              so the oracle's epochs are a floor for every rule that keeps the
              trials that will (up to how the pruned trials steer TPE)

It prints the mean hypervolume of each method's front (Optuna's
``compute_hypervolume``, objectives as losses: 1 - accuracy and the cost over its
largest value, reference point (1, 1.05)) after 50, 100, 200 and 300 epochs with
standard errors over the seeds, the difference of ``pruned`` and ``tpe`` with its
standard error, and the ratio of the epochs ``pruned`` (and ``oracle``) needs to
reach the hypervolume ``tpe`` has at 300 epochs (mean over the seeds that reach it;
how many reach it within 150 epochs, the half).

Two problems are surrogates, which run in seconds; one trains for real. In the
surrogates, a trial's accuracy rises from chance towards a final accuracy with a time constant set by the
learning rate, with per-epoch noise; a large learning rate leads in the first epochs
and ends lower, so the curves cross (as the digits search in
bench/search_efficiency.py shows: small learning rates converge late); latency grows
with the width squared and is known from the first epoch, as a model's latency is.

- ``lr-width``     a learning rate (log 1e-4..1) and a width (8..128, log): the final
                   accuracy peaks at lr 0.05 and grows with the width
- ``five-params``  also weight decay, dropout and the batch size; the best learning
                   rate falls as the width grows and rises with the batch size, a
                   learning rate 6 times too large diverges (accuracy stays at chance),
                   weight decay and dropout have an optimum and slow the rise
- ``digits-mlp``   real training, one thread of the CPU: an MLP with one hidden layer
                   of ``width`` units (4..256, log) on scikit-learn's 8x8 digits (1437
                   images to train, 360 to validate), SGD with momentum 0.9, batch
                   128, a learning rate (log 1e-4..3) and weight decay (log
                   1e-6..0.1); the accuracy is measured on the validation images after
                   each epoch and the cost is the parameter count. Only the epochs a
                   trial runs are trained (the oracle trains its trials' every epoch)

``--rule`` swaps the pruning rule for a comparison: ``rung-only`` is kubetune's without
the out-of-reach check; ``sorted-halving`` keeps the best third of a rung's trials by
non-dominated rank, then crowding distance (NSGA-II's order); ``front-only`` keeps only
the rung's Pareto front (both with the out-of-reach check). ``--min-resource`` moves
the first rung.

``--measurement-cost`` instead trains small_cnn on the digits sample for 3 epochs at
8x8 and 32x32 and prints what measuring its costs (latency above all) took against the
run's training seconds.

    python bench/multi_objective.py --seeds 20
    python bench/multi_objective.py --seeds 10 --problem digits-mlp
    python bench/multi_objective.py --seeds 20 --rule sorted-halving
    python bench/multi_objective.py --measurement-cost
"""

from __future__ import annotations

import argparse
import functools
import math
import statistics
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna._hypervolume import compute_hypervolume
from optuna.study import StudyDirection
from optuna.study._multi_objective import _fast_non_domination_rank

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "trainer_image"))

from kubetune.search.pareto_pruner import ParetoHalvingPruner, dominates  # noqa: E402
from kubetune.search.samplers import TPE_EI_CANDIDATES, TPE_STARTUP_TRIALS  # noqa: E402

EPOCHS = 20
CHECKPOINTS = (50, 100, 200, 300)
REFERENCE = np.array([1.0, 1.05])
DIRECTIONS = (StudyDirection.MAXIMIZE, StudyDirection.MINIMIZE)


@dataclass(frozen=True)
class Problem:
    """A search: draws a trial's params, returns its accuracy per epoch (a list, or an
    iterator that trains as it goes) and its cost, known before the first epoch."""

    name: str
    draw: Callable[[optuna.Trial, np.random.Generator], tuple[Iterable[float], float]]
    max_cost: float


def rising(top: float, tau: float, rng: np.random.Generator, noise: float = 0.005) -> list[float]:
    """Accuracy after each epoch: from chance (0.1) towards ``top`` with time constant ``tau``."""
    return [float(min(0.999, 0.1 + (top - 0.1) * (1 - math.exp(-e / tau)) + rng.normal(0, noise)))
            for e in range(1, EPOCHS + 1)]


def latency(width: int) -> float:
    return 0.05 + (width / 128) ** 2


MAX_LATENCY = latency(128)


def lr_width(trial: optuna.Trial, rng: np.random.Generator) -> tuple[list[float], float]:
    """Two params: the final accuracy peaks at lr 0.05 and grows with the width; a small
    learning rate is slow to rise, a large one leads early and ends lower."""
    lr = trial.suggest_float("lr", 1e-4, 1.0, log=True)
    width = trial.suggest_int("width", 8, 128, log=True)
    top = min(0.99, max(0.1, 0.98 - 0.12 * math.log10(lr / 0.05) ** 2 - 0.12 * math.exp(-width / 24)))
    tau = min(40.0, max(1.0, 2.0 * math.sqrt(0.05 / lr)))
    return rising(top, tau, rng), latency(width)


def five_params(trial: optuna.Trial, rng: np.random.Generator) -> tuple[list[float], float]:
    """Five params, as a real search space: the best learning rate falls as the width
    grows, a learning rate too large diverges (accuracy stays at chance), weight decay
    and dropout have an optimum and slow the rise, and the batch size barely matters."""
    lr = trial.suggest_float("lr", 1e-4, 1.0, log=True)
    width = trial.suggest_int("width", 8, 128, log=True)
    decay = trial.suggest_float("weight_decay", 1e-6, 1e-1, log=True)
    dropout = trial.suggest_float("dropout", 0.0, 0.6)
    batch = trial.suggest_categorical("batch_size", [32, 64, 128, 256])
    best_lr = 0.05 * math.sqrt(32 / width) * math.sqrt(batch / 64)
    if lr > 6 * best_lr:  # diverges: noise around chance
        return [float(0.1 + abs(rng.normal(0, 0.01))) for _ in range(EPOCHS)], latency(width)
    top = (0.98 - 0.12 * math.log10(lr / best_lr) ** 2 - 0.12 * math.exp(-width / 24)
           - 0.015 * math.log10(decay / 1e-4) ** 2 - 0.2 * (dropout - 0.15) ** 2)
    tau = min(40.0, max(1.0, 2.0 * math.sqrt(best_lr / lr) * (1 + dropout) * (1 + 20 * decay)))
    return rising(min(0.99, max(0.1, top)), tau, rng, noise=0.01), latency(width)


MLP_WIDTHS = (4, 256)


def mlp_params(width: int) -> int:
    return 64 * width + width + width * 10 + 10


@functools.cache
def digits_split() -> tuple[Any, Any, Any, Any]:
    """scikit-learn's 8x8 digits as tensors: 1437 training images, 360 for validation."""
    import torch
    from sklearn.datasets import load_digits

    images, labels = load_digits(return_X_y=True)
    x, y = torch.tensor(images / 16.0, dtype=torch.float32), torch.tensor(labels)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    return x[order[:1437]], y[order[:1437]], x[order[1437:]], y[order[1437:]]


def mlp_curve(lr: float, width: int, decay: float, seed: int) -> Iterator[float]:
    """Train a one-hidden-layer MLP on the digits, yielding its validation accuracy after each epoch."""
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    x_train, y_train, x_val, y_val = digits_split()
    model = torch.nn.Sequential(torch.nn.Linear(64, width), torch.nn.ReLU(), torch.nn.Linear(width, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=decay)
    for _ in range(EPOCHS):
        order = torch.randperm(len(x_train))
        for start in range(0, len(order), 128):
            batch = order[start:start + 128]
            loss = torch.nn.functional.cross_entropy(model(x_train[batch]), y_train[batch])
            if not torch.isfinite(loss):
                break  # diverged: the rest of the epoch cannot recover
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            yield float((model(x_val).argmax(1) == y_val).float().mean())


def digits_mlp(trial: optuna.Trial, rng: np.random.Generator) -> tuple[Iterator[float], float]:
    """Real training: a learning rate, a width and weight decay for an MLP on the digits;
    the cost is its parameter count."""
    lr = trial.suggest_float("lr", 1e-4, 3.0, log=True)
    width = trial.suggest_int("width", *MLP_WIDTHS, log=True)
    decay = trial.suggest_float("weight_decay", 1e-6, 1e-1, log=True)
    return mlp_curve(lr, width, decay, int(rng.integers(1 << 31))), mlp_params(width)


class RungOnly(ParetoHalvingPruner):
    """Without the out-of-reach check: only the rung's share of dominating trials stops a trial."""

    def out_of_reach(self, values: Sequence[float], completed: Sequence[tuple[Sequence[float], Sequence[float]]],
                     directions: Sequence[StudyDirection]) -> bool:
        return False


class FrontOnly(ParetoHalvingPruner):
    """Stricter: a trial continues only on the rung's Pareto front."""

    def continues(self, values: Sequence[float], others: Sequence[Sequence[float]],
                  directions: Sequence[StudyDirection]) -> bool:
        return not any(dominates(other, values, directions) for other in others)


class SortedHalving(ParetoHalvingPruner):
    """NSGA-II's order as successive halving: the best third of the rung's trials by
    non-dominated rank, then crowding distance, continue."""

    def continues(self, values: Sequence[float], others: Sequence[Sequence[float]],
                  directions: Sequence[StudyDirection]) -> bool:
        signs = [-1.0 if d == StudyDirection.MAXIMIZE else 1.0 for d in directions]
        losses = np.array([values, *others], dtype=float) * signs
        keep = max(1, math.ceil(len(losses) / self.reduction_factor))
        ranks = _fast_non_domination_rank(losses)
        ahead = int(np.sum(ranks < ranks[0]))
        same = np.flatnonzero(ranks == ranks[0])
        if ahead + len(same) <= keep or ahead >= keep:
            return ahead < keep
        crowd = crowding(losses[same])
        return ahead + int(np.sum(crowd > crowd[0])) < keep  # same[0] is this trial


def crowding(losses: np.ndarray) -> np.ndarray:
    """NSGA-II's crowding distance of each point among ``losses``."""
    distance = np.zeros(len(losses))
    for k in range(losses.shape[1]):
        order = np.argsort(losses[:, k])
        span = float(losses[order[-1], k] - losses[order[0], k]) or 1.0
        distance[order[[0, -1]]] = np.inf
        distance[order[1:-1]] += (losses[order[2:], k] - losses[order[:-2], k]) / span
    return distance


RULES: dict[str, type[ParetoHalvingPruner]] = {
    "dominated-share": ParetoHalvingPruner, "rung-only": RungOnly, "front-only": FrontOnly,
    "sorted-halving": SortedHalving}
PROBLEMS = {p.name: p for p in (Problem("lr-width", lr_width, MAX_LATENCY),
                                 Problem("five-params", five_params, MAX_LATENCY),
                                 Problem("digits-mlp", digits_mlp, mlp_params(MLP_WIDTHS[1])))}
SURROGATES = ("lr-width", "five-params")


def hypervolume(points: list[tuple[float, float]]) -> float:
    """Of (accuracy, cost as a share of the largest) points."""
    if not points:
        return 0.0
    losses = np.array([[1.0 - acc, cost] for acc, cost in points])
    return float(compute_hypervolume(losses, REFERENCE))


def run(method: str, seed: int, budget: int, problem: Problem = PROBLEMS["lr-width"],
        pruner_of: Callable[[], ParetoHalvingPruner] = ParetoHalvingPruner) -> list[tuple[int, float, float]]:
    """(epochs spent when the trial ended, accuracy, cost share) of every COMPLETE trial."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    sampler: optuna.samplers.BaseSampler
    if method == "random":
        sampler = optuna.samplers.RandomSampler(seed=seed)
    else:
        sampler = optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True,
                                             n_startup_trials=TPE_STARTUP_TRIALS, n_ei_candidates=TPE_EI_CANDIDATES)
    pruner = pruner_of() if method == "pruned" else None
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    rng = np.random.default_rng(seed + 10_000)
    spent, done = 0, []
    while spent < budget:
        trial = study.ask()
        accs, raw_cost = problem.draw(trial, rng)
        cost = raw_cost / problem.max_cost
        if method == "oracle":
            accs = list(accs)
            if any(dominates(point, (max(accs), cost), DIRECTIONS) for _, *point in done):
                spent += 1
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                continue
        best, pruned = 0.0, False
        for epoch, acc in enumerate(accs, 1):
            spent += 1
            best = max(best, acc)
            if pruner is not None and pruner.judge(study, trial, epoch, EPOCHS, [best, cost]):
                pruned = True
                break
        if pruned:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, [best, cost])
            done.append((spent, best, cost))
    return done


def hv_at(done: list[tuple[int, float, float]], epochs: int) -> float:
    return hypervolume([(acc, lat) for spent, acc, lat in done if spent <= epochs])


def epochs_to(done: list[tuple[int, float, float]], target: float) -> int | None:
    for spent, _, _ in done:
        if hv_at(done, spent) >= target:
            return spent
    return None


def mean_se(values: list[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0
    return mean, se


def measurement_cost() -> None:
    """Seconds the cost measurement takes per run, beside the run's own."""
    import json
    import tempfile

    from kubetune.config.loader import validate_config
    from kubetune.data.sample import write_digits
    from kubetune.training import train

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "digits"
        write_digits(root)
        for size in (8, 32):
            config = validate_config({
                "data": {"path": str(root), "image_size": size, "channels": 1},
                "training": {"num_epochs": 3, "batch_size": 64, "device": "cpu"},
                "logging": {"output_dir": str(Path(tmp) / "runs")}})
            result = train(config, progress=False, epoch_lines=False)
            metrics = json.loads((result.run_dir / "metrics.json").read_text())
            spent, costs = metrics["cost_measurement"]["seconds"], metrics["costs"]
            print(f"small_cnn {size}x{size}: measuring {spent:.2f} s against {costs['train_seconds']:.2f} s "
                  f"of 3 epochs ({spent / costs['train_seconds']:.1%}); latency_ms {costs['latency_ms']:.3f}, "
                  f"latency_batch_ms {costs['latency_batch_ms']:.2f}")


def compare(problem: Problem, seeds: int, budget: int, pruner_of: Callable[[], ParetoHalvingPruner]) -> None:
    """Print the three methods' hypervolumes at the checkpoints and the epochs ratio."""
    methods = ("pruned", "tpe", "random")
    runs: dict[str, list[list[tuple[int, float, float]]]] = {
        m: [run(m, seed, budget if m == "pruned" else CHECKPOINTS[-1], problem, pruner_of) for seed in range(seeds)]
        for m in methods}
    print(f"{problem.name}: hypervolume of the front (mean ± standard error over {seeds} seeds)")
    print("epochs  " + "  ".join(f"{m:>15}" for m in methods) + "   pruned - tpe")
    for epochs in CHECKPOINTS:
        cells = []
        for m in methods:
            mean, se = mean_se([hv_at(d, epochs) for d in runs[m]])
            cells.append(f"{mean:8.4f} ± {se:.4f}")
        diff = [hv_at(p, epochs) - hv_at(t, epochs) for p, t in zip(runs["pruned"], runs["tpe"], strict=True)]
        mean, se = mean_se(diff)
        print(f"{epochs:6d}  " + "  ".join(cells) + f"   {mean:+.4f} ± {se:.4f}")
    runs["oracle"] = [run("oracle", seed, budget, problem) for seed in range(seeds)]
    for m in ("pruned", "oracle"):
        ratios = [reached / 300 for p, t in zip(runs[m], runs["tpe"], strict=True)
                  if (reached := epochs_to(p, hv_at(t, 300))) is not None]
        if ratios:
            mean, se = mean_se(ratios)
            half = sum(r <= 0.5 for r in ratios)
            print(f"epochs {m} needs for tpe's hypervolume at 300 epochs: {mean:.2f} x 300 ± {se:.2f} "
                  f"({len(ratios)} of {seeds} seeds reach it within {budget}, {half} within 150)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--budget", type=int, default=600,
                        help="epochs per pruned search, to find how many it needs (the last checkpoint is 300)")
    parser.add_argument("--problem", action="append", choices=sorted(PROBLEMS),
                        help="the problem (repeatable; default: the surrogates)")
    parser.add_argument("--rule", choices=sorted(RULES), default="dominated-share",
                        help="the pruning rule (dominated-share is kubetune's; the others are for comparison)")
    parser.add_argument("--min-resource", type=int, help="the first rung's epoch (default: kubetune's, 2 of 20)")
    parser.add_argument("--measurement-cost", action="store_true", help="time the cost measurement instead")
    args = parser.parse_args(argv)
    if args.measurement_cost:
        measurement_cost()
        return 0
    for name in args.problem or SURROGATES:
        compare(PROBLEMS[name], args.seeds, args.budget,
                lambda: RULES[args.rule](min_resource=args.min_resource))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


