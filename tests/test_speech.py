"""Speech domain: front end vs SpeechBrain's Fbank, ECAPA-TDNN vs SpeechBrain's ECAPA_TDNN, the
speechbrain-ecapa converter through the loopback Hub, bad audio input, and the FSDD models trained here.
(What every architecture and entry promises, plain twins included, is checked in test_contract.py.)"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import reszoo
from conftest import DATA, need_data
from helpers import Upstream
from reszoo import speech
from reszoo.speech.audio import AudioError, as_waveform
from reszoo.speech.preprocess import Fbank, FbankConfig, SpeechPreprocess, mel_filterbank

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "speech"
FSDD = DATA / "fsdd" / "recordings"

SMALL = dict(channels=[32, 32, 32, 32, 96], attention_channels=16, se_channels=16, embed_dim=24)


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread per module


def _speech_like(seconds: float = 1.5, rate: int = 16_000, seed: int = 0) -> torch.Tensor:
    """A voiced-speech stand-in covering the whole band: harmonics of a gliding pitch, plus noise."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * rate)) / rate
    f0 = 120 + 40 * torch.sin(2 * torch.pi * 1.5 * t)
    phase = 2 * torch.pi * torch.cumsum(f0, 0) / rate
    wave = sum(torch.sin(k * phase) / k for k in range(1, 40))
    envelope = 0.5 + 0.5 * torch.sin(2 * torch.pi * 3 * t).abs()
    return (0.1 * envelope * wave + 0.01 * torch.randn(t.shape, generator=g)).float()


def _randomize(module: torch.nn.Module, seed: int = 1) -> None:
    """Random weights and batch-norm statistics, so that parity tests exercise every parameter."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if not t.is_floating_point():
                continue
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif name.endswith(("running_mean", "bias")):
                t.copy_(torch.randn(t.shape, generator=g) * 0.1)
            elif t.dim() == 1:  # batch-norm scale
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            else:
                t.copy_(torch.randn(t.shape, generator=g) / t[0].numel() ** 0.5)


def _speechbrain_ecapa(seed: int = 0, **cfg: object) -> torch.nn.Module:
    from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN

    torch.manual_seed(seed)
    sb = ECAPA_TDNN(80, channels=cfg["channels"], lin_neurons=cfg["embed_dim"], attention_channels=cfg["attention_channels"],
                    se_channels=cfg["se_channels"], res2net_scale=cfg.get("res2net_scale", 8),
                    global_context=cfg.get("global_context", True))
    _randomize(sb, seed + 1)
    return sb.eval()


def _reszoo_from(sb: torch.nn.Module, **cfg: object) -> speech.ECAPATDNN:
    with torch.device("meta"):
        model = speech.DOMAIN.archs["ecapa_tdnn"](**cfg)
    model.load_state_dict(speech.DOMAIN.converters["speechbrain-ecapa"](sb.state_dict()), strict=True, assign=True)
    return model.eval()


# --------------------------------------------------------------------------- front end


def test_mel_filters_match_speechbrain_filterbank_matrix() -> None:
    from speechbrain.processing.features import Filterbank

    sb = Filterbank(n_mels=80, sample_rate=16000, n_fft=400, f_max=8000, log_mel=False)
    eye = torch.eye(201)[None]
    reference = sb(eye)[0]  # (201, 80): row i is filter responses to frequency bin i
    assert torch.allclose(mel_filterbank(FbankConfig()), reference, atol=1e-6)


@pytest.mark.parametrize("source", ["synthetic-16k", "fsdd-8k"])
def test_features_match_speechbrain_fbank_and_mean_norm(source: str) -> None:
    from speechbrain.lobes.features import Fbank as SBFbank
    from speechbrain.processing.features import InputNormalization

    wave = _speech_like() if source == "synthetic-16k" else as_waveform(EXAMPLES / "7_jackson_0.wav")
    reference = InputNormalization(norm_type="sentence", std_norm=False)(SBFbank(n_mels=80)(wave[None]), torch.ones(1))[0]
    ours = Fbank(FbankConfig())(wave)
    assert ours.shape == reference.shape == (wave.numel() // 160 + 1, 80)
    assert (ours - reference).abs().max().item() < 1e-3  # measured: ~1e-5 dB (float rounding)

    # torchaudio's own HTK triangles (wider on the high side) are the documented alternative: close, not equal.
    htk = Fbank(FbankConfig(mel_filters="torchaudio"))(wave)
    diff = (htk - reference).abs()
    assert 0.01 < diff.mean().item() < 2.0, diff.mean().item()


def test_fbank_batch_with_lengths_normalises_each_signal_on_its_own_frames() -> None:
    a, b = _speech_like(1.0, seed=1), _speech_like(0.6, seed=2)
    batch = torch.zeros(2, a.numel())
    batch[0], batch[1, : b.numel()] = a, b
    fbank = Fbank()
    frames_a, frames_b = a.numel() // 160 + 1, b.numel() // 160 + 1
    out = fbank(batch, lengths=torch.tensor([1.0, frames_b / frames_a]))
    assert torch.allclose(out[0], fbank(a), atol=1e-4)
    # b's frames see the same samples (zero padding either way) and the same floor, and the mean
    # is taken over b's own frames only: the same features as b alone.
    assert torch.allclose(out[1, :frames_b], fbank(b), atol=1e-4)


def test_one_padding_for_batches_fine_tuning_and_specaugment() -> None:
    """``preprocess.batch``, the fine-tuning adapter and SpecAugment pad utterances with pad_features:
    zeros after each utterance, relative lengths (1.0 = the longest)."""
    from reszoo.speech.finetune import SpeechAdapter
    from reszoo.speech.preprocess import pad_features
    from reszoo.speech.training import SpecAugment

    feats = [torch.ones(2, 3), torch.full((4, 3), 2.0)]
    out, lengths = pad_features(feats)
    assert out.shape == (2, 4, 3) and out[0, 2:].abs().sum() == 0 and torch.equal(out[1], feats[1])
    assert lengths.tolist() == [0.5, 1.0] and lengths.dtype == torch.get_default_dtype()
    assert pad_features(feats, dtype=torch.float64)[1].dtype == torch.float64
    collated = SpeechAdapter.collate(None, feats)  # type: ignore[arg-type]  (collate reads no state)
    assert torch.equal(collated["feats"], out) and torch.equal(collated["lengths"], lengths)
    torch.manual_seed(0)
    long = [torch.randn(40, 24), torch.randn(30, 24)]
    augmented = SpecAugment()(dict(zip(("feats", "lengths"), pad_features(long, dtype=torch.float32))))
    frames = augmented["feats"].shape[1]
    assert augmented["lengths"].max() == 1.0 and augmented["lengths"].dtype == torch.float32
    kept = round(float(augmented["lengths"][1]) * frames)
    assert augmented["feats"][1, kept:].abs().sum() == 0


def test_preprocess_config_round_trips_and_rejects_unknown_keys() -> None:
    cfg = FbankConfig()
    assert FbankConfig.from_preprocess(cfg.to_preprocess()) == cfg
    with pytest.raises(ValueError, match="unknown speech preprocess keys"):
        FbankConfig.from_preprocess({"n_mel": 40})
    with pytest.raises(ValueError, match="mel_filters"):
        FbankConfig.from_preprocess({"mel_filters": "slaney"})


# --------------------------------------------------------------------------- raw audio and bad input


def test_inputs_path_tensor_array_and_resampling_agree(tmp_path: Path) -> None:
    import soundfile
    import torchaudio.functional as AF

    path = EXAMPLES / "7_jackson_0.wav"
    data, rate = soundfile.read(path, dtype="int16")
    assert rate == 8000
    from_path = as_waveform(path)
    from_int16 = as_waveform(data, 8000)
    from_tensor = as_waveform(torch.from_numpy(data.astype(np.float32) / 32768), sample_rate=8000)
    from_tuple = as_waveform((data.astype(np.float32) / 32768, 8000))
    expected = AF.resample(torch.from_numpy(data.astype(np.float32) / 32768), 8000, 16000)
    for wave in (from_path, from_int16, from_tensor, from_tuple):
        assert wave.shape == (2 * data.size,) and torch.allclose(wave, expected, atol=1e-6)


def test_stereo_is_downmixed_by_averaging_in_either_layout(tmp_path: Path) -> None:
    import soundfile

    left, right = _speech_like(0.5, seed=3), _speech_like(0.5, seed=4)
    mono = as_waveform((left + right) / 2, 16000)
    channels_first = as_waveform(torch.stack([left, right]), 16000)
    samples_first = as_waveform(torch.stack([left, right]).T.numpy(), 16000)
    stereo_file = tmp_path / "stereo.wav"
    soundfile.write(stereo_file, torch.stack([left, right]).T.numpy(), 16000, subtype="FLOAT")
    from_file = as_waveform(stereo_file)
    for wave in (channels_first, samples_first, from_file):
        assert torch.allclose(wave, mono, atol=1e-6)


@pytest.mark.parametrize(
    ("audio", "rate", "message"),
    [
        (np.zeros(0, dtype=np.float32), 16000, "empty audio"),
        (np.zeros(16000, dtype=np.float32), 16000, "silent"),
        (np.full(16000, np.nan, dtype=np.float32), 16000, "NaN"),
        (np.ones(16000, dtype=np.float32) * 0.1, None, "needs its sample rate"),
        (np.ones(16000, dtype=np.float32) * 0.1, 16, "looks like kHz"),
        (np.ones(16000, dtype=np.float32) * 0.1, 1000, "outside the supported"),
        (np.ones(16000, dtype=np.float32) * 0.1, 16000.5, "whole number"),
        (np.ones(16000, dtype=np.complex64), 16000, "unsupported array dtype"),
        ("not audio at all", 16000, "expected a path|no audio file"),
        (np.ones((20, 16000), dtype=np.float32), 16000, "more than 8 channels"),
        (np.ones(480, dtype=np.float32) * 0.1, 16000, "needs at least 50 ms"),
    ],
)
def test_bad_input_gets_a_clear_error(audio: object, rate: object, message: str) -> None:
    with pytest.raises((AudioError, FileNotFoundError), match=message):
        SpeechPreprocess()(audio, rate)


def test_non_audio_and_missing_files_are_clear_errors(tmp_path: Path) -> None:
    fake = tmp_path / "notes.wav"
    fake.write_text("this is not a RIFF file\n")
    with pytest.raises(AudioError, match="notes.wav: not a readable audio file"):
        SpeechPreprocess()(fake)
    with pytest.raises(FileNotFoundError, match="no audio file"):
        SpeechPreprocess()(tmp_path / "missing.wav")
    with pytest.raises(AudioError, match="the file is 8000 Hz but sample_rate=16000"):
        SpeechPreprocess()(EXAMPLES / "7_jackson_0.wav", 16000)


# --------------------------------------------------------------------------- ECAPA parity and converter


@pytest.mark.parametrize(
    "cfg",
    [
        SMALL,
        dict(channels=[48, 64, 64, 64, 160], attention_channels=24, se_channels=8, embed_dim=16, res2net_scale=4, global_context=False),
        pytest.param(dict(channels=[1024, 1024, 1024, 1024, 3072], attention_channels=128, se_channels=128, embed_dim=192),
                     marks=pytest.mark.slow),  # ecapa-voxceleb's size: 20M parameters, ~10 s to build twice on 2 cores
    ],
    ids=["small", "projection-no-global-context", "voxceleb-c1024"],
)
def test_ecapa_matches_speechbrain_ecapa_tdnn(cfg: dict) -> None:
    sb = _speechbrain_ecapa(**cfg)
    model = _reszoo_from(sb, **cfg)
    assert any(k.endswith("shortcut.weight") for k in model.state_dict()) == (cfg["channels"][0] != cfg["channels"][1])
    x = torch.randn(2, 120, 80)
    lengths = torch.tensor([1.0, 0.7])
    with torch.no_grad():
        assert (model(x) - sb(x)[:, 0]).abs().max().item() < 1e-4
        assert (model(x, lengths) - sb(x, lengths)[:, 0]).abs().max().item() < 1e-4


def test_converter_is_strict() -> None:
    state = _speechbrain_ecapa(**SMALL).state_dict()
    convert = speech.DOMAIN.converters["speechbrain-ecapa"]
    with pytest.raises(speech.ConversionError, match="no reszoo counterpart: classifier.weight"):
        convert({**state, "classifier.weight": torch.zeros(1)})
    with pytest.raises(speech.ConversionError, match="missing mfa.conv.weight"):
        convert({k: v for k, v in state.items() if not k.startswith("mfa.")})
    assert convert({f"module.{k}": v for k, v in state.items()}).keys() == convert(state).keys()


def _fake_voxceleb_entry(upstream, **weights: str) -> tuple[torch.nn.Module, Upstream]:
    """SpeechBrain-layout checkpoint (random weights) on the loopback Hub, pinned in a temp registry."""
    sb = _speechbrain_ecapa(seed=5, **SMALL)
    buffer = io.BytesIO()
    torch.save(sb.state_dict(), buffer)  # SpeechBrain's checkpoint format: a pickled state dict
    published = upstream("ecapa-voxceleb", {"embedding_model.ckpt": buffer.getvalue()},
                         repo="speechbrain-test/spkrec-ecapa-voxceleb", arch_args={"input_size": 80, **SMALL},
                         weights=weights)
    return sb, published


def test_speechbrain_checkpoint_through_the_hub_pin_and_converter(upstream) -> None:
    from speechbrain.lobes.features import Fbank as SBFbank
    from speechbrain.processing.features import InputNormalization

    sb, _ = _fake_voxceleb_entry(upstream)
    model = reszoo.load("ecapa-voxceleb")
    assert isinstance(model, speech.ECAPATDNN) and not model.training
    assert model.verify_threshold == 0.25 and model.labels is None

    # Same waveform through SpeechBrain's whole pipeline and through reszoo's.
    wave = _speech_like(1.2, seed=7)
    with torch.no_grad():
        feats = InputNormalization(norm_type="sentence", std_norm=False)(SBFbank(n_mels=80)(wave[None]), torch.ones(1))
        reference = sb(feats)[0, 0]
    emb = model.embed(wave, sample_rate=16000)
    assert emb.shape == (SMALL["embed_dim"],)
    assert (emb - reference).abs().max().item() < 1e-4

    # The same audio as a numpy array gives the same embedding.
    assert torch.allclose(model.embed(wave.numpy(), 16000), emb, atol=1e-5)
    score, same = model.verify(wave, wave, sample_rate=16000)
    assert score == pytest.approx(1.0, abs=1e-5) and same is True
    score, same = model.verify(wave, _speech_like(1.2, seed=8) * torch.linspace(0.2, 1, 19200), sample_rate=16000, threshold=1.01)
    assert same is False and -1.0 <= score <= 1.0

    # The conversion happened once and was cached as safetensors: a second load reads that.
    from reszoo.hub import cache_dir

    converted = list((cache_dir() / "converted").glob("*speechbrain-ecapa.safetensors"))
    assert converted
    again = reszoo.load("ecapa-voxceleb")
    assert torch.equal(again.embed(wave, 16000), emb)


def test_tampered_speechbrain_checkpoint_fails_the_pin(upstream) -> None:
    _fake_voxceleb_entry(upstream, sha256="0" * 64)  # the pin no longer matches the published bytes
    with pytest.raises(reszoo.IntegrityError, match="sha256 mismatch"):
        reszoo.load("ecapa-voxceleb")


def test_voxceleb_entry_describes_speechbrains_model() -> None:
    entry = reszoo.info("ecapa-voxceleb")
    w = entry.weights
    assert (w.repo, w.file, w.format, w.converter) == ("speechbrain/spkrec-ecapa-voxceleb", "embedding_model.ckpt", "torch", "speechbrain-ecapa")
    assert w.sha256 == "0575cb64845e6b9a10db9bcb74d5ac32b326b8dc90352671d345e2ee3d0126a2" and w.revision is None and w.pin_note
    assert FbankConfig.from_preprocess(entry.preprocess) == FbankConfig()  # SpeechBrain's front end
    assert {m.value for m in entry.metrics} == {0.8, 0.9} and all(not m.source.measured for m in entry.metrics)


# --------------------------------------------------------------------------- models trained here


def test_digit_model_predicts_bundled_recordings_offline(hub, offline) -> None:
    hub.reset_count()
    model = reszoo.load("tdnn-fsdd-digits")
    files = sorted(EXAMPLES.glob("*.wav"))
    rows = speech.predict(model, [str(f) for f in files], top_k=3)
    assert hub.request_count == 0
    top1 = {Path(r["input"]).name: r["label"] for r in rows if r["rank"] == 1}
    assert top1 == {f.name: f.name.split("_")[0] for f in files}
    assert len(rows) == 3 * len(files)


def test_cli_predict_prints_the_digit() -> None:
    wav = EXAMPLES / "7_jackson_0.wav"
    result = subprocess.run([sys.executable, "-m", "reszoo.cli", "predict", "tdnn-fsdd-digits", str(wav), "--top-k", "1", "--json"],
                            capture_output=True, text=True, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert rows == [{"input": str(wav), "rank": 1, "label": "7", "prob": rows[0]["prob"]}] and rows[0]["prob"] > 0.5


def test_speaker_model_verifies_bundled_recordings(hub, offline) -> None:
    model = reszoo.load("ecapa-fsdd-speakers")
    assert model.verify_threshold == reszoo.info("ecapa-fsdd-speakers").runtime["verify_threshold"]
    a, b, other = (EXAMPLES / n for n in ("7_jackson_0.wav", "7_jackson_1.wav", "3_theo_0.wav"))
    same_score, _ = model.verify(a, b)
    diff_score, _ = model.verify(a, other)
    assert same_score > diff_score
    rows = speech.predict(model, [str(b), str(other)], reference=str(a))
    assert [r["input"] for r in rows] == [str(b), str(other)] and rows[0]["score"] == pytest.approx(same_score, abs=1e-4)


@pytest.fixture(scope="module")
def fsdd_test_split(one_thread) -> tuple[list[Path], list[torch.Tensor]]:
    """FSDD's 300 test recordings and their features (the digit models' front end)."""
    if not FSDD.is_dir():
        need_data("fsdd/recordings")
    files = sorted(p for p in FSDD.glob("*.wav") if int(p.stem.split("_")[2]) < 5)
    preprocess = speech.build_preprocess(reszoo.info("tdnn-fsdd-digits"))
    return files, [preprocess(f) for f in files]


@pytest.mark.parametrize("name", ["tdnn-fsdd-digits", "tdnn-fsdd-digits-plain"])
def test_registry_accuracy_is_what_the_committed_weights_give(name: str, fsdd_test_split) -> None:
    """The recorded test accuracy is reproduced by the bundled weights on FSDD's test split."""
    files, feats = fsdd_test_split
    assert len(files) == 300
    entry = reszoo.info(name)
    assert entry.preprocess == reszoo.info("tdnn-fsdd-digits").preprocess
    recorded = next(m.value for m in entry.metrics if m.split.startswith("test")) / 100  # percent
    model = reszoo.load(name)
    with torch.inference_mode():
        pred = [model(f[None]).argmax(-1).item() for f in feats]
    acc = float(np.mean([p == int(f.name[0]) for p, f in zip(pred, files, strict=True)]))
    assert acc == pytest.approx(recorded, abs=1e-6)
