#!/usr/bin/env python
"""Benchmark: ``reszoo.load("resnet50-imagenet")`` from a warm cache vs timm's pretrained load of the same file.

Both sides read one local safetensors file with the exact key set and shapes of
``timm/resnet50.a1_in1k`` (random values: the real file needs the network, and the values do not
change the work). reszoo finds it through a mirror (``RESZOO_MIRROR``) and a temporary registry
whose entry is ``resnet50-imagenet`` with the file's sha256 as its pin; timm loads it with
``pretrained_cfg_overlay=dict(file=...)``. Warm cache: the file is in the OS page cache and reszoo
has verified its sha256 once. Runs alternate between the two (so shared-machine noise hits both),
and the medians are compared. Target: reszoo <= 0.3x timm.

    python scripts/bench_load.py [--runs 9]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here may touch the network


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: steadier on a shared machine)")
    args = parser.parse_args(argv)

    import torch
    import yaml
    from safetensors.torch import save_file

    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="reszoo-bench-"))
    os.environ["RESZOO_CACHE"] = str(tmp / "cache")

    import timm

    reference = timm.create_model("resnet50.a1_in1k", pretrained=False)
    weights = tmp / "mirror" / "timm" / "resnet50.a1_in1k" / "model.safetensors"
    weights.parent.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, weights)
    del reference

    import reszoo
    from reszoo.hub import sha256_of

    from reszoo.registry import expand_registry  # the entry as read: its defaults sets applied

    raw = yaml.safe_load((ROOT / "registry.yaml").read_text(encoding="utf-8"))
    entry = next(e for e in expand_registry(raw) if e["name"] == "resnet50-imagenet")
    entry["weights"]["sha256"] = sha256_of(weights)
    registry = tmp / "registry.yaml"
    registry.write_text(yaml.safe_dump({"models": [entry]}), encoding="utf-8")
    os.environ["RESZOO_REGISTRY"] = str(registry)
    os.environ["RESZOO_MIRROR"] = str(weights.parents[2])

    def load_reszoo() -> torch.nn.Module:
        return reszoo.load("resnet50-imagenet")

    def load_timm() -> torch.nn.Module:
        return timm.create_model("resnet50.a1_in1k", pretrained=True, pretrained_cfg_overlay=dict(file=str(weights))).eval()

    # Warm-up (page cache, reszoo's one-time sha256, lazy imports), and a check that both loaded the same values.
    a, b = load_reszoo(), load_timm()
    x = torch.rand(1, 3, 224, 224)
    with torch.no_grad():
        diff = (a(x) - b(x)).abs().max().item()
    assert diff < 1e-4, f"the two loads differ: max abs diff {diff}"
    del a, b

    times: dict[str, list[float]] = {"reszoo": [], "timm": []}
    for _ in range(args.runs):
        for name, fn in (("reszoo", load_reszoo), ("timm", load_timm)):
            t0 = time.perf_counter()
            model = fn()
            times[name].append(time.perf_counter() - t0)
            del model
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"file: {weights.stat().st_size / 1e6:.1f} MB, {args.runs} runs each, torch threads {args.threads}")
    for name, values in times.items():
        print(f"{name:7s} median {med[name] * 1000:7.1f} ms  (min {min(values) * 1000:.1f}, max {max(values) * 1000:.1f})")
    ratio = med["reszoo"] / med["timm"]
    print(f"ratio reszoo/timm: {ratio:.3f}x (target <= 0.3x) -> {'OK' if ratio <= 0.3 else 'ABOVE TARGET'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
