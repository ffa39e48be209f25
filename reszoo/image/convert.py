"""Upstream image checkpoints onto reszoo's layout (``weights.converter`` of an entry names one)."""

from __future__ import annotations

import re
from collections.abc import Callable

import torch
from torch import Tensor

from .._text import listing
from ..domains import Registry

converters: Registry[Callable[[dict[str, Tensor]], dict[str, Tensor]]] = Registry("converter")

_BN = r"(weight|bias|running_mean|running_var|num_batches_tracked)"
_RESNET_KEY = re.compile(
    rf"^(conv1\.weight|bn1\.{_BN}|fc\.(weight|bias)"
    rf"|layer\d+\.\d+\.(conv\d\.weight|bn\d\.{_BN}|downsample\.0\.weight|downsample\.1\.{_BN}))$"
)


@converters.register("torchvision", "timm")  # timm's ResNet uses torchvision's names
def from_torchvision(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """torchvision/timm ResNet state dict -> reszoo's (the same key names): a strict check.

    Rejects any key a reszoo ResNet does not have (e.g. a ResNet-D deep stem or SE modules)
    rather than dropping it. Adds ``num_batches_tracked`` (0) where a checkpoint predates that
    buffer (torchvision's original ResNet files lack it); it only counts training steps.
    Missing weights are left for the strict ``load_state_dict`` to report.
    """
    unexpected = sorted(k for k in state_dict if not _RESNET_KEY.match(k))
    if unexpected:
        raise ValueError(f"not a torchvision/timm ResNet state dict: unexpected keys {listing(unexpected, 10)}")
    out = dict(state_dict)
    for key in state_dict:
        if key.endswith(".running_mean"):
            out.setdefault(key[: -len("running_mean")] + "num_batches_tracked", torch.tensor(0, dtype=torch.long))
    return out
