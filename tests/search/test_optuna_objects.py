"""Every sampler, pruner and space type of the guide, built into Optuna 5 objects."""

from __future__ import annotations

import optuna
import pytest

from kubetune.config.search_schema import ParamSpec, SearchConfig
from kubetune.errors import ConfigError
from kubetune.search.pruners import build_pruner
from kubetune.search.samplers import TPE_EI_CANDIDATES, TPE_STARTUP_TRIALS, build_sampler
from kubetune.search.space import contains, distributions, grid_values


def _search(**kw) -> SearchConfig:
    kw.setdefault("search_space", {"optimizer.lr": {"type": "loguniform", "low": 1e-5, "high": 1e-1}})
    return SearchConfig.model_validate({"study_name": "s", **kw})


def test_every_space_type_becomes_its_distribution():
    dists = distributions({
        "optimizer.lr": ParamSpec(type="loguniform", low=1e-5, high=1e-1),
        "optimizer.momentum": ParamSpec(type="uniform", low=0.8, high=0.99),
        "model.dropout": ParamSpec(type="float", low=0.0, high=0.5, step=0.1),
        "training.batch_size": ParamSpec(type="categorical", choices=[16, 32, 64]),
        "scheduler.step_size": ParamSpec(type="int", low=5, high=15),
        "training.num_epochs": ParamSpec(type="int", low=2, high=64, log=True),
    })
    assert dists["optimizer.lr"] == optuna.distributions.FloatDistribution(1e-5, 1e-1, log=True)
    assert dists["optimizer.momentum"] == optuna.distributions.FloatDistribution(0.8, 0.99)
    assert dists["model.dropout"] == optuna.distributions.FloatDistribution(0.0, 0.5, step=0.1)
    assert dists["training.batch_size"] == optuna.distributions.CategoricalDistribution([16, 32, 64])
    assert dists["scheduler.step_size"] == optuna.distributions.IntDistribution(5, 15)
    assert dists["training.num_epochs"] == optuna.distributions.IntDistribution(2, 64, log=True)


def test_contains_checks_every_key():
    space = {"optimizer.lr": ParamSpec(type="loguniform", low=1e-3, high=1e-1),
             "training.batch_size": ParamSpec(type="categorical", choices=[16, 32])}
    assert contains(space, {"optimizer.lr": 0.01, "training.batch_size": 32})
    assert not contains(space, {"optimizer.lr": 0.5, "training.batch_size": 32})
    assert not contains(space, {"optimizer.lr": 0.01, "training.batch_size": 64})
    assert not contains(space, {"optimizer.lr": 0.01})


def test_tpe_defaults_are_explicit():
    sampler = build_sampler(_search(sampler={"type": "TPESampler", "seed": 3}))
    assert isinstance(sampler, optuna.samplers.TPESampler)
    # Parallel workers must not all sample the same point while the others run.
    assert sampler._constant_liar is True
    assert sampler._multivariate is True
    assert (sampler._n_startup_trials, sampler._n_ei_candidates) == (TPE_STARTUP_TRIALS, TPE_EI_CANDIDATES)
    off = build_sampler(_search(sampler={"type": "TPESampler", "constant_liar": False,
                                         "multivariate": False, "n_startup_trials": 7,
                                         "n_ei_candidates": 24}))
    assert off._constant_liar is False and off._multivariate is False
    assert (off._n_startup_trials, off._n_ei_candidates) == (7, 24)  # Optuna's own values


@pytest.mark.parametrize("kind, cls", [
    ("RandomSampler", optuna.samplers.RandomSampler),
    ("CmaEsSampler", optuna.samplers.CmaEsSampler),
])
def test_other_samplers(kind, cls):
    assert isinstance(build_sampler(_search(sampler={"type": kind, "seed": 1})), cls)


def test_grid_sampler_from_choices_and_int_ranges():
    search = _search(sampler={"type": "GridSampler"}, search_space={
        "training.batch_size": {"type": "categorical", "choices": [16, 32]},
        "scheduler.step_size": {"type": "int", "low": 2, "high": 6, "step": 2},
    })
    assert grid_values(search.search_space) == {"training.batch_size": [16, 32],
                                               "scheduler.step_size": [2, 4, 6]}
    assert isinstance(build_sampler(search), optuna.samplers.GridSampler)


def test_grid_sampler_rejects_a_continuous_range():
    search = _search(sampler={"type": "GridSampler"})
    with pytest.raises(ConfigError, match="search_space.optimizer.lr.*GridSampler"):
        build_sampler(search)


@pytest.mark.parametrize("pruner, cls, attrs", [
    ({"type": "MedianPruner", "n_startup_trials": 5, "n_warmup_steps": 5},
     optuna.pruners.MedianPruner, {"_n_startup_trials": 5, "_n_warmup_steps": 5}),
    ({"type": "PercentilePruner", "percentile": 25.0, "n_warmup_steps": 2},
     optuna.pruners.PercentilePruner, {"_percentile": 25.0, "_n_warmup_steps": 2}),
    ({"type": "HyperbandPruner", "min_resource": 1, "max_resource": 9, "reduction_factor": 3},
     optuna.pruners.HyperbandPruner, {"_min_resource": 1, "_max_resource": 9, "_reduction_factor": 3}),
    ({"type": "SuccessiveHalvingPruner", "min_resource": 2, "reduction_factor": 4, "min_early_stopping_rate": 1},
     optuna.pruners.SuccessiveHalvingPruner,
     {"_min_resource": 2, "_reduction_factor": 4, "_min_early_stopping_rate": 1}),
    ({"type": "none"}, optuna.pruners.NopPruner, {}),
])
def test_pruners(pruner, cls, attrs):
    built = build_pruner(_search(pruner=pruner))
    assert type(built) is cls
    for name, value in attrs.items():
        assert getattr(built, name) == value


@pytest.mark.parametrize("kind", ["TPESampler", "RandomSampler", "CmaEsSampler"])
def test_each_sampler_session_draws_its_own_points_and_the_first_plain_optunas(kind):
    from kubetune.search.attributes import SAMPLER_SESSIONS_ATTR
    from kubetune.search.study import take_sampler_session

    search = _search(sampler={"type": kind, "seed": 0})
    dist = optuna.distributions.FloatDistribution(1e-5, 1e-1, log=True)

    def draws(study: optuna.Study) -> list[float]:
        return [study.ask({"optimizer.lr": dist}).params["optimizer.lr"] for _ in range(3)]

    study = optuna.create_study(study_name="s", storage=optuna.storages.InMemoryStorage())
    sessions = []
    for _ in range(3):  # the first worker, a second one, a resume: each a fresh sampler
        assert take_sampler_session(study, search) == len(sessions)
        sessions.append(draws(study))
    assert study.user_attrs[SAMPLER_SESSIONS_ATTR] == 3
    plain = optuna.create_study(sampler=build_sampler(search))
    assert sessions[0] == draws(plain)  # session 0: exactly the seed's own draws
    flat = [x for s in sessions for x in s]
    assert len(set(flat)) == len(flat), sessions  # no session repeats another's draws
