"""The image domain: ResNet parity with torchvision and timm, the CIFAR ResNets against the paper's
parameter counts, preprocessing parity with timm's eval transform, converters, bad inputs, and the bundled
resnet-mnist predicting real digits offline. (What every architecture and entry promises, plain twins
included, is checked in test_contract.py.)"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import reszoo
from conftest import need_data
from reszoo.image import ImageInputError, ImagePreprocess, PreprocessConfigError, build_preprocess, predict
from reszoo.image import models as M
from reszoo.image.convert import converters
from reszoo.image.models import archs
from reszoo.nn import residual_blocks
from reszoo.registry import info, list_models

ROOT = Path(__file__).resolve().parent.parent
DIGITS = sorted((ROOT / "examples" / "digits").glob("digit_*.png"))
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def _randomize_bn(model: torch.nn.Module, seed: int = 0) -> None:
    """Non-trivial BN statistics and affines, so that eval-mode parity checks every BN term."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=gen) * 0.1)


# --------------------------------------------------------------------------- architectures


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_resnet_matches_torchvision_and_timm(name: str) -> None:
    import timm
    import torchvision

    torch.manual_seed(0)
    ref = getattr(torchvision.models, name)()
    _randomize_bn(ref)
    state = ref.state_dict()
    ours, theirs = getattr(M, name)(), timm.create_model(name, pretrained=False)
    ours.load_state_dict(state, strict=True)  # no key mapping at all
    theirs.load_state_dict(state, strict=True)
    x = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        outs = [m.eval()(x) for m in (ours, ref, theirs)]
    assert outs[0].shape == (2, 1000)
    assert outs[0].std() > 0.1  # a real signal, not a degenerate all-equal output
    assert (outs[0] - outs[1]).abs().max().item() < 1e-5
    assert (outs[0] - outs[2]).abs().max().item() < 1e-5


@pytest.mark.parametrize("name", ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"])
def test_imagenet_key_sets_and_shapes_match_torchvision(name: str) -> None:
    import torchvision

    with torch.device("meta"):
        ours, ref = getattr(M, name)(), getattr(torchvision.models, name)()
    ours_sd, ref_sd = ours.state_dict(), ref.state_dict()
    assert list(ours_sd) == list(ref_sd)
    assert all(ours_sd[k].shape == ref_sd[k].shape for k in ref_sd)


def test_zero_init_last_only_for_residual_nets() -> None:
    res, plain = M.resnet50(), M.resnet50(residual=False)
    assert all(float(b.bn3.weight.detach().abs().sum()) == 0 for b in residual_blocks(res))
    assert all(float(b.bn3.weight.detach().abs().sum()) > 0 for b in residual_blocks(plain))  # else the plain net outputs 0


def _cifar_params(n: int, projection: bool) -> int:
    """Parameters of He et al.'s CIFAR ResNet-(6n+2), counted from the paper's description."""
    total = 3 * 9 * 16 + 2 * 16  # 3x3 stem conv, BN
    c_in = 16
    for width in (16, 32, 64):
        for j in range(n):
            total += (c_in if j == 0 else width) * width * 9 + width * width * 9 + 4 * width
            if j == 0 and c_in != width and projection:
                total += c_in * width + 2 * width  # option B: 1x1 conv + BN
        c_in = width
    return total + 64 * 10 + 10


@pytest.mark.parametrize(("name", "n", "paper_m"), [("resnet20", 3, 0.27), ("resnet32", 5, 0.46), ("resnet44", 7, 0.66),
                                                    ("resnet56", 9, 0.85), ("resnet110", 18, 1.7)])
def test_cifar_resnet_parameter_counts(name: str, n: int, paper_m: float) -> None:
    with torch.device("meta"):
        model, plain = archs[name](), archs[name](residual=False)
    count = sum(p.numel() for p in model.parameters())
    assert count == _cifar_params(n, projection=True)
    # Without the projections (the plain twin, = option A's parameters) it is the paper's Table 6 count.
    plain_count = sum(p.numel() for p in plain.parameters())
    assert plain_count == _cifar_params(n, projection=False)
    assert round(plain_count / 1e6, 2 if paper_m < 1 else 1) == paper_m
    assert 0 < count - plain_count < 0.02 * count  # 2,752 extra parameters, 1% of ResNet-20
    assert len([m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]) == 6 * n + 1 + 2  # + 2 projections


def test_cifar_and_mnist_shapes() -> None:
    out = archs["resnet20"]()(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10)
    mnist = archs["resnet_mnist"]()
    assert sum(p.numel() for p in mnist.parameters()) < 1_000_000
    assert mnist(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_bad_arch_arguments() -> None:
    with pytest.raises(ValueError, match="block must be one of"):
        M.ResNet("pyramid", (1, 1, 1, 1))
    with pytest.raises(ValueError, match="one value per stage"):
        M.ResNet("basic", (1, 1), widths=(8, 16, 32))
    with pytest.raises(ValueError, match="option 'B'"):
        M.ResNet("basic", (1, 1, 1), widths=(16, 32, 64), shortcut="A")


# --------------------------------------------------------------------------- converters


def test_torchvision_converter_is_a_strict_check() -> None:
    import timm

    convert = converters["torchvision"]
    with torch.device("meta"):
        timm_sd = timm.create_model("resnet50").state_dict()
        deep_stem = timm.create_model("resnet50d").state_dict()
    assert set(convert(dict(timm_sd))) == set(timm_sd)
    # Old torchvision files predate num_batches_tracked: filled in, everything else untouched.
    old = {k: v for k, v in timm_sd.items() if not k.endswith("num_batches_tracked")}
    out = convert(old)
    assert set(out) == set(timm_sd)
    assert all(out[k] is old[k] for k in old)
    # A different architecture's keys are an error that names them, never silently dropped.
    with pytest.raises(ValueError, match=r"unexpected keys conv1\.0\.weight"):
        convert(dict(deep_stem))
    with pytest.raises(ValueError, match="module.fc.weight"):
        convert({**timm_sd, "module.fc.weight": torch.zeros(1)})


# --------------------------------------------------------------------------- preprocessing


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    """A real, non-square RGB image: five MNIST test digits side by side, colour-mixed and upscaled."""
    with np.load(need_data("mnist/mnist.npz")) as d:
        strip = np.concatenate(list(d["x_test"][:5]), axis=1)  # 28 x 140
    rgb = np.stack([strip, 255 - strip, np.roll(strip, 3, axis=1)], axis=-1)
    return Image.fromarray(rgb).resize((301, 173), Image.Resampling.BICUBIC)


@pytest.mark.parametrize(("entry_name", "timm_name"), [("resnet50-imagenet", "resnet50.a1_in1k"),
                                                        ("resnet50-tv-imagenet", "resnet50.tv_in1k"),
                                                        ("resnet18-imagenet", "resnet18.tv_in1k")])
def test_preprocess_matches_timm_eval_transform(photo: Image.Image, entry_name: str, timm_name: str, tmp_path: Path) -> None:
    import timm
    from timm.data import create_transform, resolve_data_config

    with torch.device("meta"):
        ref_model = timm.create_model(timm_name, pretrained=False)
    config = resolve_data_config({}, model=ref_model)
    reference = create_transform(**config)(photo)
    preprocess = build_preprocess(info(entry_name))
    assert preprocess.resize == math.floor(224 / config["crop_pct"]) and preprocess.interpolation == config["interpolation"]
    ours = preprocess(photo)
    assert ours.shape == (1, 3, 224, 224) and ours.dtype == torch.float32
    assert (ours[0] - reference).abs().max().item() < 1e-6
    path = tmp_path / "photo.png"
    photo.save(path)
    assert torch.equal(preprocess(path), ours) and torch.equal(preprocess(str(path)), ours)


def test_preprocess_tensor_inputs() -> None:
    pre = ImagePreprocess({"size": 28, "resize": 28, "mean": [0.1307], "std": [0.3081], "channels": 1})
    img = Image.open(DIGITS[0])
    from_pil = pre(img)
    chw = torch.from_numpy(np.array(img))[None]
    assert torch.equal(pre(chw), from_pil)  # uint8 CHW
    assert torch.allclose(pre(chw.float() / 255), from_pil, atol=1e-6)  # float CHW in [0, 1]
    batch = torch.stack([chw, chw.flip(-1)])
    out = pre(batch)
    assert out.shape == (2, 1, 28, 28) and torch.equal(out[:1], from_pil)
    assert torch.equal(pre(np.array(img)), from_pil)  # numpy HxW uint8
    assert pre([img, img]).shape == (2, 1, 28, 28)
    # RGB in, grayscale model: PIL's luma conversion on either path
    rgb = Image.merge("RGB", [img, img, img])
    assert torch.equal(pre(rgb), from_pil)
    assert torch.equal(pre(torch.from_numpy(np.array(rgb)).permute(2, 0, 1)), from_pil)
    colour = Image.merge("RGB", [img, img.transpose(Image.Transpose.FLIP_LEFT_RIGHT), img.transpose(Image.Transpose.ROTATE_90)])
    assert torch.equal(pre(torch.from_numpy(np.array(colour)).permute(2, 0, 1)), pre(colour))
    # grayscale in, RGB model: replicated channels
    pre3 = ImagePreprocess({"size": 28, "resize": 28, "mean": IMAGENET_MEAN, "std": IMAGENET_STD})
    out3 = pre3(chw)
    assert out3.shape == (1, 3, 28, 28)
    assert torch.allclose(out3 * torch.tensor(IMAGENET_STD)[:, None, None] + torch.tensor(IMAGENET_MEAN)[:, None, None],
                          (chw.float() / 255).expand(1, 3, 28, 28), atol=1e-6)


@pytest.mark.parametrize("channels", [1, 3])
def test_images_already_at_size_skip_the_pipeline_with_the_same_numbers(channels: int) -> None:
    """PIL images at the output size (resize and crop are identities) take a shortcut: identical tensors."""
    stats = {"mean": IMAGENET_MEAN, "std": IMAGENET_STD} if channels == 3 else {"mean": [0.1307], "std": [0.3081]}
    pre = ImagePreprocess({"size": 28, "resize": 28, "channels": channels, **stats})
    rng = np.random.default_rng(0)
    for mode in ("L", "RGB", "RGBA", "P"):
        img = Image.fromarray(rng.integers(0, 256, (28, 28, 3), dtype=np.uint8)).convert(mode)
        pipeline = pre._transform(pre._to_image(img)).as_subclass(torch.Tensor).unsqueeze(0)
        out = pre(img)
        assert out.shape == (1, channels, 28, 28) and out.is_contiguous() and torch.equal(out, pipeline), mode


def test_preprocess_bad_inputs(tmp_path: Path) -> None:
    pre = ImagePreprocess({"size": 224, "crop_pct": 0.95, "interpolation": "bicubic", "mean": IMAGENET_MEAN, "std": IMAGENET_STD})
    with pytest.raises(FileNotFoundError, match="no such image file: .*missing.png"):
        pre(tmp_path / "missing.png")
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    with pytest.raises(ImageInputError, match="not an image file"):
        pre(str(text))
    with pytest.raises(IsADirectoryError):
        pre(tmp_path)
    with pytest.raises(TypeError, match="expected an image path, PIL image"):
        pre(42)
    with pytest.raises(ImageInputError, match=r"\[0, 1\]"):
        pre(torch.randn(3, 32, 32))  # an already-normalised tensor
    with pytest.raises(ImageInputError, match="1 or 3 channels"):
        pre(torch.rand(4, 32, 32))
    with pytest.raises(ImageInputError, match="uint8 or float"):
        pre(torch.ones(3, 8, 8, dtype=torch.int32))
    with pytest.raises(ImageInputError, match="empty"):
        pre([])


@pytest.mark.parametrize(("config", "field"), [
    ({"mean": [0.5], "std": [0.5], "channels": 1}, "size"),
    ({"size": 224, "mean": [0.5, 0.5], "std": [0.5, 0.5, 0.5]}, "mean"),
    ({"size": 224, "mean": IMAGENET_MEAN}, "std"),
    ({"size": 224, "interpolation": "lanczos9", "mean": IMAGENET_MEAN, "std": IMAGENET_STD}, "interpolation"),
    ({"size": 224, "crop": "random", "mean": IMAGENET_MEAN, "std": IMAGENET_STD}, "crop"),
    ({"size": 224, "resize": 100, "mean": IMAGENET_MEAN, "std": IMAGENET_STD}, "resize"),
    ({"size": 224, "colour": "red", "mean": IMAGENET_MEAN, "std": IMAGENET_STD}, "colour"),
])
def test_preprocess_config_errors_name_the_field(config: dict, field: str) -> None:
    with pytest.raises(PreprocessConfigError, match=rf"preprocess\.{field}"):
        ImagePreprocess(config)


# --------------------------------------------------------------------------- registry entries


def test_image_entries_and_imagenet_labels() -> None:
    names = list_models(domain="image")
    assert {"resnet18-imagenet", "resnet34-imagenet", "resnet50-imagenet", "resnet101-imagenet",
            "resnet152-imagenet", "resnet50-tv-imagenet", "resnet-mnist", "resnet-mnist-plain"} <= set(names)
    labels = (ROOT / "reszoo" / "labels" / "imagenet-1k.txt").read_text(encoding="utf-8").splitlines()
    assert len(labels) == 1000 and labels[0] == "tench" and labels[-1] == "toilet tissue"
    for name in names:
        w = info(name).weights
        if w.repo.startswith("timm/"):  # timm's ResNets use torchvision's names: the strict key check
            assert w.converter == "torchvision", name


def test_load_timm_layout_from_the_hub(upstream) -> None:
    """A timm ResNet-18 file on the (loopback) Hub, pinned like the real entries, loads into reszoo's ResNet."""
    import timm

    torch.manual_seed(0)
    ref = timm.create_model("resnet18", pretrained=False).eval()
    _randomize_bn(ref)
    state = {k: v for k, v in ref.state_dict().items() if not k.endswith("num_batches_tracked")}
    upstream("resnet18-imagenet", {"model.safetensors": state}, repo="timm-test/resnet18.tv_in1k")

    model = reszoo.load("resnet18-imagenet")
    assert isinstance(model, M.ResNet) and not model.training and len(model.labels) == 1000
    x = torch.rand(1, 3, 256, 300)
    with torch.no_grad():
        assert (model(model.preprocess(x)) - ref(model.preprocess(x))).abs().max().item() < 1e-5
    rows = predict(model, [x], top_k=3)
    assert [r["rank"] for r in rows] == [1, 2, 3] and rows[0]["prob"] >= rows[1]["prob"]


# --------------------------------------------------------------------------- the model trained here


def test_resnet_mnist_predicts_the_bundled_digits_offline(hub, offline) -> None:
    assert len(DIGITS) == 10
    hub.reset_count()
    model = reszoo.load("resnet-mnist")
    rows = predict(model, [str(p) for p in DIGITS], top_k=2)
    assert hub.request_count == 0
    top1 = {r["input"]: r for r in rows if r["rank"] == 1}
    for path in DIGITS:
        truth = path.stem.split("_")[1]
        assert top1[str(path)]["label"] == truth, (path, top1[str(path)])
        assert top1[str(path)]["prob"] > 0.5
    assert set(rows[0]) == {"input", "rank", "label", "prob"}
    entry = model.entry
    weights = ROOT / "weights" / entry.weights.repo / entry.weights.file
    assert weights.stat().st_size == entry.weights.size < 8_000_000


@pytest.mark.parametrize("name", ["resnet-mnist", "resnet-mnist-plain"])
def test_bundled_mnist_weights_reproduce_their_published_accuracy(name: str, offline) -> None:
    """The registry's measured accuracy is what the bundled weights score on all 10,000 MNIST test
    digits here (fp32 CPU; the recipe measured it under bf16 on its own device: a few digits' slack)."""
    with np.load(need_data("mnist/mnist.npz")) as d:
        x = torch.from_numpy(d["x_test"]).float().div(255).unsqueeze(1)
        y = torch.from_numpy(d["y_test"].astype(np.int64))
    model = reszoo.load(name)
    with torch.inference_mode():
        errors = sum(int((model(model.preprocess(x[i:i + 2000])).argmax(1) != y[i:i + 2000]).sum()) for i in range(0, 10000, 2000))
    accuracy = next(m for m in model.entry.metrics if m.metric == "accuracy")
    assert accuracy.source.measured and accuracy.dataset == "MNIST"
    assert abs(100 * (1 - errors / 10000) - accuracy.value) <= 0.05, (errors, accuracy.value)


FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist


def test_resnet_fashion_mnist_classifies_fashion_mnist(hub, offline) -> None:
    entry = reszoo.info("resnet-fashion-mnist")
    if entry.weights.sha256 is None:
        pytest.skip("resnet-fashion-mnist not trained yet (scripts/train_resnet_mnist.py --dataset fashion-mnist)")
    if not (FASHION_MNIST / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"Fashion-MNIST not installed in {FASHION_MNIST} (apt-get install -y dataset-fashion-mnist)")
    sys.path.insert(0, str(ROOT / "scripts"))
    from export_fashion_mnist import read_split

    images, labels = read_split(FASHION_MNIST, "test")
    model = reszoo.load("resnet-fashion-mnist")
    x = torch.from_numpy(images[:1000].copy()).float().div(255).unsqueeze(1)
    with torch.no_grad():
        predicted = model(model.preprocess(x)).argmax(1)
    accuracy = 100 * (predicted == torch.from_numpy(labels[:1000].astype(np.int64))).double().mean().item()
    measured = next(m for m in entry.metrics if m.metric == "accuracy").value
    assert abs(accuracy - measured) < 2.0, (accuracy, measured)  # 1000 of the 10,000 the registry number covers
    assert model.labels[int(predicted[0])] == entry.labels[int(labels[0])] == "Ankle boot"


# --------------------------------------------------------------------------- the training recipe


def _train_script():
    import importlib.util

    spec = importlib.util.spec_from_file_location("train_resnet_mnist", ROOT / "scripts" / "train_resnet_mnist.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_train_script_says_where_it_looked_for_mnist(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=rf"looked for {tmp_path / 'mnist.npz'}.*--download"):
        _train_script().main(["--data", str(tmp_path), "--no-registry", "--out", str(tmp_path)])


def test_train_script_says_where_it_looked_for_fashion_mnist(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"Fashion-MNIST not found.*apt-get install -y dataset-fashion-mnist"):
        _train_script().main(["--dataset", "fashion-mnist", "--data", str(tmp_path), "--no-registry", "--out", str(tmp_path)])


@pytest.mark.slow
def test_train_script_is_deterministic(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from reszoo.hub import sha256_of

    script = _train_script()
    digests = []
    for run in ("a", "b"):
        out = tmp_path / run
        assert script.main(["--epochs", "1", "--limit", "512", "--no-registry", "--out", str(out)]) == 0
        file = out / "reszoo" / "resnet-mnist" / "model.safetensors"
        digests.append(sha256_of(file))
    assert digests[0] == digests[1]
    model = M.resnet_mnist()
    model.load_state_dict(load_file(file), strict=True)
