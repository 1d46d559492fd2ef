"""Bench levers for issue 14 (untracked): FUNCTION(seed) -> (sampler, pruner)."""
import optuna
from optuna.samplers import RandomSampler, TPESampler

from kubetune.search.pruners import TrialLengthHalvingPruner


def _tpe(seed, startup=3, cand=4):
    return TPESampler(n_startup_trials=startup, n_ei_candidates=cand, multivariate=True,
                      constant_liar=True, seed=seed)


def cand8(seed):
    return _tpe(seed, cand=8), TrialLengthHalvingPruner()


def cand12(seed):
    return _tpe(seed, cand=12), TrialLengthHalvingPruner()


def cand2(seed):
    return _tpe(seed, cand=2), TrialLengthHalvingPruner()


class EveryKthRandom(optuna.samplers.BaseSampler):
    """TPE, except every k-th trial (counting from `offset`) is drawn at random."""

    def __init__(self, tpe, seed, k, offset=0):
        self.tpe, self.rnd, self.k, self.offset = tpe, RandomSampler(seed=None if seed is None else seed + 7919), k, offset

    def _random(self, trial):
        return trial.number >= self.offset and (trial.number - self.offset) % self.k == self.k - 1

    def infer_relative_search_space(self, study, trial):
        return {} if self._random(trial) else self.tpe.infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, space):
        return {} if self._random(trial) else self.tpe.sample_relative(study, trial, space)

    def sample_independent(self, study, trial, name, dist):
        s = self.rnd if self._random(trial) else self.tpe
        return s.sample_independent(study, trial, name, dist)

    def before_trial(self, study, trial):
        self.tpe.before_trial(study, trial)

    def after_trial(self, study, trial, state, values):
        self.tpe.after_trial(study, trial, state, values)


def s1_rand3(seed):
    return EveryKthRandom(_tpe(seed, startup=1), seed, 3, offset=1), TrialLengthHalvingPruner()


def s1_rand4(seed):
    return EveryKthRandom(_tpe(seed, startup=1), seed, 4, offset=1), TrialLengthHalvingPruner()
