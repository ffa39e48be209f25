"""ResNets (He et al. 2016, arXiv:1512.03385) as one configurable class.

Architecture is data: a block type, blocks per stage, stage widths and strides, and a stem
config. Module names are torchvision's (``conv1``, ``bn1``, ``layer1``..``layer4``, each block's
``conv1``/``bn1``/.../``downsample.0``/``downsample.1``, ``fc``), which timm's ResNet also uses, so
torchvision and timm state dicts load with no key mapping.

Every block is a :class:`reszoo.nn.ResidualBlock`: ``residual=False`` builds the plain twin
(the same layers without the skip additions and without the projection shortcuts, which only
exist to make the addition possible).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..domains import Registry
from ..nn import ResidualBlock

# Every architecture of the domain, registered where it is defined (registry entries name them in ``arch``).
archs: Registry[Callable[..., nn.Module]] = Registry("architecture")


def _conv3x3(in_chs: int, out_chs: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_chs, out_chs, kernel_size=3, stride=stride, padding=1, bias=False)


def _conv1x1(in_chs: int, out_chs: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_chs, out_chs, kernel_size=1, stride=stride, bias=False)


def _projection(block: ResidualBlock, in_chs: int, out_chs: int, stride: int) -> nn.Module | None:
    """He et al.'s option B where the block changes the shape: 1x1 convolution + BN (``downsample.0``/``.1``)."""
    return block.make_projection(stride != 1 or in_chs != out_chs,
                                 lambda: nn.Sequential(_conv1x1(in_chs, out_chs, stride), nn.BatchNorm2d(out_chs)))


class BasicBlock(ResidualBlock):
    """Two 3x3 convolutions (ResNet-18/34 and the CIFAR ResNets)."""

    expansion = 1

    def __init__(self, in_chs: int, width: int, stride: int = 1, residual: bool = True) -> None:
        super().__init__(residual)
        downsample = _projection(self, in_chs, width, stride)  # built first, registered last: torchvision's order
        self.conv1 = _conv3x3(in_chs, width, stride)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(width, width)
        self.bn2 = nn.BatchNorm2d(width)
        self.downsample = downsample

    def zero_init_last(self) -> None:
        self.init_branch_scale(self.bn2.weight)

    def forward(self, x: Tensor) -> Tensor:
        shortcut = self.shortcut_of(x, self.downsample)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(self.join(out, shortcut))


class Bottleneck(ResidualBlock):
    """1x1 reduce, 3x3 (carries the stride, "ResNet v1.5" as in torchvision/timm), 1x1 expand x4."""

    expansion = 4

    def __init__(self, in_chs: int, width: int, stride: int = 1, residual: bool = True) -> None:
        super().__init__(residual)
        out_chs = width * self.expansion
        downsample = _projection(self, in_chs, out_chs, stride)  # built first, registered last: torchvision's order
        self.conv1 = _conv1x1(in_chs, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = _conv3x3(width, width, stride)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = _conv1x1(width, out_chs)
        self.bn3 = nn.BatchNorm2d(out_chs)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def zero_init_last(self) -> None:
        self.init_branch_scale(self.bn3.weight)

    def forward(self, x: Tensor) -> Tensor:
        shortcut = self.shortcut_of(x, self.downsample)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(self.join(out, shortcut))


BLOCKS: dict[str, type[BasicBlock] | type[Bottleneck]] = {"basic": BasicBlock, "bottleneck": Bottleneck}


@archs.register("resnet")  # fully configurable from arch_args (block, layers, widths, ...)
class ResNet(nn.Module):
    """A ResNet described by data.

    Args:
        block: ``"basic"`` or ``"bottleneck"`` (or the class itself).
        layers: blocks per stage; stage ``i`` is the module ``layer{i+1}``.
        widths: base width of each stage (a bottleneck stage outputs 4x this).
        strides: stride of each stage's first block (default: 1, then 2 for every later stage).
        in_chans: input channels (3 for RGB, 1 for grayscale).
        num_classes: classifier outputs; 0 leaves ``fc`` as an identity (a feature extractor).
        stem_width, stem_kernel, stem_stride: the stem convolution ``conv1`` (+ ``bn1``, ReLU).
        stem_pool: a 3x3 stride-2 max pool after the stem (ImageNet ResNets) or none (CIFAR/MNIST).
        shortcut: projection shortcut where shapes change: ``"B"``, a 1x1 convolution + BN
            (``downsample.0``/``downsample.1``, He et al.'s option B, torchvision's choice).
        residual: False builds the plain twin (no additions, no projection shortcuts).
        zero_init_last: zero the last BN scale of each branch so every block starts as the
            identity (timm's default); the plain twin, whose blocks would output zeros, keeps them at 1
            (:meth:`reszoo.nn.ResidualBlock.init_branch_scale`).
        drop_rate: dropout before the classifier.
        features_only: ``forward`` returns the feature maps of the stages in ``out_indices``
            (timm's ``features_only``; the classifier is kept, unused, so checkpoints load as they are).
        out_indices: which feature maps, by index into :attr:`feature_info` (0 the stem's
            activation, then one per stage; negative counts from the end); default all.

    :attr:`feature_info` gives each feature map's channels, reduction (its stride relative to
    the input) and module, in timm's convention; :meth:`forward_intermediates` returns them
    besides the last map; :meth:`reset_classifier` replaces the head.
    """

    head_prefixes = ("fc.",)

    def __init__(
        self,
        block: str | type[BasicBlock] | type[Bottleneck],
        layers: Sequence[int],
        *,
        widths: Sequence[int] = (64, 128, 256, 512),
        strides: Sequence[int] | None = None,
        in_chans: int = 3,
        num_classes: int = 1000,
        stem_width: int = 64,
        stem_kernel: int = 7,
        stem_stride: int = 2,
        stem_pool: bool = True,
        shortcut: str = "B",
        residual: bool = True,
        zero_init_last: bool = True,
        drop_rate: float = 0.0,
        features_only: bool = False,
        out_indices: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        block_cls = BLOCKS.get(block) if isinstance(block, str) else block
        if block_cls not in BLOCKS.values():
            raise ValueError(f"block must be one of {sorted(BLOCKS)}, got {block!r}")
        if len(layers) != len(widths):
            raise ValueError(f"layers {tuple(layers)} and widths {tuple(widths)} must have one value per stage")
        strides = tuple(strides) if strides is not None else (1,) + (2,) * (len(layers) - 1)
        if len(strides) != len(layers):
            raise ValueError(f"strides {strides} must have one value per stage ({len(layers)})")
        if shortcut != "B":
            raise ValueError(f"only projection shortcuts (option 'B') are implemented, got {shortcut!r}")
        self.residual = residual
        self.num_classes = num_classes
        self.drop_rate = drop_rate

        self.conv1 = nn.Conv2d(in_chans, stem_width, kernel_size=stem_kernel, stride=stem_stride,
                               padding=stem_kernel // 2, bias=False)
        self.bn1 = nn.BatchNorm2d(stem_width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1) if stem_pool else nn.Identity()

        in_chs = stem_width
        self.stage_names: list[str] = []
        # timm's feature_info: the stem's activation (before the pool), then each stage's output
        info = [dict(num_chs=stem_width, reduction=stem_stride, module="relu")]
        reduction = stem_stride * (2 if stem_pool else 1)
        for i, (depth, width, stride) in enumerate(zip(layers, widths, strides, strict=True)):
            stage, in_chs = self._make_stage(block_cls, in_chs, width, depth, stride, residual)
            self.add_module(f"layer{i + 1}", stage)
            self.stage_names.append(f"layer{i + 1}")
            reduction *= stride
            info.append(dict(num_chs=in_chs, reduction=reduction, module=f"layer{i + 1}"))
        self.num_features = in_chs
        self.features_only = features_only
        self.out_indices = _take_indices(len(info), out_indices)
        self.feature_info = FeatureInfo(info[i] for i in self.out_indices) if features_only else FeatureInfo(info)
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.fc: nn.Module = nn.Linear(in_chs, num_classes) if num_classes > 0 else nn.Identity()
        self.init_weights(zero_init_last=zero_init_last)

    @staticmethod
    def _make_stage(block_cls: type[BasicBlock] | type[Bottleneck], in_chs: int, width: int, depth: int,
                    stride: int, residual: bool) -> tuple[nn.Sequential, int]:
        out_chs = width * block_cls.expansion
        blocks: list[nn.Module] = []
        for j in range(depth):
            blocks.append(block_cls(in_chs, width, stride if j == 0 else 1, residual))
            in_chs = out_chs
        return nn.Sequential(*blocks), in_chs

    def init_weights(self, zero_init_last: bool = True) -> None:
        """He (fan-out) init for convolutions, BN to identity; torchvision's and timm's scheme."""
        if self.conv1.weight.is_meta:  # built to be filled from a checkpoint: nothing to initialise
            return
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_last:
            for m in self.modules():
                if isinstance(m, BasicBlock | Bottleneck):
                    m.zero_init_last()

    def forward_features(self, x: Tensor) -> Tensor:
        """Stem and stages: the last feature map, ``(N, num_features, H', W')``."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for name in self.stage_names:
            x = getattr(self, name)(x)
        return x

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = torch.flatten(self.global_pool(x), 1)
        if self.drop_rate:
            x = nn.functional.dropout(x, p=self.drop_rate, training=self.training)
        return x if pre_logits else self.fc(x)

    def forward(self, x: Tensor) -> Tensor | list[Tensor]:
        if self.features_only:
            return self.forward_intermediates(x, self.out_indices, intermediates_only=True)
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(self, x: Tensor, indices: int | Sequence[int] | None = None, *, stop_early: bool = False,
                              intermediates_only: bool = False) -> tuple[Tensor, list[Tensor]] | list[Tensor]:
        """The feature maps ``indices`` (as timm: None all, an int n the last n, or indices into the
        full model's :attr:`feature_info`, 0 the stem) besides the last map, ``(final, [maps])``;
        ``stop_early`` skips the stages after the last one asked for; ``intermediates_only`` returns
        the list alone."""
        take = set(_take_indices(len(self.stage_names) + 1, indices))
        maps: list[Tensor] = []
        x = self.relu(self.bn1(self.conv1(x)))
        if 0 in take:
            maps.append(x)
        x = self.maxpool(x)
        for i, name in enumerate(self.stage_names, start=1):
            if stop_early and i > max(take):
                break
            x = getattr(self, name)(x)
            if i in take:
                maps.append(x)
        return maps if intermediates_only else (x, maps)

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int) -> None:
        """A new, freshly initialised ``num_classes``-way classifier (0: none, ``forward`` gives the
        pooled features), on the model's device and dtype."""
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
            raise ValueError(f"num_classes must be a whole number >= 0, got {num_classes!r}")
        ref = self.conv1.weight
        self.num_classes = num_classes
        self.fc = (nn.Linear(self.num_features, num_classes, device=ref.device, dtype=ref.dtype) if num_classes > 0
                   else nn.Identity())


class FeatureInfo(list):
    """Feature maps described as timm describes them: a list of ``{num_chs, reduction, module}``,
    with timm's ``channels()``, ``reduction()`` and ``module_name()`` (all, or the one at ``idx``)."""

    def _get(self, key: str, idx: int | None) -> Any:
        return self[idx][key] if idx is not None else [info[key] for info in self]

    def channels(self, idx: int | None = None) -> Any:
        return self._get("num_chs", idx)

    def reduction(self, idx: int | None = None) -> Any:
        return self._get("reduction", idx)

    def module_name(self, idx: int | None = None) -> Any:
        return self._get("module", idx)


def _take_indices(count: int, indices: int | Sequence[int] | None) -> list[int]:
    """Feature-map indices as timm takes them: None all ``count``; an int n the last n; a sequence
    of indices (negative from the end). Sorted, each checked."""
    if indices is None:
        return list(range(count))
    if isinstance(indices, int) and not isinstance(indices, bool):
        if not 1 <= indices <= count:
            raise ValueError(f"indices={indices}: expected between 1 and {count} feature maps")
        return list(range(count - indices, count))
    out = set()
    for i in indices:
        if isinstance(i, bool) or not isinstance(i, int) or not -count <= i < count:
            raise ValueError(f"feature index {i!r} out of range: this ResNet has {count} feature maps (0..{count - 1})")
        out.add(i % count)
    if not out:
        raise ValueError("expected at least one feature index")
    return sorted(out)


# --------------------------------------------------------------------------- entrypoints

_IMAGENET = dict(widths=(64, 128, 256, 512), stem_width=64, stem_kernel=7, stem_stride=2, stem_pool=True)
# He et al. 2016, section 4.2: 3x3 stem of 16 filters, three stages of n blocks at 16/32/64
# filters (feature maps 32/16/8 on CIFAR), global average pool, fc; 6n+2 weighted layers.
_CIFAR = dict(widths=(16, 32, 64), stem_width=16, stem_kernel=3, stem_stride=1, stem_pool=False)


def _create(block: str, layers: Sequence[int], defaults: dict[str, Any], kwargs: dict[str, Any]) -> ResNet:
    return ResNet(block, layers, **{**defaults, **kwargs})


@archs.register
def resnet18(**kwargs: Any) -> ResNet:
    """ResNet-18 (ImageNet)."""
    return _create("basic", (2, 2, 2, 2), _IMAGENET, kwargs)


@archs.register
def resnet34(**kwargs: Any) -> ResNet:
    """ResNet-34 (ImageNet)."""
    return _create("basic", (3, 4, 6, 3), _IMAGENET, kwargs)


@archs.register
def resnet50(**kwargs: Any) -> ResNet:
    """ResNet-50 (ImageNet)."""
    return _create("bottleneck", (3, 4, 6, 3), _IMAGENET, kwargs)


@archs.register
def resnet101(**kwargs: Any) -> ResNet:
    """ResNet-101 (ImageNet)."""
    return _create("bottleneck", (3, 4, 23, 3), _IMAGENET, kwargs)


@archs.register
def resnet152(**kwargs: Any) -> ResNet:
    """ResNet-152 (ImageNet)."""
    return _create("bottleneck", (3, 8, 36, 3), _IMAGENET, kwargs)


def _cifar(n: int, kwargs: dict[str, Any]) -> ResNet:
    return _create("basic", (n, n, n), {**_CIFAR, "num_classes": 10}, kwargs)


@archs.register
def resnet20(**kwargs: Any) -> ResNet:
    """CIFAR ResNet-20 (n=3), projection shortcuts (option B)."""
    return _cifar(3, kwargs)


@archs.register
def resnet32(**kwargs: Any) -> ResNet:
    """CIFAR ResNet-32 (n=5), projection shortcuts (option B)."""
    return _cifar(5, kwargs)


@archs.register
def resnet44(**kwargs: Any) -> ResNet:
    """CIFAR ResNet-44 (n=7), projection shortcuts (option B)."""
    return _cifar(7, kwargs)


@archs.register
def resnet56(**kwargs: Any) -> ResNet:
    """CIFAR ResNet-56 (n=9), projection shortcuts (option B)."""
    return _cifar(9, kwargs)


@archs.register
def resnet110(**kwargs: Any) -> ResNet:
    """CIFAR ResNet-110 (n=18), projection shortcuts (option B)."""
    return _cifar(18, kwargs)


# 28x28 grayscale digits: a full-resolution 3x3 stem, then three stages of basic blocks at
# 14x14, 7x7 and 4x4; set by measuring CPU time per epoch against test accuracy (docs/image.md).
MNIST_CONFIG: dict[str, Any] = dict(
    block="basic", layers=(1, 1, 1), widths=(32, 64, 128), strides=(2, 2, 2),
    in_chans=1, num_classes=10, stem_width=32, stem_kernel=3, stem_stride=1, stem_pool=False,
)


@archs.register
def resnet_mnist(**kwargs: Any) -> ResNet:
    """A small ResNet for 28x28 grayscale input (MNIST)."""
    return ResNet(**{**MNIST_CONFIG, **kwargs})
