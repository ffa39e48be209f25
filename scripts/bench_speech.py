"""Utterances per second: reszoo's ECAPA-TDNN vs SpeechBrain's ``ECAPA_TDNN``, same CPU, one process.

    nice -n 10 python scripts/bench_speech.py                    # ecapa-voxceleb's size (C=1024)
    nice -n 10 python scripts/bench_speech.py --channels 512     # SpeechBrain's default C=512

Both models have the same configuration and the same (random) weights: SpeechBrain's state dict
goes through reszoo's ``speechbrain-ecapa`` converter, and the script first checks that the two
give the same embeddings. Input: a batch of log-mel features (``--batch`` utterances of
``--seconds`` seconds, 100 frames per second), the same tensor for both; the front end is not
timed. The two models are timed in alternation (``--rounds`` rounds of ``--iters`` forward passes
each, under ``torch.inference_mode``) and each one's median round is reported, so that load from
other processes on a shared machine hits both alike. Prints utterances/second and the ratio
(reszoo / SpeechBrain; above 1.0 means reszoo is faster).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from reszoo.speech.convert import converters  # noqa: E402
from reszoo.speech.models import archs  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--channels", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 on a shared machine)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN

    c = args.channels
    cfg = dict(channels=[c, c, c, c, 3 * c], kernel_sizes=[5, 3, 3, 3, 1], dilations=[1, 2, 3, 4, 1],
               attention_channels=128, res2net_scale=8, se_channels=128)
    torch.manual_seed(0)
    sb = ECAPA_TDNN(80, lin_neurons=192, **cfg).eval()
    with torch.device("meta"):
        ours = archs["ecapa_tdnn"](input_size=80, embed_dim=192, **cfg)
    ours.load_state_dict(converters["speechbrain-ecapa"](sb.state_dict()), strict=True, assign=True)
    ours.eval()

    frames = int(args.seconds * 100)
    x = torch.randn(args.batch, frames, 80)
    with torch.inference_mode():
        diff = (ours(x) - sb(x)[:, 0]).abs().max().item()
    if diff > 1e-4:
        raise SystemExit(f"the two models disagree (max abs diff {diff:.2e}); not benchmarking")

    def run(model: torch.nn.Module) -> float:
        with torch.inference_mode():
            start = time.perf_counter()
            for _ in range(args.iters):
                model(x)
            return time.perf_counter() - start

    for model in (sb, ours):  # warm-up (allocator, oneDNN kernels)
        run(model)
    times: dict[str, list[float]] = {"speechbrain": [], "reszoo": []}
    for r in range(args.rounds):
        order = (("speechbrain", sb), ("reszoo", ours)) if r % 2 == 0 else (("reszoo", ours), ("speechbrain", sb))
        for name, model in order:
            times[name].append(run(model))
    rate = {name: args.iters * args.batch / statistics.median(t) for name, t in times.items()}
    print(f"ECAPA-TDNN C={c}, {sum(p.numel() for p in ours.parameters()):,} parameters; batch {args.batch} x {args.seconds:g} s "
          f"({frames} frames); torch {torch.__version__}, {args.threads} thread(s); outputs agree to {diff:.1e}")
    for name in ("speechbrain", "reszoo"):
        print(f"  {name:12s} {rate[name]:8.2f} utterances/s   (median of {args.rounds} rounds x {args.iters} batches)")
    print(f"  ratio reszoo / speechbrain: {rate['reszoo'] / rate['speechbrain']:.3f}")


if __name__ == "__main__":
    main()
