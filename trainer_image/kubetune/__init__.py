"""kubetune: hyperparameter tuning for PyTorch image classifiers with Optuna."""

# The one source of the version: the distribution, the operator and (tied by a test)
# the Helm chart take it from here. A plain literal, so setuptools reads it without an import.
__version__ = "0.1.0"
