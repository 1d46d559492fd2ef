"""kubetune: hyperparameter tuning for PyTorch image classifiers with Optuna.

A training script of the user's own calls ``trial = kubetune.trial()`` (see
:mod:`kubetune.script`); importing kubetune loads the standard library only.
"""

# The one source of the version: the distribution, the operator and (tied by a test)
# the Helm chart take it from here. A plain literal, so setuptools reads it without an import.
__version__ = "0.1.0"

from kubetune.script.api import Pruned, ReportError, Trial, trial  # noqa: E402

__all__ = ["Pruned", "ReportError", "Trial", "__version__", "trial"]
