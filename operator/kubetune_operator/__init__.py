"""kubetune's Kubernetes operator: one Job per Optuna trial, driven by a StudyJob resource.

Layout: ``handlers`` (thin kopf handlers) call ``reconcile`` (one pass over a StudyJob),
which reads ``spec``, talks to the storage through ``studies`` and to the API through
``kube``, builds objects with the pure functions in ``builders`` and writes ``status``.
"""

from kubetune import __version__  # one version for the distribution, the operator and the chart

__all__ = ["__version__"]
