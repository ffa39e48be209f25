"""The inference fast path, ``reszoo.load(name, optimize=True)``: batch norms folded into convolutions,
channels-last weights, bfloat16 autocast on CPUs with AVX512-BF16, torch.compile with frozen weights
where it pays. Each domain's tolerance is checked on real data (docs/inference.md lists them)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import reszoo
from conftest import DATA, need_data
from reszoo.optimize import compile_pays, cpu_has_bf16, optimize
from reszoo.predict import Task, classify_rows

pytestmark = pytest.mark.usefixtures("one_thread")

DIGITS = sorted((Path(__file__).resolve().parent.parent / "examples" / "digits").glob("*.png"))
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist
needs_bf16 = pytest.mark.skipif(not cpu_has_bf16(), reason="this CPU has no AVX512-BF16/AMX: optimize keeps float32")


def _mnist_test() -> tuple[torch.Tensor, torch.Tensor]:
    with np.load(need_data("mnist/mnist.npz")) as d:
        return torch.from_numpy(d["x_test"]), torch.from_numpy(d["y_test"].astype(np.int64))


def _fashion_test() -> tuple[torch.Tensor, torch.Tensor]:
    if not (FASHION_MNIST / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"Fashion-MNIST not installed in {FASHION_MNIST} (apt-get install -y dataset-fashion-mnist)")
    from scripts.data import read_split

    images, labels = read_split(FASHION_MNIST, "test")
    return torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    """The ten bundled digits and the first 2,000 MNIST test digits, preprocessed, with their labels."""
    model = reszoo.load("resnet-mnist")
    x = torch.cat([model.preprocess(p) for p in DIGITS])
    y = torch.tensor([int(p.stem.split("_")[1]) for p in DIGITS])
    images, labels = _mnist_test()
    return torch.cat([x, model.preprocess(list(images[:2000, None]))]), torch.cat([y, labels[:2000]])


def _logits(model: nn.Module, x: torch.Tensor, batch: int = 500) -> torch.Tensor:
    with torch.inference_mode():
        return torch.cat([model(x[i:i + batch]) for i in range(0, len(x), batch)])


def test_folding_and_channels_last_are_exact(digits) -> None:
    x, _ = digits
    reference = reszoo.load("resnet-mnist")
    fast = optimize(reszoo.load("resnet-mnist"), bf16=False)
    assert fast.optimized == {"folded_batchnorms": 10, "channels_last": True, "compile": "auto"}  # stem + blocks
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.modules())
    assert fast.conv1.weight.is_contiguous(memory_format=torch.channels_last) and fast.conv1.bias is not None
    assert (_logits(fast, x) - _logits(reference, x)).abs().max() < 1e-4


@needs_bf16
def test_bf16_fast_path_keeps_the_predictions_of_real_digits(digits) -> None:
    x, y = digits
    reference = reszoo.load("resnet-mnist")
    fast = reszoo.load("resnet-mnist", optimize=True)
    assert fast.optimized["bf16_autocast"]
    ref, got = _logits(reference, x), _logits(fast, x)
    assert got.dtype == torch.float32
    assert torch.equal(got[:10].argmax(-1), y[:10])  # every bundled digit still right
    assert (got.softmax(-1) - ref.softmax(-1)).abs().max() < 0.05  # bfloat16: ~3 significant digits (measured 0.02)
    rows = list(reszoo.predict(fast, DIGITS[:3], top_k=1))  # predict runs the optimized forward
    assert [r["label"] for r in rows] == ["0", "1", "2"]


@needs_bf16
def test_edge_layers_keep_float32_precision_unless_asked(digits) -> None:
    x, _ = digits
    kept = reszoo.load("resnet-mnist", optimize=True)
    assert (kept.optimized["split_input_layers"], kept.optimized["float32_layers"]) == (["conv1"], ["fc"])
    all_bf16 = optimize(reszoo.load("resnet-mnist"), float32_edges=False)
    assert all_bf16.optimized["split_input_layers"] == all_bf16.optimized["float32_layers"] == []
    logits = {}
    for model in (kept, all_bf16):  # what the last layer computes in
        h = model.fc.register_forward_hook(lambda m, i, out, model=model: logits.update({id(model): out.dtype}))
        _logits(model, x[:2])
        h.remove()
    assert [logits[id(kept)], logits[id(all_bf16)]] == [torch.float32, torch.bfloat16]


def _first_layer_net(kind: str) -> nn.Module:
    """A first layer computing ``x[0] - x[1]`` (weights exact in bf16), then a float32 mean."""
    first = {"linear": nn.Linear(2, 4, bias=False), "conv1d": nn.Conv1d(2, 4, 3, padding=1, bias=False),
             "conv2d": nn.Conv2d(2, 4, 1, bias=False)}[kind]
    with torch.no_grad():
        first.weight.zero_()
        first.weight[:, 0].add_(1.0)
        first.weight[:, 1].sub_(1.0)
        if kind == "conv1d":  # only the middle tap: the padded edges stay x[0] - x[1]
            first.weight[..., [0, 2]] = 0.0
    net = nn.Sequential(first, nn.Flatten(), nn.LazyLinear(1, bias=False)).eval()
    return net


@pytest.mark.parametrize("kind", ["linear", "conv1d", "conv2d"])
def test_first_layer_sees_its_input_at_float32_precision(kind: str) -> None:
    """Known answer: 1 + 3/1024 - 1. bf16 keeps 8 significant bits, so rounding the input gives 0;
    the split input (hi = 1, lo = 3/1024, both exact in bf16) gives 3/1024 exactly."""
    shape = {"linear": (1, 2), "conv1d": (1, 2, 5), "conv2d": (1, 2, 3, 3)}[kind]
    x = torch.ones(shape)
    x[:, 0] += 3 / 1024
    answers = {}
    for edges in (True, False):
        net = _first_layer_net(kind)
        net(x)  # LazyLinear takes its size
        with torch.no_grad():
            net[2].weight.fill_(1.0 / net[2].weight.shape[1])
        optimize(net, bf16=True, float32_edges=edges, fold_batchnorm=False)
        assert net.optimized["split_input_layers"] == (["0"] if edges else [])
        with torch.inference_mode():
            answers[edges] = float(net(x))
    assert answers[True] == pytest.approx(3 / 1024, rel=1e-6)
    assert answers[False] == 0.0


def test_first_layers_the_split_cannot_express_compute_in_float32() -> None:
    grouped = nn.Sequential(nn.Conv2d(2, 4, 3, groups=2), nn.Flatten(), nn.Linear(4, 3)).eval()
    optimize(grouped, bf16=True)
    assert (grouped.optimized["split_input_layers"], grouped.optimized["float32_layers"]) == ([], ["0", "2"])
    only = nn.Sequential(nn.Linear(4, 3)).eval()  # the first layer is the logits layer: float32
    optimize(only, bf16=True)
    assert (only.optimized["split_input_layers"], only.optimized["float32_layers"]) == ([], ["0"])
    x = torch.randn(5, 4)
    with torch.inference_mode():
        assert optimize(nn.Sequential(nn.Linear(4, 3)).eval(), bf16=False)(x).dtype == only(x).dtype == torch.float32


@needs_bf16
def test_edge_precision_script_measures_the_first_layer_variants(capsys) -> None:
    need_data("mnist/mnist.npz")
    from scripts.measure_edge_precision import main

    assert main(["resnet-mnist"]) == 0
    row = capsys.readouterr().out.strip().splitlines()[-1]
    counts = [int(cell.split()[0]) for cell in row.split("|")[2:-1]]
    assert row.startswith("| resnet-mnist |") and len(counts) == 5
    assert counts[-1] <= counts[0] and max(counts) <= 10  # every variant within MNIST's 99.9 % (measured 0-2)


# --------------------------------------------------------------------------- per-domain tolerances


@needs_bf16
@pytest.mark.parametrize(("name", "data"), [("resnet-mnist", _mnist_test), ("resnet-fashion-mnist", _fashion_test)])
def test_image_top1_agrees_on_the_full_test_set(name: str, data) -> None:
    """Image tolerance: top-1 agreement >= 99.9 % with float32 on all 10,000 test images."""
    images, labels = data()
    reference, fast = reszoo.load(name), reszoo.load(name, optimize=True)
    x = reference.preprocess(images[:, None].float().div(255))  # a batch: as the image files would give
    assert len(x) == 10_000
    ref, got = _logits(reference, x, 2000).argmax(-1), _logits(fast, x, 2000).argmax(-1)
    agree = float((got == ref).float().mean())
    assert agree >= 0.999, f"{name}: {agree:.4%} of top-1 predictions unchanged"
    assert abs(float((got == labels).float().mean()) - float((ref == labels).float().mean())) <= 0.001


@pytest.fixture(scope="module")
def banking77_sentences() -> list[str]:
    with open(need_data("banking77/test.tsv"), encoding="utf-8", newline="") as f:
        return [row["text"] for row in csv.DictReader(f, delimiter="\t")]


@needs_bf16
@pytest.mark.parametrize("count", [500, pytest.param(3080, marks=pytest.mark.slow)])
def test_minilm_embeddings_keep_cosine_on_banking77(banking77_sentences, count: int) -> None:
    """Text tolerance: cosine >= 0.999 between bf16 and float32 MiniLM embeddings of BANKING77 test
    sentences (every 6th of the 3,080 by default, all with -m slow), through encode and predict."""
    texts = banking77_sentences
    assert len(texts) == 3080
    texts = texts[::6] if count < len(texts) else texts
    reference, fast = reszoo.load("minilm-l6-sentence"), reszoo.load("minilm-l6-sentence", optimize=True)
    assert fast.optimized["bf16_autocast"]
    ref, got = reference.encode(texts, batch_size=256), fast.encode(texts, batch_size=256)
    cosine = torch.nn.functional.cosine_similarity(ref, got, dim=-1)
    assert float(cosine.min()) >= 0.999, float(cosine.min())
    assert float((got - ref).abs().max()) > 0  # bf16 did run (not an exact copy)
    rows = list(reszoo.predict(fast, texts[:40], batch_size=16))
    cosine = torch.nn.functional.cosine_similarity(torch.tensor([r["embedding"] for r in rows]), ref[:40], dim=-1)
    assert float(cosine.min()) >= 0.999


@needs_bf16
def test_fsdd_digit_decisions_are_identical_on_the_test_split() -> None:
    """Speech tolerance: tdnn-fsdd-digits decides the same digit for all 300 FSDD test recordings;
    the speaker model's embeddings (embed) keep cosine >= 0.999."""
    folder = DATA / "fsdd" / "recordings"
    if not folder.is_dir():
        need_data("fsdd/recordings")
    files = sorted(p for p in folder.glob("*.wav") if int(p.stem.split("_")[2]) < 5)
    assert len(files) == 300
    reference, fast = reszoo.load("tdnn-fsdd-digits"), reszoo.load("tdnn-fsdd-digits", optimize=True)
    assert fast.optimized["bf16_autocast"]
    ref = [r["label"] for r in reszoo.predict(reference, files, top_k=1)]
    got = [r["label"] for r in reszoo.predict(fast, files, top_k=1)]
    assert got == ref
    speakers, fast_speakers = reszoo.load("ecapa-fsdd-speakers"), reszoo.load("ecapa-fsdd-speakers", optimize=True)
    ref_emb, got_emb = speakers.embed([str(f) for f in files[:30]]), fast_speakers.embed([str(f) for f in files[:30]])
    assert float(torch.nn.functional.cosine_similarity(ref_emb, got_emb, dim=-1).min()) >= 0.999


RL_AGENTS = ["ppo-cartpole-resmlp", "ppo-acrobot-resmlp", "ppo-lunarlander-resmlp", "sac-pendulum-resmlp"]


@pytest.mark.parametrize("name", RL_AGENTS)
def test_rl_greedy_actions_are_identical_over_1000_observations(name: str) -> None:
    """RL tolerance: the same greedy action for 1,000 observations of the agent's environment
    (visited by the agent itself, greedy, over as many episodes as it takes)."""
    gym = pytest.importorskip("gymnasium")
    reference, fast = reszoo.load(name), reszoo.load(name, optimize=True)
    env = gym.make(reference.entry.runtime["env_id"])
    observations, (obs, _) = [], env.reset(seed=0)
    while len(observations) < 1000:
        observations.append(obs)
        obs, _, terminated, truncated, _ = env.step(reference.act(obs))
        if terminated or truncated:
            obs, _ = env.reset()
    batch = np.stack(observations).astype(np.float32)
    assert np.array_equal(reference.act(batch), fast.act(batch))
    if reference.kind == "discrete":  # and predict's first-ranked action
        ref_rows = [r["action"] for r in reszoo.predict(reference, list(batch[:200]), top_k=1)]
        assert [r["action"] for r in reszoo.predict(fast, list(batch[:200]), top_k=1)] == ref_rows


def test_models_without_foldable_norms_are_left_as_they_are() -> None:
    agent = reszoo.load("ppo-cartpole-resmlp")
    optimize(agent)
    assert agent.optimized == {"folded_batchnorms": 0, "compile": "auto"}  # agents stay float32 (fast_methods = ())
    digits = optimize(reszoo.load("tdnn-fsdd-digits"), bf16=False)  # ECAPA's norms follow a ReLU: nothing to fold
    assert digits.optimized["folded_batchnorms"] == 0 and any(isinstance(m, nn.BatchNorm1d) for m in digits.modules())


# --------------------------------------------------------------------------- compiling


class TinyNet(nn.Sequential):
    """A small convolutional classifier: compiles in seconds, with the layers the fast path rewrites."""

    def __init__(self) -> None:
        torch.manual_seed(0)
        super().__init__(nn.Conv2d(1, 8, 3, stride=2), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(8, 10))
        self[1].running_mean.uniform_(-0.1, 0.1)
        self[1].running_var.uniform_(0.5, 2.0)


def _tiny_task(model: nn.Module) -> Task:
    return Task(fields=("input", "rank", "label", "prob"), read=lambda value, index: value, collate=torch.stack,
                run=lambda batch: classify_rows(model(batch).softmax(-1), None, 1))


@pytest.fixture(scope="module")
def real_digits() -> torch.Tensor:
    images, _ = _mnist_test()
    return images[:50, None].float().div(255)


def test_compiled_model_matches_eager_and_pads_the_last_batch(real_digits, tmp_path, monkeypatch) -> None:
    """compile=True: frozen-weight graphs give the eager model's outputs on real digits (within the
    bf16 tolerance where bf16 is on), and a last, partial batch reuses the graph (padded)."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    torch._dynamo.reset()
    reference, fast = TinyNet().eval(), optimize(TinyNet(), compile=True)
    assert fast.optimized["compile"] == "compiled"
    counters = torch._dynamo.utils.counters
    counters.clear()
    rows = list(reszoo.predict(fast, list(real_digits), batch_size=16, task=_tiny_task(fast)))  # 16, 16, 16, 2
    assert counters["stats"]["unique_graphs"] == 1  # the batch of 2 ran padded to 16 in the same graph
    assert list((tmp_path / "inductor").iterdir())  # compiled code cached on disk
    with torch.inference_mode():
        ref, got = reference(real_digits).softmax(-1), torch.cat([fast(real_digits[i:i + 16]) for i in range(0, 50, 16)]).softmax(-1)
    tolerance = 0.02 if fast.optimized.get("bf16_autocast") else 1e-5
    assert (got - ref).abs().max() < tolerance
    assert [r["label"] for r in rows] == [str(i) for i in ref.argmax(-1).tolist()]
    # frozen: the weights are constants of the compiled graph, so changing one afterwards reaches the eager
    # model only (torch.compile's freezing option alone leaves them graph inputs: pytorch/pytorch#139272)
    with torch.inference_mode():
        before = fast(real_digits[:16])
    with torch.no_grad():
        fast[0].weight.zero_()
    with torch.inference_mode():
        assert torch.equal(fast(real_digits[:16]), before)
        assert (fast.forward.eager(real_digits[:16]) - before).abs().max() > 0.01


def test_predict_compiles_only_when_the_input_count_pays(real_digits, monkeypatch) -> None:
    small = optimize(TinyNet())
    list(reszoo.predict(small, list(real_digits), batch_size=16, task=_tiny_task(small)))
    assert small.optimized["compile"].startswith("eager")  # 50 digits take milliseconds: not worth compiling
    if not compile_pays("cpu"):
        return
    monkeypatch.setattr("reszoo.optimize.COMPILE_PAYS_AFTER_S", 0.0)  # as if a long job: the rest always pays
    big = optimize(TinyNet())
    rows = list(reszoo.predict(big, list(real_digits), batch_size=16, task=_tiny_task(big)))
    assert big.optimized["compile"] == "compiled" and len(rows) == 50
    off = optimize(TinyNet(), compile=False)
    list(reszoo.predict(off, list(real_digits), batch_size=16, task=_tiny_task(off)))
    assert off.optimized["compile"] == "off"


@pytest.mark.slow
def test_compiled_resnet_mnist_keeps_top1_on_mnist(digits) -> None:
    """The whole fast path, compiled, on resnet-mnist and 2,010 real digits (a compile: ~20-60 s)."""
    x, _ = digits
    reference, fast = reszoo.load("resnet-mnist"), optimize(reszoo.load("resnet-mnist"), compile=True)
    ref, got = _logits(reference, x), _logits(fast, x)
    assert float((got.argmax(-1) == ref.argmax(-1)).float().mean()) >= 0.999
    assert (got.softmax(-1) - ref.softmax(-1)).abs().max() < 0.05


def test_cli_compile_choice_needs_the_fast_path(capsys) -> None:
    from reszoo.cli import main as cli

    assert cli(["predict", "resnet-mnist", str(DIGITS[0]), "--compile", "always"]) == 1
    assert "--compile always applies to the fast path; add --optimize" in capsys.readouterr().err
    assert cli(["predict", "resnet-mnist", str(DIGITS[0]), "--optimize", "--compile", "never", "--top-k", "1", "--json"]) == 0
    assert '"label": "0"' in capsys.readouterr().out
