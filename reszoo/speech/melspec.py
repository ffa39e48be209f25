"""NeMo's log-mel front end (``AudioToMelSpectrogramPreprocessor``), as QuartzNet and Jasper use it,
on torch and torchaudio (no NeMo, no librosa at run time).

Pipeline, per batch of waveforms ``(batch, samples)`` with their lengths in samples, in NeMo's order:

1. dither (``x + dither * N(0, 1)``), only while training: off at inference, so features are deterministic;
2. preemphasis ``y[t] = x[t] - 0.97 x[t-1]`` (``y[0] = x[0]``), samples past each signal's length zeroed;
3. STFT: ``n_fft``-point, a *symmetric* Hann window of ``win_ms`` (``torch.hann_window(periodic=False)``,
   as NeMo builds it), ``hop_ms`` hop, centred with zero padding; power spectrum ``|X|^2``;
4. mel filterbank: Slaney-scale, Slaney-normalised triangles (librosa's ``filters.mel``, what NeMo uses,
   and ``torchaudio.functional.melscale_fbanks(norm="slaney", mel_scale="slaney")``; see :func:`mel_filters`);
5. ``log(mel + 2**-24)`` (NeMo's "add" zero guard);
6. per-feature normalisation over each utterance's valid frames (NeMo's ``normalize_batch``: the unbiased
   standard deviation, plus 1e-5);
7. frames past each utterance's length set to 0, and the frame axis padded with zeros to a multiple of
   ``pad_to`` (16).

An utterance of ``n`` samples has ``n // hop`` valid frames (NeMo's ``get_seq_len``). Features are
``(batch, n_mels, frames)``, the layout QuartzNet reads (channels first), unlike the fbank front end
of :mod:`reszoo.speech.preprocess`, whose ``(frames, n_mels)`` the TDNNs read.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["MelConfig", "MelSpectrogram", "MelPreprocess", "NEMO_NORM_EPS"]

NEMO_NORM_EPS = 1e-5  # NeMo's CONSTANT: added to the standard deviation (and NeMo's default dither)
KIND = "nemo-mel"


@dataclass(frozen=True)
class MelConfig:
    """Everything that decides the features; stored as an entry's ``preprocess`` (``kind: nemo-mel``).

    The defaults are QuartzNet 15x5's (NeMo's ``quartznet_15x5.yaml``)."""

    sample_rate: int = 16_000
    n_mels: int = 64
    n_fft: int = 512
    win_ms: float = 20.0
    hop_ms: float = 10.0
    f_min: float = 0.0
    f_max: float | None = None  # None: sample_rate / 2
    window: str = "hann"
    preemphasis: float | None = 0.97
    log_zero_guard: float = 2.0**-24
    normalize: str = "per_feature"  # or "none"
    pad_to: int = 16
    dither: float = NEMO_NORM_EPS  # while training only
    min_ms: float = 30.0  # shortest audio accepted: per-feature normalisation needs >= 2 frames (plus a hop)

    @classmethod
    def from_preprocess(cls, preprocess: dict[str, Any]) -> MelConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(preprocess) - known - {"kind"})
        if unknown:
            raise ValueError(f"unknown {KIND} preprocess keys {unknown}; known: {sorted(known)}")
        if preprocess.get("kind", KIND) != KIND:
            raise ValueError(f"MelConfig reads preprocess kind {KIND!r}, got {preprocess['kind']!r}")
        cfg = cls(**{k: v for k, v in preprocess.items() if k in known})
        if cfg.window != "hann":
            raise ValueError(f"{KIND}: window must be 'hann' (NeMo's symmetric Hann window), got {cfg.window!r}")
        if cfg.normalize not in ("per_feature", "none"):
            raise ValueError(f"{KIND}: normalize must be 'per_feature' or 'none', got {cfg.normalize!r}")
        if cfg.win_length > cfg.n_fft or cfg.hop_length < 1:
            raise ValueError(f"{KIND}: the window ({cfg.win_length} samples) must fit in n_fft ({cfg.n_fft}) and the "
                             f"hop must be at least a sample")
        if cfg.pad_to < 0 or cfg.dither < 0 or cfg.log_zero_guard <= 0:
            raise ValueError(f"{KIND}: pad_to and dither must be >= 0 and log_zero_guard > 0, got {cfg.pad_to}, "
                             f"{cfg.dither}, {cfg.log_zero_guard}")
        return cfg

    def to_preprocess(self) -> dict[str, Any]:
        return {"kind": KIND, **asdict(self)}

    @property
    def win_length(self) -> int:
        # NeMo: n_window_size = int(window_size * sample_rate)
        return int(self.sample_rate * self.win_ms / 1000)

    @property
    def hop_length(self) -> int:
        return int(self.sample_rate * self.hop_ms / 1000)


def _hz_to_mel(hz: Tensor) -> Tensor:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above (librosa's ``hz_to_mel(htk=False)``)."""
    f_sp, min_log_hz, logstep = 200.0 / 3, 1000.0, math.log(6.4) / 27.0
    return torch.where(hz >= min_log_hz, min_log_hz / f_sp + torch.log(hz.clamp(min=1e-10) / min_log_hz) / logstep,
                       hz / f_sp)


def _mel_to_hz(mel: Tensor) -> Tensor:
    f_sp, min_log_hz, logstep = 200.0 / 3, 1000.0, math.log(6.4) / 27.0
    min_log_mel = min_log_hz / f_sp
    return torch.where(mel >= min_log_mel, min_log_hz * torch.exp(logstep * (mel - min_log_mel)), f_sp * mel)


def mel_filters(cfg: MelConfig) -> Tensor:
    """The ``(n_mels, n_fft // 2 + 1)`` Slaney filterbank, Slaney-normalised (area 1 per triangle).

    The filters of ``torchaudio.functional.melscale_fbanks(norm="slaney", mel_scale="slaney")`` and of
    librosa's ``filters.mel`` (what NeMo uses), computed here in float64 as librosa does before the float32
    cast: torchaudio's float32 computation differs by up to 2e-6 relative, which per-feature
    normalisation of the nearly constant bands of band-limited audio magnifies to 1e-4.
    """
    f_max = cfg.f_max if cfg.f_max is not None else cfg.sample_rate / 2
    freqs = torch.linspace(0, cfg.sample_rate / 2, cfg.n_fft // 2 + 1, dtype=torch.float64)
    lo, hi = _hz_to_mel(torch.tensor([float(cfg.f_min), float(f_max)], dtype=torch.float64))
    edges = _mel_to_hz(torch.linspace(float(lo), float(hi), cfg.n_mels + 2, dtype=torch.float64))
    width = edges.diff()
    ramps = edges[:, None] - freqs[None, :]
    rising = -ramps[:-2] / width[:-1, None]
    falling = ramps[2:] / width[1:, None]
    weights = torch.clamp(torch.minimum(rising, falling), min=0.0)
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return weights.float()


class MelSpectrogram(nn.Module):
    """Padded waveforms ``(batch, samples)`` and their lengths in samples -> ``(features (batch, n_mels,
    frames), frame lengths (batch,))``. Dither applies in training mode only."""

    def __init__(self, cfg: MelConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or MelConfig()
        self.register_buffer("window", torch.hann_window(cfg.win_length, periodic=False), persistent=False)
        self.register_buffer("filters", mel_filters(cfg), persistent=False)

    def frames(self, lengths: Tensor) -> Tensor:
        """Valid frames of signals of ``lengths`` samples (NeMo's ``get_seq_len`` for centred frames)."""
        pad = self.cfg.n_fft // 2 * 2
        return torch.div(lengths + pad - self.cfg.n_fft, self.cfg.hop_length, rounding_mode="floor").long()

    @torch.no_grad()
    def forward(self, wave: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        cfg = self.cfg
        x = wave.float()
        lengths = lengths.to(x.device).long()
        frames = self.frames(lengths)
        if self.training and cfg.dither > 0:
            x = x + cfg.dither * torch.randn_like(x)
        if cfg.preemphasis is not None:
            x = torch.cat((x[:, :1], x[:, 1:] - cfg.preemphasis * x[:, :-1]), dim=1)
            x = x.masked_fill(torch.arange(x.shape[1], device=x.device)[None] >= lengths[:, None], 0.0)
        spec = torch.stft(x, n_fft=cfg.n_fft, hop_length=cfg.hop_length, win_length=cfg.win_length,
                          window=self.window, center=True, pad_mode="constant", return_complex=True)
        # |X| then squared, in NeMo's order (sqrt of re^2 + im^2): the same rounding.
        power = torch.view_as_real(spec).pow(2).sum(-1).sqrt().pow(2)
        feats = torch.log(torch.matmul(self.filters, power) + cfg.log_zero_guard)
        valid = torch.arange(feats.shape[-1], device=x.device)[None] < frames[:, None]  # (batch, frames)
        if cfg.normalize == "per_feature":
            feats = _normalise(feats, valid, frames)
        feats = feats.masked_fill(~valid[:, None], 0.0)
        if cfg.pad_to > 0 and feats.shape[-1] % cfg.pad_to:
            feats = nn.functional.pad(feats, (0, cfg.pad_to - feats.shape[-1] % cfg.pad_to))
        return feats, frames


def _normalise(feats: Tensor, valid: Tensor, frames: Tensor) -> Tensor:
    """NeMo's per-feature normalisation: mean and unbiased std over each utterance's valid frames, std + 1e-5."""
    mask = valid[:, None]
    count = frames[:, None].to(feats.dtype)
    mean = torch.where(mask, feats, 0.0).sum(-1) / count
    var = torch.where(mask, feats - mean[..., None], 0.0).pow(2).sum(-1) / (count - 1.0)
    std = var.sqrt().nan_to_num(0.0) + NEMO_NORM_EPS  # one frame: NeMo sets the std to 0 (then + 1e-5)
    return (feats - mean[..., None]) / std[..., None]


def pad_waveforms(waves: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """Mono waveforms zero-padded into ``(batch, samples)``, and their lengths in samples."""
    lengths = torch.tensor([w.numel() for w in waves], dtype=torch.long)
    out = waves[0].new_zeros(len(waves), int(lengths.max()))
    for i, w in enumerate(waves):
        out[i, : w.numel()] = w
    return out, lengths


class MelPreprocess:
    """Raw audio -> ``(features (1, n_mels, frames), lengths (1,))``: ``model.preprocess`` of a recogniser.

    ``preprocess(audio, sample_rate=None)`` takes what :func:`reszoo.speech.audio.as_waveform` takes (a path,
    a tensor or numpy array with ``sample_rate``, a ``(waveform, rate)`` tuple; other rates are resampled);
    ``preprocess.batch([...])`` pads a list into ``(batch, n_mels, frames)`` with its frame ``lengths``.
    ``preprocess.train()`` turns dither on (for training), ``preprocess.eval()`` off again (the default).
    """

    def __init__(self, cfg: MelConfig | None = None) -> None:
        self.cfg = cfg or MelConfig()
        self.training = False
        self._mel: MelSpectrogram | None = None  # built on first use: it imports torchaudio

    @property
    def mel(self) -> MelSpectrogram:
        if self._mel is None:
            self._mel = MelSpectrogram(self.cfg)
        self._mel.train(self.training)
        return self._mel

    def train(self, mode: bool = True) -> MelPreprocess:
        self.training = mode
        return self

    def eval(self) -> MelPreprocess:
        return self.train(False)

    def waveform(self, audio: Any, sample_rate: int | None = None) -> Tensor:
        from .audio import as_waveform

        return as_waveform(audio, sample_rate, target_rate=self.cfg.sample_rate, min_seconds=self.cfg.min_ms / 1000)

    def __call__(self, audio: Any, sample_rate: int | None = None) -> tuple[Tensor, Tensor]:
        return self.features([self.waveform(audio, sample_rate)])

    def batch(self, audios: Sequence[Any], sample_rate: int | None = None) -> tuple[Tensor, Tensor]:
        if isinstance(audios, str | bytes) or not len(audios):
            from .audio import AudioError

            raise AudioError("expected a non-empty list of audio inputs")
        return self.features([self.waveform(a, sample_rate) for a in audios])

    def features(self, waves: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        """Mono waveforms already at ``cfg.sample_rate`` -> padded features and frame lengths."""
        return self.mel(*pad_waveforms(waves))

    def __repr__(self) -> str:
        return f"MelPreprocess({self.cfg})"
