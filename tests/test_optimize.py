"""The inference fast path, ``reszoo.load(name, optimize=True)``: batch norms folded into convolutions,
channels-last weights, bfloat16 autocast on CPUs with AVX512-BF16; checked on real MNIST digits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import reszoo
from conftest import need_data
from reszoo.optimize import cpu_has_bf16, optimize

DIGITS = sorted((Path(__file__).resolve().parent.parent / "examples" / "digits").glob("*.png"))


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    """The ten bundled digits and the first 2,000 MNIST test digits, preprocessed, with their labels."""
    model = reszoo.load("resnet-mnist")
    x = torch.cat([model.preprocess(p) for p in DIGITS])
    y = torch.tensor([int(p.stem.split("_")[1]) for p in DIGITS])
    with np.load(need_data("mnist/mnist.npz")) as d:
        x = torch.cat([x, model.preprocess(list(torch.from_numpy(d["x_test"][:2000])[:, None]))])
        y = torch.cat([y, torch.from_numpy(d["y_test"][:2000]).long()])
    return x, y


def _logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return torch.cat([model(x[i:i + 500]) for i in range(0, len(x), 500)])


def test_folding_and_channels_last_are_exact(digits) -> None:
    x, _ = digits
    reference = reszoo.load("resnet-mnist")
    fast = optimize(reszoo.load("resnet-mnist"), bf16=False)
    assert fast.optimized == {"folded_batchnorms": 10, "channels_last": True}  # the stem and every block's norms
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.modules())
    assert fast.conv1.weight.is_contiguous(memory_format=torch.channels_last) and fast.conv1.bias is not None
    assert (_logits(fast, x) - _logits(reference, x)).abs().max() < 1e-4


@pytest.mark.skipif(not cpu_has_bf16(), reason="this CPU has no AVX512-BF16/AMX: optimize leaves the model in float32")
def test_bf16_fast_path_keeps_the_predictions_of_real_digits(digits) -> None:
    x, y = digits
    reference = reszoo.load("resnet-mnist")
    fast = reszoo.load("resnet-mnist", optimize=True)
    assert fast.optimized["bf16_autocast"]
    ref, got = _logits(reference, x), _logits(fast, x)
    assert got.dtype == torch.float32
    assert torch.equal(got[:10].argmax(-1), y[:10])  # every bundled digit still right
    agree = float((got.argmax(-1) == ref.argmax(-1)).float().mean())
    assert agree >= 0.999
    assert (got.softmax(-1) - ref.softmax(-1)).abs().max() < 0.05  # bfloat16: ~3 significant digits (measured 0.02)
    accuracy = lambda logits: float((logits.argmax(-1) == y).float().mean())  # noqa: E731
    assert abs(accuracy(got) - accuracy(ref)) <= 0.001
    rows = list(reszoo.predict(fast, DIGITS[:3], top_k=1))  # predict runs the optimized forward
    assert [r["label"] for r in rows] == ["0", "1", "2"]


def test_models_without_foldable_norms_are_left_as_they_are() -> None:
    agent = reszoo.load("ppo-cartpole-resmlp")
    optimize(agent, bf16=False)
    assert agent.optimized == {"folded_batchnorms": 0}
    digits = optimize(reszoo.load("tdnn-fsdd-digits"), bf16=False)  # ECAPA's norms follow a ReLU: nothing to fold
    assert digits.optimized["folded_batchnorms"] == 0 and any(isinstance(m, nn.BatchNorm1d) for m in digits.modules())
