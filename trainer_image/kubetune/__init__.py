"""kubetune: hyperparameter tuning for PyTorch image classifiers with Optuna."""

__version__ = "0.1.0"
