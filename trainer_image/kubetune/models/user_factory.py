"""A model factory of the user's own: ``package.module:function``."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from typing import Any

from torch import nn

from kubetune.config.architectures import closest_names
from kubetune.config.schema import ModelConfig
from kubetune.errors import ConfigError

_PATH = "model.architecture"


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[-1]}" if text else type(exc).__name__


def load_factory(spec: str) -> Callable[..., Any]:
    """The function ``spec`` names, imported from the working folder or ``PYTHONPATH``."""
    module_name, _, function_name = spec.partition(":")
    if os.getcwd() not in sys.path:  # console scripts do not put the working folder on the path
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # the user's module: any error in it is theirs to fix
        raise ConfigError(f"`{_PATH}` {spec}: cannot import {module_name} ({_one_line(exc)}); it must be "
                          "importable from the working folder or PYTHONPATH", path=_PATH) from None
    factory = getattr(module, function_name, None)
    if factory is None:
        hint = closest_names(function_name, [n for n in dir(module) if not n.startswith("_")])
        raise ConfigError(f"`{_PATH}` {spec}: module {module_name} has no {function_name}{hint}", path=_PATH)
    if not callable(factory):
        raise ConfigError(f"`{_PATH}` {spec}: {function_name} must be a function, but it is a "
                          f"{type(factory).__name__}", path=_PATH)
    return factory


def build_from_factory(cfg: ModelConfig, num_classes: int, in_channels: int) -> nn.Module:
    """Call the user's factory as ``function(num_classes, in_channels, **model.kwargs)``."""
    factory = load_factory(cfg.architecture)
    try:
        model = factory(num_classes, in_channels, **cfg.kwargs)
    except Exception as exc:
        raise ConfigError(f"`{_PATH}` {cfg.architecture}({num_classes}, {in_channels}, **model.kwargs) "
                          f"raised {_one_line(exc)}", path=_PATH) from None
    if not isinstance(model, nn.Module):
        raise ConfigError(f"`{_PATH}` {cfg.architecture} must return a torch.nn.Module, but returned "
                          f"{type(model).__name__}", path=_PATH)
    return model
