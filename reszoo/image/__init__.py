"""The image domain: ResNets for classification (ImageNet, CIFAR-style, MNIST).

Implements the domain contract of :mod:`reszoo.domains`. Light on import (torch only):
torchvision and PIL are imported when a preprocess is built or an image is read.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from . import models
from .models import ResNet
from .preprocess import ImageInputError, ImagePreprocess, PreprocessConfigError

if TYPE_CHECKING:
    from ..registry import Entry

__all__ = [
    "ARCHS",
    "CONVERTERS",
    "ImageInputError",
    "ImagePreprocess",
    "PreprocessConfigError",
    "ResNet",
    "build_preprocess",
    "predict",
    "from_torchvision",
]

ARCHS: dict[str, Callable[..., nn.Module]] = {
    "resnet": ResNet,  # fully configurable from arch_args (block, layers, widths, ...)
    "resnet18": models.resnet18,
    "resnet34": models.resnet34,
    "resnet50": models.resnet50,
    "resnet101": models.resnet101,
    "resnet152": models.resnet152,
    "resnet20": models.resnet20,
    "resnet32": models.resnet32,
    "resnet44": models.resnet44,
    "resnet56": models.resnet56,
    "resnet110": models.resnet110,
    "resnet_mnist": models.resnet_mnist,
}

_BN = r"(weight|bias|running_mean|running_var|num_batches_tracked)"
_RESNET_KEY = re.compile(
    rf"^(conv1\.weight|bn1\.{_BN}|fc\.(weight|bias)"
    rf"|layer\d+\.\d+\.(conv\d\.weight|bn\d\.{_BN}|downsample\.0\.weight|downsample\.1\.{_BN}))$"
)


def from_torchvision(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """torchvision/timm ResNet state dict -> reszoo's (the same key names): a strict check.

    Rejects any key a reszoo ResNet does not have (e.g. a ResNet-D deep stem or SE modules)
    rather than dropping it. Adds ``num_batches_tracked`` (0) where a checkpoint predates that
    buffer (torchvision's original ResNet files lack it); it only counts training steps.
    Missing weights are left for the strict ``load_state_dict`` to report.
    """
    unexpected = sorted(k for k in state_dict if not _RESNET_KEY.match(k))
    if unexpected:
        shown = ", ".join(unexpected[:10]) + (f", ... ({len(unexpected)} in all)" if len(unexpected) > 10 else "")
        raise ValueError(f"not a torchvision/timm ResNet state dict: unexpected keys {shown}")
    out = dict(state_dict)
    for key in state_dict:
        if key.endswith(".running_mean"):
            out.setdefault(key[: -len("running_mean")] + "num_batches_tracked", torch.tensor(0, dtype=torch.long))
    return out


CONVERTERS: dict[str, Callable[[dict[str, Tensor]], dict[str, Tensor]]] = {
    "torchvision": from_torchvision,
    "timm": from_torchvision,  # timm's ResNet uses torchvision's names
}

# LoRA (reszoo.lora, `reszoo finetune --lora`): the layers adapted by default, a regex over module
# names (full match): the stem and every convolution of the residual blocks, projection shortcuts included.
LORA_TARGETS = r"conv1|layer\d+\.\d+\.(conv\d+|downsample\.0)"


def build_preprocess(entry: Entry) -> ImagePreprocess:
    """The entry's ``preprocess`` as a callable: path / PIL image / tensor -> float NCHW batch."""
    return ImagePreprocess(entry.preprocess, where=f"registry entry {entry.name!r}")


def _describe(item: Any) -> str:
    """How an input is named in predict's rows: paths as given, other objects by type and shape."""
    if isinstance(item, str | os.PathLike):
        return str(item)
    shape = getattr(item, "shape", None) or getattr(item, "size", None)
    return f"<{type(item).__name__} {tuple(shape)}>" if shape is not None else f"<{type(item).__name__}>"


def predict(model: nn.Module, inputs: list[Any], top_k: int = 5) -> list[dict[str, Any]]:
    """Top-``top_k`` classes of each input (a path, PIL image or tensor): rows ``{input, rank, label, prob}``.

    Uses ``model.preprocess`` and ``model.labels`` as set by :func:`reszoo.load`.
    """
    preprocess = getattr(model, "preprocess", None)
    if preprocess is None:
        raise ValueError("model has no .preprocess; load it with reszoo.load(name) or set model.preprocess")
    labels = getattr(model, "labels", None)
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    param = next(model.parameters())
    rows: list[dict[str, Any]] = []
    with torch.inference_mode():
        for item in inputs:
            batch = preprocess(item).to(device=param.device, dtype=param.dtype)
            probs = model(batch).float().softmax(dim=-1)
            k = min(top_k, probs.shape[-1])
            for i, (values, indices) in enumerate(zip(*probs.topk(k, dim=-1), strict=True)):
                name = _describe(item)
                name = name if batch.shape[0] == 1 else f"{name}[{i}]"
                for rank, (p, idx) in enumerate(zip(values.tolist(), indices.tolist(), strict=True), start=1):
                    rows.append({"input": name, "rank": rank, "label": labels[idx] if labels else str(idx), "prob": round(p, 4)})
    return rows
