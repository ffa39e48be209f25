"""Sample-quality measures computed with any classifier's features and softmax.

The Frechet distance and the Inception-style score are the formulas of FID (Heusel et al. 2017)
and IS (Salimans et al. 2016), but with features/probabilities from whatever classifier is given
(reszoo uses its own ``resnet-mnist`` for MNIST, so nothing is downloaded): the numbers are
comparable with each other, never with published FID/IS values.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["classifier_outputs", "frechet_distance", "inception_style_score", "class_accuracy", "within_class_pixel_std"]


@torch.no_grad()
def classifier_outputs(classifier: nn.Module, images: Tensor, *, mean: Sequence[float] | None = None,
                       std: Sequence[float] | None = None, batch_size: int = 500) -> tuple[Tensor, Tensor]:
    """(penultimate features, softmax probabilities) of ``images`` in [0, 1], (N, C, H, W).

    The classifier needs ``forward_features`` and ``forward_head(x, pre_logits=True)`` and an
    ``fc`` (reszoo's and timm's ResNets). ``mean``/``std`` default to the classifier's registry
    preprocessing (``classifier.entry.preprocess``)."""
    pre = getattr(getattr(classifier, "entry", None), "preprocess", {}) or {}
    mean = mean if mean is not None else pre.get("mean", [0.0])
    std = std if std is not None else pre.get("std", [1.0])
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    was_training = classifier.training
    classifier.eval()
    feats, probs = [], []
    try:
        for start in range(0, len(images), batch_size):
            x = (images[start:start + batch_size].float() - m) / s
            f = classifier.forward_head(classifier.forward_features(x), pre_logits=True)
            feats.append(f.double())
            probs.append(classifier.fc(f).double().softmax(-1))
    finally:
        classifier.train(was_training)
    return torch.cat(feats), torch.cat(probs)


def _sqrtm_psd(c: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(c)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(a: Tensor, b: Tensor) -> float:
    """||mu_a - mu_b||^2 + tr(C_a + C_b - 2 (C_a C_b)^(1/2)) between two feature sets (N, D)."""
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"expected two (N, D) feature sets with the same D, got {tuple(a.shape)} and {tuple(b.shape)}")
    if len(a) < 2 or len(b) < 2:
        raise ValueError("need at least 2 samples per set")
    x, y = a.double().cpu().numpy(), b.double().cpu().numpy()
    mu_x, mu_y = x.mean(0), y.mean(0)
    c_x, c_y = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    # tr((C_x C_y)^(1/2)) = tr((S C_y S)^(1/2)) with S = C_x^(1/2): a symmetric PSD square root
    s = _sqrtm_psd(c_x)
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(s @ c_y @ s), 0, None)).sum()
    return float(((mu_x - mu_y) ** 2).sum() + np.trace(c_x) + np.trace(c_y) - 2 * cross)


def inception_style_score(probs: Tensor, splits: int = 10, seed: int = 0) -> tuple[float, float]:
    """exp(E_x KL(p(y|x) || p(y))) over ``splits`` equal parts: (mean, std).

    The rows are shuffled (with ``seed``) before splitting: each part must be a random sample,
    and generated images often come ordered by class."""
    if probs.ndim != 2 or len(probs) < splits:
        raise ValueError(f"expected (N >= {splits}, K) probabilities, got {tuple(probs.shape)}")
    order = torch.randperm(len(probs), generator=torch.Generator().manual_seed(seed))
    p = probs.double()[order].clamp_min(1e-12)
    scores = []
    for part in p.chunk(splits):
        marginal = part.mean(0, keepdim=True)
        kl = (part * (part.log() - marginal.log())).sum(1).mean()
        scores.append(math.exp(kl.item()))
    return float(np.mean(scores)), float(np.std(scores))


def class_accuracy(probs: Tensor, labels: Tensor) -> float:
    """Fraction of samples whose top class is the requested one."""
    if len(probs) != len(labels):
        raise ValueError(f"{len(probs)} predictions for {len(labels)} labels")
    return float((probs.argmax(1).cpu() == labels.cpu()).double().mean())


def within_class_pixel_std(images: Tensor, labels: Tensor) -> float:
    """Mean over classes of the per-pixel standard deviation across that class's images: how much
    samples of one class differ from each other (near 0 for within-class mode collapse)."""
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"{images.shape[0]} images but {labels.shape[0]} labels")
    stds = [images[labels == c].float().std(dim=0).mean() for c in labels.unique() if (labels == c).sum() > 1]
    if not stds:
        raise ValueError("need at least two images of some class")
    return float(torch.stack(stds).mean())
