"""Search: config -> Optuna sampler, pruner, distributions, storage; trial running.

``space``, ``samplers``, ``pruners`` and ``storage`` import no torch (the operator uses them).
"""
