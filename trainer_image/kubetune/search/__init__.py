"""Search: config -> Optuna sampler, pruner, distributions, storage; trial running.

Torch-free (the operator imports these): ``space``, ``samplers``, ``pruners``,
``storage``, ``checks`` (every config check before the storage is touched),
``interruption`` (a SIGTERMed trial stays RUNNING: its attribute and exit code),
``budget`` (how trials count against ``n_trials``), ``locking`` (the per-study
lock), ``study`` (create/resume), ``results`` (best_config.yaml, trials.csv).

Training: ``objective`` (one trial, shared by ml-search and ``ml-train --trial``),
``worker`` (the ml-search loop), ``single_trial`` (run a stored trial by number),
``resume`` (the ``last.pt`` a trial or its retry continues from).
"""
