"""Training losses for reszoo's GANs that are more than one line: the mode-seeking regulariser."""

from __future__ import annotations

from torch import Tensor

__all__ = ["mode_seeking_loss"]


def mode_seeking_loss(images: Tensor, noise: Tensor, eps: float = 1e-5) -> Tensor:
    """MSGAN's mode-seeking term (Mao et al. 2019, "Mode Seeking Generative Adversarial Networks
    for Diverse Image Synthesis"), to add to the generator's loss with a small weight.

    ``images`` and ``noise`` are a generated batch and the noise it came from; sample ``i`` of the
    first half and sample ``i`` of the second half must share their condition (class), so the pair
    differs only by its noise. Returns ``1 / (mean_i |G(z1_i) - G(z2_i)|_1 / |z1_i - z2_i|_1 + eps)``
    (mean absolute differences): large when different noises give nearly the same image, which is
    what a generator collapsing onto one sample per class does.
    """
    if images.shape[0] != noise.shape[0] or images.shape[0] < 2:
        raise ValueError(f"need a batch of at least 2 images with one noise vector each, got {images.shape[0]} images "
                         f"and {noise.shape[0]} noise vectors")
    half = images.shape[0] // 2
    image_gap = (images[:half] - images[half:2 * half]).abs().flatten(1).mean(dim=1)
    noise_gap = (noise[:half] - noise[half:2 * half]).abs().flatten(1).mean(dim=1)
    return 1.0 / ((image_gap / noise_gap).mean() + eps)
