"""SNGAN-style residual generator and discriminator (Miyato et al. 2018), and what every reszoo
generator shares: spectrally normalised layers and :class:`GeneratorMixin.sample`.

Architecture as data: :data:`SNGAN_CFGS` says, per resolution, where the generator starts, how
many up-blocks it has and which discriminator blocks downsample; one configurable class per
network builds it. Every residual block derives from :class:`reszoo.nn.ResidualBlock`, so
``residual=False`` builds the plain twin (no additions, no learned 1x1 shortcuts).
"""

from __future__ import annotations

import numbers
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._text import listing
from ..domains import Registry
from ..nn import ResidualBlock

__all__ = [
    "GeneratorMixin",
    "label_indices",
    "SNConv2d",
    "SNLinear",
    "SNEmbedding",
    "SNGANGenerator",
    "SNGANDiscriminator",
    "SNGAN_CFGS",
    "sngan_g28",
    "sngan_g32",
    "sngan_d28",
    "sngan_d32",
    "archs",
]

# Every architecture of the domain, registered where it is defined (registry entries name them in
# ``arch``); the BigGAN builder is in biggan.py, imported at the end of this module.
archs: Registry[Callable[..., nn.Module]] = Registry("architecture")


# --------------------------------------------------------------------------- spectral norm


class _SpectralNorm:
    """Divides ``weight`` by its largest singular value, estimated by power iteration.

    The state is that of ``torch.nn.utils.spectral_norm`` with ``weight_orig`` stored as
    ``weight``: the unnormalised ``weight`` and the singular-vector estimates ``weight_u`` (rows)
    and ``weight_v`` (columns). Training runs one power-iteration step per forward and updates
    ``u``/``v`` in place; eval uses them as stored, so a loaded checkpoint gives the exact
    weights it was saved with.
    """

    weight: Tensor
    weight_u: Tensor
    weight_v: Tensor
    training: bool

    def _init_spectral_norm(self, eps: float) -> None:
        self.sn_eps = eps
        rows = self.weight.shape[0]
        cols = self.weight[0].numel()
        if self.weight.is_meta:  # built to be filled from a checkpoint: skip the (slow) meta kernels
            self.register_buffer("weight_u", self.weight.new_empty(rows))  # type: ignore[attr-defined]
            self.register_buffer("weight_v", self.weight.new_empty(cols))  # type: ignore[attr-defined]
            return
        self.register_buffer("weight_u", F.normalize(self.weight.new_empty(rows).normal_(), dim=0, eps=eps))  # type: ignore[attr-defined]
        self.register_buffer("weight_v", F.normalize(self.weight.new_empty(cols).normal_(), dim=0, eps=eps))  # type: ignore[attr-defined]

    def normalized_weight(self) -> Tensor:
        weight = self.weight
        matrix = weight.reshape(weight.shape[0], -1)
        u, v = self.weight_u, self.weight_v
        if self.training:
            with torch.no_grad():
                F.normalize(torch.mv(matrix.t(), u), dim=0, eps=self.sn_eps, out=v)
                F.normalize(torch.mv(matrix, v), dim=0, eps=self.sn_eps, out=u)
            # clones: autograd must not see the in-place updates of the next step
            u, v = u.clone(), v.clone()
        sigma = torch.dot(u, torch.mv(matrix, v))
        return weight / sigma


class SNConv2d(_SpectralNorm, nn.Conv2d):
    def __init__(self, *args: Any, sn_eps: float = 1e-12, **kwargs: Any) -> None:
        nn.Conv2d.__init__(self, *args, **kwargs)
        self._init_spectral_norm(sn_eps)

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(x, self.normalized_weight(), self.bias)


class SNLinear(_SpectralNorm, nn.Linear):
    def __init__(self, *args: Any, sn_eps: float = 1e-12, **kwargs: Any) -> None:
        nn.Linear.__init__(self, *args, **kwargs)
        self._init_spectral_norm(sn_eps)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.normalized_weight(), self.bias)


class SNEmbedding(_SpectralNorm, nn.Embedding):
    def __init__(self, *args: Any, sn_eps: float = 1e-12, **kwargs: Any) -> None:
        nn.Embedding.__init__(self, *args, **kwargs)
        self._init_spectral_norm(sn_eps)

    def forward(self, x: Tensor) -> Tensor:
        return F.embedding(x, self.normalized_weight())


# --------------------------------------------------------------------------- sampling

_INDEX = re.compile(r"-?[0-9]+")  # a class index written out (e.g. on the command line)


def label_indices(labels: Any, names: Sequence[str], num_classes: int) -> list[int]:
    """Class labels as checked class indices: one label or a sequence of them (a tensor too), each a
    class name (one of ``names``) or an index (an integer, or its digits as a string)."""
    if isinstance(labels, Tensor):
        labels = labels.tolist()
    if isinstance(labels, numbers.Number | str):  # one label (a bad one is refused below)
        labels = [labels]
    out = []
    for label in labels:
        if isinstance(label, str) and not _INDEX.fullmatch(label):
            if label not in names:
                hint = f"; known: {listing(names, 12)}" if names else "; this model has no label names: use class indices"
                raise ValueError(f"unknown label {label!r}{hint}")
            out.append(names.index(label))
            continue
        if isinstance(label, bool) or not isinstance(label, numbers.Integral | str):  # int(3.7) would be a silent 3
            raise ValueError(f"labels must be class indices or names, got {label!r}")
        index = int(label)
        if not 0 <= index < num_classes:
            raise ValueError(f"label {index} out of range 0..{num_classes - 1}")
        out.append(index)
    return out



class GeneratorMixin:
    """``sample()`` for reszoo generators.

    A generator defines ``z_dim``, ``num_classes`` (0: unconditional), ``default_truncation``
    and ``generate(z, y, truncation) -> images in [-1, 1]``; ``reszoo.load`` adds ``labels``.
    """

    z_dim: int
    num_classes: int
    default_truncation: float | None = None
    sample_batch_size: int = 64

    def class_indices(self, labels: Any, n: int) -> Tensor | None:
        """``labels`` (None, an int or name, or one per sample) as n class indices; checked."""
        if not self.num_classes:
            if labels is not None:
                raise ValueError("this generator is unconditional: it takes no labels")
            return None
        if labels is None:
            return None
        out = label_indices(labels, tuple(getattr(self, "labels", None) or ()), self.num_classes)
        if len(out) == 1:
            out = out * n
        if len(out) != n:
            raise ValueError(f"got {len(out)} labels for n={n} samples (give one label, or one per sample)")
        return torch.tensor(out, dtype=torch.long)

    def sample_noise(self, n: int, truncation: float | None, generator: torch.Generator | None) -> Tensor:
        """z ~ N(0, 1), or with ``truncation`` t the truncation trick of BigGAN: a normal truncated
        to [-2, 2], scaled by t. Drawn on the CPU so a seed gives the same z on every device."""
        z = torch.empty(n, self.z_dim)
        if truncation is None:
            return z.normal_(generator=generator)
        return nn.init.trunc_normal_(z, 0.0, 1.0, -2.0, 2.0, generator=generator) * truncation

    def sample(self, n: int, labels: Any = None, truncation: float | None = None, seed: int | None = None) -> Tensor:
        """``n`` generated images in [0, 1], shape (n, C, H, W).

        ``labels``: class indices or names, one for all or one per sample (conditional models;
        None draws random classes). ``truncation`` in (0, 1]: smaller trades variety for
        fidelity (None: the model's default). ``seed``: the same seed gives the same images.
        """
        return torch.cat(list(self.iter_sample(n, labels, truncation, seed)))

    def iter_sample(self, n: int, labels: Any = None, truncation: float | None = None,
                    seed: int | None = None) -> Iterator[Tensor]:
        """The images of :meth:`sample`, identical, in consecutive chunks of at most
        ``sample_batch_size``: many images in bounded memory (only the noise is drawn up front).
        Arguments are checked when it is called, not when the first chunk is asked for."""
        if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        if truncation is None:
            truncation = self.default_truncation
        elif isinstance(truncation, bool) or not isinstance(truncation, int | float) or not 0.0 < truncation <= 1.0:
            raise ValueError(f"truncation must be in (0, 1], got {truncation!r}")
        y = self.class_indices(labels, n)
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        z = self.sample_noise(n, truncation, generator)
        if self.num_classes and y is None:
            y = torch.randint(self.num_classes, (n,), generator=generator)
        return self._generate_chunks(z, y, truncation)

    @torch.no_grad()
    def _generate_chunks(self, z: Tensor, y: Tensor | None, truncation: float | None) -> Iterator[Tensor]:
        module: nn.Module = self  # type: ignore[assignment]
        param = next(module.parameters())
        was_training = module.training
        module.eval()  # sampling must not touch batch-norm statistics
        try:
            for start in range(0, z.shape[0], self.sample_batch_size):
                zb = z[start:start + self.sample_batch_size].to(param.device, param.dtype)
                yb = y[start:start + self.sample_batch_size].to(param.device) if y is not None else None
                yield self.generate(zb, yb, truncation).add(1).div(2).clamp(0, 1)
        finally:
            module.train(was_training)

    def generate(self, z: Tensor, y: Tensor | None, truncation: float | None) -> Tensor:
        raise NotImplementedError


# --------------------------------------------------------------------------- SNGAN


@dataclass(frozen=True)
class SNGANConfig:
    bottom_width: int  # spatial size after the generator's linear layer
    g_channel_mults: tuple[int, ...]  # x ch: at the bottom, then after each up-block
    d_channel_mults: tuple[int, ...]  # x ch: after each discriminator block
    d_downsample: tuple[bool, ...]  # which discriminator blocks halve the resolution


SNGAN_CFGS: dict[int, SNGANConfig] = {
    # 7 -> 14 -> 28 (MNIST-sized)
    28: SNGANConfig(bottom_width=7, g_channel_mults=(2, 2, 1), d_channel_mults=(1, 2, 2, 2), d_downsample=(True, True, False, False)),
    # 4 -> 8 -> 16 -> 32: the CIFAR-10 networks of Miyato et al. with ch=64 (G 256, D 128 channels)
    32: SNGANConfig(bottom_width=4, g_channel_mults=(4, 4, 4, 4), d_channel_mults=(2, 2, 2, 2), d_downsample=(True, True, False, False)),
}


class ConditionalBatchNorm2d(nn.Module):
    """Batch norm whose gain and bias are looked up per class (class-conditional BN)."""

    def __init__(self, num_features: int, num_classes: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(num_features, affine=False)
        self.gain = nn.Embedding(num_classes, num_features)
        self.bias = nn.Embedding(num_classes, num_features)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.ones_(self.gain.weight)
        nn.init.zeros_(self.bias.weight)

    def forward(self, x: Tensor, y: Tensor | None) -> Tensor:
        if y is None:
            raise ValueError("a class-conditional generator needs class labels y")
        return self.bn(x) * self.gain(y)[:, :, None, None] + self.bias(y)[:, :, None, None]


class BatchNorm2d(nn.BatchNorm2d):
    """Unconditional batch norm with the conditional one's call signature."""

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:  # type: ignore[override]
        return super().forward(x)


def _norm(num_features: int, num_classes: int) -> nn.Module:
    return ConditionalBatchNorm2d(num_features, num_classes) if num_classes else BatchNorm2d(num_features)


class GBlock(ResidualBlock):
    """Up-block: BN, ReLU, upsample, 3x3 conv, BN, ReLU, 3x3 conv; shortcut upsample + learned 1x1.

    ``upsample=False`` keeps the resolution (the extra blocks of a deeper stage); its shortcut is
    the identity where the channels match, as in SNGAN's reference code."""

    def __init__(self, in_channels: int, out_channels: int, num_classes: int = 0, residual: bool = True,
                 upsample: bool = True) -> None:
        super().__init__(residual)
        self.upsample = upsample
        self.bn1 = _norm(in_channels, num_classes)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.bn2 = _norm(out_channels, num_classes)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        learned = upsample or in_channels != out_channels
        self.shortcut = self.make_projection(learned, lambda: nn.Conv2d(in_channels, out_channels, 1))

    def _up(self, x: Tensor) -> Tensor:
        return F.interpolate(x, scale_factor=2, mode="nearest") if self.upsample else x

    def _shortcut(self, x: Tensor) -> Tensor:
        return x if self.shortcut is None else self.shortcut(self._up(x))

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        h = self._up(F.relu(self.bn1(x, y)))
        h = self.conv2(F.relu(self.bn2(self.conv1(h), y)))
        return self.join(h, self.shortcut_of(x, self._shortcut))


class SNGANGenerator(GeneratorMixin, nn.Module):
    """z (and a class) -> linear -> residual up-blocks -> BN, ReLU, 3x3 conv, tanh."""

    head_prefixes: tuple[str, ...] = ()  # a generator has no classifier head to replace

    def __init__(self, cfg: SNGANConfig, *, ch: int = 64, z_dim: int = 128, num_classes: int = 0,
                 class_embed_dim: int = 0, out_channels: int = 3, residual: bool = True, stage_blocks: int = 1) -> None:
        super().__init__()
        _check_stage_blocks(stage_blocks)
        self.cfg, self.z_dim, self.num_classes, self.residual = cfg, z_dim, num_classes, residual
        chans = [m * ch for m in cfg.g_channel_mults]
        # optional: a class embedding concatenated with z (as in BigGAN), besides conditional BN
        self.class_embed = nn.Embedding(num_classes, class_embed_dim) if num_classes and class_embed_dim else None
        self.linear = nn.Linear(z_dim + (class_embed_dim if self.class_embed is not None else 0), chans[0] * cfg.bottom_width**2)
        # each resolution: an up-block, then stage_blocks - 1 blocks that keep it
        self.blocks = nn.ModuleList(
            GBlock(c_in if i == 0 else c_out, c_out, num_classes, residual, upsample=i == 0)
            for c_in, c_out in zip(chans, chans[1:]) for i in range(stage_blocks)
        )
        self.bn = nn.BatchNorm2d(chans[-1])
        self.conv_out = nn.Conv2d(chans[-1], out_channels, 3, padding=1)
        self.resolution = cfg.bottom_width * 2 ** (len(chans) - 1)
        self.out_channels = out_channels
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Xavier init, as in the SNGAN reference code
        for m in self.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                is_3x3 = isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)
                nn.init.xavier_uniform_(m.weight, gain=2**0.5 if is_3x3 else 1.0)
                nn.init.zeros_(m.bias)

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        if self.num_classes and y is None:
            raise ValueError("this generator is class-conditional: pass class indices y")
        if self.class_embed is not None:
            z = torch.cat([z, self.class_embed(y)], dim=1)
        h = self.linear(z).view(z.shape[0], -1, self.cfg.bottom_width, self.cfg.bottom_width)
        for block in self.blocks:
            h = block(h, y)
        return torch.tanh(self.conv_out(F.relu(self.bn(h))))

    def generate(self, z: Tensor, y: Tensor | None, truncation: float | None) -> Tensor:
        return self(z, y)


class DBlock(ResidualBlock):
    """Down-block: [ReLU,] 3x3 conv, ReLU, 3x3 conv[, avgpool]; learned 1x1 shortcut (spectral norm).

    The first block (``first=True``) sees the image itself: no ReLU before its first conv, and
    its shortcut pools before the 1x1 conv (SNGAN's "optimized" block)."""

    def __init__(self, in_channels: int, out_channels: int, downsample: bool, first: bool = False, residual: bool = True) -> None:
        super().__init__(residual)
        self.first, self.downsample = first, downsample
        self.conv1 = SNConv2d(in_channels, out_channels, 3, padding=1)
        self.conv2 = SNConv2d(out_channels, out_channels, 3, padding=1)
        learned = in_channels != out_channels or downsample
        self.shortcut = self.make_projection(learned, lambda: SNConv2d(in_channels, out_channels, 1))

    def _shortcut(self, x: Tensor) -> Tensor:
        if self.shortcut is None:  # an identity shortcut (same shape)
            return x
        if self.first:
            return self.shortcut(F.avg_pool2d(x, 2) if self.downsample else x)
        x = self.shortcut(x)
        return F.avg_pool2d(x, 2) if self.downsample else x

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(x if self.first else F.relu(x))
        h = self.conv2(F.relu(h))
        if self.downsample:
            h = F.avg_pool2d(h, 2)
        return self.join(h, self.shortcut_of(x, self._shortcut))


class SNGANDiscriminator(nn.Module):
    """Residual down-blocks -> ReLU -> global sum pooling -> linear, plus the projection
    ``<embed(y), h>`` for class conditioning (Miyato & Koyama 2018)."""

    head_prefixes: tuple[str, ...] = ()

    def __init__(self, cfg: SNGANConfig, *, ch: int = 64, num_classes: int = 0, in_channels: int = 3, residual: bool = True,
                 stage_blocks: int = 1) -> None:
        super().__init__()
        _check_stage_blocks(stage_blocks)
        self.num_classes, self.residual = num_classes, residual
        chans = [in_channels] + [m * ch for m in cfg.d_channel_mults]
        # each of the configuration's blocks, then stage_blocks - 1 blocks of its output shape
        self.blocks = nn.Sequential(*(
            DBlock(c_in if j == 0 else c_out, c_out, down and j == 0, first=i == 0 and j == 0, residual=residual)
            for i, (c_in, c_out, down) in enumerate(zip(chans, chans[1:], cfg.d_downsample)) for j in range(stage_blocks)
        ))
        self.linear = SNLinear(chans[-1], 1)
        self.embed = SNEmbedding(num_classes, chans[-1]) if num_classes else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d | nn.Linear | nn.Embedding):
                nn.init.xavier_uniform_(m.weight)
                if getattr(m, "bias", None) is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        h = F.relu(self.blocks(x)).sum(dim=(2, 3))
        out = self.linear(h).squeeze(1)
        if self.embed is not None:
            if y is None:
                raise ValueError("this discriminator is class-conditional: pass class indices y")
            out = out + (self.embed(y) * h).sum(dim=1)
        return out


# --------------------------------------------------------------------------- entrypoints


def _check_stage_blocks(n: Any) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"stage_blocks must be a whole number >= 1, got {n!r}")


def _g(resolution: int, **kwargs: Any) -> SNGANGenerator:
    return SNGANGenerator(SNGAN_CFGS[resolution], **kwargs)


def _d(resolution: int, **kwargs: Any) -> SNGANDiscriminator:
    return SNGANDiscriminator(SNGAN_CFGS[resolution], **kwargs)


@archs.register
def sngan_g28(*, ch: int = 64, z_dim: int = 128, num_classes: int = 0, class_embed_dim: int = 0, out_channels: int = 1,
              residual: bool = True, stage_blocks: int = 1) -> SNGANGenerator:
    """SNGAN generator for 28x28 images (7 -> 14 -> 28), 1 channel by default (MNIST); ``stage_blocks``
    blocks per resolution (the residual study's deeper generators)."""
    return _g(28, ch=ch, z_dim=z_dim, num_classes=num_classes, class_embed_dim=class_embed_dim,
              out_channels=out_channels, residual=residual, stage_blocks=stage_blocks)


@archs.register
def sngan_g32(*, ch: int = 64, z_dim: int = 128, num_classes: int = 0, class_embed_dim: int = 0, out_channels: int = 3,
              residual: bool = True) -> SNGANGenerator:
    """SNGAN generator for 32x32 images (4 -> 8 -> 16 -> 32; 256 channels at ch=64, as for CIFAR-10)."""
    return _g(32, ch=ch, z_dim=z_dim, num_classes=num_classes, class_embed_dim=class_embed_dim,
              out_channels=out_channels, residual=residual)


@archs.register
def sngan_d28(*, ch: int = 64, num_classes: int = 0, in_channels: int = 1, residual: bool = True,
              stage_blocks: int = 1) -> SNGANDiscriminator:
    """SNGAN discriminator for 28x28 images (28 -> 14 -> 7, then two blocks at 7x7); ``stage_blocks``
    blocks in place of each."""
    return _d(28, ch=ch, num_classes=num_classes, in_channels=in_channels, residual=residual, stage_blocks=stage_blocks)


@archs.register
def sngan_d32(*, ch: int = 64, num_classes: int = 0, in_channels: int = 3, residual: bool = True) -> SNGANDiscriminator:
    """SNGAN discriminator for 32x32 images (32 -> 16 -> 8, then two blocks at 8x8; 128 channels at ch=64)."""
    return _d(32, ch=ch, num_classes=num_classes, in_channels=in_channels, residual=residual)


from . import biggan  # noqa: E402,F401  (registers biggan_deep_128; it builds on the classes above)
