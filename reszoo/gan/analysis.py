"""What ``reszoo analyze`` measures on a generator: its samples, scored against the intact generator's.

A generator has no labelled data and no loss of its own once trained, so:

- inputs: noise ``z`` drawn as :meth:`sample` draws it (seeded; the model's default truncation)
  and, for a class-conditional generator, the classes ``0, 1, 2, ...`` in turn;
- targets: the intact generator's images for those inputs;
- lesion metric: how much of the images' variation a lesioned generator keeps, as the coefficient
  of determination (%) of its images against the intact ones: ``100 (1 - SSE / SST)``, SST around
  the intact images' mean (100: unchanged; 0: no better than the average image; can go below 0);
- gradient-flow loss: a fixed random projection of the image (no discriminator is published).
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import Tensor, nn

from ..analysis.core import AnalysisError, projection_loss
from ..analysis.data import AnalysisData

__all__ = ["Sampler", "analysis_data", "r2_percent"]


class Sampler(nn.Module):
    """``(z, y) -> generate(z, y, truncation)``: the generator as the analysis calls it."""

    def __init__(self, generator: nn.Module, truncation: float | None) -> None:
        super().__init__()
        self.generator, self.truncation = generator, truncation

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        return self.generator.generate(z, y, self.truncation)


def r2_percent(images: Tensor, reference: Tensor) -> float:
    """``100 (1 - sum (x - r)^2 / sum (r - mean r)^2)`` over all images and pixels."""
    ref = reference.to(images).double()
    sse = (images.double() - ref).square().sum()
    sst = (ref - ref.mean(0, keepdim=True)).square().sum().clamp_min(1e-12)
    return float(100.0 * (1.0 - sse / sst))


def analysis_data(model: nn.Module, path: str | os.PathLike[str] | None, *, limit: int | None = None,
                  seed: int = 0) -> AnalysisData:
    """Noise (and classes), the intact generator's images, and how to score a lesioned one."""
    if path is not None:
        raise AnalysisError("a generator draws its own noise: --data is not read (use --limit and --seed)")
    n = limit or 64
    if n < 2:
        raise AnalysisError(f"a generator needs at least 2 samples to score (--limit), got {n}")
    truncation = getattr(model, "default_truncation", None)
    z = model.sample_noise(n, truncation, torch.Generator().manual_seed(seed))
    inputs: dict[str, Any] = {"z": z}
    if model.num_classes:
        inputs["y"] = torch.arange(n) % model.num_classes
    sampler = Sampler(model, truncation)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            param = next(model.parameters())
            reference = sampler(**{k: v.to(param.device) for k, v in inputs.items()}).float().cpu()
    finally:
        model.train(was_training)
    classes = f", classes 0..{model.num_classes - 1} in turn" if model.num_classes else ""
    return AnalysisData(inputs, reference, False, f"{n} noise vectors (seed {seed}{classes})", metric=r2_percent,
                        metric_name="variance of the intact samples kept (R², %)", loss_fn=projection_loss(seed),
                        module=sampler)
