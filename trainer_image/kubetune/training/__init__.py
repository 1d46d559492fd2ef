"""Training: the loop, optimizers, precision, run logging and the ``train`` entry."""

from kubetune.training.runner import EpochCallback, TrainingDiverged, TrainResult, train

__all__ = ["EpochCallback", "TrainResult", "TrainingDiverged", "train"]
