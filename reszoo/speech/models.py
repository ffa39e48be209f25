"""ECAPA-TDNN (Desplanques et al., 2020) and a small residual conv-TDNN classifier, one class.

Architecture as data: :class:`ECAPATDNN` is configured by per-layer ``channels``,
``kernel_sizes`` and ``dilations``. Layer 0 is the TDNN stem, the middle layers are SE-Res2Net
blocks (1x1 TDNN -> Res2Net dilated 1-D convolutions -> 1x1 TDNN -> squeeze-excitation, with the
residual connection around the block: a :class:`reszoo.nn.ResidualBlock`), the last layer is the
multi-layer feature aggregation (MFA) over the concatenated block outputs, followed by
attentive statistics pooling, batch norm and a linear embedding. With ``num_classes`` the
embedding feeds a linear classifier ``head`` (the digit / keyword classifier); without, the
model outputs the embedding (speaker verification).

``residual=False`` builds the plain twin: each SE-Res2Net block returns its branch alone and
has no projection shortcut. What stays: the hierarchical sums *inside* Res2Net (they define the
multi-scale convolution, not a skip around a block) and the MFA concatenation.

Numerics follow SpeechBrain's ``ECAPA_TDNN`` (TDNN = conv -> ReLU -> BatchNorm, convolutions
"same"-padded by reflection, pooling statistics with eps 1e-12), so converted SpeechBrain
checkpoints give the same embeddings (tested).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..domains import Registry
from ..nn import ResidualBlock
from .quartznet import QUARTZNET_5X5, QUARTZNET_15X5, QUARTZNET_SMALL, QuartzNet
from .quartznet import build as build_quartznet

# Every architecture of the domain, registered where it is defined (registry entries name them in ``arch``).
archs: Registry[Callable[..., nn.Module]] = Registry("architecture")


def _length_mask(lengths: Tensor | None, frames: int, like: Tensor) -> Tensor | None:
    """Relative lengths (SpeechBrain's convention) -> a ``(batch, 1, frames)`` 0/1 mask, or None."""
    if lengths is None:
        return None
    steps = torch.arange(frames, device=like.device, dtype=lengths.dtype)
    return (steps[None, :] < lengths[:, None] * frames).to(like.dtype)[:, None, :]


class TDNNBlock(nn.Module):
    """A time-delay layer: dilated 1-D convolution ("same" length, reflect padding) -> ReLU -> BN."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, dilation: int = 1) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd for 'same' padding, got {kernel_size}")
        # 1x1 convolutions need no padding; "zeros" mode with padding 0 skips the (empty) pad copy
        # that torch makes for any other padding_mode.
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, dilation=dilation,
                              padding=dilation * (kernel_size - 1) // 2,
                              padding_mode="reflect" if kernel_size > 1 else "zeros")
        self.bn = nn.BatchNorm1d(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.bn(F.relu(self.conv(x), inplace=True))


class Res2NetConv(nn.Module):
    """Res2Net's multi-scale convolution: ``scale`` channel groups, group i sees group i-1's output."""

    def __init__(self, channels: int, scale: int, kernel_size: int, dilation: int) -> None:
        super().__init__()
        if channels % scale:
            raise ValueError(f"channels ({channels}) must be divisible by res2net_scale ({scale})")
        self.scale = scale
        width = channels // scale
        self.convs = nn.ModuleList(TDNNBlock(width, width, kernel_size, dilation) for _ in range(scale - 1))

    def forward(self, x: Tensor) -> Tensor:
        groups = x.chunk(self.scale, dim=1)
        outs = [groups[0]]
        y: Tensor | None = None
        for group, conv in zip(groups[1:], self.convs, strict=True):
            y = conv(group if y is None else group + y)
            outs.append(y)
        return torch.cat(outs, dim=1)


class SqueezeExcite(nn.Module):
    """Channel gates from the (masked) time average: ``x * sigmoid(W2 relu(W1 mean_t(x)))``."""

    def __init__(self, channels: int, se_channels: int) -> None:
        super().__init__()
        self.reduce = nn.Conv1d(channels, se_channels, 1)
        self.expand = nn.Conv1d(se_channels, channels, 1)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        if mask is None:
            s = x.mean(dim=2, keepdim=True)
        else:
            s = (x * mask).sum(dim=2, keepdim=True) / mask.sum(dim=2, keepdim=True)
        return x * torch.sigmoid(self.expand(F.relu(self.reduce(s))))


class SERes2NetBlock(ResidualBlock):
    """ECAPA's block: TDNN 1x1 -> Res2Net -> TDNN 1x1 -> SE, plus the residual around it all."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, dilation: int, *,
                 res2net_scale: int = 8, se_channels: int = 128, residual: bool = True) -> None:
        super().__init__(residual)
        self.tdnn1 = TDNNBlock(in_channels, out_channels, 1)
        self.res2net = Res2NetConv(out_channels, res2net_scale, kernel_size, dilation)
        self.tdnn2 = TDNNBlock(out_channels, out_channels, 1)
        self.se = SqueezeExcite(out_channels, se_channels)
        self.shortcut = self.make_projection(in_channels != out_channels, lambda: nn.Conv1d(in_channels, out_channels, 1))

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        shortcut = self.shortcut_of(x, self.shortcut)
        branch = self.se(self.tdnn2(self.res2net(self.tdnn1(x))), mask)
        return self.join(branch, shortcut)


def _weighted_stats(x: Tensor, weights: Tensor, eps: float = 1e-12) -> tuple[Tensor, Tensor]:
    """Mean and standard deviation over time of ``x (B, C, T)`` under ``weights`` summing to 1."""
    mean = (weights * x).sum(dim=2)
    var = (weights * (x - mean[..., None]).square()).sum(dim=2)
    return mean, var.clamp(min=eps).sqrt()


class AttentiveStatsPool(nn.Module):
    """Channel- and context-dependent attentive statistics pooling: ``(B, C, T) -> (B, 2C)``.

    With ``global_context`` the attention sees each frame next to the utterance's mean and std.
    Its first layer is a 1x1 convolution, so instead of concatenating ``[x; mean; std]`` into a
    ``3C x T`` tensor (as SpeechBrain does) the weight is split and the statistics' part is added
    once per utterance: the same function, less memory traffic.
    """

    def __init__(self, channels: int, attention_channels: int = 128, global_context: bool = True) -> None:
        super().__init__()
        self.global_context = global_context
        self.tdnn = TDNNBlock(channels * 3 if global_context else channels, attention_channels, 1)
        self.attention = nn.Conv1d(attention_channels, channels, 1)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        frames = x.shape[2]
        if self.global_context:
            uniform = (mask / mask.sum(dim=2, keepdim=True)) if mask is not None else x.new_full((1, 1, frames), 1.0 / frames)
            mean, std = _weighted_stats(x, uniform)
            channels = x.shape[1]
            weight = self.tdnn.conv.weight[:, :, 0]
            context = mean @ weight[:, channels:2 * channels].T + std @ weight[:, 2 * channels:].T + self.tdnn.conv.bias
            hidden = F.conv1d(x, self.tdnn.conv.weight[:, :channels]) + context[..., None]
            hidden = self.tdnn.bn(F.relu(hidden))
        else:
            hidden = self.tdnn(x)
        scores = self.attention(torch.tanh(hidden))
        if mask is not None:
            scores = scores.masked_fill(mask == 0, float("-inf"))
        mean, std = _weighted_stats(x, F.softmax(scores, dim=2))
        return torch.cat([mean, std], dim=1)


class ECAPATDNN(nn.Module):
    """ECAPA-TDNN: features ``(batch, frames, n_mels)`` -> embedding ``(batch, embed_dim)``
    (or logits ``(batch, num_classes)`` when there is a classifier head).

    ``lengths`` (relative, 1.0 = the whole padded length) masks padding in the squeeze-excitation
    and pooling statistics, as in SpeechBrain.
    """

    head_prefixes: tuple[str, ...] = ("head.",)

    def __init__(self, input_size: int = 80, channels: Sequence[int] = (512, 512, 512, 512, 1536),
                 kernel_sizes: Sequence[int] = (5, 3, 3, 3, 1), dilations: Sequence[int] = (1, 2, 3, 4, 1),
                 attention_channels: int = 128, res2net_scale: int = 8, se_channels: int = 128,
                 global_context: bool = True, embed_dim: int = 192, num_classes: int = 0,
                 residual: bool = True) -> None:
        super().__init__()
        if not len(channels) == len(kernel_sizes) == len(dilations) or len(channels) < 3:
            raise ValueError("channels, kernel_sizes and dilations need one value per layer (stem, blocks..., mfa), at least 3")
        self.config: dict[str, Any] = dict(
            input_size=input_size, channels=list(channels), kernel_sizes=list(kernel_sizes),
            dilations=list(dilations), attention_channels=attention_channels, res2net_scale=res2net_scale,
            se_channels=se_channels, global_context=global_context, embed_dim=embed_dim,
            num_classes=num_classes, residual=residual,
        )
        self.embed_dim = embed_dim
        self.stem = TDNNBlock(input_size, channels[0], kernel_sizes[0], dilations[0])
        self.blocks = nn.ModuleList(
            SERes2NetBlock(channels[i - 1], channels[i], kernel_sizes[i], dilations[i],
                           res2net_scale=res2net_scale, se_channels=se_channels, residual=residual)
            for i in range(1, len(channels) - 1)
        )
        self.mfa = TDNNBlock(sum(channels[1:-1]), channels[-1], kernel_sizes[-1], dilations[-1])
        self.pool = AttentiveStatsPool(channels[-1], attention_channels, global_context)
        self.pool_bn = nn.BatchNorm1d(channels[-1] * 2)
        self.embedding = nn.Linear(channels[-1] * 2, embed_dim)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes else None

    def forward_embedding(self, feats: Tensor, lengths: Tensor | None = None) -> Tensor:
        x = feats.transpose(1, 2)  # (batch, n_mels, frames): convolutions run over time
        mask = _length_mask(lengths, x.shape[2], x)
        x = self.stem(x)
        outs = []
        for block in self.blocks:
            x = block(x, mask)
            outs.append(x)
        x = self.mfa(torch.cat(outs, dim=1) if len(outs) > 1 else outs[0])
        return self.embedding(self.pool_bn(self.pool(x, mask)))

    def forward(self, feats: Tensor, lengths: Tensor | None = None) -> Tensor:
        emb = self.forward_embedding(feats, lengths)
        return self.head(emb) if self.head is not None else emb

    # ------------------------------------------------------------------ raw-audio conveniences
    # ``reszoo.load`` sets ``self.preprocess`` (a reszoo.speech.SpeechPreprocess), ``self.labels``
    # and, through reszoo.speech.preprocess.prepare, ``self.verify_threshold``.

    def _features(self, audio: Any, sample_rate: int | None) -> list[Tensor]:
        """Features ``(1, frames, n_mels)`` per utterance. Utterances run one at a time, not padded
        into a batch: padding would change the convolutions' edges, and so the numbers."""
        preprocess = getattr(self, "preprocess", None)
        if preprocess is None:
            raise RuntimeError("this model has no preprocess: load it with reszoo.load(...), or set "
                               "model.preprocess = reszoo.speech.build_preprocess(entry)")
        param = next(self.parameters())
        audios = audio if isinstance(audio, list) else [audio]
        return [preprocess(a, sample_rate)[None].to(param.device, param.dtype) for a in audios]

    @torch.inference_mode()
    def embed(self, audio: Any, sample_rate: int | None = None) -> Tensor:
        """Embedding of one utterance ``(embed_dim,)``, or of a list of them ``(n, embed_dim)``.

        ``audio``: a path, a waveform tensor / numpy array (then ``sample_rate`` is required),
        or a list of those. Raw (not length-normalised) embeddings, as SpeechBrain returns them.
        """
        emb = torch.cat([self.forward_embedding(f) for f in self._features(audio, sample_rate)])
        return emb if isinstance(audio, list) else emb[0]

    @torch.inference_mode()
    def verify(self, a: Any, b: Any, sample_rate: int | None = None, threshold: float | None = None) -> tuple[float, bool]:
        """Cosine similarity of the two utterances' embeddings, and whether it reaches the threshold.

        The threshold defaults to ``self.verify_threshold`` (from the registry entry's
        ``runtime.verify_threshold``; 0.25, SpeechBrain's default, where the entry gives none).
        """
        emb = self.embed([a, b], sample_rate)
        score = float(F.cosine_similarity(emb[0], emb[1], dim=0))
        if threshold is None:
            threshold = float(getattr(self, "verify_threshold", 0.25))
        return score, score >= threshold

    @torch.inference_mode()
    def classify(self, audio: Any, sample_rate: int | None = None, top_k: int = 5) -> list[Any]:
        """Top-``k`` ``(label, probability)`` pairs for one utterance, or a list of those per utterance."""
        if self.head is None:
            raise RuntimeError("this model has no classifier head; use embed() / verify()")
        probs = torch.cat([self(f) for f in self._features(audio, sample_rate)]).softmax(dim=-1)
        labels = getattr(self, "labels", None) or tuple(str(i) for i in range(probs.shape[-1]))
        top = probs.topk(min(top_k, probs.shape[-1]), dim=-1)
        rows = [[(labels[int(i)], float(p)) for p, i in zip(ps, idx, strict=True)]
                for ps, idx in zip(top.values, top.indices, strict=True)]
        return rows if isinstance(audio, list) else rows[0]


@archs.register
def ecapa_tdnn(residual: bool = True, num_classes: int = 0, **kwargs: Any) -> ECAPATDNN:
    """ECAPA-TDNN with any configuration (keyword arguments of :class:`ECAPATDNN`)."""
    return ECAPATDNN(residual=residual, num_classes=num_classes, **kwargs)


@archs.register
def ecapa_tdnn_c512(residual: bool = True, num_classes: int = 0, **kwargs: Any) -> ECAPATDNN:
    """C=512 ECAPA-TDNN (SpeechBrain's default configuration)."""
    return ECAPATDNN(channels=(512, 512, 512, 512, 1536), residual=residual, num_classes=num_classes, **kwargs)


@archs.register
def ecapa_tdnn_c1024(residual: bool = True, num_classes: int = 0, **kwargs: Any) -> ECAPATDNN:
    """C=1024 ECAPA-TDNN (the paper's large model; speechbrain/spkrec-ecapa-voxceleb)."""
    return ECAPATDNN(channels=(1024, 1024, 1024, 1024, 3072), residual=residual, num_classes=num_classes, **kwargs)


@archs.register
def ecapa_tdnn_small(residual: bool = True, num_classes: int = 0, **kwargs: Any) -> ECAPATDNN:
    """A small ECAPA-TDNN (C=128, 3 blocks, 128-dim embedding) for small speaker sets."""
    cfg: dict[str, Any] = dict(channels=(128, 128, 128, 128, 384), attention_channels=64, se_channels=64, embed_dim=128)
    cfg.update(kwargs)
    return ECAPATDNN(residual=residual, num_classes=num_classes, **cfg)


@archs.register
def tdnn_small(residual: bool = True, num_classes: int = 10, **kwargs: Any) -> ECAPATDNN:
    """A small residual conv-TDNN classifier (keywords, spoken digits): C=64, 3 SE-Res2Net blocks, head."""
    cfg: dict[str, Any] = dict(channels=(64, 64, 64, 64, 192), kernel_sizes=(5, 3, 3, 3, 1), dilations=(1, 2, 3, 4, 1),
                               attention_channels=64, res2net_scale=4, se_channels=32, embed_dim=64)
    cfg.update(kwargs)
    return ECAPATDNN(residual=residual, num_classes=num_classes, **cfg)


# --------------------------------------------------------------------------- speech recognition (quartznet.py)


@archs.register
def quartznet15x5(*, num_classes: int = 28, feat_in: int = 64, residual: bool = True, dropout: float = 0.0) -> QuartzNet:
    """QuartzNet 15x5 (18.9 M parameters): NVIDIA's stt_en_quartznet15x5 layout."""
    return build_quartznet(QUARTZNET_15X5, num_classes=num_classes, feat_in=feat_in, residual=residual, dropout=dropout)


@archs.register
def quartznet5x5(*, num_classes: int = 28, feat_in: int = 64, residual: bool = True, dropout: float = 0.0) -> QuartzNet:
    """QuartzNet 5x5 (6.7 M parameters): each of the five block groups once."""
    return build_quartznet(QUARTZNET_5X5, num_classes=num_classes, feat_in=feat_in, residual=residual, dropout=dropout)


@archs.register
def quartznet_small(*, num_classes: int = 28, feat_in: int = 64, residual: bool = True,
                    dropout: float = 0.0) -> QuartzNet:
    """A narrow QuartzNet (three residual blocks of three sub-blocks, 128-192 channels) for small vocabularies."""
    return build_quartznet(QUARTZNET_SMALL, num_classes=num_classes, feat_in=feat_in, residual=residual,
                           dropout=dropout)
