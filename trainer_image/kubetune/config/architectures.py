"""What ``model.architecture`` may name, checked without importing torch.

Three kinds of name: a torchvision classifier (``resnet18``) or the small CNN,
``timm/<name>`` for a timm model, and ``package.module:function`` for a factory
of the user's own. The torchvision list is torchvision's classification registry
(``torchvision.models.list_models(module=torchvision.models)``); a test keeps it
equal to the installed torchvision's.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from typing import Literal

TORCHVISION_CLASSIFIERS = (
    "alexnet", "convnext_base", "convnext_large", "convnext_small", "convnext_tiny",
    "densenet121", "densenet161", "densenet169", "densenet201",
    "efficientnet_b0", "efficientnet_b1", "efficientnet_b2", "efficientnet_b3", "efficientnet_b4",
    "efficientnet_b5", "efficientnet_b6", "efficientnet_b7",
    "efficientnet_v2_l", "efficientnet_v2_m", "efficientnet_v2_s",
    "googlenet", "inception_v3", "maxvit_t",
    "mnasnet0_5", "mnasnet0_75", "mnasnet1_0", "mnasnet1_3",
    "mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small",
    "regnet_x_16gf", "regnet_x_1_6gf", "regnet_x_32gf", "regnet_x_3_2gf", "regnet_x_400mf",
    "regnet_x_800mf", "regnet_x_8gf", "regnet_y_128gf", "regnet_y_16gf", "regnet_y_1_6gf",
    "regnet_y_32gf", "regnet_y_3_2gf", "regnet_y_400mf", "regnet_y_800mf", "regnet_y_8gf",
    "resnet101", "resnet152", "resnet18", "resnet34", "resnet50",
    "resnext101_32x8d", "resnext101_64x4d", "resnext50_32x4d",
    "shufflenet_v2_x0_5", "shufflenet_v2_x1_0", "shufflenet_v2_x1_5", "shufflenet_v2_x2_0",
    "squeezenet1_0", "squeezenet1_1",
    "swin_b", "swin_s", "swin_t", "swin_v2_b", "swin_v2_s", "swin_v2_t",
    "vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn",
    "vit_b_16", "vit_b_32", "vit_h_14", "vit_l_16", "vit_l_32",
    "wide_resnet101_2", "wide_resnet50_2",
)
BUILT_IN = ("small_cnn", *TORCHVISION_CLASSIFIERS)
# The names ml-init-config offers; any other valid name may be typed.
COMMON_ARCHITECTURES = (
    "small_cnn", "resnet18", "resnet34", "resnet50", "efficientnet_b0", "mobilenet_v3_small",
)
TIMM_PREFIX = "timm/"
TIMM_EXTRA = "pip install 'kubetune[timm]'"
# Keys kubetune sets itself when it builds a model.
RESERVED_KWARGS = ("num_classes", "in_channels", "in_chans", "weights", "pretrained")

_FACTORY = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*")
_TIMM_NAME = re.compile(r"[\w.\-]+")

Kind = Literal["small_cnn", "torchvision", "timm", "factory"]


def closest_names(name: str, choices: Iterable[str], n: int = 3) -> str:
    """`` (did you mean `a`, `b` or `c`?)`` for the close matches, else an empty string."""
    matches = [f"`{m}`" for m in difflib.get_close_matches(name, list(choices), n=n, cutoff=0.6)]
    if not matches:
        return ""
    listed = matches[0] if len(matches) == 1 else f"{', '.join(matches[:-1])} or {matches[-1]}"
    return f" (did you mean {listed}?)"


def architecture_kind(name: str) -> Kind:
    """Which builder makes ``name``; ValueError with the closest names when none does."""
    if name == "small_cnn":
        return "small_cnn"
    if name in TORCHVISION_CLASSIFIERS:
        return "torchvision"
    if name.startswith(TIMM_PREFIX):
        if _TIMM_NAME.fullmatch(name[len(TIMM_PREFIX):]):
            return "timm"
        raise ValueError(f"must name a timm model after `{TIMM_PREFIX}` (timm/resnet50), "
                         f"but got {name!r}")
    if ":" in name:
        if _FACTORY.fullmatch(name):
            return "factory"
        raise ValueError(f"must be package.module:function for a factory of your own, but got {name!r}")
    raise ValueError(
        f"must be a torchvision classifier, small_cnn, timm/<name> or package.module:function, "
        f"but got {name!r}{closest_names(name, BUILT_IN)}")
