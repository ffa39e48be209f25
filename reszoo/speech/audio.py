"""Raw audio in, a clean mono float waveform at the model's sample rate out.

Everything a user may hand to a speech model goes through :func:`as_waveform`: a path (read with
``soundfile``), a torch tensor or a numpy array (with its sample rate). The conversions are
documented in ``docs/speech.md`` and are the only ones made:

- integer PCM arrays are scaled to [-1, 1) (``int16 / 32768``, ``int32 / 2**31``, ``uint8`` centred);
- several channels are averaged into one (downmix); a 2-D input is read as ``(channels, samples)``
  (torchaudio's layout), or as ``(samples, channels)`` (soundfile's layout) when its second
  dimension is the small one (at most 8) and its first is larger;
- any sample rate from 4 kHz to 192 kHz is resampled to the target rate with torchaudio.

Everything else is an error that says what was wrong: a missing file, a file soundfile cannot
decode, an empty or silent signal, NaN/inf samples, a sample rate that is missing, not an
integer number of Hz or outside that range, audio shorter than the model's minimum.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import InputError

__all__ = ["AudioError", "MIN_SAMPLE_RATE", "MAX_SAMPLE_RATE", "SILENCE_PEAK", "read_audio", "as_waveform"]

MIN_SAMPLE_RATE = 4_000
MAX_SAMPLE_RATE = 192_000
MAX_CHANNELS = 8
# Peak amplitude (full scale = 1.0) at or below which a signal counts as silent: -100 dBFS, below
# the 16-bit quantisation step (1/32768, about -90 dBFS), so only digital silence trips it.
SILENCE_PEAK = 1e-5


class AudioError(InputError):
    """The input cannot be turned into a waveform the model can use."""


def read_audio(path: str | os.PathLike[str]) -> tuple[Tensor, int]:
    """``(waveform (channels, samples) float32, sample_rate)`` of an audio file, via soundfile."""
    import soundfile

    p = Path(path)
    if p.is_dir():
        raise IsADirectoryError(f"expected an audio file, got a directory: {p}")
    if not p.is_file():
        raise FileNotFoundError(f"no audio file at {p}")
    try:
        data, sample_rate = soundfile.read(str(p), dtype="float32", always_2d=True)
    except Exception as err:  # soundfile raises LibsndfileError/RuntimeError/TypeError by format
        raise AudioError(f"{p}: not a readable audio file ({type(err).__name__}: {err}); "
                         f"soundfile reads WAV, FLAC, OGG/Vorbis, MP3 and the other libsndfile formats") from err
    return torch.from_numpy(np.ascontiguousarray(data.T)), int(sample_rate)


def _to_float_tensor(audio: Any) -> Tensor:
    if isinstance(audio, np.ndarray):
        if audio.dtype == np.int16:
            return torch.from_numpy(audio.astype(np.float32) / 32768.0)
        if audio.dtype == np.int32:
            return torch.from_numpy((audio.astype(np.float64) / 2**31).astype(np.float32))
        if audio.dtype == np.uint8:
            return torch.from_numpy((audio.astype(np.float32) - 128.0) / 128.0)
        if not np.issubdtype(audio.dtype, np.floating):
            raise AudioError(f"unsupported array dtype {audio.dtype}; pass float, int16, int32 or uint8 samples")
        return torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))
    if isinstance(audio, Tensor):
        if audio.dtype == torch.int16:
            return audio.float() / 32768.0
        if audio.dtype == torch.int32:
            return (audio.double() / 2**31).float()
        if audio.dtype == torch.uint8:
            return (audio.float() - 128.0) / 128.0
        if not audio.is_floating_point():
            raise AudioError(f"unsupported tensor dtype {audio.dtype}; pass float, int16, int32 or uint8 samples")
        return audio.detach().to(device="cpu", dtype=torch.float32)
    raise AudioError(f"expected a path, a torch.Tensor or a numpy array of samples, got {type(audio).__name__}")


def _downmix(wave: Tensor) -> Tensor:
    """(samples,), (channels, samples) or (samples, channels) -> (samples,) by averaging channels."""
    if wave.dim() == 1:
        return wave
    if wave.dim() == 3 and wave.shape[0] == 1:  # a batch of one, e.g. (1, channels, samples)
        wave = wave[0]
    if wave.dim() != 2:
        raise AudioError(f"expected audio of shape (samples,) or (channels, samples), got {tuple(wave.shape)}")
    rows, cols = wave.shape
    if rows > cols and cols <= MAX_CHANNELS:  # soundfile / numpy layout (samples, channels)
        wave = wave.T
    if wave.shape[0] > MAX_CHANNELS:
        raise AudioError(f"audio of shape {tuple(wave.shape)} has more than {MAX_CHANNELS} channels; "
                         "pass (channels, samples) or (samples,)")
    return wave.mean(dim=0)


def _check_sample_rate(sample_rate: Any, where: str = "audio") -> int:
    if sample_rate is None:
        raise AudioError(f"{where}: a waveform needs its sample rate: pass sample_rate=... (in Hz, e.g. 16000)")
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int | float | np.integer | np.floating):
        raise AudioError(f"{where}: sample_rate must be a number of Hz, got {sample_rate!r}")
    if not math.isfinite(sample_rate) or float(sample_rate) != int(sample_rate):
        raise AudioError(f"{where}: sample_rate must be a whole number of Hz, got {sample_rate!r}")
    rate = int(sample_rate)
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        hint = " (it looks like kHz; pass Hz, e.g. 16000)" if 0 < rate < 200 else ""
        raise AudioError(f"{where}: sample_rate {rate} Hz is outside the supported {MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE} Hz{hint}")
    return rate


def as_waveform(audio: Any, sample_rate: int | None = None, *, target_rate: int = 16_000,
                min_seconds: float = 0.0) -> Tensor:
    """A mono float32 waveform ``(samples,)`` at ``target_rate`` from a path, tensor or array.

    ``audio`` may also be a ``(waveform, sample_rate)`` tuple. For a path, ``sample_rate`` must be
    None or agree with the file's.
    """
    where = "audio"
    if isinstance(audio, tuple) and len(audio) == 2 and sample_rate is None:
        audio, sample_rate = audio
    if isinstance(audio, str | os.PathLike):
        where = str(audio)
        wave, file_rate = read_audio(audio)
        if sample_rate is not None and int(sample_rate) != file_rate:
            raise AudioError(f"{where}: the file is {file_rate} Hz but sample_rate={sample_rate} was passed")
        sample_rate = file_rate
    else:
        wave = _to_float_tensor(audio)
    rate = _check_sample_rate(sample_rate, where)
    if wave.numel() == 0:  # before the downmix, whose mean over no samples would be NaN
        raise AudioError(f"{where}: no samples (empty audio, shape {tuple(wave.shape)}); give a recording of speech")
    wave = _downmix(wave)
    if not torch.isfinite(wave).all():
        raise AudioError(f"{where}: audio contains NaN or infinite samples")
    peak = float(wave.abs().max())
    if peak <= SILENCE_PEAK:
        raise AudioError(f"{where}: audio is silent (peak amplitude {peak:.2g} <= {SILENCE_PEAK:g}); "
                         "there is no speech to embed or classify")
    seconds = wave.numel() / rate
    if seconds < min_seconds:
        raise AudioError(f"{where}: audio is {seconds * 1000:.1f} ms long; the model needs at least "
                         f"{min_seconds * 1000:.0f} ms")
    if rate != target_rate:
        import torchaudio.functional as AF

        wave = AF.resample(wave, rate, target_rate)
    return wave.contiguous()
