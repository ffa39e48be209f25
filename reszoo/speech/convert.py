"""Upstream speech checkpoints -> reszoo: SpeechBrain's ECAPA-TDNN (``speechbrain-ecapa``) and NVIDIA NeMo's
CTC recognisers, Jasper and QuartzNet (``nemo-ctc``, ``.nemo`` archives; see the second half).

SpeechBrain's ECAPA-TDNN checkpoint layout -> reszoo's :class:`~reszoo.speech.models.ECAPATDNN`.

SpeechBrain wraps every convolution and batch norm (``conv.conv.*``, ``norm.norm.*``) and keeps
the stem in ``blocks.0``; reszoo names the modules for what they are:

==========================================  =========================================
SpeechBrain (``embedding_model.ckpt``)       reszoo
==========================================  =========================================
``blocks.0.conv.conv.*`` / ``.norm.norm.*``  ``stem.conv.*`` / ``stem.bn.*``
``blocks.{i}.tdnn1|tdnn2`` (i >= 1)          ``blocks.{i-1}.tdnn1|tdnn2``
``blocks.{i}.res2net_block.blocks.{j}``      ``blocks.{i-1}.res2net.convs.{j}``
``blocks.{i}.se_block.conv1|conv2.conv.*``   ``blocks.{i-1}.se.reduce|expand.*``
``blocks.{i}.shortcut.conv.*``               ``blocks.{i-1}.shortcut.*``
``mfa``                                      ``mfa``
``asp.tdnn`` / ``asp.conv.conv.*``           ``pool.tdnn`` / ``pool.attention.*``
``asp_bn.norm.*``                            ``pool_bn.*``
``fc.conv.weight (E, 2C, 1)``                ``embedding.weight (E, 2C)`` (a linear layer)
==========================================  =========================================

The conversion is strict: a key no rule knows, or a checkpoint without stem, MFA, pooling or
embedding, is an error naming the keys.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from .._text import listing
from ..domains import Registry
from ..errors import ConversionError

__all__ = ["ConversionError", "NemoCTC", "check_nemo_entry", "convert_nemo_ctc", "convert_speechbrain_ecapa",
           "converters", "nemo_ctc_config", "nemo_ctc_layers"]

# A state dict (or, for format: tar weights, a reszoo.checkpoints.TarArchive) -> a reszoo state dict.
converters: Registry[Callable[[Any], dict[str, Tensor]]] = Registry("converter")


# (pattern on the SpeechBrain key, replacement); the TDNN tail ``conv.conv.X`` / ``norm.norm.X``
# is rewritten separately by _tdnn_tail.
_TDNN_TAIL = r"(?P<tail>conv\.conv\.(weight|bias)|norm\.norm\.(weight|bias|running_mean|running_var|num_batches_tracked))"
_BN = r"(weight|bias|running_mean|running_var|num_batches_tracked)"
_RULES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(rf"^blocks\.0\.{_TDNN_TAIL}$"), "stem.{tail}"),
    (re.compile(rf"^blocks\.(?P<i>[1-9]\d*)\.(?P<t>tdnn1|tdnn2)\.{_TDNN_TAIL}$"), "blocks.{i-1}.{t}.{tail}"),
    (re.compile(rf"^blocks\.(?P<i>[1-9]\d*)\.res2net_block\.blocks\.(?P<j>\d+)\.{_TDNN_TAIL}$"), "blocks.{i-1}.res2net.convs.{j}.{tail}"),
    (re.compile(r"^blocks\.(?P<i>[1-9]\d*)\.se_block\.conv1\.conv\.(?P<p>weight|bias)$"), "blocks.{i-1}.se.reduce.{p}"),
    (re.compile(r"^blocks\.(?P<i>[1-9]\d*)\.se_block\.conv2\.conv\.(?P<p>weight|bias)$"), "blocks.{i-1}.se.expand.{p}"),
    (re.compile(r"^blocks\.(?P<i>[1-9]\d*)\.shortcut\.conv\.(?P<p>weight|bias)$"), "blocks.{i-1}.shortcut.{p}"),
    (re.compile(rf"^mfa\.{_TDNN_TAIL}$"), "mfa.{tail}"),
    (re.compile(rf"^asp\.tdnn\.{_TDNN_TAIL}$"), "pool.tdnn.{tail}"),
    (re.compile(r"^asp\.conv\.conv\.(?P<p>weight|bias)$"), "pool.attention.{p}"),
    (re.compile(rf"^asp_bn\.norm\.(?P<p>{_BN})$"), "pool_bn.{p}"),
    (re.compile(r"^fc\.conv\.(?P<p>weight|bias)$"), "embedding.{p}"),
]
_REQUIRED = ("stem.conv.weight", "mfa.conv.weight", "pool.tdnn.conv.weight", "pool.attention.weight",
             "pool_bn.running_mean", "embedding.weight")


def _tdnn_tail(tail: str) -> str:
    return tail.replace("conv.conv.", "conv.").replace("norm.norm.", "bn.")


def _rename(key: str) -> str | None:
    for pattern, template in _RULES:
        m = pattern.match(key)
        if m is None:
            continue
        groups = m.groupdict()
        out = template
        if "i" in groups:
            out = out.replace("{i-1}", str(int(groups["i"]) - 1))
        for name in ("j", "t", "p"):
            if groups.get(name) is not None:
                out = out.replace("{" + name + "}", groups[name])
        if groups.get("tail") is not None:
            out = out.replace("{tail}", _tdnn_tail(groups["tail"]))
        return out
    return None


@converters.register("speechbrain-ecapa")
def convert_speechbrain_ecapa(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """A SpeechBrain ``ECAPA_TDNN`` state dict (``embedding_model.ckpt``) in reszoo's layout."""
    # Checkpoints saved from a DataParallel/DDP-wrapped module carry a "module." prefix.
    if state_dict and all(k.startswith("module.") for k in state_dict):
        state_dict = {k[len("module."):]: v for k, v in state_dict.items()}
    out: dict[str, Tensor] = {}
    unknown: list[str] = []
    for key, value in state_dict.items():
        new = _rename(key)
        if new is None:
            unknown.append(key)
            continue
        if new == "embedding.weight":
            if value.dim() != 3 or value.shape[-1] != 1:
                raise ConversionError(f"fc.conv.weight: expected a (out, in, 1) 1x1 convolution, got {tuple(value.shape)}")
            value = value[..., 0]
        out[new] = value
    if unknown:
        raise ConversionError(f"speechbrain-ecapa: keys with no reszoo counterpart: {listing(unknown, 8)}")
    missing = [k for k in _REQUIRED if k not in out]
    if missing:
        raise ConversionError(f"speechbrain-ecapa: not an ECAPA_TDNN checkpoint, missing {', '.join(missing)} "
                              f"(after renaming; the checkpoint had {len(state_dict)} keys)")
    return out


# --------------------------------------------------------------------------- NeMo CTC recognisers (.nemo)
#
# A ``.nemo`` file is a tar archive (NeMo writes it uncompressed; gzip is accepted too) of
# ``model_config.yaml`` (the model's description) and ``model_weights.ckpt`` (its state dict). For
# ``EncDecCTCModel`` with ``ConvASREncoder``/``ConvASRDecoder`` (Jasper, QuartzNet) reszoo's state-dict
# keys are NeMo's own (``encoder.encoder.{i}.mconv.{j}...``, ``decoder.decoder_layers.0...``); the
# converter checks the config says what reszoo computes (every option reszoo does not implement is
# refused by name), that the checkpoint holds exactly the tensors the config implies, with their
# shapes, and -- loading a registry entry -- that the entry builds the same network, front end and
# vocabulary. NeMo's preprocessor buffers (Hann window, mel filterbank) are checked against reszoo's
# front end and dropped: reszoo recomputes them.

NEMO_CONFIG = "model_config.yaml"
NEMO_WEIGHTS = "model_weights.ckpt"
_NEMO_MODELS = ("EncDecCTCModel",)
_NEMO_PREPROCESSORS = ("AudioToMelSpectrogramPreprocessor",)
_NEMO_ENCODERS = ("ConvASREncoder",)
_NEMO_DECODERS = ("ConvASRDecoder",)

# Options reszoo implements only at one value: key -> accepted values (NeMo's default first).
_NEMO_ENCODER_FIXED: dict[str, tuple[Any, ...]] = {
    "activation": ("relu",), "normalization_mode": ("batch",), "residual_mode": ("add",), "conv_mask": (True,),
    "frame_splicing": (1,), "quantize": (False,),
}
_NEMO_ENCODER_FREE = {"_target_", "feat_in", "jasper", "init_mode", "norm_groups"}  # init only / unused with batch norm
_NEMO_BLOCK_FIXED: dict[str, tuple[Any, ...]] = {
    "groups": (1,), "heads": (-1,), "residual_mode": ("add",), "se": (False,), "kernel_size_factor": (1.0, 1),
    "stride_last": (False,), "future_context": (-1,), "residual_dense": (False,),
}
_NEMO_BLOCK_FREE = {"filters", "repeat", "kernel", "stride", "dilation", "dropout", "residual", "separable",
                    "se_reduction_ratio", "se_context_size", "se_interpolation_mode"}  # se_*: unused without se
_NEMO_MEL_FIXED: dict[str, tuple[Any, ...]] = {
    "window": ("hann",), "log": (True,), "log_zero_guard_type": ("add",), "frame_splicing": (1,),
    "exact_pad": (False,), "pad_value": (0, 0.0), "mag_power": (2.0, 2), "mel_norm": ("slaney",),
    "normalize": ("per_feature", "none", None, "NA"),
}
# Training-only or deprecated-and-ignored by NeMo itself: read, not used at inference.
_NEMO_MEL_FREE = {"_target_", "sample_rate", "window_size", "window_stride", "n_window_size", "n_window_stride",
                  "n_fft", "preemph", "features", "lowfreq", "highfreq", "log_zero_guard_value", "dither", "pad_to",
                  "rng", "nb_augmentation_prob", "nb_max_freq", "use_torchaudio", "stft_exact_pad", "stft_conv"}


@dataclass(frozen=True)
class NemoBlock:
    """One ``jasper:`` block of a ConvASREncoder config."""

    filters: int
    repeat: int
    kernel: int
    stride: int
    dilation: int
    residual: bool
    separable: bool


@dataclass(frozen=True)
class NemoCTC:
    """What reszoo reads from a NeMo CTC model config: the network, the front end, the vocabulary."""

    feat_in: int
    blocks: tuple[NemoBlock, ...]
    labels: tuple[str, ...]
    preprocess: Any  # a reszoo.speech.melspec.MelConfig

    @property
    def num_classes(self) -> int:
        return len(self.labels)


def _target_name(section: dict[str, Any], what: str, accepted: tuple[str, ...]) -> None:
    target = section.get("_target_") or section.get("cls") or ""
    if target.rsplit(".", 1)[-1] not in accepted:
        raise ConversionError(f"nemo: the {what} is {target or 'not named'!r}; reszoo reads {' or '.join(accepted)}")


def _check_options(section: dict[str, Any], where: str, fixed: dict[str, tuple[Any, ...]], free: set[str]) -> None:
    unknown = sorted(k for k in section if k not in fixed and k not in free)
    if unknown:
        raise ConversionError(f"nemo: {where} has options reszoo does not implement: {listing(unknown, 8)}")
    for key, accepted in fixed.items():
        if key in section and section[key] not in accepted:
            raise ConversionError(f"nemo: {where}.{key} = {section[key]!r} is not supported by reszoo "
                                  f"(it implements {key} = {accepted[0]!r})")


def _one(value: Any, where: str) -> int:
    """NeMo writes kernel/stride/dilation as one-element lists."""
    if isinstance(value, list | tuple) and len(value) == 1:
        value = value[0]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConversionError(f"nemo: {where} must be a positive integer (or a list of one), got {value!r}")
    return value


def _mel_config(pre: dict[str, Any]) -> Any:
    from .melspec import MelConfig

    _target_name(pre, "preprocessor", _NEMO_PREPROCESSORS)
    _check_options(pre, "preprocessor", _NEMO_MEL_FIXED, _NEMO_MEL_FREE)
    rate = int(pre.get("sample_rate", 16000))
    # Window and hop in ms as reszoo stores them; NeMo gives seconds (window_size) or samples (n_window_size).
    win = pre["n_window_size"] * 1000 / rate if pre.get("n_window_size") else float(pre.get("window_size", 0.02)) * 1000
    hop = pre["n_window_stride"] * 1000 / rate if pre.get("n_window_stride") else float(pre.get("window_stride", 0.01)) * 1000
    win_samples = int(rate * win / 1000)
    n_fft = pre.get("n_fft") or 2 ** math.ceil(math.log2(win_samples))
    guard = pre.get("log_zero_guard_value", 2.0**-24)
    if isinstance(guard, str):
        raise ConversionError(f"nemo: preprocessor.log_zero_guard_value {guard!r} is not supported (give a number)")
    normalize = pre.get("normalize", "per_feature")
    try:
        return MelConfig.from_preprocess({
            "sample_rate": rate, "n_mels": int(pre.get("features", 64)), "n_fft": int(n_fft), "win_ms": win,
            "hop_ms": hop, "f_min": float(pre.get("lowfreq") or 0.0),
            "f_max": float(pre["highfreq"]) if pre.get("highfreq") else None, "window": "hann",
            "preemphasis": None if pre.get("preemph", 0.97) is None else float(pre.get("preemph", 0.97)),
            "log_zero_guard": float(guard), "normalize": "per_feature" if normalize == "per_feature" else "none",
            "pad_to": int(pre.get("pad_to", 16)), "dither": float(pre.get("dither", 1e-5)),
        })
    except (ValueError, TypeError) as err:
        raise ConversionError(f"nemo: preprocessor: {err}") from None


def nemo_ctc_config(config: Any) -> NemoCTC:
    """A NeMo ``EncDecCTCModel`` config (``model_config.yaml``, parsed) as reszoo reads it; anything reszoo
    cannot compute the same way is a :class:`ConversionError` naming it."""
    if not isinstance(config, dict):
        raise ConversionError(f"nemo: {NEMO_CONFIG} is not a mapping of settings (got {type(config).__name__})")
    if "target" in config and str(config["target"]).rsplit(".", 1)[-1] not in _NEMO_MODELS:
        raise ConversionError(f"nemo: the model is {config['target']!r}; reszoo reads {', '.join(_NEMO_MODELS)} "
                              "(character CTC) archives")
    missing = [k for k in ("preprocessor", "encoder", "decoder") if not isinstance(config.get(k), dict)]
    if missing:
        raise ConversionError(f"nemo: {NEMO_CONFIG} has no {', '.join(missing)} section: not a CTC model config")
    enc, dec = config["encoder"], config["decoder"]
    _target_name(enc, "encoder", _NEMO_ENCODERS)
    _check_options(enc, "encoder", _NEMO_ENCODER_FIXED, _NEMO_ENCODER_FREE)
    _target_name(dec, "decoder", _NEMO_DECODERS)
    _check_options(dec, "decoder", {"add_blank": (True,)}, {"_target_", "feat_in", "num_classes", "vocabulary", "init_mode"})
    jasper = enc.get("jasper")
    if not isinstance(jasper, list) or not jasper or not all(isinstance(b, dict) for b in jasper):
        raise ConversionError("nemo: encoder.jasper must be a non-empty list of blocks")
    blocks = []
    for i, b in enumerate(jasper):
        where = f"encoder.jasper[{i}]"
        _check_options(b, where, _NEMO_BLOCK_FIXED, _NEMO_BLOCK_FREE)
        absent = [k for k in ("filters", "repeat", "kernel", "stride", "dilation", "residual") if k not in b]
        if absent:
            raise ConversionError(f"nemo: {where} lacks {', '.join(absent)}")
        block = NemoBlock(_one(b["filters"], f"{where}.filters"), _one(b["repeat"], f"{where}.repeat"),
                          _one(b["kernel"], f"{where}.kernel"), _one(b["stride"], f"{where}.stride"),
                          _one(b["dilation"], f"{where}.dilation"), bool(b["residual"]), bool(b.get("separable", False)))
        if block.stride > 1 and block.dilation > 1:
            raise ConversionError(f"nemo: {where} has both stride and dilation > 1, which NeMo itself refuses")
        blocks.append(block)
    labels = config.get("labels", dec.get("vocabulary"))
    if not isinstance(labels, list) or not labels or not all(isinstance(t, str) for t in labels):
        raise ConversionError("nemo: the config's labels (the vocabulary) must be a non-empty list of strings")
    if dec.get("vocabulary") is not None and list(dec["vocabulary"]) != labels:
        raise ConversionError("nemo: decoder.vocabulary differs from the model's labels")
    if dec.get("num_classes", len(labels)) not in (len(labels), -1):
        raise ConversionError(f"nemo: decoder.num_classes = {dec['num_classes']} but the vocabulary has {len(labels)} labels")
    feat_in = enc.get("feat_in")
    mel = _mel_config(config["preprocessor"])
    if feat_in != mel.n_mels:
        raise ConversionError(f"nemo: encoder.feat_in = {feat_in!r} but the preprocessor makes {mel.n_mels} mel features")
    if dec.get("feat_in") not in (None, blocks[-1].filters):
        raise ConversionError(f"nemo: decoder.feat_in = {dec['feat_in']} but the last encoder block has {blocks[-1].filters} filters")
    return NemoCTC(int(feat_in), tuple(blocks), tuple(labels), mel)


def nemo_ctc_layers(spec: NemoCTC) -> dict[str, tuple[str, tuple[int, ...], dict[str, Any]]]:
    """The layers the config implies, NeMo's way, by module name: ``name -> ("conv", weight shape, {stride,
    dilation, padding, groups}) or ("bn", (channels,), {eps})``. Names are the state dict's (and reszoo's)."""
    layers: dict[str, tuple[str, tuple[int, ...], dict[str, Any]]] = {}
    c_in = spec.feat_in
    for i, b in enumerate(spec.blocks):
        pre = f"encoder.encoder.{i}"
        j, c = 0, c_in
        for r in range(b.repeat):
            conv = {"stride": b.stride, "dilation": b.dilation, "padding": b.dilation * (b.kernel - 1) // 2}
            if b.separable:  # depthwise (kernel) then pointwise (1x1)
                layers[f"{pre}.mconv.{j}.conv"] = ("conv", (c, 1, b.kernel), {**conv, "groups": c})
                layers[f"{pre}.mconv.{j + 1}.conv"] = ("conv", (b.filters, c, 1), {"stride": 1, "dilation": 1,
                                                                                   "padding": 0, "groups": 1})
                j += 2
            else:
                layers[f"{pre}.mconv.{j}.conv"] = ("conv", (b.filters, c, b.kernel), {**conv, "groups": 1})
                j += 1
            layers[f"{pre}.mconv.{j}"] = ("bn", (b.filters,), {"eps": 1e-3})
            j += 3 if r < b.repeat - 1 else 1  # activation and dropout between sub-blocks hold no tensors
            c = b.filters
        if b.residual:
            layers[f"{pre}.res.0.0.conv"] = ("conv", (b.filters, c_in, 1), {"stride": 1, "dilation": 1, "padding": 0,
                                                                          "groups": 1})
            layers[f"{pre}.res.0.1"] = ("bn", (b.filters,), {"eps": 1e-3})
        c_in = b.filters
    layers["decoder.decoder_layers.0"] = ("conv", (spec.num_classes + 1, c_in, 1), {"stride": 1, "dilation": 1,
                                                                                 "padding": 0, "groups": 1, "bias": True})
    return layers


def _expected_tensors(spec: NemoCTC) -> dict[str, tuple[int, ...]]:
    out: dict[str, tuple[int, ...]] = {}
    for name, (kind, shape, opts) in nemo_ctc_layers(spec).items():
        if kind == "conv":
            out[f"{name}.weight"] = shape
            if opts.get("bias"):
                out[f"{name}.bias"] = shape[:1]
        else:
            for p in ("weight", "bias", "running_mean", "running_var"):
                out[f"{name}.{p}"] = shape
            out[f"{name}.num_batches_tracked"] = ()
    return out


def _check_front_end(state: dict[str, Tensor], spec: NemoCTC, where: str) -> None:
    """NeMo's stored window and filterbank must be what reszoo's front end computes (then dropped)."""
    import torch

    from .melspec import MelSpectrogram

    mel = MelSpectrogram(spec.preprocess)
    for key, ours in (("preprocessor.featurizer.window", mel.window), ("preprocessor.featurizer.fb", mel.filters[None])):
        theirs = state.get(key)
        if theirs is None:
            continue
        if tuple(theirs.shape) != tuple(ours.shape) or not torch.allclose(theirs.float(), ours, rtol=1e-4, atol=1e-7):
            raise ConversionError(f"nemo: {where}: {key} differs from reszoo's front end for this config "
                                  f"({tuple(theirs.shape)} vs {tuple(ours.shape)}); the archive's preprocessor is not "
                                  "the one its config describes")


def check_nemo_entry(spec: NemoCTC, entry: Any) -> None:
    """The registry entry builds what the archive describes: the same layers (kernels, strides, dilations,
    padding, groups, batch-norm eps), front end and vocabulary; else one error naming the first difference."""
    import dataclasses

    from torch import nn

    from ..api import build
    from .melspec import MelConfig

    if entry.labels is not None and tuple(entry.labels) != spec.labels:
        raise ConversionError(f"nemo: {entry.name}: the entry's labels differ from the archive's vocabulary "
                              f"{list(spec.labels)[:8]}...; copy the archive's labels into the entry")
    try:
        ours = MelConfig.from_preprocess(dict(entry.preprocess or {}))
    except ValueError as err:
        raise ConversionError(f"nemo: {entry.name}: the entry's preprocess is not a nemo-mel front end ({err})") from None
    # Dither acts only in training, min_ms is reszoo's input check, f_max None means sample_rate / 2.
    def effective(cfg: MelConfig) -> MelConfig:
        return dataclasses.replace(cfg, min_ms=0.0, dither=0.0, f_max=cfg.f_max or cfg.sample_rate / 2)

    ours, theirs = effective(ours), effective(spec.preprocess)
    if ours != theirs:
        diff = [f"{f.name} {getattr(ours, f.name)!r} (archive: {getattr(theirs, f.name)!r})"
                for f in dataclasses.fields(ours) if getattr(ours, f.name) != getattr(theirs, f.name)]
        raise ConversionError(f"nemo: {entry.name}: the entry's preprocess differs from the archive's: {', '.join(diff)}")
    model = build(entry, device="meta")
    found: dict[str, tuple[str, tuple[int, ...], dict[str, Any]]] = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv1d):
            opts = {"stride": m.stride[0], "dilation": m.dilation[0], "padding": m.padding[0], "groups": m.groups}
            if m.bias is not None:
                opts["bias"] = True
            found[name] = ("conv", tuple(m.weight.shape), opts)
        elif isinstance(m, nn.BatchNorm1d):
            found[name] = ("bn", (m.num_features,), {"eps": m.eps})
    expected = nemo_ctc_layers(spec)
    for name in [*expected, *(n for n in found if n not in expected)]:  # the first difference in layer order
        if expected.get(name) != found.get(name):
            raise ConversionError(f"nemo: {entry.name}: arch {entry.arch} {entry.arch_args} does not build the archive's "
                                  f"network: layer {name} is {found.get(name) or 'absent'} in reszoo, "
                                  f"{expected.get(name) or 'absent'} in the archive")


@converters.register("nemo-ctc")
def convert_nemo_ctc(archive: Any) -> dict[str, Tensor]:
    """A NeMo ``EncDecCTCModel`` archive (``.nemo``: a :class:`reszoo.checkpoints.TarArchive`) as a reszoo
    QuartzNet/Jasper state dict, checked against its config and, loading an entry, against the entry."""
    import yaml

    from ..checkpoints import TarArchive

    if not isinstance(archive, TarArchive):
        raise ConversionError("nemo-ctc: converts a .nemo archive (weights.format: tar), got a "
                              f"{type(archive).__name__}")
    where = archive.path.name
    try:
        config = yaml.safe_load(archive.text(NEMO_CONFIG))
    except yaml.YAMLError as err:
        raise ConversionError(f"nemo: {where}: {NEMO_CONFIG} is not valid YAML ({str(err).splitlines()[0]})") from None
    spec = nemo_ctc_config(config)
    state = archive.state_dict(NEMO_WEIGHTS)
    _check_front_end(state, spec, where)
    state = {k: v for k, v in state.items() if not k.startswith("preprocessor.featurizer.")}
    expected = _expected_tensors(spec)
    unknown = [k for k in state if k not in expected]
    if unknown:
        raise ConversionError(f"nemo: {where}: tensors the config does not describe: {listing(unknown, 8)}")
    missing = [k for k in expected if k not in state]
    if missing:
        raise ConversionError(f"nemo: {where}: tensors the config implies are missing: {listing(missing, 8)}")
    wrong = [f"{k} {tuple(v.shape)} (config: {expected[k]})" for k, v in state.items() if tuple(v.shape) != expected[k]]
    if wrong:
        raise ConversionError(f"nemo: {where}: tensors of the wrong shape for the config: {listing(wrong, 4)}")
    if archive.entry is not None:
        check_nemo_entry(spec, archive.entry)
    return state
