"""The commented config ``ml-init-config`` writes, filled in from a dataset's facts."""

from __future__ import annotations

from dataclasses import dataclass

from kubetune.config.loader import validate_config
from kubetune.config.yaml_io import parse_yaml


@dataclass
class TemplateValues:
    data_path: str
    classes: int
    image_size: int
    channels: int
    mean: list[float]
    std: list[float]
    architecture: str = "small_cnn"
    num_epochs: int = 10
    batch_size: int = 32
    lr: float = 0.05
    experiment: str = "experiment"
    train_fraction: float = 1.0
    train_fraction_note: str = "train on a stratified fraction of the training split"
    n_trials: int = 20


_BODY = """\
# kubetune config for {data_path} ({classes} classes), written by ml-init-config.
# Train it:   ml-train --config <this file>
# Any key can be overridden: --set optimizer.momentum=0.95, or --lr 0.01 --batch_size 64.

model:
  architecture: {architecture}   # small_cnn, any torchvision classifier (resnet18, convnext_tiny, ...), timm/<name>, or my_models:build
  pretrained: false          # true loads ImageNet weights from the local torch cache only
  dropout: 0.1               # before the final linear layer

data:
  path: {data_path}
  image_size: {image_size}             # images are resized to image_size x image_size
  channels: {channels}                # 1 grayscale, 3 RGB
  val_split: 0.2             # used when the folder has no train/ and val/ sub-folders
  train_fraction: {train_fraction}        # {train_fraction_note}
  num_workers: 0             # DataLoader worker processes
  normalize:                 # per-channel statistics of this dataset
    mean: {mean}
    std: {std}
  augment:
    horizontal_flip: false   # keep false for digits and text
    random_crop_padding: {padding}
    rotation_degrees: 0.0

training:
  num_epochs: {num_epochs}
  batch_size: {batch_size}
  seed: 0
  trainer: standard          # or mixed_precision (fp16 + GradScaler on CUDA, bf16 on CPU)
  device: auto               # auto, cpu or cuda

optimizer:
  type: sgd                  # sgd, adam or adamw
  lr: {lr}
  momentum: 0.9
  nesterov: false
  weight_decay: 0.0005

scheduler:
  type: cosine               # step (step_size, gamma), cosine or none
  step_size: 5
  gamma: 0.1

logging:
  output_dir: runs           # TensorBoard: tensorboard --logdir runs
  experiment_name: {experiment}
"""

_SEARCH = """
search:
  study_name: {experiment}_optimization
  # storage: sqlite:///optuna_studies.db   # the default; or postgresql+psycopg://user@host/db,
  #                                         # or $KUBETUNE_STORAGE_URL (keeps passwords out of files)
  n_trials: {n_trials}               # the study's total, all workers together
  direction: maximize
  metric: val_acc
  sampler:
    type: TPESampler         # RandomSampler, CmaEsSampler, GridSampler
    seed: 0
  pruner:
    type: SuccessiveHalvingPruner   # MedianPruner, PercentilePruner, HyperbandPruner, none
  search_space:              # dotted config keys; each trial overrides a copy of this config
    optimizer.lr: {{type: loguniform, low: 0.001, high: 0.3}}
    optimizer.weight_decay: {{type: loguniform, low: 1.0e-6, high: 0.01}}
    model.dropout: {{type: uniform, low: 0.0, high: 0.5}}
    training.batch_size: {{type: categorical, choices: [16, 32, 64]}}
  cross_validation:
    enabled: false
    n_folds: 5
    aggregation: mean
"""


def _fmt(values: list[float]) -> str:
    return "[" + ", ".join(f"{v:.4f}" for v in values) + "]"


def render_config(values: TemplateValues, with_search: bool) -> str:
    """The config text; validated here so a written file always loads."""
    fields = vars(values) | {
        "mean": _fmt(values.mean),
        "std": _fmt(values.std),
        "padding": 1 if values.image_size <= 64 else 4,
    }
    text = _BODY.format(**fields)
    if with_search:
        text += _SEARCH.format(**fields)
    validate_config(parse_yaml(text, "generated config"))
    return text
