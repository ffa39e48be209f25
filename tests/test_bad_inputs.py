"""A corpus of bad inputs, per domain: each gives one clear error, never silent nonsense or a traceback.

Every case names the exact error class and a fragment of its message, through the Python API;
a representative subset also goes through the command line, which must print exactly one line
``reszoo: error: ...`` and exit with status 1. Alongside, what used to be silent nonsense and is
now right: a digit drawn only in the alpha channel, 16-bit PNGs, ``reszoo generate`` streaming.
"""

from __future__ import annotations

import dataclasses
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile
import torch
from PIL import Image

import reszoo
from reszoo.api import MAX_MODEL_BYTES, build
from reszoo.cli import main
from reszoo.errors import InputError, RegistryError
from reszoo.image.preprocess import ImageInputError, ImagePreprocess, ImageTypeError
from reszoo.rl import ObservationError
from reszoo.speech.audio import AudioError
from reszoo.speech.preprocess import SpeechPreprocess
from reszoo.text.preprocess import TextInputError, TextPreprocess, TextTypeError, check_texts

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / "examples" / "digits"
SPEECH = ROOT / "examples" / "speech"
MNIST_PRE = {"size": 28, "resize": 28, "mean": [0.1307], "std": [0.3081], "channels": 1}
RGB_PRE = {"size": 8, "resize": 8, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
CUDA = torch.cuda.is_available()


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread per module


# --------------------------------------------------------------------------- makers of bad inputs


def _png_header(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` (8-bit grayscale), with almost no data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def _write(tmp: Path, name: str, data: bytes) -> Path:
    path = tmp / name
    path.write_bytes(data)
    return path


def _wav(tmp: Path, name: str, samples: np.ndarray, rate: int = 16000) -> Path:
    path = tmp / name
    soundfile.write(path, samples, rate, subtype="PCM_16")
    return path


def _digit(label: int = 7) -> np.ndarray:
    return np.asarray(Image.open(DIGITS / f"digit_{label}.png"))


def _alpha_only(label: int = 7, ink: int = 0) -> Image.Image:
    """An example digit redrawn as drawing apps save strokes: colour ``ink`` everywhere, the shape in alpha."""
    rgba = np.zeros((28, 28, 4), np.uint8)
    rgba[..., :3] = ink
    rgba[..., 3] = _digit(label)
    return Image.fromarray(rgba, "RGBA")


# --------------------------------------------------------------------------- image


IMAGE_CASES: list[tuple[str, Callable[[Path], Any], type[BaseException], str]] = [
    ("nan-tensor", lambda t: torch.full((1, 28, 28), float("nan")), ImageInputError, "NaN or infinite"),
    ("inf-tensor", lambda t: torch.zeros(3, 28, 28).index_fill_(1, torch.tensor([3]), float("inf")), ImageInputError,
     "NaN or infinite"),
    ("nan-in-batch", lambda t: torch.stack([torch.rand(1, 28, 28), torch.full((1, 28, 28), float("-inf"))]),
     ImageInputError, "NaN or infinite"),
    ("empty-tensor", lambda t: torch.zeros(1, 0, 28), ImageInputError, "empty"),
    ("empty-array", lambda t: np.zeros((0, 5), np.uint8), ImageInputError, "empty"),
    ("bomb-png", lambda t: _write(t, "bomb.png", _png_header(100_000, 100_000)), ImageInputError,
     "bomb.png: refused as a possible decompression bomb: Image size (10000000000 pixels)"),
    ("bomb-png-over-limit", lambda t: _write(t, "big.png", _png_header(10_000, 10_000)), ImageInputError,
     "big.png: the image is 10000x10000 (100,000,000 pixels), over the 89,478,485-pixel limit"),
    ("truncated-png", lambda t: _write(t, "cut.png", _png_header(28, 28)), ImageInputError, "cut.png: cannot read image"),
    ("text-as-png", lambda t: _write(t, "notes.png", b"not an image\n"), ImageInputError, "notes.png is not an image file"),
    ("unsupported-extension", lambda t: _write(t, "notes.txt", b"hello\n"), ImageInputError, "not an image file"),
    ("missing-file", lambda t: t / "missing.png", FileNotFoundError, "no such image file"),
    ("directory", lambda t: t, IsADirectoryError, "got a directory"),
    ("fully-transparent", lambda t: Image.new("RGBA", (28, 28), (255, 255, 255, 0)), ImageInputError, "fully transparent"),
    ("float-image-nan", lambda t: Image.fromarray(np.full((28, 28), np.nan, np.float32)), ImageInputError,
     "F mode) contains NaN or infinite"),
    ("int32-image-out-of-range", lambda t: Image.fromarray(np.full((28, 28), 1000, np.int32)), ImageInputError,
     "outside the 0..255"),
    ("unsupported-type", lambda t: 42, ImageTypeError, "expected an image path, PIL image"),
]


@pytest.mark.parametrize(("make", "error", "fragment"), [c[1:] for c in IMAGE_CASES], ids=[c[0] for c in IMAGE_CASES])
def test_bad_image_inputs(make: Callable[[Path], Any], error: type, fragment: str, tmp_path: Path) -> None:
    with pytest.raises(error) as info:
        ImagePreprocess(MNIST_PRE)(make(tmp_path))
    assert type(info.value) is error and fragment in str(info.value)


def test_image_type_error_is_also_a_type_error() -> None:
    assert issubclass(ImageTypeError, TypeError) and issubclass(ImageTypeError, InputError)


# --------------------------------------------------------------------------- image: transparency, bit depth


@pytest.mark.parametrize("label", [3, 7])
def test_alpha_only_digit_is_the_digit_and_classifies(label: int, tmp_path: Path, offline: None) -> None:
    """Black strokes whose shape is only in the alpha channel used to be flattened to a blank image."""
    from reszoo.image import predict

    model = reszoo.load("resnet-mnist")
    path = tmp_path / f"alpha_{label}.png"
    _alpha_only(label).save(path)
    reference = model.preprocess(DIGITS / f"digit_{label}.png")
    assert torch.equal(model.preprocess(path), reference)  # white on black again, exactly
    top = predict(model, [str(path)], top_k=1)[0]
    assert top["label"] == str(label) and top["prob"] > 0.5


def test_transparent_variants_flatten_like_the_digit() -> None:
    pre = ImagePreprocess(MNIST_PRE)
    digit = _digit()
    reference = pre(Image.fromarray(digit))
    la = Image.fromarray(np.stack([np.zeros_like(digit), digit], axis=-1), "LA")
    palette = Image.fromarray(np.where(digit > 127, 1, 0).astype(np.uint8), "P")
    palette.putpalette([255, 255, 255, 0, 0, 0] + [0] * 762)  # index 0: white, transparent; index 1: black ink
    palette.info["transparency"] = 0
    for image in (_alpha_only(ink=255), la, np.asarray(_alpha_only())):  # white ink, LA mode, an HxWx4 array
        assert torch.equal(pre(image), reference)
    binary = pre(Image.fromarray(np.where(digit > 127, 255, 0).astype(np.uint8)))
    assert torch.equal(pre(palette), binary)  # P mode with a transparent index


def test_opaque_alpha_changes_nothing_and_rgb_models_keep_colours() -> None:
    pre = ImagePreprocess(MNIST_PRE)
    digit = _digit()
    opaque = np.dstack([digit, digit, digit, np.full_like(digit, 255)])
    assert torch.equal(pre(Image.fromarray(opaque, "RGBA")), pre(Image.fromarray(digit)))
    rgb = ImagePreprocess(RGB_PRE)
    black = (torch.zeros(3) - torch.tensor(RGB_PRE["mean"])) / torch.tensor(RGB_PRE["std"])
    white = (torch.ones(3) - torch.tensor(RGB_PRE["mean"])) / torch.tensor(RGB_PRE["std"])
    # a coloured picture with a transparent half: that half becomes the background (black), the rest keeps its colours
    photo = np.zeros((8, 8, 4), np.uint8)
    photo[..., 0], photo[..., 1], photo[..., 2] = np.arange(0, 256, 32)[None, :], 200, 50
    photo[:, :4, 3] = 255
    out = rgb(Image.fromarray(photo, "RGBA"))[0]
    assert torch.allclose(out[:, :, 4:], black[:, None, None].expand(3, 8, 4), atol=1e-6)
    assert torch.allclose(out[:, :, :4], rgb(Image.fromarray(photo[..., :3]))[0][:, :, :4], atol=1e-6)
    # a black logo on a transparent canvas would vanish on black: it is drawn on white instead
    logo = rgb(_alpha_only(ink=0).resize((8, 8)))[0]
    assert torch.allclose(logo[:, 0, 0], white, atol=1e-6)


def test_16_bit_png_is_scaled_not_clipped_to_white(tmp_path: Path) -> None:
    pre = ImagePreprocess(MNIST_PRE)
    digit = _digit()
    path = tmp_path / "digit16.png"
    Image.fromarray(digit.astype(np.uint16) * 257).save(path)  # full scale 65535
    assert Image.open(path).mode.startswith("I;16")
    assert torch.equal(pre(path), pre(Image.fromarray(digit)))


# --------------------------------------------------------------------------- audio


AUDIO_CASES: list[tuple[str, Callable[[Path], tuple[Any, Any]], type[BaseException], str]] = [
    ("zero-sample-wav", lambda t: (_wav(t, "empty.wav", np.zeros(0, np.float32)), None), AudioError, "empty.wav: no samples"),
    ("zero-sample-stereo-wav", lambda t: (_wav(t, "empty2.wav", np.zeros((0, 2), np.float32)), None), AudioError,
     "empty2.wav: no samples"),
    ("zero-sample-array", lambda t: (np.zeros((2, 0), np.float32), 16000), AudioError, "no samples"),
    ("nan-array", lambda t: (np.full(16000, np.nan, np.float32), 16000), AudioError, "NaN or infinite"),
    ("inf-tensor", lambda t: (torch.ones(16000).index_fill_(0, torch.tensor([5]), float("inf")), 16000), AudioError,
     "NaN or infinite"),
    ("silent-wav", lambda t: (_wav(t, "silence.wav", np.zeros(16000, np.float32)), None), AudioError, "silence.wav: audio is silent"),
    ("garbage-wav", lambda t: (_write(t, "garbage.wav", b"RIFF\x00\x00\x00\x00WAVEjunk" * 8), None), AudioError,
     "garbage.wav: not a readable audio file"),
    ("unsupported-extension", lambda t: (_write(t, "notes.txt", b"hello\n"), None), AudioError, "not a readable audio file"),
    ("rate-too-low-wav", lambda t: (_wav(t, "low.wav", np.full(3000, 0.1, np.float32), rate=3000), None), AudioError,
     "low.wav: sample_rate 3000 Hz is outside the supported"),
    ("nan-sample-rate", lambda t: (np.full(16000, 0.1, np.float32), float("nan")), AudioError, "whole number of Hz"),
    ("too-short", lambda t: (_wav(t, "short.wav", np.full(480, 0.1, np.float32)), None), AudioError,
     "short.wav: audio is 30.0 ms long; the model needs at least 50 ms"),
    ("too-many-channels", lambda t: (np.full((9, 16000), 0.1, np.float32), 16000), AudioError, "more than 8 channels"),
    ("missing-file", lambda t: (t / "missing.wav", None), FileNotFoundError, "no audio file at"),
    ("directory", lambda t: (t, None), IsADirectoryError, "expected an audio file, got a directory"),
]


@pytest.mark.parametrize(("make", "error", "fragment"), [c[1:] for c in AUDIO_CASES], ids=[c[0] for c in AUDIO_CASES])
def test_bad_audio_inputs(make: Callable[[Path], tuple[Any, Any]], error: type, fragment: str, tmp_path: Path) -> None:
    audio, rate = make(tmp_path)
    with pytest.raises(error) as info:
        SpeechPreprocess()(audio, rate)
    assert type(info.value) is error and fragment in str(info.value)


def test_stereo_file_is_downmixed_as_documented(tmp_path: Path) -> None:
    wave = np.sin(np.linspace(0, 400, 16000)).astype(np.float32) * 0.3
    path = tmp_path / "stereo.wav"
    soundfile.write(path, np.stack([wave, -wave * 0.5], axis=1), 16000, subtype="FLOAT")
    assert torch.allclose(SpeechPreprocess().waveform(path), torch.from_numpy(wave * 0.25), atol=1e-6)
    with pytest.raises(AudioError, match="expected at least one audio input"):
        SpeechPreprocess().batch([])


# --------------------------------------------------------------------------- text


@pytest.fixture(scope="module")
def tokenizer_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny BERT-style tokenizer (BERT's normaliser: control characters dropped, accents stripped)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world"])}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, strip_accents=True, lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    path = tmp_path_factory.mktemp("tokenizer") / "tokenizer.json"
    tok.save(str(path))
    return path


TEXT_CASES: list[tuple[str, Any, dict[str, Any], type[BaseException], str]] = [
    ("no-texts", [], {}, TextInputError, "no texts given"),
    ("empty", "", {}, TextInputError, "text #0 is empty or blank"),
    ("whitespace", " \t\n\u3000", {}, TextInputError, "text #0 is empty or blank"),
    ("control-characters", "\x00\x01\x02\x7f", {}, TextInputError, "text #0 is empty or blank"),
    ("zero-width-and-bom", ["hello", "\u200b\ufeff\u200d"], {}, TextInputError, "text #1 is empty or blank"),
    ("only-combining-accents", "\u0301\u0301", {}, TextInputError, "text #0 ('\u0301\u0301') has no token after the tokenizer"),
    ("not-a-string", [None], {}, TextTypeError, "text #0 is a NoneType"),
    ("bytes", b"hello", {}, TextTypeError, "got bytes"),
    ("too-long-untruncated", "hello " * 20, {"truncate": False}, TextInputError, "longer than max_length=8 tokens"),
]


@pytest.mark.parametrize(("texts", "kwargs", "error", "fragment"), [c[1:] for c in TEXT_CASES], ids=[c[0] for c in TEXT_CASES])
def test_bad_text_inputs(texts: Any, kwargs: dict[str, Any], error: type, fragment: str, tokenizer_file: Path) -> None:
    pre = TextPreprocess.from_file(tokenizer_file, max_length=8)
    with pytest.raises(error) as info:
        pre(texts, **kwargs)
    assert type(info.value) is error and fragment in str(info.value)


def test_text_with_a_control_character_inside_is_fine(tokenizer_file: Path) -> None:
    pre = TextPreprocess.from_file(tokenizer_file, max_length=8)
    assert check_texts(["hello\x00world"]) == ["hello\x00world"]
    assert pre("hello\x00 world")["input_ids"].tolist() == [[2, 5, 6, 3]]
    assert issubclass(TextTypeError, TypeError) and issubclass(TextInputError, ValueError)


# --------------------------------------------------------------------------- rl observations, gan labels


RL_CASES: list[tuple[str, Any, str]] = [
    ("nan", [0.0, float("nan"), 0.0, 0.0], "NaN or infinite"),
    ("inf", np.array([0.0, 0.0, np.inf, 0.0]), "NaN or infinite"),
    ("nan-tensor-batch", torch.tensor([[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, float("-inf")]]), "NaN or infinite"),
    ("wrong-shape", [0.0, 0.0, 0.0], "got shape (3,)"),
    ("strings", ["a", "b", "c", "d"], "numeric"),
    ("ragged", [[0.0], [0.0, 1.0]], "could not read the observation"),
]


@pytest.mark.parametrize(("obs", "fragment"), [c[1:] for c in RL_CASES], ids=[c[0] for c in RL_CASES])
def test_bad_observations(obs: Any, fragment: str) -> None:
    from reszoo.rl import build_preprocess

    preprocess = build_preprocess(reszoo.info("ppo-cartpole-resmlp"))
    with pytest.raises(ObservationError) as info:
        preprocess(obs)
    assert type(info.value) is ObservationError and fragment in str(info.value)


@pytest.mark.parametrize(("labels", "fragment"), [
    (3.7, "must be class indices or names, got 3.7"),
    ([True], "must be class indices or names, got True"),
    (11, "label 11 out of range 0..9"),
    ("cat", "unknown label 'cat'"),
])
def test_bad_generator_labels(labels: Any, fragment: str) -> None:
    from reszoo.gan import build_preprocess

    with pytest.raises(ValueError) as info:
        build_preprocess(reszoo.info("sngan-mnist"))(labels)
    assert type(info.value) is ValueError and fragment in str(info.value)


# --------------------------------------------------------------------------- build / load: num_classes, size, device


BAD_NUM_CLASSES = [-1, 0, True, 2.5, "10"]


@pytest.mark.parametrize("how", ["build", "load-random", "load-pretrained"])
@pytest.mark.parametrize("num_classes", BAD_NUM_CLASSES, ids=repr)
def test_bad_num_classes(num_classes: Any, how: str, offline: None) -> None:
    """-1 and 0 used to build a headless model; every path refuses them the same way."""
    with pytest.raises(InputError) as info:
        if how == "build":
            build(reszoo.info("resnet-mnist"), num_classes=num_classes, device="meta")
        else:
            reszoo.load("resnet-mnist", num_classes=num_classes, pretrained=how == "load-pretrained")
    assert type(info.value) is InputError
    assert f"num_classes must be a positive integer (the size of the new classifier head), got {num_classes!r}" in str(info.value)


@pytest.mark.parametrize(("how", "num_classes", "fragment"), [
    ("build", 10**8, "would take 48.1 GiB"),  # 128 x 10**8 weights: refused from the meta build
    ("load-pretrained", 10**8, "would take 48.1 GiB"),
    ("load-pretrained", 10**12, "num_classes=1000000000000 would need a classifier head over reszoo's limit of 16 GiB"),
    ("build", 10**30, "over reszoo's limit of 16 GiB"),
])
def test_absurd_num_classes_is_refused_before_allocating(how: str, num_classes: int, fragment: str, offline: None) -> None:
    _refused_by(how, fragment, num_classes=num_classes)


def _refused_by(how: str, fragment: str, **kwargs: Any) -> None:
    """resnet-mnist built from its entry (``build``) or loaded (``load...``) with ``kwargs``: an
    InputError, exactly, whose message holds ``fragment``."""
    with pytest.raises(InputError) as info:
        if how == "build":
            build(reszoo.info("resnet-mnist"), **kwargs)
        else:
            reszoo.load("resnet-mnist", **kwargs)
    assert type(info.value) is InputError and fragment in str(info.value)


def test_absurd_or_negative_width_in_a_config() -> None:
    entry = reszoo.info("resnet-mnist")
    huge = dataclasses.replace(entry, arch_args={**entry.arch_args, "stem_width": 10**8})
    with pytest.raises(InputError, match=r"would take [\d,.]+ GiB .* over reszoo's limit of 16 GiB") as info:
        build(huge)
    assert type(info.value) is InputError and "'stem_width': 100000000" in str(info.value)
    negative = dataclasses.replace(entry, arch_args={**entry.arch_args, "stem_width": -5})
    with pytest.raises(RegistryError, match="cannot be built from arguments .*negative dimension -5"):
        build(negative)
    assert MAX_MODEL_BYTES == 16 * 2**30


@pytest.mark.parametrize(("device", "fragment"), [
    ("nonsense", "unknown device 'nonsense': expected cpu, cuda, cuda:N, mps, xpu or meta"),
    ("CPU", "unknown device 'CPU'"),
    pytest.param("cuda", "device 'cuda' is not available here (torch.cuda.is_available() is False)",
                 marks=pytest.mark.skipif(CUDA, reason="this machine has CUDA")),
    ("cuda:99", "device 'cuda:99' is not available here (torch.cuda."),
])
@pytest.mark.parametrize("how", ["build", "load"])
def test_unavailable_or_unknown_device(device: str, fragment: str, how: str, offline: None) -> None:
    _refused_by(how, fragment, device=device)


# --------------------------------------------------------------------------- gan: streaming generation


def test_iter_sample_is_sample_in_chunks(offline: None) -> None:
    g = reszoo.load("sngan-mnist")
    labels = [i % 10 for i in range(70)]
    chunks = list(g.iter_sample(70, labels=labels, seed=3))
    assert [c.shape[0] for c in chunks] == [g.sample_batch_size, 70 - g.sample_batch_size]
    assert torch.equal(torch.cat(chunks), g.sample(70, labels=labels, seed=3))
    with pytest.raises(ValueError, match="n must be a positive integer"):
        g.iter_sample(0)  # checked on the call, not on the first chunk


def test_generate_streams_the_same_grid_as_save_grid(tmp_path: Path, offline: None, capsys: pytest.CaptureFixture[str]) -> None:
    from reszoo.gan import save_grid

    out = tmp_path / "grid.png"
    assert main(["generate", "sngan-mnist", "--n", "70", "--seed", "2", "--out", str(out)]) == 0
    assert "wrote 70 images (1x28x28, seed 2)" in capsys.readouterr().out
    g = reszoo.load("sngan-mnist")
    reference = save_grid(g.sample(70, labels=[i % 10 for i in range(70)], seed=2), tmp_path / "ref.png", nrow=10)
    assert out.read_bytes() == reference.read_bytes()


# --------------------------------------------------------------------------- the command line: one line, status 1


DIGIT = str(DIGITS / "digit_7.png")


def _cli(*argv: str) -> Callable[[Path], list[str]]:
    return lambda tmp: list(argv)


CLI_CASES: list[Any] = [
    pytest.param(lambda t: ["predict", "resnet-mnist", str(_write(t, "bomb.png", _png_header(100_000, 100_000)))],
                 "bomb.png: refused as a possible decompression bomb: Image size (10000000000 pixels)", id="image-bomb"),
    pytest.param(lambda t: ["predict", "resnet-mnist", str(t)], "a folder with no image files",
                 id="image-directory"),
    pytest.param(lambda t: ["predict", "resnet-mnist", str(t / "nope.png")], "no such image file", id="image-missing"),
    pytest.param(_cli("predict", "resnet-mnist", DIGIT, "--device", "nonsense"), "unknown device 'nonsense'",
                 id="device-nonsense"),
    pytest.param(_cli("predict", "resnet-mnist", DIGIT, "--device", "cuda"),
                 "device 'cuda' is not available here (torch.cuda.is_available() is False)",
                 marks=pytest.mark.skipif(CUDA, reason="this machine has CUDA"), id="device-cuda"),
    pytest.param(lambda t: ["predict", "tdnn-fsdd-digits", str(_wav(t, "empty.wav", np.zeros(0, np.float32)))],
                 "empty.wav: no samples", id="audio-empty"),
    pytest.param(lambda t: ["predict", "tdnn-fsdd-digits", str(_write(t, "garbage.wav", b"not a wav file"))],
                 "garbage.wav: not a readable audio file", id="audio-garbage"),
    pytest.param(_cli("predict", "ppo-cartpole-resmlp", "nan,0,0,0"), "NaN or infinite", id="rl-nan"),
    pytest.param(_cli("play", "ppo-cartpole-resmlp", "--max-steps", "-5"), "--max-steps must be at least 1",
                 id="play-max-steps"),
    pytest.param(_cli("play", "ppo-cartpole-resmlp", "--episodes", "0"), "--episodes must be at least 1, got 0",
                 id="play-episodes-0"),
    pytest.param(_cli("play", "ppo-cartpole-resmlp", "--episodes", "-1"), "--episodes must be at least 1, got -1",
                 id="play-episodes-negative"),
    pytest.param(lambda t: ["play", "ppo-cartpole-resmlp", "--fps", "0", "--video", str(t / "v.gif")],
                 "--fps must be at least 1", id="play-fps-0"),
    pytest.param(_cli("play", "ppo-cartpole-resmlp", "--seed", "-1"), "--seed must be 0 or more", id="play-seed-negative"),
    pytest.param(lambda t: ["generate", "sngan-mnist", "--n", "10000000", "--out", str(t / "g.png")],
                 "--n must be between 1 and 4096 images for one grid, got 10000000", id="generate-n-huge"),
    pytest.param(lambda t: ["generate", "sngan-mnist", "--n", "0", "--out", str(t / "g.png")],
                 "--n must be between 1 and 4096", id="generate-n-0"),
    pytest.param(lambda t: ["generate", "sngan-mnist", "--nrow", "0", "--out", str(t / "g.png")],
                 "--nrow must be at least 1", id="generate-nrow-0"),
]


@pytest.mark.parametrize(("argv", "fragment"), CLI_CASES)
def test_cli_bad_input_is_one_line_and_status_1(argv: Callable[[Path], list[str]], fragment: str, tmp_path: Path,
                                                offline: None, capsys: pytest.CaptureFixture[str]) -> None:
    status = main(argv(tmp_path))
    err = capsys.readouterr().err
    assert status == 1, err
    assert err.startswith("reszoo: error: ") and err.count("\n") == 1 and fragment in err, err


def test_cli_predicts_an_alpha_only_digit(tmp_path: Path, offline: None, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "alpha7.png"
    _alpha_only(7).save(path)
    assert main(["predict", "resnet-mnist", str(path), "--top-k", "1", "--json"]) == 0
    assert '"label": "7"' in capsys.readouterr().out


@pytest.mark.parametrize(("episodes", "max_steps"), [(0, None), (-1, None), (1, 0), (1, -5), (True, None), (1, 2.5)])
def test_run_episodes_refuses_non_positive_counts(episodes, max_steps):
    """The Python API checks what `reszoo play` checks, before any environment is made."""
    from reszoo.errors import InputError
    from reszoo.rl.rollout import run_episodes

    with pytest.raises(InputError, match="must be a whole number >= 1"):
        run_episodes(object(), "CartPole-v1", episodes, 0, max_steps=max_steps)
