#!/usr/bin/env python
"""Residual vs plain twin, same recipe and budget: a depth sweep, then a generated report.

``image``: the CIFAR-style ResNets of He et al. 2016 (3x3 stem of 16 filters, three stages of
``n`` basic blocks at 16/32/64 filters, ``6n + 2`` layers) and their plain twins
(``residual=False``), on Fashion-MNIST (or MNIST), depths 8/20/56/110, several seeds. Every run
uses ONE recipe: SGD (momentum 0.9, weight decay 1e-4) at lr 0.1 with a linear warm-up from
lr/10 over the first 10 % of steps (He et al. warmed ResNet-110 up at 0.01) then a cosine decay
to 0, batch 128, random 28x28 crops of the 2-pixel zero-padded image, bf16 autocast where the
hardware has bf16 (CUDA, or CPUs with avx512_bf16/AMX), channels_last. Data live as uint8
tensors on the device and are augmented there (no DataLoader); on CUDA each training step is
replayed as a CUDA graph (no torch.compile: compiling eight architectures would take longer
than the whole sweep). Each run is seeded and
deterministic (``torch.use_deterministic_algorithms``, warn-only; ``CUBLAS_WORKSPACE_CONFIG``)
and writes ``OUT/runs/<run>.json``: the training-loss curve, final train and test accuracy,
gradient flow, branch ratio and gradient correlation at initialisation and at the end, the
lesion study at the end (``reszoo.analysis``), wall time, device, seed. A run whose JSON exists
with the same settings is kept (rerun the command to finish an interrupted sweep). The deepest
pair's first-seed weights are saved with ``reszoo.save_pretrained`` to ``OUT/weights/<name>/``.

    # the sweep (defaults sized for ~4 minutes on one NVIDIA H200)
    python scripts/residual_study.py image --depths 8 20 56 110 --seeds 0 1 --device auto \\
        --out results/residual-study/image
    # a CPU smoke run of the pipeline (results are NOT the study: keep them out of the repo)
    python scripts/residual_study.py image --depths 8 20 --seeds 0 --epochs 1 --train-subset 512 \\
        --lesion-images 256 --out /tmp/residual-smoke/image
    # docs/residual-study.md (and its figures) from the JSON results, never typed by hand
    python scripts/residual_study.py report --results results/residual-study --out docs/residual-study.md

Fashion-MNIST comes from Debian's ``dataset-fashion-mnist`` (idx files in
``/usr/share/datasets/fashion-mnist``) or any folder holding those four idx .gz files, or an
.npz with ``x_train/y_train/x_test/y_test``; MNIST from ``../shared/data/mnist/mnist.npz``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

# Read by cuBLAS when CUDA starts: set before torch touches the GPU (deterministic GEMMs).
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import Tensor, nn  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from reszoo.analysis import block_infos, branch_ratio, gradient_correlation, gradient_flow, lesion_study  # noqa: E402
from reszoo.analysis.suite import plain_data, write_json  # noqa: E402
from reszoo.api import build, save_pretrained  # noqa: E402
from reszoo.image.models import archs  # noqa: E402
from reszoo.registry import Entry, parse_entry  # noqa: E402

SCRIPT = "scripts/residual_study.py"
FASHION_LABELS = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
DATASETS: dict[str, dict[str, Any]] = {
    # mean/std of the training pixels in [0, 1], as the registry's resnet-(fashion-)mnist entries use
    "fashion-mnist": dict(title="Fashion-MNIST", mean=0.2860, std=0.3530, labels=FASHION_LABELS, license="mit",
                          default=Path("/usr/share/datasets/fashion-mnist")),
    "mnist": dict(title="MNIST", mean=0.1307, std=0.3081, labels=[str(d) for d in range(10)], license="cc-by-sa-3.0",
                  default=ROOT.parent / "shared" / "data" / "mnist" / "mnist.npz"),
}
CIFAR_RESNET = dict(block="basic", widths=[16, 32, 64], stem_width=16, stem_kernel=3, stem_stride=1, stem_pool=False)


# --------------------------------------------------------------------------- configuration


@dataclasses.dataclass(frozen=True)
class Recipe:
    """Everything that must be equal for two runs to be comparable (and for a saved run to be kept)."""

    dataset: str = "fashion-mnist"
    epochs: int = 9
    train_subset: int = 20000
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_frac: float = 0.1
    pad: int = 2
    zero_init_last: bool = False
    lesion_images: int = 2000
    lesion_ks: tuple[int, ...] = (1, 2, 4, 8, 16, 32)
    lesion_trials: int = 3
    flow_images: int = 256
    precision: str = "auto"
    channels_last: bool = True

    def describe(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {
            "optimizer": f"SGD momentum {self.momentum}, weight decay {self.weight_decay} on all parameters",
            "schedule": f"linear warm-up from lr/10 over the first {self.warmup_frac:.0%} of steps, then cosine to 0",
            "augmentation": f"random 28x28 crop of the {self.pad}-pixel zero-padded image",
            "init": "He (fan-out) convolutions, BN weight 1 / bias 0" + (", last BN of each branch 0" if self.zero_init_last else ""),
        }


def arch_of(depth: int, residual: bool) -> tuple[str, dict[str, Any]]:
    """Registry ``arch``/``arch_args`` of the grayscale, 10-class CIFAR-style ResNet of ``depth`` layers."""
    if depth < 8 or (depth - 2) % 6:
        raise SystemExit(f"depth {depth}: CIFAR-style ResNets have 6n + 2 layers (8, 14, 20, 32, 44, 56, 110, ...)")
    n = (depth - 2) // 6
    name = f"resnet{depth}"
    args: dict[str, Any] = {"in_chans": 1} if name in archs else {**CIFAR_RESNET, "layers": [n, n, n], "in_chans": 1, "num_classes": 10}
    if not residual:
        args["residual"] = False
    return (name if name in archs else "resnet"), args


def run_entry(recipe: Recipe, depth: int, residual: bool, metrics: list[dict[str, Any]] | None = None,
              extra: dict[str, Any] | None = None) -> Entry:
    """The registry entry a run's model would have: it builds the model and travels with its weights."""
    ds = DATASETS[recipe.dataset]
    arch, args = arch_of(depth, residual)
    name = f"resnet{depth}-{recipe.dataset}" + ("" if residual else "-plain")
    twin = "" if residual else f" The plain twin of resnet{depth}-{recipe.dataset} (no skip connections), same recipe and budget."
    return parse_entry({
        "name": name, "domain": "image", "task": "image-classification", "arch": arch, "arch_args": args,
        "preprocess": {"size": 28, "resize": 28, "crop": "center", "interpolation": "bilinear",
                       "mean": [ds["mean"]], "std": [ds["std"]], "channels": 1},
        "labels": ds["labels"], "license": ds["license"], "dataset": [recipe.dataset],
        "paper": {"title": "Deep Residual Learning for Image Recognition", "url": "https://arxiv.org/abs/1512.03385"},
        "recipe": f"{SCRIPT} image", "metrics": metrics or [],
        "description": f"CIFAR-style ResNet-{depth} (He et al. 2016, 6n+2 layers, 16/32/64 filters) for 28x28 grayscale "
                       f"{ds['title']}, trained by the residual-vs-plain depth sweep.{twin}",
        "tags": ["residual-study", recipe.dataset] + ([] if residual else ["plain-twin"]),
        "extra": extra or {},
    }, where=name)


# --------------------------------------------------------------------------- data


def load_dataset(name: str, path: Path | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test), uint8 ``(N, 28, 28)`` images and labels."""
    path = path or DATASETS[name]["default"]
    if path.is_dir() and (path / "mnist.npz").is_file():
        path = path / "mnist.npz"
    if path.is_file():
        with np.load(path, allow_pickle=False) as d:
            return d["x_train"], d["y_train"], d["x_test"], d["y_test"]
    if path.is_dir():
        from export_fashion_mnist import read_split  # the idx reader (same file names for MNIST)

        return (*read_split(path, "train"), *read_split(path, "test"))
    hint = "apt-get install -y dataset-fashion-mnist" if name == "fashion-mnist" else "python scripts/get_data.py mnist"
    raise SystemExit(f"{name} not found at {path}: pass --data (a folder of idx .gz files or an .npz), or `{hint}`")


@dataclasses.dataclass
class DeviceData:
    """The data as uint8 tensors on the device; normalised on the fly."""

    x_train_padded: Tensor  # (N, 1, 28 + 2 pad, 28 + 2 pad)
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    lesion_idx: Tensor
    mean: float
    std: float
    pad: int

    @classmethod
    def make(cls, arrays: tuple[np.ndarray, ...], recipe: Recipe, device: torch.device) -> DeviceData:
        x_train, y_train, x_test, y_test = arrays
        # One fixed subset for every run (seed 0, independent of the run's seed): twins see the same images.
        rng = np.random.default_rng(0)
        keep = np.sort(rng.choice(len(x_train), size=min(recipe.train_subset, len(x_train)), replace=False))
        lesion = np.sort(rng.choice(len(x_test), size=min(recipe.lesion_images, len(x_test)), replace=False))
        to = lambda a, dtype=torch.uint8: torch.from_numpy(np.ascontiguousarray(a)).to(device=device, dtype=dtype)  # noqa: E731
        xtr = to(x_train[keep]).unsqueeze(1)
        ds = DATASETS[recipe.dataset]
        return cls(F.pad(xtr, (recipe.pad,) * 4), xtr, to(y_train[keep], torch.long), to(x_test).unsqueeze(1),
                   to(y_test, torch.long), torch.from_numpy(lesion).to(device), ds["mean"], ds["std"], recipe.pad)

    def normalize(self, x: Tensor, channels_last: bool) -> Tensor:
        x = (x.float() / 255 - self.mean) / self.std
        return x.contiguous(memory_format=torch.channels_last) if channels_last else x

    def random_crops(self, idx: Tensor, gen: torch.Generator) -> Tensor:
        """28x28 crops at random offsets (0..2 pad) of the padded images ``idx``: one gather, on the device."""
        size = self.x_train.shape[-1]
        offsets = torch.randint(0, 2 * self.pad + 1, (2, len(idx)), device=idx.device, generator=gen)
        grid = torch.arange(size, device=idx.device)
        rows = (offsets[0, :, None] + grid)[:, :, None]
        cols = (offsets[1, :, None] + grid)[:, None, :]
        return self.x_train_padded[idx[:, None, None], 0, rows, cols].unsqueeze(1)


# --------------------------------------------------------------------------- device


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def cpu_has_bf16() -> bool:
    """AVX512-BF16 or AMX: the CPU computes bf16 natively (else bf16 autocast is emulated and slow)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def amp_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    if precision == "fp32":
        return None
    native = torch.cuda.is_bf16_supported() if device.type == "cuda" else cpu_has_bf16()
    if precision == "bf16" or native:
        return torch.bfloat16
    return None


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.machine()}, {torch.get_num_threads()} threads)"


def set_determinism(seed: int) -> None:
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)  # warn, never abort a sweep on a missing kernel
    torch.backends.cudnn.benchmark = False


# --------------------------------------------------------------------------- one run


@torch.no_grad()
def evaluate(model: nn.Module, data: DeviceData, x: Tensor, y: Tensor, recipe: Recipe, amp: Any,
             batch: int = 2000) -> tuple[float, float]:
    """(accuracy %, mean cross-entropy) of the eval-mode model on uint8 images ``x``."""
    model.eval()
    correct, loss = torch.zeros((), device=y.device), torch.zeros((), device=y.device)
    for i in range(0, len(x), batch):
        with amp():
            logits = model(data.normalize(x[i:i + batch], recipe.channels_last)).float()
        loss += F.cross_entropy(logits, y[i:i + batch], reduction="sum")
        correct += (logits.argmax(1) == y[i:i + batch]).sum()
    return 100.0 * float(correct) / len(x), float(loss) / len(x)


def diagnostics(model: nn.Module, data: DeviceData, recipe: Recipe, seed: int) -> dict[str, Any]:
    """Gradient flow (train-mode BN, fp32) on the first training images, branch ratio and gradient
    correlation on the lesion images; the model's buffers and mode are left as they were."""
    flow_x = data.normalize(data.x_train[: recipe.flow_images], recipe.channels_last)
    test_x = data.normalize(data.x_test[data.lesion_idx], recipe.channels_last)
    torch.manual_seed(seed)
    return {
        "gradient_flow": gradient_flow(model, flow_x, data.y_train[: recipe.flow_images]),
        "branch_ratio": branch_ratio(model, test_x[:512], batch_size=512),
        "gradient_correlation": gradient_correlation(model, test_x, seed=seed),
    }


def lesion(model: nn.Module, data: DeviceData, recipe: Recipe, seed: int, amp: Any) -> dict[str, Any]:
    """Veit et al.'s lesion study on the lesion images. Random draws come only from blocks that
    keep their input's shape, which both twins can remove, so the two curves remove the same blocks."""
    x = data.normalize(data.x_test[data.lesion_idx], recipe.channels_last)
    y = data.y_test[data.lesion_idx]
    same_shape = [i.name for i in block_infos(model, x) if i.in_shape == i.out_shape]
    with amp():
        study = lesion_study(model, x, y, ks=recipe.lesion_ks, trials=recipe.lesion_trials, seed=seed,
                             batch_size=1000, candidates=same_shape)
    return {**plain_data(study), "candidates": same_shape}


class TrainStep:
    """One SGD step on a batch: eager, or captured once as a CUDA graph and replayed.

    These nets are small (16-64 channels at 28x28): eagerly, a ResNet-110 step is ~1,500 kernel
    launches and costs ~50 ms of CPU time whatever the batch; replayed as one graph it costs
    ~15 ms on an H200 (measured), bit-identical to the eager step. The first steps run eagerly
    on a side stream (they create the momentum buffers), as PyTorch's whole-network capture
    recipe asks; the learning rate is a device tensor, set before each step, so that the
    captured fused SGD reads the current value.
    """

    def __init__(self, model: nn.Module, recipe: Recipe, device: torch.device, dtype: torch.dtype | None, graph: bool) -> None:
        self.model, self.device, self.dtype, self.graph = model, device, dtype, graph and device.type == "cuda"
        fused = device.type == "cuda"  # the same fused kernel eagerly and in the graph
        lr: float | Tensor = torch.tensor(recipe.lr, device=device) if fused else recipe.lr
        self.optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=recipe.momentum,
                                         weight_decay=recipe.weight_decay, fused=fused or None)
        self.eager_steps = 3
        self.steps = 0
        self.cuda_graph: Any = None
        self.static: tuple[Tensor, ...] = ()

    def set_lr(self, value: float) -> None:
        group = self.optimizer.param_groups[0]
        if isinstance(group["lr"], Tensor):
            group["lr"].fill_(value)
        else:
            group["lr"] = value

    def _forward_backward(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        # No autocast weight cache: a graph must not hold casts made outside it (and eager matches).
        amp = torch.autocast(self.device.type, dtype=self.dtype, cache_enabled=False) if self.dtype else nullcontext()
        with amp:
            logits = self.model(x)
        loss = F.cross_entropy(logits.float(), y)
        loss.backward()
        self.optimizer.step()
        return loss.detach(), (logits.argmax(1) == y).sum()

    def __call__(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """(loss, number correct) of the step, as device tensors (no host sync)."""
        self.steps += 1
        if not self.graph:
            self.optimizer.zero_grad(set_to_none=True)
            return self._forward_backward(x, y)
        if self.steps <= self.eager_steps:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                self.optimizer.zero_grad(set_to_none=True)
                out = self._forward_backward(x, y)
            torch.cuda.current_stream().wait_stream(side)
            return out
        if self.cuda_graph is None:
            static_x, static_y = x.clone(), y.clone()
            self.optimizer.zero_grad(set_to_none=True)  # the graph's backward writes fresh gradients
            torch.cuda.synchronize()
            graph = torch.cuda.CUDAGraph()
            try:
                with torch.cuda.graph(graph):
                    loss, correct = self._forward_backward(static_x, static_y)
            except RuntimeError as err:  # capture records without running: nothing was applied, so step eagerly
                print(f"    CUDA graph capture failed ({str(err).splitlines()[0]}); stepping eagerly", flush=True)
                self.graph = False
                self.optimizer.zero_grad(set_to_none=True)
                return self._forward_backward(x, y)
            self.cuda_graph, self.static = graph, (static_x, static_y, loss, correct)
        static_x, static_y, loss, correct = self.static
        static_x.copy_(x)
        static_y.copy_(y)
        self.cuda_graph.replay()
        return loss.clone(), correct.clone()


def train_run(recipe: Recipe, data: DeviceData, depth: int, residual: bool, seed: int, device: torch.device,
              cuda_graphs: bool = True) -> tuple[dict[str, Any], nn.Module]:
    """Train one (depth, twin, seed) and measure it; returns the JSON record and the model."""
    start = time.perf_counter()
    set_determinism(seed)
    entry = run_entry(recipe, depth, residual)
    arch_args = {**entry.arch_args, "zero_init_last": recipe.zero_init_last}
    model = build(dataclasses.replace(entry, arch_args=arch_args))  # on the CPU: the same init on every device
    model = model.to(device, memory_format=torch.channels_last if recipe.channels_last else torch.contiguous_format)
    dtype = amp_dtype(recipe.precision, device)
    amp = (lambda: torch.autocast(device.type, dtype=dtype)) if dtype else nullcontext
    params = sum(p.numel() for p in model.parameters())
    at_init = diagnostics(model, data, recipe, seed)

    steps_per_epoch = len(data.x_train) // recipe.batch_size  # drop the last partial batch: one batch shape
    total = steps_per_epoch * recipe.epochs
    warmup = max(1, round(recipe.warmup_frac * total))

    def lr_at(step: int) -> float:
        if step < warmup:
            return recipe.lr * (0.1 + 0.9 * step / warmup)
        return recipe.lr * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    train_step = TrainStep(model, recipe, device, dtype, cuda_graphs)
    gen = torch.Generator(device).manual_seed(seed)
    curve: list[float | None] = []
    curve_acc: list[float] = []
    epoch_seconds: list[float] = []
    train_start = time.perf_counter()
    for epoch in range(recipe.epochs):
        model.train()
        t0 = time.perf_counter()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        order = torch.randperm(len(data.x_train), device=device, generator=gen)
        for step in range(steps_per_epoch):
            idx = order[step * recipe.batch_size:(step + 1) * recipe.batch_size]
            x = data.normalize(data.random_crops(idx, gen), recipe.channels_last)
            train_step.set_lr(lr_at(epoch * steps_per_epoch + step))
            loss, hits = train_step(x, data.y_train[idx])
            loss_sum += loss * len(idx)  # no host sync inside the epoch
            correct += hits
        seen = steps_per_epoch * recipe.batch_size
        mean_loss = float(loss_sum) / seen
        curve.append(mean_loss if math.isfinite(mean_loss) else None)
        curve_acc.append(100.0 * float(correct) / seen)
        epoch_seconds.append(time.perf_counter() - t0)
    train_seconds = time.perf_counter() - train_start

    train_acc, train_loss = evaluate(model, data, data.x_train, data.y_train, recipe, amp)
    test_acc, test_loss = evaluate(model, data, data.x_test, data.y_test, recipe, amp)
    at_end = diagnostics(model, data, recipe, seed)
    record = {
        "study": "residual-vs-plain", "domain": "image", "dataset": recipe.dataset, "name": entry.name,
        "arch": entry.arch, "depth": depth, "residual": residual, "seed": seed, "params": params, "classes": len(entry.labels),
        "recipe": recipe.describe(), "steps": total, "warmup_steps": warmup,
        "train_loss_curve": curve, "train_acc_curve_augmented": curve_acc, "epoch_seconds": epoch_seconds,
        "final": {"train_acc": train_acc, "train_loss": train_loss, "test_acc": test_acc, "test_loss": test_loss,
                  "train_images": len(data.x_train), "test_images": len(data.x_test)},
        "gradient_flow": {"init": at_init["gradient_flow"], "end": at_end["gradient_flow"]},
        "branch_ratio": {"init": at_init["branch_ratio"], "end": at_end["branch_ratio"]},
        "gradient_correlation": {"init": at_init["gradient_correlation"], "end": at_end["gradient_correlation"]},
        "lesion": lesion(model, data, recipe, seed, amp),
        "precision": str(dtype).replace("torch.", "") if dtype else "float32", "cuda_graph": train_step.graph,
        "device": device_name(device), "torch": torch.__version__, "python": platform.python_version(),
        "wall_seconds": {"train": train_seconds, "total": time.perf_counter() - start},
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    return plain_data(record), model


# --------------------------------------------------------------------------- the sweep


def run_id(dataset: str, depth: int, residual: bool, seed: int) -> str:
    return f"{dataset}-resnet{depth}-{'residual' if residual else 'plain'}-seed{seed}"


def save_weights(model: nn.Module, record: dict[str, Any], recipe: Recipe, out: Path) -> Path:
    """``save_pretrained`` with the run's measured test accuracy as the entry's metric."""
    ds = DATASETS[recipe.dataset]
    metric = {"dataset": ds["title"], "split": "test", "metric": "accuracy", "value": round(record["final"]["test_acc"], 2),
              "name": "top-1 accuracy", "dataset_type": recipe.dataset.replace("-", "_"),
              "source": {"kind": "measured", "script": SCRIPT}}
    extra = {"params": record["params"], "residual": record["residual"], "seed": record["seed"],
             "training": f"{recipe.epochs} epochs on {record['final']['train_images']} training images, batch {recipe.batch_size}, "
                         f"{record['recipe']['optimizer']}, lr {recipe.lr}, {record['recipe']['schedule']}, {record['recipe']['augmentation']}",
             "train_hardware": record["device"]}
    entry = run_entry(recipe, record["depth"], record["residual"], [metric], extra)
    return save_pretrained(model.to("cpu"), out / entry.name, entry=entry)


def cmd_image(args: argparse.Namespace) -> int:
    recipe = Recipe(dataset=args.dataset, epochs=args.epochs, train_subset=args.train_subset, batch_size=args.batch_size,
                    lr=args.lr, lesion_images=args.lesion_images, lesion_trials=args.lesion_trials,
                    precision=args.precision, zero_init_last=args.zero_init_last)
    for depth in args.depths:
        arch_of(depth, True)  # fail on a bad depth before loading anything
    device = pick_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    out: Path = args.out
    t0 = time.perf_counter()
    data = DeviceData.make(load_dataset(args.dataset, args.data), recipe, device)
    print(f"{recipe.dataset}: {len(data.x_train)} training images (fixed subset), {len(data.x_test)} test images on "
          f"{device_name(device)}; {recipe.epochs} epochs, batch {recipe.batch_size}, precision "
          f"{amp_dtype(recipe.precision, device) or 'float32'}; data ready in {time.perf_counter() - t0:.1f} s", flush=True)
    runs = [(d, r, s) for s in args.seeds for d in args.depths for r in (True, False)]  # seed-major: early results span all depths
    deepest, first_seed = max(args.depths), min(args.seeds)
    for i, (depth, residual, seed) in enumerate(runs, 1):
        path = out / "runs" / f"{run_id(recipe.dataset, depth, residual, seed)}.json"
        weights_wanted = args.save_weights and depth == deepest and seed == first_seed
        if path.is_file() and json.loads(path.read_text())["recipe"] == json.loads(json.dumps(plain_data(recipe.describe()))):
            if not weights_wanted or (out / "weights" / run_entry(recipe, depth, residual).name).is_dir():
                print(f"[{i}/{len(runs)}] {path.name}: kept (same recipe)", flush=True)
                continue
        record, model = train_run(recipe, data, depth, residual, seed, device, args.cuda_graphs)
        write_json(record, path)
        f = record["final"]
        print(f"[{i}/{len(runs)}] resnet{depth} {'residual' if residual else 'plain   '} seed {seed}: test {f['test_acc']:.2f}% "
              f"train {f['train_acc']:.2f}% loss {f['train_loss']:.4f}; {record['wall_seconds']['train']:.1f} s training, "
              f"{record['wall_seconds']['total']:.1f} s in all; sweep at {time.perf_counter() - t0:.0f} s", flush=True)
        if weights_wanted:
            folder = save_weights(model, record, recipe, out / "weights")
            size = (folder / "model.safetensors").stat().st_size
            print(f"    weights: {folder} ({size / 2**20:.1f} MiB{'' if size <= 8 * 2**20 else ', over the 8 MiB bundled-mirror limit'})", flush=True)
    print(f"sweep done in {time.perf_counter() - t0:.0f} s: {out / 'runs'}", flush=True)
    return 0


def cmd_domain(args: argparse.Namespace) -> int:
    """A text or speech sweep (``scripts/residual_domains.py``): the same loop over runs as ``image``,
    each run trained by the one runner ``train_twin`` and kept when its JSON has the same recipe."""
    from residual_domains import RECIPES, SWEEPS

    fields = {f.name for f in dataclasses.fields(RECIPES[args.command])}
    overrides = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    torch.set_num_threads(args.threads)
    run_sweep(SWEEPS[args.command](RECIPES[args.command](**overrides), args.data), args.depths, args.seeds, args.out)
    return 0


def cmd_rl(args: argparse.Namespace) -> int:
    """The RL sweep (``scripts/residual_rl.py``): SAC runs kept when their JSON has the same recipe."""
    from residual_rl import RLRecipe
    from residual_rl import run_sweep as run_rl

    torch.set_num_threads(args.threads)
    recipe = RLRecipe(**({"timesteps": args.timesteps} if args.timesteps else {}))
    run_rl(recipe, args.depths, args.seeds, args.out)
    return 0


def cmd_gan(args: argparse.Namespace) -> int:
    """The GAN sweep (``scripts/residual_gan.py``): runs kept when their JSON has the same recipe."""
    from residual_gan import GanRecipe
    from residual_gan import run_sweep as run_gan

    torch.set_num_threads(args.threads)
    run_gan(GanRecipe(**({"iters": args.iters} if args.iters else {})), args.depths, args.seeds, args.out)
    return 0


def run_sweep(sweep: Any, depths: list[int], seeds: list[int], out: Path) -> list[Path]:
    """Every (depth, twin, seed) of ``sweep`` not already in ``out/runs`` with the same recipe; the records' paths."""
    from residual_domains import run_grid, train_twin

    recipe = sweep.recipe
    t0 = time.perf_counter()
    data = sweep.load()
    print(f"{sweep.domain}: {len(data.train)} training / {len(data.test)} test samples; {recipe.epochs} epochs, batch "
          f"{recipe.batch_size}; {data.extra}; data ready in {time.perf_counter() - t0:.1f} s", flush=True)
    def summary(record: dict[str, Any]) -> str:
        f = record["final"]
        return (f"test {f['test_acc']:.2f}% train {f['train_acc']:.2f}% loss {f['train_loss']:.4f}; "
                f"{record['wall_seconds']['train']:.1f} s training")

    return run_grid(recipe, depths, seeds, out, sweep.run_id,
                    lambda d, r, s: train_twin(sweep, data, d, r, s)[0], summary)


def check_saved_pair(runs: list[dict[str, Any]], depth: int, configs: list[dict[str, Any]]) -> None:
    """Publish only what the study reports: every run of one recipe, and each saved model the run
    record of its depth, twin and seed (same test accuracy), so a smoke run cannot slip through."""
    recipes = {json.dumps(r["recipe"], sort_keys=True) for r in runs}
    if len(recipes) != 1:
        raise SystemExit(f"the image runs hold {len(recipes)} recipes: register only a sweep of one recipe (rerun the odd runs)")
    for config in configs:
        residual, seed = config["extra"]["residual"], config["extra"]["seed"]
        value = next(m["value"] for m in config["metrics"] if m["metric"] == "accuracy")
        record = [r for r in runs if (r["depth"], r["residual"], r["seed"]) == (depth, residual, seed)]
        if not record or round(record[0]["final"]["test_acc"], 2) != value:
            raise SystemExit(f"{config['name']}: no run record of depth {depth}, seed {seed} with its test accuracy {value}; "
                             "its weights are not the study's run")


def cmd_register(args: argparse.Namespace) -> int:
    """The deepest pair the sweep saved (``RESULTS/image/weights/<name>/``) as one registry entry
    with its plain twin: weights into the bundled mirror, the runs' own numbers (the saved seed's
    test accuracy; mean and std over every seed of the sweep) into registry.yaml, cards regenerated."""
    import shutil
    import statistics

    from reszoo.cards import write_cards
    from reszoo.hub import sha256_of
    from scripts.registry_io import COMMIT_LIMIT, add_entry, update_entry

    saved = args.results / "image" / "weights"
    folders = sorted(p for p in saved.glob("*/config.json"))
    residual = [json.loads(p.read_text()) for p in folders if not p.parent.name.endswith("-plain")]
    if len(residual) != 1 or not (saved / f"{residual[0]['name']}-plain" / "config.json").is_file():
        raise SystemExit(f"{saved}: expected one saved residual model and its -plain twin (run `image` first)")
    config = residual[0]
    runs = [json.loads(p.read_text()) for p in (args.results / "image" / "runs").glob("*.json")]
    depth = int(config["name"].split("-")[0].removeprefix("resnet"))
    check_saved_pair(runs, depth, [config, json.loads((saved / f"{config['name']}-plain" / "config.json").read_text())])

    def placed(name: str) -> dict[str, Any]:
        source = saved / name / "model.safetensors"
        dest = ROOT / "weights" / "reszoo" / name / "model.safetensors"
        if source.stat().st_size > COMMIT_LIMIT:
            raise SystemExit(f"{source}: over the {COMMIT_LIMIT}-byte limit of the bundled mirror")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, dest)
        return {"repo": f"reszoo/{name}", "file": "model.safetensors", "revision": None, "sha256": sha256_of(dest),
                "size": dest.stat().st_size, "pin_note": "trained here by the residual study; bundled, not yet on the Hub"}

    def over_seeds(residual_flag: bool) -> str:
        accs = [r["final"]["test_acc"] for r in runs if r["depth"] == depth and r["residual"] is residual_flag]
        spread = f" ± {statistics.stdev(accs):.2f}" if len(accs) > 1 else ""
        return f"{statistics.mean(accs):.2f}{spread} % test accuracy over {len(accs)} seed(s) ({', '.join(f'{a:.2f}' for a in accs)})"

    plain = json.loads((saved / f"{config['name']}-plain" / "config.json").read_text())
    # The registry's defaults sets give the pins' file/format, the paper and the data set's labels,
    # license and name: the entry states only what is its own.
    fields = ("domain", "task", "arch", "arch_args", "preprocess", "recipe", "description", "tags", "metrics")
    weights = {k: v for k, v in placed(config["name"]).items() if k in ("repo", "revision", "sha256", "size")}
    raw = {"name": config["name"], "defaults": ["trained-here", "resnet", config["dataset"][0]],
           **{k: config[k] for k in fields if k in config}, "weights": weights}
    raw["usage"] = (  # runs offline: the inputs come from the zoo's own bundled Fashion-MNIST GAN
        "import reszoo\n"
        f'model = reszoo.load("{config["name"]}")  # or "{plain["name"]}", its plain twin\n'
        "# Input: 28x28 grayscale garments, light on black as in Fashion-MNIST (a path, PIL image or tensor);\n"
        "# here four sneakers drawn by the zoo's Fashion-MNIST GAN, a (4, 1, 28, 28) tensor in [0, 1]:\n"
        'images = reszoo.load("sngan-fashion-mnist").sample(4, labels=["Sneaker"], seed=0)\n'
        "print([model.labels[i] for i in model(model.preprocess(images)).argmax(-1)])\n"
        "# what the skips do in this pair: reszoo analyze " + config["name"] + " " + plain["name"] + " --out DIR\n")
    raw["extra"] = {**config["extra"], "over_seeds": over_seeds(True), "study": "docs/residual-study.md"}
    raw["plain"] = {"weights": {k: v for k, v in placed(plain["name"]).items() if k in ("repo", "sha256", "size")},
                    "metrics": plain["metrics"],
                    "extra": {**plain["extra"], "over_seeds": over_seeds(False), "study": "docs/residual-study.md"}}
    raw["arch_args"] = {k: v for k, v in raw["arch_args"].items() if k != "residual"}
    try:
        add_entry(raw)
    except KeyError:  # registered before: the same fields, rewritten from this run
        update_entry(raw["name"], **{k: v for k, v in raw.items() if k not in ("name", "plain")})
        update_entry(plain["name"], weights=raw["plain"]["weights"], metrics=plain["metrics"], extra=raw["plain"]["extra"])
    write_cards(ROOT / "model_cards")  # as scripts/make_cards.py writes them
    for name in (config["name"], plain["name"]):
        print(f"registered {name}: weights/reszoo/{name}/model.safetensors, model_cards/{name}.md")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from residual_report import write_report

    md = write_report(args.results, args.out, figures=args.figures)
    print(f"wrote {md}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("image", help="depth sweep of CIFAR-style ResNets and plain twins on (Fashion-)MNIST")
    p.add_argument("--depths", type=int, nargs="+", default=[8, 20, 56, 110])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--dataset", choices=sorted(DATASETS), default="fashion-mnist")
    p.add_argument("--data", type=Path, default=None, help="idx folder or .npz (default: the dataset's usual place)")
    p.add_argument("--epochs", type=int, default=Recipe.epochs)
    p.add_argument("--train-subset", type=int, default=Recipe.train_subset, help="training images (a fixed random subset)")
    p.add_argument("--batch-size", type=int, default=Recipe.batch_size)
    p.add_argument("--lr", type=float, default=Recipe.lr)
    p.add_argument("--lesion-images", type=int, default=Recipe.lesion_images, help="test images of the lesion study")
    p.add_argument("--lesion-trials", type=int, default=Recipe.lesion_trials, help="random draws per number of removed blocks")
    p.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto",
                   help="auto: bf16 autocast on CUDA and on CPUs with native bf16, else fp32")
    p.add_argument("--zero-init-last", action="store_true", help="zero each branch's last BN (not in He et al.; residual only)")
    p.add_argument("--no-cuda-graphs", dest="cuda_graphs", action="store_false",
                   help="step eagerly on CUDA too (same numbers, ~3x slower for ResNet-110)")
    p.add_argument("--no-save-weights", dest="save_weights", action="store_false", help="do not save the deepest pair's weights")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=cmd_image)
    from residual_report import PLANNED

    def sweep_parser(domain: str, help_: str, func: Any) -> argparse.ArgumentParser:
        p = sub.add_parser(domain, help=f"depth sweep of {help_}, residual vs plain")
        p.add_argument("--depths", type=int, nargs="+", default=PLANNED[domain][0])
        p.add_argument("--seeds", type=int, nargs="+", default=PLANNED[domain][1])
        p.add_argument("--threads", type=int, default=1, help="CPU threads")
        p.add_argument("--out", type=Path, required=True)
        p.set_defaults(func=func)
        return p

    for domain, help_ in (("text", "Transformer encoders (layers) from scratch on BANKING77"),
                          ("speech", "conv-TDNNs (SE-Res2Net blocks) on FSDD digits, unseen speaker")):
        p = sweep_parser(domain, help_, cmd_domain)
        p.add_argument("--data", type=Path, default=None, help="the data set's folder (default: ../shared/data/...)")
        p.add_argument("--epochs", type=int, default=None)
        p.add_argument("--train-subset", type=int, default=None, help="training samples (a fixed random subset)")
        p.add_argument("--batch-size", type=int, default=None)
        p.add_argument("--lr", type=float, default=None)
        p.add_argument("--lesion-samples", type=int, default=None, help="test samples of the lesion study")
    p = sweep_parser("rl", "SimBa SAC agents (blocks) on Pendulum-v1", cmd_rl)
    p.add_argument("--timesteps", type=int, default=None, help="environment steps per run (default: the preset's)")
    p = sweep_parser("gan", "SNGAN generators/discriminators (blocks per stage) on MNIST", cmd_gan)
    p.add_argument("--iters", type=int, default=None, help="training iterations per run (default: the recipe's)")
    p = sub.add_parser("report", help="write the Markdown report and its figures from the JSON results")
    p.add_argument("--results", type=Path, default=ROOT / "results" / "residual-study", help="holds image/runs/*.json")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "residual-study.md")
    p.add_argument("--figures", type=Path, default=None, help="figure folder (default: img/residual-study beside --out)")
    p.set_defaults(func=cmd_report)
    p = sub.add_parser("register", help="publish the deepest saved pair: bundled weights, registry entry, cards")
    p.add_argument("--results", type=Path, default=ROOT / "results" / "residual-study", help="holds image/weights/<name>/")
    p.set_defaults(func=cmd_register)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
