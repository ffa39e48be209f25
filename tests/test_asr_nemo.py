"""The speech recogniser against NVIDIA NeMo itself: the log-mel front end vs NeMo's
``AudioToMelSpectrogramPreprocessor``, the QuartzNet encoder/decoder vs NeMo's ``ConvASREncoder``/
``ConvASRDecoder`` on the same random weights, a ``.nemo`` archive written by NeMo's own ``save_to``
loaded through the ``nemo-ctc`` converter, the loopback Hub, the sha256 pin and the cache, and the
converter's refusals of malformed archives (which need no NeMo).

NeMo (``nemo_toolkit[asr]``, the ``test`` extra) is imported inside the fixtures, once per module;
without it the parity tests skip, saying so.
"""

from __future__ import annotations

import copy
import io
import math
import tarfile
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

import reszoo
from conftest import need_data
from reszoo.checkpoints import TarArchive, load_state_dict
from reszoo.errors import ConversionError, IntegrityError, LoadError
from reszoo.speech import models as speech_models
from reszoo.speech.audio import as_waveform
from reszoo.speech.convert import convert_nemo_ctc, nemo_ctc_config
from reszoo.speech.melspec import MelConfig, MelPreprocess, mel_filters

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread per module

ENTRY = "quartznet15x5-librispeech"
LABELS = [" ", *"abcdefghijklmnopqrstuvwxyz", "'"]
FRONT_END_TOL = 1e-4  # measured: 3.1e-5 at worst over 120 FSDD recordings, 1.7e-6 on the synthetic batch (float32)
LOGPROB_TOL = 1e-4


def _block(filters: int, kernel: int, repeat: int = 1, *, stride: int = 1, dilation: int = 1, residual: bool = False,
           separable: bool = True) -> dict[str, Any]:
    """One ``jasper:`` layer as NeMo's configs write it."""
    return {"filters": filters, "repeat": repeat, "kernel": [kernel], "stride": [stride], "dilation": [dilation],
            "dropout": 0.0, "residual": residual, "separable": separable}


# NeMo's examples/asr/conf/quartznet/quartznet_15x5.yaml, layer by layer; QuartzNet 5x5 (Kriman et al. 2019,
# Table 1) has each of the five groups once; the small recogniser trained here, in NeMo's terms.
_GROUPS = [(256, 33), (256, 39), (512, 51), (512, 63), (512, 75)]
NEMO_LAYERS = {
    "quartznet15x5": [_block(256, 33, stride=2),
                      *[_block(f, k, 5, residual=True) for f, k in _GROUPS for _ in range(3)],
                      _block(512, 87, dilation=2), _block(1024, 1, separable=False)],
    "quartznet5x5": [_block(256, 33, stride=2), *[_block(f, k, 5, residual=True) for f, k in _GROUPS],
                     _block(512, 87, dilation=2), _block(1024, 1, separable=False)],
    "quartznet_small": [_block(128, 33, stride=2), _block(128, 33, 3, residual=True), _block(128, 39, 3, residual=True),
                        _block(192, 51, 3, residual=True), _block(192, 63, dilation=2), _block(256, 1, separable=False)],
}
NEMO_PREPROCESSOR = {"_target_": "nemo.collections.asr.modules.AudioToMelSpectrogramPreprocessor",
                     "normalize": "per_feature", "window_size": 0.02, "sample_rate": 16000, "window_stride": 0.01,
                     "window": "hann", "features": 64, "n_fft": 512, "frame_splicing": 1, "dither": 1e-05}


def nemo_config(arch: str = "quartznet_small", labels: list[str] = LABELS) -> dict[str, Any]:
    """An ``EncDecCTCModel`` config (what ``model_config.yaml`` holds), no data sets: built offline."""
    layers = copy.deepcopy(NEMO_LAYERS[arch])
    return {
        "sample_rate": 16000, "labels": list(labels), "preprocessor": dict(NEMO_PREPROCESSOR),
        "encoder": {"_target_": "nemo.collections.asr.modules.ConvASREncoder", "feat_in": 64, "activation": "relu",
                    "conv_mask": True, "jasper": layers},
        "decoder": {"_target_": "nemo.collections.asr.modules.ConvASRDecoder", "feat_in": layers[-1]["filters"],
                    "num_classes": len(labels), "vocabulary": list(labels)},
    }


def random_weights(model: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """Random weights every layer of which shows in the output: reszoo's initialisation (He, so that the
    outputs are far from uniform), random batch-norm scales and shifts, and running statistics measured on
    random features (one pass in training mode), so that activations keep their scale through the stack."""
    torch.manual_seed(seed)
    model.reset_parameters()
    g = torch.Generator().manual_seed(seed)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    with torch.no_grad():
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # a cumulative average over the calibration pass
            m.weight.uniform_(0.5, 1.5, generator=g)
            m.bias.normal_(0, 0.2, generator=g)
        model.train()
        model(torch.randn(4, 64, 200, generator=g), torch.tensor([200, 170, 120, 90]))
        model.eval()
        for m in norms:
            m.momentum = 0.1
    return {k: v.clone() for k, v in model.state_dict().items()}


def speech_like(seconds: float, seed: int, rate: int = 16_000) -> torch.Tensor:
    """Harmonics of a gliding pitch over the whole band, plus noise: no data needed."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * rate)) / rate
    f0 = 110 + 50 * torch.sin(2 * math.pi * 1.3 * t)
    phase = 2 * math.pi * torch.cumsum(f0, 0) / rate
    wave = sum(torch.sin(k * phase) / k for k in range(1, 30) if k * 160 < rate / 2)
    return (0.2 * wave * (0.6 + 0.4 * torch.sin(2 * math.pi * 3 * t)) + 0.01 * torch.randn(t.shape, generator=g)).float()


# --------------------------------------------------------------------------- NeMo, imported once


@pytest.fixture(scope="module")
def nemo_asr() -> Any:
    pytest.importorskip("nemo.collections.asr", reason="NeMo is not installed: pip install 'nemo_toolkit[asr]' "
                        "(the test extra) to compare with it")
    import logging

    import nemo.collections.asr as nemo_asr

    logging.getLogger("nemo_logger").setLevel(logging.ERROR)
    return nemo_asr


@pytest.fixture(scope="module")
def nemo_preprocessor(nemo_asr: Any) -> Any:
    return nemo_asr.modules.AudioToMelSpectrogramPreprocessor(
        **{k: v for k, v in NEMO_PREPROCESSOR.items() if k != "_target_"}).eval()


def _nemo_features(pre: Any, waves: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([w.numel() for w in waves])
    batch = torch.zeros(len(waves), int(lengths.max()))
    for i, w in enumerate(waves):
        batch[i, : w.numel()] = w
    return pre(input_signal=batch, length=lengths)


# --------------------------------------------------------------------------- the front end


def test_mel_filters_are_librosa_slaney_and_torchaudio_slaney(nemo_asr):
    import librosa  # a NeMo dependency
    import torchaudio.functional as AF

    for cfg in (MelConfig(), MelConfig(n_mels=80, f_min=20.0, f_max=7600.0), MelConfig(sample_rate=8000, n_fft=256, n_mels=40)):
        ours = mel_filters(cfg)
        ref = torch.from_numpy(librosa.filters.mel(sr=cfg.sample_rate, n_fft=cfg.n_fft, n_mels=cfg.n_mels, fmin=cfg.f_min,
                                                   fmax=cfg.f_max, norm="slaney")).float()
        ta = AF.melscale_fbanks(cfg.n_fft // 2 + 1, cfg.f_min, cfg.f_max or cfg.sample_rate / 2, cfg.n_mels,
                                cfg.sample_rate, norm="slaney", mel_scale="slaney").T
        assert ours.shape == ref.shape == ta.shape
        scale = float(ref.abs().max())
        assert (ours - ref).abs().max() <= 1e-6 * scale  # float64 like librosa: the last bit
        assert (ta - ref).abs().max() <= 1e-5 * scale  # torchaudio: float32 arithmetic


def test_front_end_matches_nemo_on_a_synthetic_batch(nemo_preprocessor):
    waves = [speech_like(1.37, 0), speech_like(0.61, 1), speech_like(2.02, 2)]  # padding in the batch
    ref, ref_len = _nemo_features(nemo_preprocessor, waves)
    pre = MelPreprocess()
    feats, lengths = pre.batch([(w, 16_000) for w in waves])
    assert feats.shape == ref.shape and feats.shape[-1] % 16 == 0
    assert torch.equal(lengths, ref_len) and lengths.tolist() == [w.numel() // 160 for w in waves]
    assert (feats - ref).abs().max() <= FRONT_END_TOL
    # One utterance alone: the same valid frames as in the padded batch, zeros after them.
    alone, n = pre((waves[1], 16_000))
    assert alone.shape[0] == 1 and n.tolist() == [lengths[1]]
    assert (alone[0, :, : n[0]] - feats[1, :, : n[0]]).abs().max() <= 1e-5 and not feats[1, :, n[0]:].any()


def test_front_end_matches_nemo_on_fsdd_recordings_resampled(nemo_preprocessor):
    folder = need_data("fsdd/recordings")
    files = [folder / f"{d}_{s}_{i}.wav" for d, s, i in ((0, "george", 3), (4, "jackson", 7), (7, "lucas", 12),
                                                         (9, "nicolas", 20), (2, "theo", 31), (5, "yweweler", 45))]
    waves = [as_waveform(f) for f in files]  # 8 kHz files, resampled to 16 kHz by reszoo: both sides read these
    ref, ref_len = _nemo_features(nemo_preprocessor, waves)
    feats, lengths = MelPreprocess().batch(files)
    assert feats.shape == ref.shape and torch.equal(lengths, ref_len)
    assert (feats - ref).abs().max() <= FRONT_END_TOL


def test_dither_only_in_training_mode():
    pre = MelPreprocess()
    wave = (speech_like(0.5, 3), 16_000)
    assert torch.equal(pre(wave)[0], pre(wave)[0])  # eval (the default): deterministic
    pre.train()
    torch.manual_seed(0)
    a = pre(wave)[0]
    assert not torch.equal(a, pre(wave)[0]) and (a - pre.eval()(wave)[0]).abs().max() < 0.1


def test_preprocess_kind_selects_the_front_end():
    from reszoo.speech.preprocess import SpeechPreprocess, build_preprocess

    entry = reszoo.info(ENTRY)
    assert isinstance(build_preprocess(entry), MelPreprocess) and build_preprocess(entry).cfg == MelConfig(dither=1e-5)
    assert isinstance(build_preprocess(reszoo.info("ecapa-voxceleb")), SpeechPreprocess)
    with pytest.raises(ValueError, match="unknown nemo-mel preprocess keys"):
        MelConfig.from_preprocess({"kind": "nemo-mel", "n_mel": 64})
    with pytest.raises(ValueError, match="window must be 'hann'"):
        MelConfig.from_preprocess({"kind": "nemo-mel", "window": "hamming"})


# --------------------------------------------------------------------------- encoder and decoder


@pytest.mark.parametrize("arch", ["quartznet_small", "quartznet5x5", "quartznet15x5"])
def test_encoder_decoder_match_nemo_on_the_same_random_weights(nemo_asr, arch):
    ours = getattr(speech_models, arch)().eval()
    state = random_weights(ours, seed=1)
    layers = NEMO_LAYERS[arch]
    encoder = nemo_asr.modules.ConvASREncoder(jasper=copy.deepcopy(layers), activation="relu", feat_in=64,
                                              conv_mask=True).eval()
    decoder = nemo_asr.modules.ConvASRDecoder(feat_in=layers[-1]["filters"], num_classes=28, vocabulary=LABELS).eval()
    encoder.load_state_dict({k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}, strict=True)
    decoder.load_state_dict({k[len("decoder."):]: v for k, v in state.items() if k.startswith("decoder.")}, strict=True)
    g = torch.Generator().manual_seed(2)
    lengths = torch.tensor([160, 123, 47])
    feats = torch.randn(3, 64, 160, generator=g) * (torch.arange(160) < lengths[:, None, None])
    with torch.no_grad():
        encoded, ref_len = encoder(audio_signal=feats, length=lengths)
        ref = decoder(encoder_output=encoded)
        log_probs, out_len = ours(feats, lengths)
    assert torch.equal(out_len, ref_len) and out_len.tolist() == [80, 62, 24]
    assert log_probs.shape == ref.shape == (3, 80, 29)
    # Far from uniform (1/29) and varied: the weights decide every frame's symbol.
    assert log_probs.exp().amax(-1).mean() > 0.1 and log_probs.argmax(-1).unique().numel() > 10
    for i, n in enumerate(out_len.tolist()):
        assert (log_probs[i, :n] - ref[i, :n]).abs().max() <= LOGPROB_TOL


def test_plain_twin_matches_nemo_without_residuals(nemo_asr):
    ours = speech_models.quartznet_small(residual=False).eval()
    state = random_weights(ours, seed=4)
    assert not any(".res." in k for k in state)
    layers = [{**b, "residual": False} for b in NEMO_LAYERS["quartznet_small"]]
    encoder = nemo_asr.modules.ConvASREncoder(jasper=layers, activation="relu", feat_in=64, conv_mask=True).eval()
    decoder = nemo_asr.modules.ConvASRDecoder(feat_in=256, num_classes=28).eval()
    encoder.load_state_dict({k[8:]: v for k, v in state.items() if k.startswith("encoder.")}, strict=True)
    decoder.load_state_dict({k[8:]: v for k, v in state.items() if k.startswith("decoder.")}, strict=True)
    feats, lengths = torch.randn(2, 64, 96, generator=torch.Generator().manual_seed(5)), torch.tensor([96, 96])
    with torch.no_grad():
        ref = decoder(encoder_output=encoder(audio_signal=feats, length=lengths)[0])
        assert (ours(feats, lengths)[0] - ref).abs().max() <= LOGPROB_TOL


# --------------------------------------------------------------------------- a .nemo written by NeMo


@pytest.fixture(scope="module")
def nemo_archive(nemo_asr: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """``EncDecCTCModel(small config).save_to(...)`` with random weights every layer of which shows."""
    from omegaconf import OmegaConf

    model = nemo_asr.models.EncDecCTCModel(cfg=OmegaConf.create(nemo_config("quartznet_small"))).eval()
    state = random_weights(speech_models.quartznet_small(), seed=7)
    state["decoder.decoder_layers.0.bias"][0] += 2.0  # more spaces: words, and runs of spaces, in the transcripts
    result = model.load_state_dict(state, strict=False)
    assert not result.unexpected_keys and all(k.startswith("preprocessor.") for k in result.missing_keys)
    path = tmp_path_factory.mktemp("nemo") / "stt_en_quartznet15x5.nemo"
    model.save_to(str(path))
    return path, model


def test_nemo_archive_loads_through_hub_pin_and_cache_and_transcribes_as_nemo(nemo_archive, upstream, tmp_path,
                                                                                monkeypatch):
    import huggingface_hub.constants as hf_constants
    import soundfile

    path, nemo_model = nemo_archive
    published = upstream(ENTRY, {"stt_en_quartznet15x5.nemo": path}, repo="nvidia-test/stt_en_quartznet_small",
                         arch="quartznet_small")
    model = reszoo.load(ENTRY)
    assert isinstance(model.preprocess, MelPreprocess) and list(model.labels) == LABELS
    converted = sorted((Path(reszoo.hub.cache_dir()) / "converted").glob(f"{published.sha256}-nemo-ctc-*.safetensors"))
    assert len(converted) == 1  # converted once, cached as safetensors keyed by the pinned sha256

    waves = [speech_like(1.9, 11), speech_like(1.1, 12), speech_like(2.6, 13)]
    files = []
    for i, w in enumerate(waves):
        files.append(tmp_path / f"utt{i}.wav")
        soundfile.write(files[i], w.numpy(), 16_000, subtype="FLOAT")
    feats, lengths = model.preprocess.batch(files)
    audio = torch.nn.utils.rnn.pad_sequence(waves, batch_first=True)
    audio_len = torch.tensor([w.numel() for w in waves])
    with torch.no_grad():
        log_probs, out_len = model(feats, lengths)
        ref, ref_len, ref_pred = nemo_model(input_signal=audio, input_signal_length=audio_len)
        nemo_feats, nemo_len = nemo_model.preprocessor(input_signal=audio, length=audio_len)
        on_nemo_feats, _ = model(nemo_feats, nemo_len)
    assert torch.equal(out_len, ref_len) and torch.equal(lengths, nemo_len)
    for i, n in enumerate(out_len.tolist()):
        # On NeMo's own features the converted network is NeMo's to 1e-4; from audio, the front ends' float32
        # differences (FRONT_END_TOL) pass through the random network, whose log-probs reach -100: 1e-5 relative.
        assert (on_nemo_feats[i, :n] - ref[i, :n]).abs().max() <= LOGPROB_TOL
        assert torch.allclose(log_probs[i, :n], ref[i, :n], rtol=1e-5, atol=LOGPROB_TOL)
        assert torch.equal(log_probs[i, :n].argmax(-1), ref_pred[i, :n])  # the greedy paths, frame by frame
    # NeMo's own greedy transcription of the files vs the greedy decoding of reszoo's outputs.
    hyps = nemo_model.transcribe([str(f) for f in files], batch_size=2, num_workers=0, verbose=False)
    texts = [h.text if hasattr(h, "text") else h for h in hyps]
    assert any(len(t) > 3 for t in texts)  # random weights, but not silent ones
    assert _greedy(log_probs, out_len) == texts
    assert model.transcribe([str(f) for f in files], batch_size=2) == texts
    assert model.transcribe(files[1]) == texts[1]

    # The cache: offline, the conversion is read back (NeMo's archive is not needed again).
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    again = reszoo.load(ENTRY)
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), model.state_dict().values()))


def _greedy(log_probs: torch.Tensor, lengths: torch.Tensor) -> list[str]:
    """Greedy CTC (repeats merged, blanks dropped, blank last) -> text, as NeMo's GreedyCTCInfer."""
    out = []
    for lp, n in zip(log_probs, lengths.tolist()):
        ids = torch.unique_consecutive(lp[:n].argmax(-1)).tolist()
        out.append("".join(LABELS[i] for i in ids if i != len(LABELS)))
    return out


def test_a_wrong_pin_is_refused_before_conversion(nemo_archive, upstream):
    path, _ = nemo_archive
    upstream(ENTRY, {"stt_en_quartznet15x5.nemo": path}, repo="nvidia-test/stt_en_quartznet_pin", arch="quartznet_small",
             weights={"sha256": "0" * 64})
    with pytest.raises(IntegrityError):
        reszoo.load(ENTRY)


def test_an_entry_that_builds_another_network_is_refused(nemo_archive, upstream):
    path, _ = nemo_archive
    upstream(ENTRY, {"stt_en_quartznet15x5.nemo": path}, repo="nvidia-test/stt_en_quartznet_arch", arch="quartznet5x5")
    with pytest.raises(ConversionError, match="does not build the archive's network") as err:
        reszoo.load(ENTRY)
    assert "\n" not in str(err.value)


# --------------------------------------------------------------------------- malformed archives (no NeMo needed)


def _archive(path: Path, members: dict[str, bytes], *, gz: bool = False, links: dict[str, str] | None = None) -> Path:
    with tarfile.open(path, "w:gz" if gz else "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return path


def _weights_bytes(state: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


@pytest.fixture(scope="module")
def small_state() -> dict[str, torch.Tensor]:
    return random_weights(speech_models.quartznet_small().eval(), seed=3)


def _members(state: dict[str, Any], config: dict[str, Any] | None = None) -> dict[str, bytes]:
    return {"./model_config.yaml": yaml.safe_dump(config or nemo_config()).encode(),
            "./model_weights.ckpt": _weights_bytes(state)}


def _convert(path: Path) -> dict[str, torch.Tensor]:
    return load_state_dict(path, fmt="tar", convert=convert_nemo_ctc)


def test_a_hand_made_archive_converts_gzipped_too(small_state, tmp_path):
    for gz in (False, True):
        state = _convert(_archive(tmp_path / f"a{gz}.nemo", _members(small_state), gz=gz))
        assert state.keys() == small_state.keys()
        assert all(torch.equal(state[k], small_state[k]) for k in state)


def _refusal(path: Path, exc: type[Exception], match: str) -> str:
    with pytest.raises(exc, match=match) as err:
        _convert(path)
    msg = str(err.value)
    assert "\n" not in msg and "Traceback" not in msg, msg
    return msg


def test_malformed_archives_are_refused_in_one_line(small_state, tmp_path):
    good = _members(small_state)
    _refusal(_archive(tmp_path / "m1.nemo", {"./model_config.yaml": good["./model_config.yaml"]}), LoadError,
             "no member 'model_weights.ckpt'")
    _refusal(_archive(tmp_path / "m2.nemo", {**good, "../evil.txt": b"x"}), LoadError, r"refused archive member.*'\.\.'")
    _refusal(_archive(tmp_path / "m3.nemo", {**good, "/etc/evil": b"x"}), LoadError, "absolute path")
    _refusal(_archive(tmp_path / "m4.nemo", good, links={"model_config.yaml.bak": "/etc/passwd"}), LoadError, "a link")
    _refusal(_archive(tmp_path / "m4b.nemo", {**good, "model_weights.ckpt": b"another"}), LoadError,
             "holds 'model_weights.ckpt' more than once")
    (tmp_path / "m5.nemo").write_bytes(b"not an archive at all" * 40)
    _refusal(tmp_path / "m5.nemo", LoadError, "not a readable tar archive")
    # A pickle that names code: refused by weights_only, never run.
    evil = _weights_bytes({**small_state, "encoder.encoder.0.mconv.0.conv.weight": argparse_namespace()})
    msg = _refusal(_archive(tmp_path / "m6.nemo", {**good, "./model_weights.ckpt": evil}), LoadError,
                   "refused to read this pickled checkpoint")
    assert "argparse.Namespace" in msg and "weights_only" not in msg
    _refusal(_archive(tmp_path / "m7.nemo", {**good, "./model_config.yaml": b"labels: [unclosed"}), ConversionError,
             "not valid YAML")


def argparse_namespace() -> Any:
    import argparse

    return argparse.Namespace(x=1)


def test_unknown_missing_and_misshapen_tensors_are_refused(small_state, tmp_path):
    extra = {**small_state, "encoder.encoder.9.mconv.0.conv.weight": torch.zeros(1)}
    _refusal(_archive(tmp_path / "k1.nemo", _members(extra)), ConversionError, "tensors the config does not describe")
    fewer = {k: v for k, v in small_state.items() if "res.0.1" not in k}
    _refusal(_archive(tmp_path / "k2.nemo", _members(fewer)), ConversionError, "tensors the config implies are missing")
    wrong = {**small_state, "decoder.decoder_layers.0.bias": torch.zeros(30)}
    _refusal(_archive(tmp_path / "k3.nemo", _members(wrong)), ConversionError, "wrong shape")
    bad_fb = {**small_state, "preprocessor.featurizer.fb": torch.rand(1, 64, 257)}
    _refusal(_archive(tmp_path / "k4.nemo", _members(bad_fb)), ConversionError, "differs from reszoo's front end")


@pytest.mark.parametrize("edit, match", [
    (lambda c: c["encoder"]["jasper"][1].update(se=True), r"jasper\[1\]\.se = True is not supported"),
    (lambda c: c["encoder"].update(activation="selu"), "activation = 'selu' is not supported"),
    (lambda c: c["encoder"]["jasper"][2].update(heads=4), r"jasper\[2\]\.heads = 4"),
    (lambda c: c["encoder"]["jasper"][0].update(novel_option=1), "options reszoo does not implement: novel_option"),
    (lambda c: c["preprocessor"].update(log_zero_guard_type="clamp"), "log_zero_guard_type = 'clamp'"),
    (lambda c: c["preprocessor"].update(window="hamming"), "window = 'hamming'"),
    (lambda c: c["preprocessor"].update(_target_="nemo.collections.asr.modules.AudioToMFCCPreprocessor"),
     "AudioToMFCCPreprocessor"),
    (lambda c: c["decoder"].update(_target_="nemo.collections.asr.modules.RNNTDecoder"), "RNNTDecoder"),
    (lambda c: c.update(target="nemo.collections.asr.models.EncDecCTCModelBPE"), "EncDecCTCModelBPE"),
    (lambda c: c["encoder"].update(feat_in=80), "feat_in = 80"),
    (lambda c: c.pop("encoder"), "no encoder section"),
])
def test_configs_reszoo_cannot_express_are_refused(small_state, tmp_path, edit, match):
    config = nemo_config()
    edit(config)
    _refusal(_archive(tmp_path / "c.nemo", _members(small_state, config)), ConversionError, match)


def test_the_entry_check_names_the_difference(small_state, tmp_path):
    import dataclasses

    entry = dataclasses.replace(reszoo.info(ENTRY), arch="quartznet_small")
    archive = _archive(tmp_path / "e.nemo", _members(small_state))
    assert convert_nemo_ctc(TarArchive(archive, entry)).keys() == small_state.keys()
    cases = [
        (dataclasses.replace(entry, labels=tuple(reversed(LABELS))), "labels differ"),
        (dataclasses.replace(entry, preprocess={**entry.preprocess, "n_fft": 400}), r"n_fft 400 \(archive: 512\)"),
        (dataclasses.replace(entry, preprocess={"kind": "fbank"}), "not a nemo-mel front end"),
        (dataclasses.replace(entry, arch="quartznet5x5"), r"layer encoder\.encoder\.0\.mconv\.1\.conv is .*\(256, 64, 1\)"),
    ]
    for bad, match in cases:
        with pytest.raises(ConversionError, match=match):
            convert_nemo_ctc(TarArchive(archive, bad))


def test_the_registry_entry_describes_nemos_quartznet15x5():
    """The entry builds, layer for layer, what NeMo's published 15x5 config describes."""
    from reszoo.speech.convert import check_nemo_entry

    spec = nemo_ctc_config(nemo_config("quartznet15x5"))
    check_nemo_entry(spec, reszoo.info(ENTRY))  # raises on any difference
    entry = reszoo.info(ENTRY)
    assert entry.weights.format == "tar" and entry.weights.converter == "nemo-ctc"
    assert entry.weights.sha256 is None and "never guessed" in entry.weights.pin_note
    assert list(entry.labels) == LABELS


def test_a_tar_entry_needs_the_converter_that_reads_it():
    from helpers import registry_entry
    from reszoo.registry import RegistryError, parse_entry

    raw = registry_entry(ENTRY)
    assert parse_entry(raw).weights.format == "tar"
    del raw["weights"]["converter"]
    with pytest.raises(RegistryError, match="'tar' archive needs the converter"):
        parse_entry(raw)
    with pytest.raises(LoadError, match="only through its entry's converter"):
        load_state_dict(Path(__file__), fmt="tar")
