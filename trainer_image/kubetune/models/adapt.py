"""Fit a built network to the data: its first convolution, its classifier head, its input size."""

from __future__ import annotations

import torch
from torch import nn

from kubetune.errors import ConfigError


def _pair(values: tuple[int, ...]) -> tuple[int, int]:
    """A Conv2d's size argument (its attributes are typed as tuples of any length)."""
    return values[0], values[1]


def _replace_first_conv(conv: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    """The same convolution for ``in_channels`` inputs, averaging RGB weights for grey."""
    new = nn.Conv2d(
        in_channels,
        conv.out_channels,
        kernel_size=_pair(conv.kernel_size),
        stride=_pair(conv.stride),
        padding=conv.padding if isinstance(conv.padding, str) else _pair(conv.padding),
        dilation=_pair(conv.dilation),
        groups=conv.groups,
        bias=conv.bias is not None,
    )
    with torch.no_grad():
        new.weight.copy_(conv.weight.mean(dim=1, keepdim=True).expand_as(new.weight))
        if conv.bias is not None and new.bias is not None:
            new.bias.copy_(conv.bias)
    return new


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, leaf = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, leaf, module)


def adapt_first_conv(model: nn.Module, in_channels: int, architecture: str) -> None:
    """Give the first convolution (the stem, ViT's patch projection) ``in_channels`` inputs."""
    first = next(((name, m) for name, m in model.named_modules() if isinstance(m, nn.Conv2d)), None)
    if first is None:
        raise RuntimeError(f"{architecture} has no Conv2d to take {in_channels}-channel images")
    name, conv = first
    if conv.in_channels != in_channels:
        _set_module(model, name, _replace_first_conv(conv, in_channels))


def adapt_head(model: nn.Module, num_classes: int, dropout: float, architecture: str,
               old_classes: int = 1000) -> None:
    """Replace the layer that outputs ``old_classes`` scores by one for ``num_classes``, dropout before it.

    The head is the last Linear (or, as in SqueezeNet, 1x1 Conv2d) with ``old_classes``
    outputs. Where a Dropout already precedes it in a Sequential, its rate becomes
    ``dropout``; else the head becomes ``Sequential(Dropout, Linear)``.
    """
    heads = [(name, m) for name, m in model.named_modules()
             if (isinstance(m, nn.Linear) and m.out_features == old_classes)
             or (isinstance(m, nn.Conv2d) and m.out_channels == old_classes)]
    if not heads:
        raise RuntimeError(f"{architecture} has no layer with {old_classes} outputs to replace")
    name, head = heads[-1]
    new: nn.Module
    if isinstance(head, nn.Linear):
        new = nn.Linear(head.in_features, num_classes, bias=head.bias is not None)
    else:
        new = nn.Conv2d(head.in_channels, num_classes, kernel_size=_pair(head.kernel_size),
                        bias=head.bias is not None)
    parent_name, _, leaf = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    if isinstance(parent, nn.Sequential) and leaf.isdigit() and int(leaf) > 0 \
            and isinstance(parent[int(leaf) - 1], nn.Dropout):
        parent[int(leaf) - 1] = nn.Dropout(dropout)
        parent[int(leaf)] = new
    else:
        setattr(parent, leaf, nn.Sequential(nn.Dropout(dropout), new))


def check_input_size(model: nn.Module, in_channels: int, image_size: int, num_classes: int,
                     architecture: str) -> None:
    """Run one blank image through ``model``: an image size it cannot take is a config error."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(1, in_channels, image_size, image_size))
    except (RuntimeError, ValueError, AssertionError) as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            f"`model.architecture` {architecture} cannot take {image_size}x{image_size} images "
            f"(data.image_size): {reason}", path="data.image_size") from None
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (1, num_classes):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ConfigError(
            f"`model.architecture` {architecture} must return one score per class, shape (batch, "
            f"{num_classes}), but returned {shape} for one image", path="model.architecture")
