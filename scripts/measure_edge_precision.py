"""Which rounding of the first layer changes a classifier's predictions under the bf16 fast path.

    python -m scripts.measure_edge_precision                        # resnet-fashion-mnist, ~1 min
    python -m scripts.measure_edge_precision resnet-mnist resnet-fashion-mnist

For each model, the top-1 predictions on its full test set (MNIST or Fashion-MNIST, 10,000 images)
that change against the float32 model, with the bf16 fast path (``reszoo.optimize.optimize``,
eager) and its first layer computed five ways, everything else as the fast path has it (the last
linear layer in float32):

* ``all bf16``: ``float32_edges=False``, the last linear layer in bf16 too;
* ``input rounded``: the input rounded to bf16, the weights float32, computed in float32;
* ``weights rounded``: the input float32, the weights rounded to bf16, computed in float32;
* ``float32``: the layer wholly in float32 (the rule before the split);
* ``split input``: the fast path's rule, the input as two bf16 terms and the weights in bf16.

The numbers behind "Why the edge layers, and why the split" in docs/inference.md.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist
MNIST = Path(os.environ.get("RESZOO_DATA", ROOT.parent / "shared" / "data")) / "mnist" / "mnist.npz"


def test_images(name: str) -> torch.Tensor:
    """The model's 10,000 test images as uint8 (Fashion-MNIST for ``*fashion*``, MNIST otherwise)."""
    if "fashion" in name:
        sys.path.insert(0, str(ROOT))
        from scripts.data import read_split

        if not (FASHION_MNIST / "t10k-images-idx3-ubyte.gz").is_file():
            raise SystemExit(f"Fashion-MNIST not installed in {FASHION_MNIST} (apt-get install -y dataset-fashion-mnist)")
        return torch.from_numpy(read_split(FASHION_MNIST, "test")[0])
    if not MNIST.is_file():
        raise SystemExit(f"MNIST not found at {MNIST} (../shared/data beside the clone, or $RESZOO_DATA)")
    with np.load(MNIST) as d:
        return torch.from_numpy(d["x_test"])


def first_layer(how: str, conv: nn.Conv2d) -> Callable[[torch.Tensor], torch.Tensor]:
    """A forward for the first convolution computing it the way ``how`` names (see the docstring)."""
    weight, bias = conv.weight.detach(), conv.bias.detach() if conv.bias is not None else None

    def forward(x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        with torch.autocast("cpu", enabled=False):
            if how == "input rounded":
                return conv._conv_forward(x.bfloat16().float(), weight, bias)
            if how == "weights rounded":
                return conv._conv_forward(x, weight.bfloat16().float(), bias)
            return conv._conv_forward(x, weight, bias)  # float32
    return forward


def changed_predictions(name: str) -> dict[str, int]:
    import reszoo
    from reszoo.optimize import optimize

    reference = reszoo.load(name)
    x = reference.preprocess(test_images(name)[:, None].float().div(255))

    def top1(model: nn.Module) -> torch.Tensor:
        with torch.inference_mode():
            return torch.cat([model(x[i:i + 2000]) for i in range(0, len(x), 2000)]).argmax(-1)

    expected = top1(reference)
    changed = {"all bf16": int((top1(optimize(reszoo.load(name), bf16=True, float32_edges=False)) != expected).sum())}
    for how in ("input rounded", "weights rounded", "float32"):
        model = optimize(reszoo.load(name), bf16=True)
        conv = model.get_submodule(model.optimized["split_input_layers"][0])
        conv.forward = first_layer(how, conv)
        changed[how] = int((top1(model) != expected).sum())
    changed["split input"] = int((top1(optimize(reszoo.load(name), bf16=True)) != expected).sum())
    return changed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="*", default=["resnet-fashion-mnist"])
    args = p.parse_args(argv)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    print("| model | " + " | ".join(("all bf16", "input rounded", "weights rounded", "float32", "split input")) + " |")
    print("|---|---|---|---|---|---|")
    for name in args.models:
        changed = changed_predictions(name)
        print(f"| {name} | " + " | ".join(f"{n} of 10,000" for n in changed.values()) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
