"""Multi-objective search: non-dominated halving against unpruned TPE and random search.

Three methods search the same two objectives (accuracy up, latency down) until an
epoch budget is spent, each with its own sampler seeds; a pruned trial costs the
epochs it ran, and only COMPLETE trials make the front:

- ``pruned``  kubetune's multi-objective search: multivariate TPE (kubetune's
              defaults) and :class:`~kubetune.search.pareto_pruner.ParetoHalvingPruner`
              (rungs at epochs 2, 6 and 18 of 20)
- ``tpe``     Optuna's multi-objective TPE with the same settings, no pruning
- ``random``  ``RandomSampler``, no pruning

It prints the mean hypervolume of each method's front (Optuna's
``compute_hypervolume``, objectives as losses: 1 - accuracy and latency over its
largest value, reference point (1, 1.05)) after 50, 100, 200 and 300 epochs with
standard errors over the seeds, the difference of ``pruned`` and ``tpe`` with its
standard error, and the ratio of the epochs ``pruned`` needs to reach the
hypervolume ``tpe`` has at 300 epochs (mean over seeds that reach it).

The problem is a surrogate, not training: real training of 300 epochs x 3 methods x
seeds does not fit the shared CPU this bench was written on. Each trial draws a
learning rate (log 1e-4..1) and a width (8..128, log): its accuracy curve rises to a
final accuracy that peaks at lr 0.05 and grows with the width, at a speed set by the
learning rate, with per-epoch noise; its latency grows with the width squared and is
known from the first epoch, as a model's latency is. The curve shapes follow what the
digits search in bench/search_efficiency.py shows (early epochs rank learning rates,
small learning rates converge late); figures: docs/benchmarks.md.

``--measurement-cost`` instead trains small_cnn on the digits sample for 3 epochs at
8x8 and 32x32 and prints what measuring its costs (latency above all) took against the
run's training seconds.

    python bench/multi_objective.py --seeds 10
    python bench/multi_objective.py --measurement-cost
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from pathlib import Path

import numpy as np
import optuna
from optuna._hypervolume import compute_hypervolume

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "trainer_image"))

from kubetune.search.pareto_pruner import ParetoHalvingPruner  # noqa: E402
from kubetune.search.samplers import TPE_EI_CANDIDATES, TPE_STARTUP_TRIALS  # noqa: E402

EPOCHS = 20
CHECKPOINTS = (50, 100, 200, 300)
MAX_LATENCY = 0.05 + 1.0
REFERENCE = np.array([1.0, 1.05])


def final_accuracy(lr: float, width: int) -> float:
    acc = 0.98 - 0.12 * math.log10(lr / 0.05) ** 2 - 0.12 * math.exp(-width / 24)
    return min(0.99, max(0.1, acc))


def curve(lr: float, width: int, rng: np.random.Generator) -> list[float]:
    """Accuracy after each epoch: slow to rise for a small learning rate."""
    top = final_accuracy(lr, width)
    tau = min(40.0, max(1.0, 2.0 * math.sqrt(0.05 / lr)))
    return [float(min(0.999, 0.1 + (top - 0.1) * (1 - math.exp(-e / tau)) + rng.normal(0, 0.005)))
            for e in range(1, EPOCHS + 1)]


def latency(width: int) -> float:
    return 0.05 + (width / 128) ** 2


def hypervolume(points: list[tuple[float, float]]) -> float:
    if not points:
        return 0.0
    losses = np.array([[1.0 - acc, lat / MAX_LATENCY] for acc, lat in points])
    return float(compute_hypervolume(losses, REFERENCE))


def run(method: str, seed: int, budget: int) -> list[tuple[int, float, float]]:
    """(epochs spent when the trial ended, accuracy, latency) of every COMPLETE trial."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    sampler: optuna.samplers.BaseSampler
    if method == "random":
        sampler = optuna.samplers.RandomSampler(seed=seed)
    else:
        sampler = optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True,
                                             n_startup_trials=TPE_STARTUP_TRIALS, n_ei_candidates=TPE_EI_CANDIDATES)
    pruner = ParetoHalvingPruner() if method == "pruned" else None
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    rng = np.random.default_rng(seed + 10_000)
    spent, done = 0, []
    while spent < budget:
        trial = study.ask()
        lr = trial.suggest_float("lr", 1e-4, 1.0, log=True)
        width = trial.suggest_int("width", 8, 128, log=True)
        accs, lat = curve(lr, width, rng), latency(width)
        best, pruned = 0.0, False
        for epoch, acc in enumerate(accs, 1):
            spent += 1
            best = max(best, acc)
            if pruner is not None and pruner.judge(study, trial, epoch, EPOCHS, [best, lat]):
                pruned = True
                break
        if pruned:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, [best, lat])
            done.append((spent, best, lat))
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--budget", type=int, default=600, help="epochs per search (the last checkpoint is 300)")
    parser.add_argument("--measurement-cost", action="store_true", help="time the cost measurement instead")
    args = parser.parse_args(argv)
    if args.measurement_cost:
        measurement_cost()
        return 0
    methods = ("pruned", "tpe", "random")
    runs: dict[str, list[list[tuple[int, float, float]]]] = {
        m: [run(m, seed, args.budget) for seed in range(args.seeds)] for m in methods}
    print(f"hypervolume of the front (mean ± standard error over {args.seeds} seeds)")
    print("epochs  " + "  ".join(f"{m:>15}" for m in methods) + "   pruned - tpe")
    for epochs in CHECKPOINTS:
        cells = []
        for m in methods:
            mean, se = mean_se([hv_at(d, epochs) for d in runs[m]])
            cells.append(f"{mean:8.4f} ± {se:.4f}")
        diff = [hv_at(p, epochs) - hv_at(t, epochs) for p, t in zip(runs["pruned"], runs["tpe"], strict=True)]
        mean, se = mean_se(diff)
        print(f"{epochs:6d}  " + "  ".join(cells) + f"   {mean:+.4f} ± {se:.4f}")
    ratios = []
    for p, t in zip(runs["pruned"], runs["tpe"], strict=True):
        reached = epochs_to(p, hv_at(t, 300))
        if reached is not None:
            ratios.append(reached / 300)
    if ratios:
        mean, se = mean_se(ratios)
        print(f"epochs pruned needs for tpe's hypervolume at 300 epochs: {mean:.2f} x 300 ± {se:.2f} "
              f"({len(ratios)} of {args.seeds} seeds reach it within {args.budget})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


