"""The typed config: one model per YAML section, unknown keys rejected."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from kubetune.config.architectures import architecture_kind
from kubetune.config.search_schema import MAX_EPOCHS, SearchConfig

METRICS = ("val_acc", "val_loss", "train_acc", "train_loss")

# The largest float32: torch computes in 32-bit floats, and a larger learning rate
# fails deep inside torch.optim ("cannot be converted to type float without overflow").
FLOAT32_MAX = 3.4028234663852886e38


def _fits_float32(value: float) -> float:
    if abs(value) > FLOAT32_MAX:
        raise PydanticCustomError(
            "float32_overflow", "must fit a 32-bit float (at most 3.4e38 in size)"
        )
    return value


# A float the trainer hands to torch.
Float32 = Annotated[float, AfterValidator(_fits_float32)]


def _folder_inside(value: str) -> str:
    """A folder under ``logging.output_dir``: relative, and no part leaves it."""
    parts = value.replace("\\", "/").split("/")
    if value.startswith(("/", "\\")) or "\0" in value or any(p in ("", ".", "..") for p in parts):
        raise PydanticCustomError(
            "folder_name", "must be a relative folder name under logging.output_dir "
            "(not empty, not absolute, no . or .. parts)"
        )
    return value


# A folder under logging.output_dir.
FolderName = Annotated[str, AfterValidator(_folder_inside)]


class Section(BaseModel):
    """Base for every config section: strict keys, validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


def _known_architecture(value: str) -> str:
    try:
        architecture_kind(value)
    except ValueError as exc:
        raise PydanticCustomError("architecture", str(exc)) from None
    return value


# A name ``model.architecture`` accepts (kubetune.config.architectures).
Architecture = Annotated[str, AfterValidator(_known_architecture)]


class ModelConfig(Section):
    architecture: Architecture = Field(
        "small_cnn", description="small_cnn, any torchvision classifier (resnet18, convnext_tiny, vit_b_16, ...), "
        "timm/<name> for a timm model (the timm extra), or package.module:function for your own factory, "
        "called as function(num_classes, in_channels, **model.kwargs)")
    pretrained: bool = Field(False, description="load ImageNet weights from the local torch cache "
                             "($TORCH_HOME/hub/checkpoints) or, for timm, the local Hugging Face cache only; "
                             "nothing downloads")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout before the classifier (torchvision and "
                           "timm models; a factory takes its own through model.kwargs)")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="keyword arguments for the model's "
                                   "builder: the torchvision or timm builder, or your factory")


class NormalizeConfig(Section):
    mean: list[Float32] = Field(default_factory=lambda: [0.5], description="one value, or one per channel")
    std: list[Float32] = Field(default_factory=lambda: [0.5], description="one value, or one per channel")

    @model_validator(mode="after")
    def _same_length(self) -> NormalizeConfig:
        if len(self.mean) != len(self.std):
            raise ValueError("mean and std must have the same length")
        if any(s <= 0 for s in self.std):
            raise ValueError("std values must be greater than 0")
        return self


class AugmentConfig(Section):
    horizontal_flip: bool = Field(False, description="training images only, as every augmentation")
    random_crop_padding: int = Field(0, ge=0, description="pad by this many pixels, then crop back at random")
    rotation_degrees: float = Field(0.0, ge=0.0, le=180.0, description="rotate at random by up to this many degrees")


class DataConfig(Section):
    path: str = Field(description="an ImageFolder tree: <class>/<image>, or train/<class>/... and "
                      "val/<class>/...; relative to the working folder")
    image_size: int = Field(32, ge=4, le=1024, description="images are resized to this square size")
    channels: Literal[1, 3] | None = Field(None, description="null: detected from the images")
    val_split: float = Field(0.2, gt=0.0, lt=1.0, description="held-out fraction when there is no val/ folder "
                             "(stratified, seeded by training.seed)")
    train_fraction: float = Field(1.0, gt=0.0, le=1.0, description="train on a stratified fraction of the "
                                  "training split")
    num_workers: int = Field(0, ge=0, description="DataLoader workers when the dataset streams from disk")
    in_memory: Literal["auto", True, False] = Field(
        "auto", description="auto: decode once into one uint8 tensor on the training device when it fits a "
        "quarter of host (the container's limit where lower) and GPU memory, else stream the files through "
        "DataLoader workers; true or false force either")
    normalize: NormalizeConfig = Field(default_factory=NormalizeConfig,
                                       description="per-channel mean and std (ml-init-config measures them)")
    augment: AugmentConfig = Field(default_factory=AugmentConfig)


class TrainingConfig(Section):
    num_epochs: int = Field(10, ge=1, le=MAX_EPOCHS)
    batch_size: int = Field(32, ge=1)
    seed: int = Field(0, description="seeds the run and the stratified splits")
    trainer: Literal["standard", "mixed_precision"] = Field(
        "standard", description="mixed_precision: fp16 autocast and a gradient scaler on CUDA, bf16 autocast "
        "on the CPU")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA when present")
    compile: bool = Field(False, description="run the model through torch.compile (CUDA: worth it for long "
                          "runs only)")


class OptimizerConfig(Section):
    type: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: Float32 = Field(0.01, gt=0.0, description="fits a 32-bit float")
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="sgd only")
    nesterov: bool = Field(False, description="sgd only; needs momentum")
    weight_decay: Float32 = Field(0.0, ge=0.0, description="fits a 32-bit float")

    @model_validator(mode="after")
    def _nesterov_needs_momentum(self) -> OptimizerConfig:
        if self.type == "sgd" and self.nesterov and self.momentum == 0:
            raise ValueError("nesterov needs momentum greater than 0")
        return self


class SchedulerConfig(Section):
    type: Literal["step", "cosine", "none"] = "step"
    step_size: int = Field(5, ge=1, description="step: epochs between rate drops")
    gamma: float = Field(0.1, gt=0.0, le=1.0, description="step: the factor of each drop")


class LoggingConfig(Section):
    output_dir: str = Field(default="runs", description="relative to the working folder")
    experiment_name: FolderName | None = Field(default=None, description="a relative folder under output_dir; "
                                               "null: the dataset folder's name")
    run_name: FolderName | None = Field(default=None, description="a relative folder under the experiment; "
                                        "null: a timestamp (never reuses a folder)")


class Config(Section):
    """A complete kubetune config: what ml-train trains and ml-search searches over."""

    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    search: SearchConfig | None = None
