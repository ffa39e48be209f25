"""BigGAN-deep generator (Brock et al. 2019), in the form DeepMind released it at 128x128.

The class embedding is concatenated with z into one conditioning vector that every block sees
(BigGAN-deep feeds all of z to every block rather than splitting it). Blocks are bottleneck
residual blocks (1x1 down, two 3x3, 1x1 up) with class-conditional batch norm; their shortcut
drops channels and upsamples, so it has no weights. Self-attention sits before one block; every
weight is spectrally normalised; batch-norm statistics are tables with one row per truncation
value (0, 1/50, ..., 1), because the released generator was evaluated with statistics gathered
at each truncation. Module names are reszoo's; ``convert.py`` maps the pytorch-pretrained-BigGAN
state dict onto them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..nn import ResidualBlock
from .models import GeneratorMixin, SNConv2d, SNLinear, archs

__all__ = ["BigGANDeep", "BigGANDeepConfig", "BIGGAN_DEEP_CFGS", "biggan_deep_128"]


@dataclass(frozen=True)
class BigGANDeepConfig:
    resolution: int
    ch: int  # channel width: block channels are multiples of it
    z_dim: int
    num_classes: int
    blocks: tuple[tuple[bool, int, int], ...]  # (upsample, in x ch, out x ch) per block
    attention_before: int  # index of the block that self-attention precedes
    n_stats: int = 51  # rows of the truncation-indexed batch-norm statistics
    eps: float = 1e-4  # batch-norm and spectral-norm epsilon of the released model


BIGGAN_DEEP_CFGS: dict[int, BigGANDeepConfig] = {
    128: BigGANDeepConfig(
        resolution=128, ch=128, z_dim=128, num_classes=1000,
        blocks=((False, 16, 16), (True, 16, 16), (False, 16, 16), (True, 16, 8), (False, 8, 8),
                (True, 8, 4), (False, 4, 4), (True, 4, 2), (False, 2, 2), (True, 2, 1)),
        attention_before=8,
    ),
}


class TruncationBatchNorm(nn.Module):
    """Batch norm with fixed statistics looked up by truncation; class-conditional gain and bias
    (``1 + scale(c)``, ``offset(c)`` from the conditioning vector ``c``) or plain affine ones."""

    def __init__(self, num_features: int, cond_dim: int | None, n_stats: int = 51, eps: float = 1e-4) -> None:
        super().__init__()
        self.eps = eps
        self.step = 1.0 / (n_stats - 1)
        self.register_buffer("running_means", torch.zeros(n_stats, num_features))
        self.register_buffer("running_vars", torch.ones(n_stats, num_features))
        self.conditional = cond_dim is not None
        if cond_dim is not None:
            self.scale = SNLinear(cond_dim, num_features, bias=False, sn_eps=eps)
            self.offset = SNLinear(cond_dim, num_features, bias=False, sn_eps=eps)
        else:
            self.weight = nn.Parameter(torch.ones(num_features))
            self.bias = nn.Parameter(torch.zeros(num_features))

    def reset_parameters(self) -> None:
        if not self.conditional:
            nn.init.ones_(self.weight)
            nn.init.zeros_(self.bias)

    def statistics(self, truncation: float) -> tuple[Tensor, Tensor]:
        # Between two rows the blend weights the lower row by the fractional part, exactly as
        # pytorch-pretrained-BigGAN does: the released weights' reference images come from that.
        frac, row = math.modf(truncation / self.step)
        row = int(row)
        if frac == 0.0:
            return self.running_means[row], self.running_vars[row]
        mean = self.running_means[row] * frac + self.running_means[row + 1] * (1 - frac)
        var = self.running_vars[row] * frac + self.running_vars[row + 1] * (1 - frac)
        return mean, var

    def forward(self, x: Tensor, truncation: float, cond: Tensor | None = None) -> Tensor:
        mean, var = self.statistics(truncation)
        if not self.conditional:
            return F.batch_norm(x, mean, var, self.weight, self.bias, training=False, momentum=0.0, eps=self.eps)
        assert cond is not None
        gain = 1 + self.scale(cond)[:, :, None, None]
        bias = self.offset(cond)[:, :, None, None]
        return (x - mean[None, :, None, None]) / torch.sqrt(var[None, :, None, None] + self.eps) * gain + bias


class DeepGBlock(ResidualBlock):
    """Bottleneck block: (BN, ReLU, conv) x 4 with 1x1 / 3x3 / 3x3 / 1x1 convs, upsampling after the
    second BN; shortcut: keep the first ``out`` channels, upsample."""

    def __init__(self, in_channels: int, out_channels: int, cond_dim: int, upsample: bool, *, reduction: int = 4,
                 n_stats: int = 51, eps: float = 1e-4, residual: bool = True) -> None:
        super().__init__(residual)
        mid = in_channels // reduction
        self.upsample, self.out_channels = upsample, out_channels
        bn = lambda c: TruncationBatchNorm(c, cond_dim, n_stats, eps)  # noqa: E731
        self.bn1, self.conv1 = bn(in_channels), SNConv2d(in_channels, mid, 1, sn_eps=eps)
        self.bn2, self.conv2 = bn(mid), SNConv2d(mid, mid, 3, padding=1, sn_eps=eps)
        self.bn3, self.conv3 = bn(mid), SNConv2d(mid, mid, 3, padding=1, sn_eps=eps)
        self.bn4, self.conv4 = bn(mid), SNConv2d(mid, out_channels, 1, sn_eps=eps)

    def forward(self, x: Tensor, cond: Tensor, truncation: float) -> Tensor:
        h = self.conv1(F.relu(self.bn1(x, truncation, cond)))
        h = F.relu(self.bn2(h, truncation, cond))
        if self.upsample:
            h = F.interpolate(h, scale_factor=2, mode="nearest")
        h = self.conv2(h)
        h = self.conv3(F.relu(self.bn3(h, truncation, cond)))
        h = self.conv4(F.relu(self.bn4(h, truncation, cond)))
        return self.join(h, self.shortcut_of(x, self._shortcut))

    def _shortcut(self, x: Tensor) -> Tensor:
        shortcut = x[:, :self.out_channels]
        return F.interpolate(shortcut, scale_factor=2, mode="nearest") if self.upsample else shortcut


class SelfAttention(ResidualBlock):
    """SAGAN self-attention, ``x + gamma * attention(x)``; keys and values are 2x2 max-pooled.

    ``gamma`` starts at 0 (the block starts as the identity, as in SAGAN); in the plain twin, which
    outputs ``gamma * attention(x)`` alone, it starts at 1, or the block would output zeros
    (:meth:`reszoo.nn.ResidualBlock.init_branch_scale`). Loaded weights bring their own gamma.
    """

    def __init__(self, channels: int, eps: float = 1e-4, residual: bool = True) -> None:
        super().__init__(residual)
        self.theta = SNConv2d(channels, channels // 8, 1, bias=False, sn_eps=eps)
        self.phi = SNConv2d(channels, channels // 8, 1, bias=False, sn_eps=eps)
        self.g = SNConv2d(channels, channels // 2, 1, bias=False, sn_eps=eps)
        self.o = SNConv2d(channels // 2, channels, 1, bias=False, sn_eps=eps)
        self.gamma = nn.Parameter(torch.empty(1))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.init_branch_scale(self.gamma)

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        theta = self.theta(x).view(n, c // 8, h * w)
        phi = F.max_pool2d(self.phi(x), 2).view(n, c // 8, h * w // 4)
        attn = torch.softmax(torch.bmm(theta.transpose(1, 2), phi), dim=-1)
        g = F.max_pool2d(self.g(x), 2).view(n, c // 2, h * w // 4)
        out = self.o(torch.bmm(g, attn.transpose(1, 2)).view(n, c // 2, h, w))
        return self.join(self.gamma * out, x)


class BigGANDeep(GeneratorMixin, nn.Module):
    """BigGAN-deep generator: ``forward(z, y, truncation)`` -> images in [-1, 1].

    ``y``: class indices (N,), or class vectors (N, num_classes) to mix classes.
    ``truncation`` in (0, 1] selects the batch-norm statistics; draw z with the same truncation
    (``sample()`` does both).
    """

    head_prefixes: tuple[str, ...] = ()  # a generator has no classifier head to replace
    default_truncation: float | None = 0.5
    sample_batch_size = 8

    def __init__(self, cfg: BigGANDeepConfig, *, residual: bool = True) -> None:
        super().__init__()
        self.cfg, self.residual = cfg, residual
        self.z_dim, self.num_classes, self.resolution, self.out_channels = cfg.z_dim, cfg.num_classes, cfg.resolution, 3
        ch, cond_dim = cfg.ch, 2 * cfg.z_dim
        self.embed = nn.Linear(cfg.num_classes, cfg.z_dim, bias=False)
        self.linear = SNLinear(cond_dim, 4 * 4 * cfg.blocks[0][1] * ch, sn_eps=cfg.eps)
        self.blocks = nn.ModuleList(
            DeepGBlock(c_in * ch, c_out * ch, cond_dim, up, n_stats=cfg.n_stats, eps=cfg.eps, residual=residual)
            for up, c_in, c_out in cfg.blocks
        )
        self.attention = SelfAttention(cfg.blocks[cfg.attention_before][1] * ch, eps=cfg.eps, residual=residual)
        self.bn = TruncationBatchNorm(cfg.blocks[-1][2] * ch, None, cfg.n_stats, cfg.eps)
        # The released model's last conv has ch outputs of which the first 3 are RGB; its spectral
        # norm is that of the whole weight, so the whole weight is kept.
        self.conv_out = SNConv2d(cfg.blocks[-1][2] * ch, cfg.blocks[-1][2] * ch, 3, padding=1, sn_eps=cfg.eps)

    def class_vector(self, y: Tensor) -> Tensor:
        if y.dtype.is_floating_point:
            return self.embed(y)
        return self.embed.weight.t()[y]  # the embedding of a one-hot vector, without the matmul

    def forward(self, z: Tensor, y: Tensor, truncation: float) -> Tensor:
        if not 0.0 < truncation <= 1.0:
            raise ValueError(f"truncation must be in (0, 1], got {truncation!r}")
        cond = torch.cat([z, self.class_vector(y)], dim=1)
        h = self.linear(cond).view(z.shape[0], -1, 4, 4)
        for i, block in enumerate(self.blocks):
            if i == self.cfg.attention_before:
                h = self.attention(h)
            h = block(h, cond, truncation)
        h = F.relu(self.bn(h, truncation))
        rgb_weight = self.conv_out.normalized_weight()[:3]
        return torch.tanh(F.conv2d(h, rgb_weight, self.conv_out.bias[:3], padding=1))

    def generate(self, z: Tensor, y: Tensor | None, truncation: float | None) -> Tensor:
        assert y is not None and truncation is not None
        return self(z, y, truncation)


@archs.register
def biggan_deep_128(*, residual: bool = True, **overrides: Any) -> BigGANDeep:
    """BigGAN-deep at 128x128 for the 1000 ImageNet classes (the released configuration)."""
    cfg = BIGGAN_DEEP_CFGS[128]
    if overrides:
        cfg = BigGANDeepConfig(**{**cfg.__dict__, **overrides})
    return BigGANDeep(cfg, residual=residual)
