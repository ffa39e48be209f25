"""GAN domain: SNGAN-style residual G/D and their plain twins, spectral norm against torch's,
BigGAN-deep 128 against pytorch-pretrained-BigGAN (random weights, through the converter and
through the loopback Hub + reszoo.load), sampling contract, metrics, `reszoo generate`, and the
generators trained here. (What every architecture and entry promises, plain twins included, is checked
in test_contract.py.)"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from reszoo.gan import save_grid
from reszoo.gan.biggan import biggan_deep_128
from reszoo.gan.convert import convert_biggan_pretrained, converters
from reszoo.gan.metrics import class_accuracy, frechet_distance, inception_style_score, within_class_pixel_std
from reszoo.gan.models import SNConv2d, SNLinear, sngan_d28, sngan_d32, sngan_g28, sngan_g32
from reszoo.nn import residual_blocks

ROOT = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------- SNGAN architectures


@pytest.mark.parametrize("resolution, g_fn, d_fn, channels", [(28, sngan_g28, sngan_d28, 1), (32, sngan_g32, sngan_d32, 3)])
@pytest.mark.parametrize("num_classes", [0, 10])
def test_sngan_shapes_and_twins(resolution, g_fn, d_fn, channels, num_classes):
    torch.manual_seed(0)
    embed = 8 if num_classes else 0  # conditional: also a class embedding concatenated to z
    G, D = g_fn(ch=16, num_classes=num_classes, class_embed_dim=embed), d_fn(ch=16, num_classes=num_classes)
    Gp = g_fn(ch=16, num_classes=num_classes, class_embed_dim=embed, residual=False)
    Dp = d_fn(ch=16, num_classes=num_classes, residual=False)
    z = torch.randn(4, 128)
    y = torch.tensor([0, 1, 2, 3]) if num_classes else None
    for g, d in ((G, D), (Gp, Dp)):
        x = g(z, y)
        assert x.shape == (4, channels, resolution, resolution)
        assert x.abs().max() <= 1
        assert d(x, y).shape == (4,)
    # up-blocks in G (learned 1x1 shortcuts: the channels change), down-blocks in D
    assert len(list(residual_blocks(G))) == len(list(residual_blocks(Gp))) == {28: 2, 32: 3}[resolution]
    assert len(list(residual_blocks(D))) == 4
    assert any("shortcut" in k for k in G.state_dict())
    if num_classes:  # conditional BN in G, projection embedding in D
        assert any(k.endswith("gain.weight") for k in G.state_dict()) and "embed.weight" in D.state_dict()
        assert G.state_dict()["class_embed.weight"].shape == (num_classes, 8)
        with pytest.raises(ValueError, match="class-conditional"):
            G(z)
    else:
        assert "embed.weight" not in D.state_dict()


def test_plain_twin_is_the_residual_net_without_its_skips():
    """With its learned shortcuts zeroed, a residual G/D computes exactly what its plain twin does
    with the same remaining weights; with them, it does not."""
    torch.manual_seed(0)
    G, Gp = sngan_g28(ch=16, num_classes=10, class_embed_dim=8), sngan_g28(ch=16, num_classes=10, class_embed_dim=8, residual=False)
    D, Dp = sngan_d28(ch=16, num_classes=10), sngan_d28(ch=16, num_classes=10, residual=False)
    Gp.load_state_dict({k: v for k, v in G.state_dict().items() if "shortcut" not in k})
    Dp.load_state_dict({k: v for k, v in D.state_dict().items() if "shortcut" not in k})
    G.eval(), Gp.eval(), D.eval(), Dp.eval()
    z, y = torch.randn(3, 128), torch.tensor([1, 5, 9])
    with torch.no_grad():
        assert (G(z, y) - Gp(z, y)).abs().max() > 1e-3
        x = Gp(z, y)
        assert (D(x, y) - Dp(x, y)).abs().max() > 1e-3
        for name, p in G.named_parameters():
            if "shortcut" in name:
                p.zero_()
        torch.testing.assert_close(G(z, y), Gp(z, y), rtol=0, atol=1e-6)
        # D's shortcuts are spectrally normalised (a zero weight has no norm): check the join
        # itself, block output = plain branch + shortcut, on every block
        h = x
        for block, plain in zip(D.blocks, Dp.blocks):
            torch.testing.assert_close(block(h), plain(h) + block._shortcut(h), rtol=1e-5, atol=1e-5)
            h = block(h)


@pytest.mark.parametrize("cls, make_ref, x", [
    (SNConv2d, lambda: torch.nn.Conv2d(6, 5, 3, padding=1), torch.randn(2, 6, 8, 8)),
    (SNLinear, lambda: torch.nn.Linear(7, 4), torch.randn(3, 7)),
])
def test_spectral_norm_matches_torch(cls, make_ref, x):
    """Same u/v updates in training, same normalised weight in eval, as torch.nn.utils.spectral_norm."""
    torch.manual_seed(0)
    ref = torch.nn.utils.spectral_norm(make_ref())
    ours = cls(*((6, 5, 3) if cls is SNConv2d else (7, 4)), **({"padding": 1} if cls is SNConv2d else {}))
    ours.load_state_dict({k.replace("weight_orig", "weight"): v.clone() for k, v in ref.state_dict().items()})
    for _ in range(3):
        torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours.weight_u, ref.weight_u)
    ref.eval(), ours.eval()
    torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-6)
    # the normalised weight has spectral norm ~1 once the power iteration has converged
    ours.train()
    for _ in range(50):
        ours(x)
    w = ours.normalized_weight().detach()
    assert torch.linalg.matrix_norm(w.reshape(w.shape[0], -1), ord=2).item() == pytest.approx(1.0, abs=1e-3)


# --------------------------------------------------------------------------- BigGAN-deep 128


def _random_reference(**config):
    """pytorch-pretrained-BigGAN's BigGAN-deep (its own config for 128; no download) with random
    weights that exercise everything: distinct BN tables per truncation, non-zero attention, sane u/v."""
    from pytorch_pretrained_biggan import BigGAN, BigGANConfig

    torch.manual_seed(0)
    ref = BigGAN(BigGANConfig(**config))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in ref.modules():
            if hasattr(m, "running_means"):
                m.running_means.normal_(0, 0.2, generator=g)
                m.running_vars.uniform_(0.5, 1.5, generator=g)
            if hasattr(m, "gamma"):
                m.gamma.fill_(0.7)
        ref.generator.bn.weight.normal_(1, 0.1, generator=g)  # left uninitialised upstream
        ref.generator.bn.bias.normal_(0, 0.1, generator=g)
        ref.train()  # one power-iteration step: random u, v would give arbitrary-sign sigmas
        ref(torch.zeros(1, 128), torch.eye(1000)[:1], 1.0)
    return ref.eval()


@pytest.fixture(scope="module")
def biggan_reference():
    return _random_reference()


def _reference_images(ref, z, y, truncation):
    with torch.no_grad():
        return ref(z, F.one_hot(y, 1000).float(), truncation)


def test_biggan_converter_parity(biggan_reference):
    ours = biggan_deep_128()
    ours.load_state_dict(converters["biggan-pretrained"](biggan_reference.state_dict()), strict=True)
    ours.eval()
    g = torch.Generator().manual_seed(0)
    y = torch.tensor([207, 980])
    for truncation in (0.37,):  # a blend of two rows of the statistics tables (one forward: ~50M params)
        z = ours.sample_noise(2, truncation, g)
        expected = _reference_images(biggan_reference, z, y, truncation)
        with torch.no_grad():
            got = ours(z, y, truncation)
        assert got.shape == (2, 3, 128, 128)
        assert (expected.abs() < 0.99).float().mean() > 0.9  # not saturated: the comparison means something
        assert (got - expected).abs().max().item() < 1e-4


def test_biggan_converter_is_strict(biggan_reference):
    state = dict(biggan_reference.state_dict())
    with pytest.raises(KeyError, match="unexpected key"):
        convert_biggan_pretrained({**state, "generator.layers.0.bn_0.extra": torch.zeros(1)})
    with pytest.raises(KeyError, match="self-attention"):
        convert_biggan_pretrained({k: v for k, v in state.items() if not k.endswith("gamma")})
    converted = convert_biggan_pretrained(state)
    assert set(converted) == set(biggan_deep_128().state_dict())


def test_biggan_through_loopback_hub_and_load(upstream):
    """The pickled upstream file served by the Hub, pinned, verified, converted and loaded by name.
    At channel width 8 instead of 128 (same layout, 1/250 of the bytes) to stay fast."""
    import reszoo

    reference = _random_reference(channel_width=8)
    buf = io.BytesIO()
    torch.save(reference.state_dict(), buf)
    # the released entry (torch pickle, biggan-pretrained converter, ImageNet labels), at width 8
    upstream("biggan-deep-128", {"pytorch_model.bin": buf.getvalue()}, repo="tests/biggan-deep-128-random",
             arch_args={"ch": 8}, runtime={"truncation": 0.4})
    model = reszoo.load("biggan-deep-128")
    assert model.default_truncation == 0.4 and model.labels[207] == "golden retriever"
    images = model.sample(2, labels=["golden retriever", 980], seed=3)
    z = model.sample_noise(2, 0.4, torch.Generator().manual_seed(3))
    expected = _reference_images(reference, z, torch.tensor([207, 980]), 0.4)
    assert images.min() >= 0 and images.max() <= 1
    assert (images - (expected + 1) / 2).abs().max().item() < 1e-4


def test_plain_biggan_attention_starts_as_attention_not_zeros():
    """No skip goes around the plain twin's self-attention, so its gamma starts at 1 (0 in the residual
    block, which starts as the identity): a fresh plain twin's attention does not output zeros."""
    from reszoo.gan.biggan import SelfAttention

    torch.manual_seed(0)
    x = torch.randn(2, 16, 8, 8)
    residual, plain = SelfAttention(16), SelfAttention(16, residual=False)
    assert residual.gamma.item() == 0.0 and plain.gamma.item() == 1.0
    torch.testing.assert_close(residual(x), x)
    assert plain(x).abs().amax(dim=(1, 2, 3)).min() > 1e-3
    plain.gamma.data.fill_(0.3)
    plain.reset_parameters()
    assert plain.gamma.item() == 1.0
    assert biggan_deep_128(ch=4, residual=False).attention.gamma.item() == 1.0


# --------------------------------------------------------------------------- sampling contract


@pytest.fixture
def mnist_generator():
    torch.manual_seed(0)
    g = sngan_g28(ch=8, num_classes=10).eval()
    with torch.no_grad():  # class-dependent BN gains/biases (a fresh net starts class-independent)
        for name, p in g.named_parameters():
            if name.endswith(("gain.weight", "bias.weight")):
                p.normal_(0.5, 0.5)
    g.labels = tuple(str(i) for i in range(10))
    return g


def test_sample_contract(mnist_generator):
    g = mnist_generator
    a = g.sample(5, labels=[0, 1, 2, 3, "4"], seed=7)
    assert a.shape == (5, 1, 28, 28) and a.min() >= 0 and a.max() <= 1
    torch.testing.assert_close(g.sample(5, labels=[0, 1, 2, 3, 4], seed=7), a, rtol=0, atol=0)
    assert (g.sample(5, labels=[0, 1, 2, 3, 4], seed=8) - a).abs().max() > 1e-3
    assert (g.sample(5, labels=[9, 9, 9, 9, 9], seed=7) - a).abs().max() > 1e-3  # the class matters
    assert g.sample(3, labels=2, seed=0).shape[0] == 3  # one label for all
    assert not g.training  # sampling restores the mode and leaves BN statistics alone
    g.train()
    before = g.blocks[0].bn1.bn.running_mean.clone()
    g.sample(4, seed=0)
    assert g.training and torch.equal(before, g.blocks[0].bn1.bn.running_mean)
    truncated = g.sample_noise(1000, 0.5, torch.Generator().manual_seed(0))
    assert truncated.abs().max() <= 1.0 and truncated.std() > 0.2


@pytest.mark.parametrize("kwargs, match", [
    ({"n": 0}, "positive integer"),
    ({"n": -3}, "positive integer"),
    ({"n": 2.5}, "positive integer"),
    ({"n": 2, "labels": [0, 10]}, "out of range"),
    ({"n": 2, "labels": [-1, 0]}, "out of range"),
    ({"n": 2, "labels": ["seven"]}, "unknown label"),
    ({"n": 3, "labels": [1, 2]}, "2 labels for n=3"),
    ({"n": 2, "truncation": 0.0}, r"truncation must be in \(0, 1\]"),
    ({"n": 2, "truncation": 1.5}, r"truncation must be in \(0, 1\]"),
    ({"n": 2, "truncation": -0.5}, r"truncation must be in \(0, 1\]"),
])
def test_sample_rejects_bad_input(mnist_generator, kwargs, match):
    with pytest.raises(ValueError, match=match):
        mnist_generator.sample(**kwargs)


def test_sample_and_preprocess_read_labels_alike(mnist_generator):
    """``sample(labels=)`` and the entry's preprocess share one label reader: numpy integers and a
    single float are handled by both (sample raised TypeError), "-1" is an index out of range for both
    (preprocess looked it up as a name)."""
    import reszoo
    from reszoo.gan import build_preprocess

    preprocess = build_preprocess(reszoo.info("sngan-mnist"))
    assert mnist_generator.class_indices(np.int64(3), 2).tolist() == [3, 3] == preprocess([np.int64(3)] * 2).tolist()
    assert mnist_generator.class_indices(["7", 2], 2).tolist() == [7, 2] == preprocess(["7", 2]).tolist()
    for read in (lambda labels: mnist_generator.class_indices(labels, 1), preprocess):
        with pytest.raises(ValueError, match="must be class indices or names, got 3.7"):
            read(3.7)
        with pytest.raises(ValueError, match="label -1 out of range 0..9"):
            read("-1")
        with pytest.raises(ValueError, match="unknown label 'seven'"):
            read("seven")


def test_unconditional_generator_rejects_labels():
    g = sngan_g32(ch=8).eval()
    assert g.sample(2, seed=0).shape == (2, 3, 32, 32)
    with pytest.raises(ValueError, match="unconditional"):
        g.sample(2, labels=[1, 2])


def test_biggan_rejects_bad_truncation():
    g = biggan_deep_128(ch=4)
    with pytest.raises(ValueError, match="truncation"):
        g(torch.zeros(1, 128), torch.tensor([1]), 0.0)
    with pytest.raises(ValueError, match="out of range"):
        g.sample(1, labels=[1000])


# --------------------------------------------------------------------------- metrics


def test_frechet_distance_matches_closed_form_and_scipy():
    from scipy import linalg

    rng = np.random.default_rng(0)
    a = torch.from_numpy(rng.normal(size=(4000, 6)))
    b = torch.from_numpy(rng.normal(size=(4000, 6)) @ np.diag([1, 2, 1, 1, 0.5, 1]) + 1.5)
    mu_a, mu_b = a.numpy().mean(0), b.numpy().mean(0)
    ca, cb = np.cov(a.numpy(), rowvar=False), np.cov(b.numpy(), rowvar=False)
    expected = ((mu_a - mu_b) ** 2).sum() + np.trace(ca + cb - 2 * linalg.sqrtm(ca @ cb).real)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-6)
    assert frechet_distance(a, a) == pytest.approx(0, abs=1e-8)
    # N(0, I) vs N(m, D^2): |m|^2 + sum (1 - d)^2, up to sampling error
    assert frechet_distance(a, b) == pytest.approx(6 * 1.5**2 + 1 + 0.25, rel=0.05)
    with pytest.raises(ValueError):
        frechet_distance(a, b[:, :3])


def test_inception_style_score_and_accuracy():
    uniform = torch.full((100, 10), 0.1)
    assert inception_style_score(uniform)[0] == pytest.approx(1.0)
    confident = F.one_hot(torch.arange(1000) % 10, 10).double()
    assert inception_style_score(confident)[0] == pytest.approx(10.0, rel=0.1)
    # samples sorted by class (as generated class by class) score like shuffled ones
    by_class = F.one_hot(torch.arange(1000) // 100, 10).double()
    assert inception_style_score(by_class)[0] == pytest.approx(10.0, rel=0.1)
    assert class_accuracy(confident, torch.arange(1000) % 10) == 1.0
    assert class_accuracy(confident, (torch.arange(1000) + 1) % 10) == 0.0


def test_mode_seeking_loss():
    from reszoo.gan.losses import mode_seeking_loss

    z = torch.randn(8, 16, generator=torch.Generator().manual_seed(0))
    same = torch.zeros(8, 1, 4, 4)  # every noise gives the same image: the collapse it penalises
    assert mode_seeking_loss(same, z).item() == pytest.approx(1e5)
    # images that move as far as their noise (mean |dI| / mean |dz| = 1 per pair) cost ~1
    images = z[:, :16].reshape(8, 1, 4, 4).clone().requires_grad_(True)
    loss = mode_seeking_loss(images, z)
    assert loss.item() == pytest.approx(1.0, rel=1e-4)
    loss.backward()  # spreading the images further apart lowers it
    step = images - 0.1 * images.grad
    assert mode_seeking_loss(step, z).item() < loss.item()
    with pytest.raises(ValueError):
        mode_seeking_loss(images[:1], z[:1])
    with pytest.raises(ValueError):
        mode_seeking_loss(images, z[:4])


def test_within_class_pixel_std():
    labels = torch.tensor([0, 0, 1, 1])
    images = torch.zeros(4, 1, 2, 2)
    assert within_class_pixel_std(images, labels) == 0.0  # a collapsed generator
    images[1] = 1.0  # class 0: pixels 0 and 1 -> std sqrt(0.5); class 1 still identical
    assert within_class_pixel_std(images, labels) == pytest.approx(0.5**0.5 / 2)
    with pytest.raises(ValueError):
        within_class_pixel_std(images, labels[:3])


# --------------------------------------------------------------------------- registry, CLI, trained models


def test_biggan_entry_pins_the_released_file():
    import reszoo

    w = reszoo.info("biggan-deep-128").weights
    assert w.sha256 == "b86146a8cfcde4cda135adba4b2806f78b3abe2dac9d0fd090cc3ab318604ad9"
    assert w.format == "torch" and w.converter == "biggan-pretrained" and w.revision is None and w.pin_note


def test_generate_cli_writes_a_reproducible_grid(upstream, tmp_path):
    from reszoo.cli import main

    torch.manual_seed(0)
    entry = {"name": "sngan-tiny", "domain": "gan", "task": "class-conditional-image-generation", "arch": "sngan_g28",
             "arch_args": {"ch": 8, "num_classes": 10}, "weights": {"repo": "tests/sngan-tiny", "file": "model.safetensors"},
             "labels": [str(i) for i in range(10)], "license": "mit"}
    upstream(entry, {"model.safetensors": sngan_g28(ch=8, num_classes=10).state_dict()})
    out1, out2 = tmp_path / "a.png", tmp_path / "b.png"
    assert main(["generate", "sngan-tiny", "--n", "20", "--out", str(out1), "--seed", "4"]) == 0
    assert main(["generate", "sngan-tiny", "--n", "20", "--out", str(out2), "--seed", "4"]) == 0
    from PIL import Image

    img = Image.open(out1)
    assert img.size == (10 * 30 + 2, 2 * 30 + 2)  # 10 classes per row, 2 px padding
    assert out1.read_bytes() == out2.read_bytes()
    assert main(["generate", "sngan-tiny", "--n", "4", "--labels", "3", "--out", str(out2), "--seed", "5"]) == 0
    assert out1.read_bytes() != out2.read_bytes()
    assert main(["generate", "sngan-tiny", "--n", "0", "--out", str(out2)]) == 1
    assert main(["generate", "sngan-tiny", "--labels", "12", "--out", str(out2)]) == 1


def test_save_grid_layout(tmp_path):
    images = torch.zeros(5, 3, 4, 4)
    images[2] = 1
    path = save_grid(images, tmp_path / "g.png", nrow=3, padding=1)
    from PIL import Image

    arr = np.asarray(Image.open(path))
    assert arr.shape == (2 * 5 + 1, 3 * 5 + 1, 3)
    assert arr[1:5, 11:15].min() == 255 and arr[1:5, 1:5].max() == 0  # image 2: row 0, column 2
    with pytest.raises(ValueError):
        save_grid(torch.zeros(2, 2, 4, 4), tmp_path / "bad.png")


# Fashion-MNIST, measured on 10,000 samples: 87.4% / 83.3% (resnet-fashion-mnist reads 91.1% of real
# test images right), std 0.156 / 0.172 (the test set: 0.195)
FASHION_MIN_ACC, FASHION_MIN_STD = 0.7, 0.12
# generator -> (classifier, min class accuracy on 100 samples, min within-class pixel std)
TRAINED_GENERATORS = {
    # measured on 10,000 samples: 98.8% / 99.1%, std 0.140 / 0.148 (MNIST's test set: 0.156; the
    # first, collapsed sngan-mnist drew 0.038)
    "sngan-mnist": ("resnet-mnist", 0.9, 0.1),
    "sngan-mnist-plain": ("resnet-mnist", 0.9, 0.1),
    "sngan-fashion-mnist": ("resnet-fashion-mnist", FASHION_MIN_ACC, FASHION_MIN_STD),
    "sngan-fashion-mnist-plain": ("resnet-fashion-mnist", FASHION_MIN_ACC, FASHION_MIN_STD),
}


@pytest.mark.parametrize("name", sorted(TRAINED_GENERATORS))
def test_trained_generator_draws_the_requested_class(name):
    """The generators trained here (bundled weights) draw images their dataset's classifier
    recognises as the requested class, and different noise gives visibly different images of the
    same class (no within-class collapse)."""
    import reszoo
    from reszoo.gan.metrics import classifier_outputs

    classifier, min_accuracy, min_std = TRAINED_GENERATORS[name]
    for needed in (name, classifier):
        if not (ROOT / "weights" / "reszoo" / needed / "model.safetensors").is_file():
            pytest.skip(f"weights/reszoo/{needed} not trained yet")
    gen = reszoo.load(name)
    labels = torch.arange(10).repeat(10)
    images = gen.sample(len(labels), labels=labels, seed=123)
    assert images.shape == (100, 1, 28, 28)
    _, probs = classifier_outputs(reszoo.load(classifier), images)
    assert class_accuracy(probs, labels) >= min_accuracy
    assert math.isfinite(images.sum().item())
    assert within_class_pixel_std(images, labels) >= min_std


def test_predict_writes_one_sample_per_label(mnist_generator, tmp_path, monkeypatch):
    from reszoo.gan import predict

    monkeypatch.chdir(tmp_path)
    rows = predict(mnist_generator, ["3", "random", "7", "11"], out_dir=tmp_path / "out")
    assert [r["input"] for r in rows] == ["3", "random", "7", "11"]
    assert rows[0]["label"] == "3" and rows[2]["label"] == "7" and rows[1]["label"] in mnist_generator.labels
    from PIL import Image

    for r in rows[:3]:
        assert Image.open(r["file"]).size == (28, 28) and Path(r["file"]).parent == tmp_path / "out"
    assert "out of range" in rows[3]["error"] and sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_biggan_converter_skips_saved_normalised_weights():
    """Old torch versions also saved spectral norm's normalised ``weight``: derived, so ignored."""
    from pytorch_pretrained_biggan import BigGAN, BigGANConfig

    ref = BigGAN(BigGANConfig(channel_width=4))
    # The upstream model leaves some BatchNorm buffers uninitialised (torch.empty), so they can hold
    # NaN, and NaN != NaN: compare exactly with equal_nan, which is what "skipped, not altered" means.
    state = dict(ref.state_dict())
    plain = convert_biggan_pretrained(state)
    extra = {k.removesuffix("_orig"): torch.full_like(v, float("nan")) for k, v in state.items() if k.endswith("weight_orig")}
    converted = convert_biggan_pretrained({**state, **extra})
    assert set(converted) == set(plain)
    for k in plain:
        torch.testing.assert_close(converted[k], plain[k], rtol=0, atol=0, equal_nan=True)
