"""Jasper / QuartzNet (Li et al. 2019, arXiv:1904.03288; Kriman et al. 2019, arXiv:1910.10261): a CTC
speech recogniser built of residual blocks of 1-D convolutions.

Architecture as data: a model is a list of :class:`LayerSpec`, one per encoder layer, as NeMo's
``ConvASREncoder`` config lists ``jasper:`` layers. A layer repeats ``repeat`` sub-blocks of
(time-channel separable or dense) convolution -> BatchNorm -> ReLU -> dropout; a *block*
(``residual: true`` in the spec) adds a 1x1 convolution + BatchNorm projection of its input before
its last activation: a :class:`reszoo.nn.ResidualBlock`. The prologue (stride 2) and the epilogue
layers have no skip in Jasper/QuartzNet either: they are :class:`JasperLayer`, plain in both twins.
The decoder is a 1x1 convolution to the vocabulary plus the CTC blank (the last index, as NeMo).

``residual=False`` builds the plain twin: every block without its projection shortcut.

Padded frames are zeroed before every convolution (NeMo's ``MaskedConv1d``), so a recording's
output does not depend on how much padding its batch has. Module names follow NeMo's
``EncDecCTCModel`` state dict (``encoder.encoder.{i}.mconv.{j}``, ``.res.0.{0,1}``,
``decoder.decoder_layers.0``): converted checkpoints load key for key.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..nn import ResidualBlock

__all__ = ["JasperBlock", "JasperLayer", "LayerSpec", "QuartzNet", "QUARTZNET_15X5", "QUARTZNET_5X5",
           "QUARTZNET_SMALL"]

BN_EPS = 1e-3  # NeMo's Jasper BatchNorm


@dataclass(frozen=True)
class LayerSpec:
    """One encoder layer, in the terms of NeMo's ``jasper:`` config list."""

    filters: int
    kernel: int
    repeat: int = 1
    stride: int = 1
    dilation: int = 1
    residual: bool = False
    separable: bool = True


def _quartznet(blocks: int, repeats_per_group: int) -> tuple[LayerSpec, ...]:
    """QuartzNet BxR: prologue C1, 5 groups of ``repeats_per_group`` residual blocks of ``blocks`` sub-blocks, C2, C3."""
    groups = ((256, 33), (256, 39), (512, 51), (512, 63), (512, 75))
    body = tuple(LayerSpec(f, k, repeat=blocks, residual=True) for f, k in groups for _ in range(repeats_per_group))
    return (LayerSpec(256, 33, stride=2), *body, LayerSpec(512, 87, dilation=2), LayerSpec(1024, 1, separable=False))


QUARTZNET_15X5 = _quartznet(5, 3)  # 18.9 M parameters (NVIDIA's stt_en_quartznet15x5)
QUARTZNET_5X5 = _quartznet(5, 1)  # 6.7 M parameters
# Trained here on connected spoken digits (FSDD): narrow, three residual blocks.
QUARTZNET_SMALL = (
    LayerSpec(128, 33, stride=2),
    LayerSpec(128, 33, repeat=3, residual=True),
    LayerSpec(128, 39, repeat=3, residual=True),
    LayerSpec(192, 51, repeat=3, residual=True),
    LayerSpec(192, 63, dilation=2),
    LayerSpec(256, 1, separable=False),
)


def frame_mask(lengths: Tensor, frames: int) -> Tensor:
    """``(batch, 1, frames)`` 1/0 mask of the valid frames of each recording."""
    return (torch.arange(frames, device=lengths.device)[None, :] < lengths[:, None])[:, None, :]


class MaskedConv1d(nn.Module):
    """A "same"-padded 1-D convolution whose input's padded frames are zeroed first (NeMo's ``MaskedConv1d``)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *, stride: int = 1,
                 dilation: int = 1, groups: int = 1) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd for 'same' padding, got {kernel_size}")
        if stride > 1 and dilation > 1:
            raise ValueError("a layer may stride or dilate, not both (as in NeMo)")
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, stride=stride, dilation=dilation,
                              padding=dilation * (kernel_size - 1) // 2, groups=groups, bias=False)

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        x = x * frame_mask(lengths, x.shape[-1]).to(x.dtype)
        stride = self.conv.stride[0]
        if stride > 1:  # the frames a strided "same" convolution keeps: ceil(length / stride)
            pad, span = self.conv.padding[0], self.conv.dilation[0] * (self.conv.kernel_size[0] - 1)
            lengths = torch.div(lengths + 2 * pad - span - 1, stride, rounding_mode="trunc") + 1
        return self.conv(x), lengths


def _conv_bn(in_ch: int, out_ch: int, spec: LayerSpec, *, stride: int) -> list[nn.Module]:
    """(depthwise ``kernel`` conv, pointwise conv) or one dense conv, then BatchNorm: NeMo's ``_get_conv_bn_layer``."""
    if spec.separable:
        convs: list[nn.Module] = [
            MaskedConv1d(in_ch, in_ch, spec.kernel, stride=stride, dilation=spec.dilation, groups=in_ch),
            MaskedConv1d(in_ch, out_ch, 1),
        ]
    else:
        convs = [MaskedConv1d(in_ch, out_ch, spec.kernel, stride=stride, dilation=spec.dilation)]
    return [*convs, nn.BatchNorm1d(out_ch, eps=BN_EPS)]


def _act_dropout(dropout: float) -> list[nn.Module]:
    return [nn.ReLU(inplace=True), nn.Dropout(dropout)]


def _sub_blocks(in_ch: int, spec: LayerSpec, dropout: float) -> nn.ModuleList:
    """``repeat`` sub-blocks; the last ends at its BatchNorm (the skip joins there, before the activation)."""
    layers: list[nn.Module] = []
    for i in range(spec.repeat):
        layers += _conv_bn(in_ch if i == 0 else spec.filters, spec.filters, spec, stride=spec.stride)
        if i < spec.repeat - 1:
            layers += _act_dropout(dropout)
    return nn.ModuleList(layers)


def _run(layers: nn.ModuleList, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
    for layer in layers:
        if isinstance(layer, MaskedConv1d):
            x, lengths = layer(x, lengths)
        else:
            x = layer(x)
    return x, lengths


class JasperLayer(nn.Module):
    """An encoder layer without a skip: the prologue and epilogue of Jasper/QuartzNet, in both twins."""

    def __init__(self, in_channels: int, spec: LayerSpec, dropout: float = 0.0) -> None:
        super().__init__()
        self.mconv = _sub_blocks(in_channels, spec, dropout)
        self.mout = nn.Sequential(*_act_dropout(dropout))

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        x, lengths = _run(self.mconv, x, lengths)
        return self.mout(x), lengths


class JasperBlock(ResidualBlock):
    """``repeat`` sub-blocks with a 1x1 conv + BN projection of the input added before the last ReLU."""

    def __init__(self, in_channels: int, spec: LayerSpec, dropout: float = 0.0, *, residual: bool = True) -> None:
        super().__init__(residual)
        if spec.stride != 1:
            raise ValueError("a residual Jasper block must not stride (NeMo's residual_mode 'add')")
        self.mconv = _sub_blocks(in_channels, spec, dropout)
        # Jasper projects every skip, even where the channel counts already match.
        self.res = self.make_projection(True, lambda: nn.ModuleList([nn.ModuleList(
            [MaskedConv1d(in_channels, spec.filters, 1), nn.BatchNorm1d(spec.filters, eps=BN_EPS)])]))
        self.mout = nn.Sequential(*_act_dropout(dropout))

    def _project(self, x: Tensor, lengths: Tensor) -> Tensor:
        assert self.res is not None
        return _run(self.res[0], x, lengths)[0]

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        branch, out_lengths = _run(self.mconv, x, lengths)
        out = self.join(branch, self.shortcut_of(x, lambda t: self._project(t, lengths)))
        return self.mout(out), out_lengths


class ConvASREncoder(nn.Module):
    """The stack of Jasper layers (``encoder.encoder`` in NeMo's state dict)."""

    def __init__(self, layers: Sequence[LayerSpec], feat_in: int, dropout: float, residual: bool) -> None:
        super().__init__()
        mods: list[nn.Module] = []
        channels = feat_in
        for spec in layers:
            if spec.residual:
                mods.append(JasperBlock(channels, spec, dropout, residual=residual))
            else:
                mods.append(JasperLayer(channels, spec, dropout))
            channels = spec.filters
        self.encoder = nn.ModuleList(mods)
        self.feat_out = channels

    def forward(self, feats: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        x = feats
        for layer in self.encoder:
            x, lengths = layer(x, lengths)
        return x, lengths


class ConvASRDecoder(nn.Module):
    """1x1 convolution to the vocabulary + blank, log-softmax over it (NeMo's ``ConvASRDecoder``)."""

    def __init__(self, feat_in: int, num_classes: int) -> None:
        super().__init__()
        self.decoder_layers = nn.Sequential(nn.Conv1d(feat_in, num_classes + 1, kernel_size=1, bias=True))

    def forward(self, x: Tensor) -> Tensor:
        return self.decoder_layers(x).transpose(1, 2).log_softmax(dim=-1)


class QuartzNet(nn.Module):
    """A Jasper/QuartzNet CTC recogniser: ``model(feats, lengths) -> (log_probs, out_lengths)``.

    ``feats``: ``(batch, feat_in, frames)`` log-mel features (``model.preprocess`` makes them), ``lengths``:
    each recording's frame count (all ``frames`` when omitted). ``log_probs``: ``(batch, frames', num_classes + 1)``,
    the last class the CTC blank; ``out_lengths``: valid output frames (``frames' = ceil(frames / stride)``).
    """

    head_prefixes = ("decoder",)

    def __init__(self, layers: Sequence[LayerSpec], num_classes: int = 28, feat_in: int = 64,
                 dropout: float = 0.0, residual: bool = True) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes (the vocabulary size, without the blank) must be >= 1, got {num_classes}")
        self.layers = tuple(layers)
        self.feat_in = feat_in
        self.num_classes = num_classes
        self.stride = 1
        for spec in self.layers:
            self.stride *= spec.stride ** spec.repeat
        self.encoder = ConvASREncoder(self.layers, feat_in, dropout, residual)
        self.decoder = ConvASRDecoder(self.encoder.feat_out, num_classes)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """He initialisation (fan-in, ReLU gain) for training from scratch: it keeps the activations' scale
        through the ReLU stack, where NeMo's default (``xavier_uniform``) halves it at every pointwise
        convolution until batch statistics exist (a fresh 15x5 outputs ~1e-6 in eval mode)."""
        for m in self.modules():
            if isinstance(m, nn.Conv1d) and not m.weight.is_meta:
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    @property
    def blank(self) -> int:
        """The CTC blank's index: the last class."""
        return self.num_classes

    def forward(self, feats: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if feats.dim() != 3 or feats.shape[1] != self.feat_in:
            raise ValueError(f"expected features (batch, {self.feat_in}, frames), got {tuple(feats.shape)}")
        if lengths is None:
            lengths = torch.full((feats.shape[0],), feats.shape[-1], dtype=torch.long, device=feats.device)
        x, out_lengths = self.encoder(feats, lengths.long())
        return self.decoder(x), out_lengths

    def transcribe(self, audio: Any, **options: Any) -> Any:
        """Text of one recording (path, or ``(waveform, sample_rate)``) or a list of them: greedy CTC decoding.
        See :func:`reszoo.speech.ctc.transcribe` for the options."""
        from .ctc import transcribe

        return transcribe(self, audio, **options)


def build(layers: Sequence[LayerSpec], *, num_classes: int = 28, feat_in: int = 64, residual: bool = True,
          dropout: float = 0.0) -> QuartzNet:
    """A :class:`QuartzNet` of ``layers`` (the registered builders in ``models.py`` name the configurations)."""
    return QuartzNet(layers, num_classes=num_classes, feat_in=feat_in, dropout=dropout, residual=residual)
