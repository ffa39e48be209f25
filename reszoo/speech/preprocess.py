"""Raw audio to model input: log-mel filterbanks (SpeechBrain's ``Fbank`` + sentence mean
normalisation), on torchaudio; audio files are read by :mod:`reszoo.speech.audio`.

Pipeline, per utterance: power spectrogram (torchaudio ``Spectrogram``: 400-point FFT, 25 ms
Hamming window, 10 ms hop, centred with zero padding) -> mel filterbank -> ``10 log10`` with a
floor of 1e-10 and an 80 dB dynamic range below the utterance's peak (torchaudio
``amplitude_to_DB``) -> subtract the utterance's mean over time (SpeechBrain's
``InputNormalization(norm_type="sentence", std_norm=False)``).

Two filter shapes (``mel_filters``):

- ``"speechbrain"`` (default): SpeechBrain's ``Filterbank`` triangles. Centres are evenly spaced on
  the HTK mel scale; each triangle is *symmetric in Hz*, rising from the previous centre and
  falling over the same width. This is what SpeechBrain's pretrained models saw, and reszoo
  reproduces SpeechBrain's features to float rounding (tested).
- ``"torchaudio"``: ``torchaudio.functional.melscale_fbanks`` (HTK, unnormalised), whose triangles
  run from the previous centre to the next one, so they are wider on the high side. Features
  differ from SpeechBrain's by about a decibel (measured in tests, see docs/speech.md).
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, fields
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from .melspec import MelPreprocess

__all__ = ["DEFAULT_VERIFY_THRESHOLD", "FbankConfig", "Fbank", "SpeechPreprocess", "build_preprocess", "mel_filterbank",
           "pad_features", "prepare"]

# SpeechBrain's SpeakerRecognition.verify_batch default; entries may give their own
# (runtime.verify_threshold), e.g. the equal-error-rate point measured on a dev set.
DEFAULT_VERIFY_THRESHOLD = 0.25

MEL_FILTERS = ("speechbrain", "torchaudio")
# preprocess.kind: "fbank" (this module, the default) or "nemo-mel" (NeMo's log-mel front end, melspec.py)
KINDS = ("fbank", "nemo-mel")


@dataclass(frozen=True)
class FbankConfig:
    """Everything that decides the features; stored as an entry's ``preprocess``."""

    sample_rate: int = 16_000
    n_mels: int = 80
    n_fft: int = 400
    win_ms: float = 25.0
    hop_ms: float = 10.0
    f_min: float = 0.0
    f_max: float | None = None  # None: sample_rate / 2
    window: str = "hamming"
    mel_filters: str = "speechbrain"
    amin: float = 1e-10
    top_db: float | None = 80.0
    mean_norm: bool = True  # per-utterance (sentence) mean over time
    std_norm: bool = False
    min_ms: float = 50.0  # shortest audio accepted: the TDNN's reflect padding needs >= 5 frames

    @classmethod
    def from_preprocess(cls, preprocess: dict[str, Any]) -> FbankConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(preprocess) - known - {"kind"})
        if unknown:
            raise ValueError(f"unknown speech preprocess keys {unknown}; known: {sorted(known)}")
        if preprocess.get("kind", "fbank") != "fbank":
            raise ValueError(f"speech preprocess kind {preprocess['kind']!r} is not supported; known: {', '.join(KINDS)}")
        cfg = cls(**{k: v for k, v in preprocess.items() if k in known})
        if cfg.mel_filters not in MEL_FILTERS:
            raise ValueError(f"mel_filters must be one of {MEL_FILTERS}, got {cfg.mel_filters!r}")
        if cfg.window not in ("hamming", "hann"):
            raise ValueError(f"window must be 'hamming' or 'hann', got {cfg.window!r}")
        return cfg

    def to_preprocess(self) -> dict[str, Any]:
        return {"kind": "fbank", **asdict(self)}

    @property
    def win_length(self) -> int:
        return int(round(self.sample_rate * self.win_ms / 1000))

    @property
    def hop_length(self) -> int:
        return int(round(self.sample_rate * self.hop_ms / 1000))


def _hz_to_mel(hz: float) -> float:
    return 2595.0 * math.log10(1.0 + hz / 700.0)


def mel_filterbank(cfg: FbankConfig) -> Tensor:
    """The ``(n_fft // 2 + 1, n_mels)`` filter matrix for ``cfg.mel_filters``."""
    n_freqs = cfg.n_fft // 2 + 1
    f_max = cfg.f_max if cfg.f_max is not None else cfg.sample_rate / 2
    if cfg.mel_filters == "torchaudio":
        import torchaudio.functional as AF

        return AF.melscale_fbanks(n_freqs, cfg.f_min, f_max, cfg.n_mels, cfg.sample_rate, norm=None, mel_scale="htk")
    # SpeechBrain's Filterbank: evenly spaced mel points; filter i is centred on point i+1 and
    # spans +-(point i+1 - point i) in Hz, a symmetric triangle.
    mel = torch.linspace(_hz_to_mel(cfg.f_min), _hz_to_mel(f_max), cfg.n_mels + 2)
    hz = 700.0 * (10.0 ** (mel / 2595.0) - 1.0)
    band = (hz[1:] - hz[:-1])[:-1]
    centre = hz[1:-1]
    freqs = torch.linspace(0, cfg.sample_rate // 2, n_freqs)
    slope = (freqs[:, None] - centre[None, :]) / band[None, :]
    return torch.clamp(torch.minimum(slope + 1.0, 1.0 - slope), min=0.0)


class Fbank(nn.Module):
    """Waveforms ``(batch, samples)`` at ``cfg.sample_rate`` -> features ``(batch, frames, n_mels)``.

    ``lengths`` (relative, as in SpeechBrain) restricts the mean normalisation to each signal's
    own frames; the top-dB floor is taken per utterance over all its frames.
    """

    def __init__(self, cfg: FbankConfig | None = None) -> None:
        super().__init__()
        import torchaudio.transforms as AT

        self.cfg = cfg = cfg or FbankConfig()
        window_fn = torch.hamming_window if cfg.window == "hamming" else torch.hann_window
        self.spectrogram = AT.Spectrogram(
            n_fft=cfg.n_fft, win_length=cfg.win_length, hop_length=cfg.hop_length, window_fn=window_fn,
            power=2.0, center=True, pad_mode="constant",
        )
        self.register_buffer("filters", mel_filterbank(cfg), persistent=False)

    @torch.no_grad()
    def forward(self, wave: Tensor, lengths: Tensor | None = None) -> Tensor:
        import torchaudio.functional as AF

        squeeze = wave.dim() == 1
        if squeeze:
            wave = wave[None]
        power = self.spectrogram(wave.float()).transpose(1, 2)  # (batch, frames, freqs)
        mel = power @ self.filters
        # 4-D so that amplitude_to_DB takes the top-dB floor per utterance, not per batch.
        feats = AF.amplitude_to_DB(mel[:, None], multiplier=10.0, amin=self.cfg.amin, db_multiplier=0.0,
                                   top_db=self.cfg.top_db)[:, 0]
        if self.cfg.mean_norm or self.cfg.std_norm:
            feats = self._normalise(feats, lengths)
        return feats[0] if squeeze else feats

    def _normalise(self, feats: Tensor, lengths: Tensor | None) -> Tensor:
        frames = feats.shape[1]
        if lengths is None:
            mask = feats.new_ones(feats.shape[0], frames, 1)
        else:
            mask = (torch.arange(frames, device=feats.device)[None, :] < torch.round(lengths * frames)[:, None])
            mask = mask[..., None].to(feats.dtype)
        count = mask.sum(1, keepdim=True)
        mean = (feats * mask).sum(1, keepdim=True) / count
        out = feats - mean * mask if self.cfg.mean_norm else feats
        if self.cfg.std_norm:
            std = (((feats - mean) * mask).square().sum(1, keepdim=True) / count).sqrt().clamp(min=1e-10)
            out = out / std
        return out


def pad_features(feats: Sequence[Tensor], *, dtype: torch.dtype | None = None,
                 device: torch.device | None = None) -> tuple[Tensor, Tensor]:
    """Utterances' features ``(frames_i, bins)`` zero-padded into ``(batch, frames, bins)``, and their
    relative lengths (1.0 = the padded length), which reszoo.speech models (and SpeechBrain's) mask
    padding with. ``dtype``/``device``: of the lengths (default: torch's default float, on the CPU)."""
    frames = max(f.shape[0] for f in feats)
    out = feats[0].new_zeros(len(feats), frames, feats[0].shape[1])
    for i, f in enumerate(feats):
        out[i, : f.shape[0]] = f
    return out, torch.tensor([f.shape[0] / frames for f in feats], dtype=dtype, device=device)


class SpeechPreprocess:
    """Raw audio -> normalised features ``(frames, n_mels)``: what ``model.preprocess`` is.

    ``preprocess(audio, sample_rate=None)`` takes a path, a waveform tensor or a numpy array
    (with ``sample_rate``), or a ``(waveform, sample_rate)`` tuple; see reszoo.speech.audio for
    the conversions (downmix, resampling) and the errors. ``preprocess.batch([...])`` pads a list
    into ``(batch, frames, n_mels)`` and returns the relative ``lengths`` the model masks with.
    """

    def __init__(self, cfg: FbankConfig | None = None) -> None:
        self.cfg = cfg or FbankConfig()
        self._fbank: Fbank | None = None  # built on first use: it imports torchaudio

    @property
    def fbank(self) -> Fbank:
        if self._fbank is None:
            self._fbank = Fbank(self.cfg)
        return self._fbank

    def waveform(self, audio: Any, sample_rate: int | None = None) -> Tensor:
        from .audio import as_waveform

        return as_waveform(audio, sample_rate, target_rate=self.cfg.sample_rate, min_seconds=self.cfg.min_ms / 1000)

    def __call__(self, audio: Any, sample_rate: int | None = None) -> Tensor:
        return self.fbank(self.waveform(audio, sample_rate))

    def batch(self, audios: list[Any], sample_rate: int | None = None) -> tuple[Tensor, Tensor]:
        if not audios:
            from .audio import AudioError

            raise AudioError("expected at least one audio input, got an empty list")
        return pad_features([self(a, sample_rate) for a in audios])

    def __repr__(self) -> str:
        return f"SpeechPreprocess({self.cfg})"


# --------------------------------------------------------------------------- the domain contract


def build_preprocess(entry: Any) -> SpeechPreprocess | MelPreprocess:
    """``entry.preprocess`` -> raw audio to features: ``kind: fbank`` (the default, see FbankConfig) or
    ``kind: nemo-mel`` (NeMo's log-mel front end of the CTC recognisers, see reszoo.speech.melspec.MelConfig)."""
    preprocess = dict(entry.preprocess or {})
    kind = preprocess.get("kind", "fbank")
    if kind == "nemo-mel":
        from .melspec import MelConfig, MelPreprocess

        return MelPreprocess(MelConfig.from_preprocess(preprocess))
    return SpeechPreprocess(FbankConfig.from_preprocess(preprocess))


def prepare(model: nn.Module, entry: Any, *, mirror: str | os.PathLike[str] | None = None) -> None:
    """Attach the verification threshold the entry documents (or SpeechBrain's default), and a
    recogniser's lexicon (the words its transcripts spell; reszoo.speech.lexicon).
    (``mirror``: part of the domain contract; speech models read no files besides their weights.)"""
    model.verify_threshold = float(entry.runtime.get("verify_threshold", DEFAULT_VERIFY_THRESHOLD))
    if entry.runtime.get("lexicon"):
        model.lexicon = tuple(entry.runtime["lexicon"])  # what transcribe() decodes to by default
