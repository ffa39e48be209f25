"""The residual study's sweeps beyond images: one runner (:func:`train_twin`), one definition per domain.

A domain's sweep is a :class:`Sweep`: its recipe (everything two comparable runs share), its data,
how it builds the model of a depth (residual or plain twin), its training batches and how it
measures accuracy. :func:`train_twin` trains any of them with the same loop (AdamW, linear
warm-up then cosine, cross-entropy, float32 on the CPU) and writes the same record as the image
sweep: training-loss curve, final train and test accuracy and loss, ``reszoo.analysis`` gradient
flow, branch ratio and gradient correlation (token inputs: through the word embeddings) at initialisation and at the
end, the lesion study at the end, wall time, seed.

``text``: reszoo's Transformer encoder (``transformer_encoder``, pre-LN, a word-level vocabulary
of the training queries) from scratch on BANKING77 at 2/6/12 layers. ``speech``: the
tdnn-fsdd-digits architecture (``tdnn_small``: a conv-TDNN of SE-Res2Net blocks) with 3/6/12
blocks on FSDD digits, tested on a speaker never heard in training (george), as
``scripts/train_fsdd.py digits-heldout`` does.
"""

from __future__ import annotations

import dataclasses
import math
import platform
import re
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reszoo.analysis import block_infos, branch_ratio, gradient_correlation, gradient_flow, lesion_study
from reszoo.analysis.suite import plain_data

ROOT = Path(__file__).resolve().parent.parent
Batch = tuple[dict[str, Tensor], Tensor]


@dataclasses.dataclass
class Split:
    """Model inputs (a dict of batched tensors) and class targets."""

    inputs: dict[str, Tensor]
    targets: Tensor

    def __len__(self) -> int:
        return len(self.targets)

    def take(self, idx: Tensor | slice) -> Split:
        return Split({k: v[idx] for k, v in self.inputs.items()}, self.targets[idx])


@dataclasses.dataclass
class Data:
    train: Split
    test: Split
    classes: list[str]
    lesion_idx: Tensor  # test samples of the lesion study (a fixed subset)
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)


class Sweep(Protocol):
    """A domain's sweep definition (see :class:`TextSweep`, :class:`SpeechSweep`)."""

    domain: str
    dataset: str
    depth_unit: str  # what a depth counts ("encoder layers")
    recipe: Any  # a frozen dataclass with ``describe()``

    def load(self) -> Data: ...
    def steps_per_epoch(self, data: Data) -> int: ...
    def build(self, data: Data, depth: int, residual: bool) -> tuple[nn.Module, str, dict[str, Any]]: ...
    def batches(self, data: Data, gen: torch.Generator) -> Iterator[Batch]: ...
    def eval_batches(self, split: Split) -> Iterator[Batch]: ...
    def correlation_inputs(self, data: Data) -> Tensor | dict[str, Tensor] | None: ...
    def run_id(self, depth: int, residual: bool, seed: int) -> str: ...


# --------------------------------------------------------------------------- the one runner


def set_determinism(seed: int) -> None:
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def lr_at(recipe: Any, step: int, total: int) -> float:
    """Linear warm-up from lr/10 over the first ``warmup_frac`` of the steps, then cosine to 0."""
    warmup = max(1, round(recipe.warmup_frac * total))
    if step < warmup:
        return recipe.lr * (0.1 + 0.9 * step / warmup)
    return recipe.lr * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def make_optimizer(model: nn.Module, recipe: Any) -> torch.optim.Optimizer:
    """AdamW; no weight decay on biases, norms and other vectors (the usual rule)."""
    decay = [p for p in model.parameters() if p.ndim >= 2]
    rest = [p for p in model.parameters() if p.ndim < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": recipe.weight_decay}, {"params": rest, "weight_decay": 0.0}],
                             lr=recipe.lr)


@torch.no_grad()
def evaluate(model: nn.Module, sweep: Sweep, split: Split) -> tuple[float, float]:
    """(accuracy %, mean cross-entropy) of the eval-mode model on ``split``."""
    model.eval()
    correct, loss = 0, 0.0
    for inputs, targets in sweep.eval_batches(split):
        logits = model(**inputs).float()
        loss += float(F.cross_entropy(logits, targets, reduction="sum"))
        correct += int((logits.argmax(-1) == targets).sum())
    return 100.0 * correct / len(split), loss / len(split)


def diagnostics(model: nn.Module, sweep: Sweep, data: Data, seed: int) -> dict[str, Any]:
    """Gradient flow (train mode) on the first training samples, branch ratio on the lesion samples,
    gradient correlation on the sweep's correlation inputs (token ids: through the model's word embeddings)."""
    recipe = sweep.recipe
    flow = data.train.take(slice(0, recipe.flow_samples))
    probe = data.test.take(data.lesion_idx)
    torch.manual_seed(seed)  # dropout in the train-mode gradient pass
    corr_x = sweep.correlation_inputs(data)
    embedding = getattr(model, "get_input_embeddings", lambda: None)() if isinstance(corr_x, dict) else None
    return {
        "gradient_flow": gradient_flow(model, flow.inputs, flow.targets),
        "branch_ratio": branch_ratio(model, probe.inputs, batch_size=256),
        "gradient_correlation": None if corr_x is None else gradient_correlation(model, corr_x, seed=seed, embedding=embedding),
    }


def lesion(model: nn.Module, data: Data, recipe: Any, seed: int) -> dict[str, Any]:
    """Veit et al.'s lesion study on the lesion samples; random draws among the blocks both twins can remove."""
    probe = data.test.take(data.lesion_idx)
    same_shape = [i.name for i in block_infos(model, probe.inputs) if i.in_shape == i.out_shape]
    study = lesion_study(model, probe.inputs, probe.targets, ks=recipe.lesion_ks, trials=recipe.lesion_trials,
                         seed=seed, batch_size=256, candidates=same_shape)
    return {**plain_data(study), "candidates": same_shape}


def device_name() -> str:
    return f"CPU ({platform.machine()}, {torch.get_num_threads()} threads)"


def train_twin(sweep: Sweep, data: Data, depth: int, residual: bool, seed: int) -> tuple[dict[str, Any], nn.Module]:
    """Train one (depth, twin, seed) of ``sweep`` and measure it; returns the JSON record and the model."""
    start = time.perf_counter()
    recipe = sweep.recipe
    set_determinism(seed)
    model, arch, arch_args = sweep.build(data, depth, residual)
    params = sum(p.numel() for p in model.parameters())
    at_init = diagnostics(model, sweep, data, seed)
    measures = getattr(sweep, "measures", None)  # a domain's own measure of its anchor (text: rank collapse)
    extra_init = measures(model, data) if measures else None
    optimizer = make_optimizer(model, recipe)
    gen = torch.Generator().manual_seed(seed)
    total = sweep.steps_per_epoch(data) * recipe.epochs
    curve: list[float | None] = []
    epoch_seconds: list[float] = []
    step = 0
    train_start = time.perf_counter()
    for _ in range(recipe.epochs):
        model.train()
        t0, loss_sum, seen = time.perf_counter(), 0.0, 0
        for inputs, targets in sweep.batches(data, gen):
            for group in optimizer.param_groups:
                group["lr"] = lr_at(recipe, step, total)
            loss = F.cross_entropy(model(**inputs).float(), targets, label_smoothing=recipe.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if recipe.clip_norm:
                nn.utils.clip_grad_norm_(model.parameters(), recipe.clip_norm)
            optimizer.step()
            loss_sum += float(loss.detach()) * len(targets)
            seen += len(targets)
            step += 1
        mean_loss = loss_sum / seen
        curve.append(mean_loss if math.isfinite(mean_loss) else None)
        epoch_seconds.append(time.perf_counter() - t0)
    train_seconds = time.perf_counter() - train_start

    train_acc, train_loss = evaluate(model, sweep, data.train)
    test_acc, test_loss = evaluate(model, sweep, data.test)
    at_end = diagnostics(model, sweep, data, seed)
    record = {
        "study": "residual-vs-plain", "domain": sweep.domain, "dataset": sweep.dataset,
        "name": sweep.run_id(depth, residual, seed).rsplit("-seed", 1)[0], "arch": arch, "arch_args": arch_args,
        "depth": depth, "residual": residual, "seed": seed, "params": params, "classes": len(data.classes),
        "blocks": len(at_init["gradient_flow"].blocks),
        "recipe": recipe.describe(), "data": data.extra, "steps": total,
        "warmup_steps": max(1, round(recipe.warmup_frac * total)),
        "train_loss_curve": curve, "epoch_seconds": epoch_seconds,
        "final": {"train_acc": train_acc, "train_loss": train_loss, "test_acc": test_acc, "test_loss": test_loss,
                  "train_samples": len(data.train), "test_samples": len(data.test)},
        "gradient_flow": {"init": at_init["gradient_flow"], "end": at_end["gradient_flow"]},
        "branch_ratio": {"init": at_init["branch_ratio"], "end": at_end["branch_ratio"]},
        "gradient_correlation": {"init": at_init["gradient_correlation"], "end": at_end["gradient_correlation"]},
        "lesion": lesion(model, data, recipe, seed),
        "domain_measures": None if measures is None else {"init": extra_init, "end": measures(model, data)},
        "precision": "float32", "device": device_name(), "torch": torch.__version__, "python": platform.python_version(),
        "wall_seconds": {"train": train_seconds, "total": time.perf_counter() - start},
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    return plain_data(record), model


def run_grid(recipe: Any, depths: list[int], seeds: list[int], out: Path, run_id: Any, train: Any, summary: Any) -> list[Path]:
    """Every (depth, twin, seed) whose record is not already in ``out/runs`` with the same recipe:
    ``train(depth, residual, seed)`` makes the record (written as JSON), ``summary(record)`` its log
    line; the paths of every record of the grid. A rerun finishes an interrupted sweep."""
    import json

    from reszoo.analysis.suite import write_json

    t0 = time.perf_counter()
    want = json.loads(json.dumps(plain_data(recipe.describe())))
    runs = [(d, r, s) for s in seeds for d in depths for r in (True, False)]
    paths = []
    for i, (depth, residual, seed) in enumerate(runs, 1):
        path = out / "runs" / f"{run_id(depth, residual, seed)}.json"
        paths.append(path)
        if path.is_file() and json.loads(path.read_text())["recipe"] == want:
            print(f"[{i}/{len(runs)}] {path.name}: kept (same recipe)", flush=True)
            continue
        record = train(depth, residual, seed)
        write_json(record, path)
        print(f"[{i}/{len(runs)}] depth {depth} {'residual' if residual else 'plain   '} seed {seed}: {summary(record)}; "
              f"{record['wall_seconds']['total']:.0f} s; sweep at {time.perf_counter() - t0:.0f} s", flush=True)
    print(f"sweep done in {time.perf_counter() - t0:.0f} s: {out / 'runs'}", flush=True)
    return paths


def _fixed_subset(n: int, size: int | None, seed: int = 0) -> np.ndarray:
    """A sorted random subset (seed 0, whatever the run's seed: both twins and all seeds see the same samples)."""
    if not size or size >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))


# --------------------------------------------------------------------------- text


@dataclasses.dataclass(frozen=True)
class TextRecipe:
    epochs: int = 3
    train_subset: int | None = None  # None: all 10,003 training queries
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.01
    warmup_frac: float = 0.1
    label_smoothing: float = 0.0
    clip_norm: float = 1.0
    hidden: int = 64
    heads: int = 4
    ffn: int = 256
    dropout: float = 0.1
    norm: str = "pre"
    max_length: int = 32
    min_count: int = 2
    lesion_samples: int = 500
    lesion_ks: tuple[int, ...] = (1, 2, 4, 8, 16)
    lesion_trials: int = 3
    flow_samples: int = 256

    def describe(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {
            "optimizer": f"AdamW, weight decay {self.weight_decay} on matrices, gradient norm clipped at {self.clip_norm}",
            "schedule": f"linear warm-up from lr/10 over the first {self.warmup_frac:.0%} of steps, then cosine to 0",
            "augmentation": "none",
            "init": "BERT's: N(0, 0.02) linear and embedding weights, zero biases, unit LayerNorms",
            "model": f"{self.norm}-LN Transformer encoder, hidden {self.hidden}, {self.heads} heads, feed-forward {self.ffn}, "
                     f"dropout {self.dropout}, mean pooling, linear head",
            "tokenizer": f"lower-cased words and punctuation of the training queries seen >= {self.min_count} times "
                         f"(others [UNK]), at most {self.max_length} tokens",
        }


WORD = re.compile(r"[a-z0-9]+|[^\sa-z0-9]")


def read_tsv(path: Path) -> list[tuple[str, str]]:
    """``(label, text)`` rows of a BANKING77 TSV (header ``label<TAB>text``; texts hold quotes)."""
    rows = []
    with open(path, encoding="utf-8") as f:
        header = f.readline().rstrip("\n").split("\t")
        if header != ["label", "text"]:
            raise SystemExit(f"{path}: expected the header 'label<TAB>text', got {header}")
        for line in f:
            label, text = line.rstrip("\n").split("\t", 1)
            rows.append((label, text))
    return rows


class TextSweep:
    domain, dataset, depth_unit = "text", "banking77", "encoder layers"

    def __init__(self, recipe: TextRecipe = TextRecipe(), data: Path | None = None,
                 rows: tuple[list[tuple[str, str]], list[tuple[str, str]]] | None = None) -> None:
        self.recipe = recipe
        self.path = data or ROOT.parent / "shared" / "data" / "banking77"
        self.rows = rows  # (train, test) rows instead of the files (tests)

    def run_id(self, depth: int, residual: bool, seed: int) -> str:
        return f"banking77-transformer{depth}-{'residual' if residual else 'plain'}-seed{seed}"

    def load(self) -> Data:
        r = self.recipe
        if self.rows is None:
            if not (self.path / "train.tsv").is_file():
                raise SystemExit(f"BANKING77 not found at {self.path} (train.tsv, test.tsv): pass --data")
            train_rows, test_rows = read_tsv(self.path / "train.tsv"), read_tsv(self.path / "test.tsv")
        else:
            train_rows, test_rows = self.rows
        classes = sorted({label for label, _ in train_rows + test_rows})  # every class, even one a subset misses
        train_rows = [train_rows[i] for i in _fixed_subset(len(train_rows), r.train_subset)]
        counts = Counter(w for _, text in train_rows for w in WORD.findall(text.lower()))
        vocab = ["[PAD]", "[UNK]"] + sorted(w for w, c in counts.items() if c >= r.min_count)
        index = {w: i for i, w in enumerate(vocab)}

        def encode(rows: list[tuple[str, str]]) -> Split:
            ids = torch.zeros(len(rows), r.max_length, dtype=torch.long)
            for k, (_, text) in enumerate(rows):
                words = [index.get(w, 1) for w in WORD.findall(text.lower())][: r.max_length] or [1]
                ids[k, : len(words)] = torch.tensor(words)
            targets = torch.tensor([classes.index(label) for label, _ in rows])
            return Split({"input_ids": ids, "attention_mask": (ids != 0).long()}, targets)

        train, test = encode(train_rows), encode(test_rows)
        lesion_idx = torch.from_numpy(_fixed_subset(len(test), r.lesion_samples))
        truncated = int((train.inputs["attention_mask"][:, -1] == 1).sum())
        return Data(train, test, classes, lesion_idx,
                    {"vocab_size": len(vocab), "train_queries": len(train), "test_queries": len(test),
                     "train_truncated": truncated})

    def build(self, data: Data, depth: int, residual: bool) -> tuple[nn.Module, str, dict[str, Any]]:
        from reszoo.text.models import archs

        r = self.recipe
        args = dict(vocab_size=data.extra["vocab_size"], hidden_size=r.hidden, num_layers=depth, num_heads=r.heads,
                    intermediate_size=r.ffn, max_position=r.max_length, type_vocab_size=1, layer_norm_eps=1e-5,
                    dropout=r.dropout, attention_dropout=r.dropout, norm=r.norm, pooling="mean", pooler=False,
                    num_classes=len(data.classes), residual=residual)
        return archs.get("transformer_encoder")(**args), "transformer_encoder", args

    @staticmethod
    def _trim(split: Split) -> Batch:
        """Cut the padding columns no sample of the batch uses (same outputs, less work)."""
        longest = int(split.inputs["attention_mask"].sum(1).max())
        return {k: v[:, :longest] for k, v in split.inputs.items()}, split.targets

    def steps_per_epoch(self, data: Data) -> int:
        return len(data.train) // self.recipe.batch_size

    def batches(self, data: Data, gen: torch.Generator) -> Iterator[Batch]:
        order = torch.randperm(len(data.train), generator=gen)
        b = self.recipe.batch_size
        for i in range(0, len(order) - b + 1, b):  # drop the last partial batch
            yield self._trim(data.train.take(order[i:i + b]))

    def eval_batches(self, split: Split) -> Iterator[Batch]:
        for i in range(0, len(split), 500):
            yield self._trim(split.take(slice(i, i + 500)))

    def correlation_inputs(self, data: Data) -> dict[str, Tensor]:
        """Two lesion queries (token ids): the segments run through their word embeddings."""
        return self._trim(data.test.take(data.lesion_idx[:2]))[0]

    @torch.no_grad()
    def measures(self, model: nn.Module, data: Data) -> dict[str, Any]:
        """Dong et al.'s rank collapse, per encoder layer: the relative residual ``‖X − 1 x̄ᵀ‖ / ‖X‖`` of each
        query's token states ``X`` (its real tokens, Frobenius norms; ``x̄`` the token mean, the closest
        rank-1 matrix of that form), mean over the lesion queries, in eval mode. 0: every token is the same."""
        probe = self._trim(data.test.take(data.lesion_idx))[0]
        mask = probe["attention_mask"].unsqueeze(-1).float()
        outs: list[Tensor] = []
        hooks = [layer.register_forward_hook(lambda _m, _a, out: outs.append(out)) for layer in model.layers]
        was_training = model.training
        model.eval()
        try:
            model(**probe)
        finally:
            model.train(was_training)
            for h in hooks:
                h.remove()
        per_layer = []
        for x in outs:
            x = x.float() * mask
            mean = x.sum(1, keepdim=True) / mask.sum(1, keepdim=True)
            res = ((x - mean) * mask).flatten(1).norm(dim=1) / x.flatten(1).norm(dim=1).clamp(min=1e-12)
            per_layer.append(float(res.mean()))
        return {"token_residual_by_layer": per_layer, "samples": len(mask)}


# --------------------------------------------------------------------------- speech


@dataclasses.dataclass(frozen=True)
class SpeechRecipe:
    epochs: int = 6
    train_subset: int | None = None  # None: all 2,250 training recordings
    heldout: str = "george"
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 1e-3
    warmup_frac: float = 0.15
    label_smoothing: float = 0.1
    clip_norm: float = 0.0
    spec_augment: bool = True
    lesion_samples: int = 500
    lesion_ks: tuple[int, ...] = (1, 2, 4, 8)
    lesion_trials: int = 3
    flow_samples: int = 128
    correlation_frames: int = 40

    def describe(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {
            "optimizer": f"AdamW, weight decay {self.weight_decay} on matrices",
            "schedule": f"linear warm-up from lr/10 over the first {self.warmup_frac:.0%} of steps, then cosine to 0",
            "augmentation": ("SpecAugment (crop to 85-100% of the frames, 2 frequency masks of up to 10 bins, 1 time mask "
                             "of up to 10%)") if self.spec_augment else "none",
            "init": "PyTorch's defaults (Kaiming-uniform convolutions and linears, BN weight 1 / bias 0)",
            "model": "tdnn_small (tdnn-fsdd-digits): TDNN stem (64 ch., k5), n SE-Res2Net blocks (64 ch., k3, dilations "
                     "2,3,4 repeated, scale 4, SE 32), MFA over all block outputs (192 ch.), attentive statistics pooling, "
                     "64-dim embedding, linear head",
        }


def tdnn_args(blocks: int, residual: bool) -> dict[str, Any]:
    """``tdnn_small`` arguments for ``blocks`` SE-Res2Net blocks (3 is tdnn-fsdd-digits)."""
    dil = [(2, 3, 4)[i % 3] for i in range(blocks)]
    return dict(channels=[64] * (blocks + 1) + [192], kernel_sizes=[5] + [3] * blocks + [1], dilations=[1] + dil + [1],
                num_classes=10, residual=residual)


class SpeechSweep:
    domain, dataset, depth_unit = "speech", "fsdd", "SE-Res2Net blocks"

    def __init__(self, recipe: SpeechRecipe = SpeechRecipe(), data: Path | None = None,
                 cache: Path | None = None, items: list[dict[str, Any]] | None = None) -> None:
        self.recipe = recipe
        self.data_path, self.cache = data, cache or ROOT / "runs" / "fsdd"
        self.items = items  # instead of the recordings (tests)

    def run_id(self, depth: int, residual: bool, seed: int) -> str:
        return f"fsdd-{self.recipe.heldout}-tdnn{depth}-{'residual' if residual else 'plain'}-seed{seed}"

    def load(self) -> Data:
        from scripts.data import FSDD_SPEAKERS

        r = self.recipe
        if self.items is None:
            from scripts.train_fsdd import load_features

            items = load_features(self.data_path, self.cache)
        else:
            items = self.items
        held = FSDD_SPEAKERS.index(r.heldout)
        # As train_fsdd.py digits-heldout: the other speakers' takes 5-49 train; every take of the held-out speaker tests.
        train = [it for it in items if it["index"] >= 5 and it["speaker"] != held]
        train = [train[i] for i in _fixed_subset(len(train), r.train_subset)]
        test = [it for it in items if it["speaker"] == held]

        def split(rows: list[dict[str, Any]]) -> Split:
            frames = torch.tensor([int(it["feats"].shape[0]) for it in rows])
            feats = torch.zeros(len(rows), int(frames.max()), rows[0]["feats"].shape[1])
            for k, it in enumerate(rows):
                feats[k, : frames[k]] = it["feats"]
            return Split({"feats": feats, "frames": frames}, torch.tensor([it["digit"] for it in rows]))

        tr, te = split(train), split(test)
        lesion_idx = torch.from_numpy(_fixed_subset(len(te), r.lesion_samples))
        return Data(tr, te, [str(d) for d in range(10)], lesion_idx,
                    {"train_recordings": len(tr), "test_recordings": len(te), "heldout_speaker": r.heldout,
                     "train_speakers": sorted({FSDD_SPEAKERS[it["speaker"]] for it in train})})

    def build(self, data: Data, depth: int, residual: bool) -> tuple[nn.Module, str, dict[str, Any]]:
        from reszoo.speech.models import archs

        args = tdnn_args(depth, residual)
        return _Unpadded(archs.get("tdnn_small")(**args)), "tdnn_small", args

    @staticmethod
    def _unpad(split: Split) -> dict[str, Tensor]:
        frames = split.inputs["frames"]
        longest = int(frames.max())
        return {"feats": split.inputs["feats"][:, :longest], "frames": frames}

    def steps_per_epoch(self, data: Data) -> int:
        b, n = self.recipe.batch_size, len(data.train)
        return sum(min(8 * b, n - p) // b for p in range(0, n, 8 * b))  # full batches of each pool

    def batches(self, data: Data, gen: torch.Generator) -> Iterator[Batch]:
        """Batches of recordings of similar length (sorted within shuffled pools of 8 batches), SpecAugment'ed."""
        from reszoo.speech.preprocess import pad_features
        from reszoo.speech.training import spec_augment

        b = self.recipe.batch_size
        order = torch.randperm(len(data.train), generator=gen)
        frames = data.train.inputs["frames"]
        batches = []
        for p in range(0, len(order), 8 * b):
            pool = order[p:p + 8 * b]
            pool = pool[torch.argsort(frames[pool], stable=True)]
            batches += [pool[i:i + b] for i in range(0, len(pool) - b + 1, b)]  # drop a pool's partial batch
        rng = _TorchRandom(gen)
        for k in torch.randperm(len(batches), generator=gen).tolist():
            split = data.train.take(batches[k])
            if self.recipe.spec_augment:
                kept = [spec_augment(split.inputs["feats"][i, : int(split.inputs["frames"][i])].clone(), rng)
                        for i in range(len(split))]
                feats, _ = pad_features(kept)
                yield {"feats": feats, "frames": torch.tensor([f.shape[0] for f in kept])}, split.targets
            else:
                yield self._unpad(split), split.targets

    def eval_batches(self, split: Split) -> Iterator[Batch]:
        order = torch.argsort(split.inputs["frames"], stable=True)  # similar lengths: little padding
        for i in range(0, len(order), 64):
            part = split.take(order[i:i + 64])
            yield self._unpad(part), part.targets

    def correlation_inputs(self, data: Data) -> Tensor | None:
        """Test recordings of at least ``correlation_frames`` frames, cut to that many (one shape, no padding)."""
        n = self.recipe.correlation_frames
        idx = [int(i) for i in data.lesion_idx if int(data.test.inputs["frames"][i]) >= n][:4]
        return data.test.inputs["feats"][idx, :n] if idx else None


class _TorchRandom:
    """``reszoo.speech.training.TorchRandom``'s draws (numpy's ``uniform``/``integers``) from the run's
    own generator, so that SpecAugment is seeded with the run."""

    def __init__(self, gen: torch.Generator) -> None:
        self.gen = gen

    def uniform(self, low: float, high: float) -> float:
        return low + (high - low) * float(torch.rand((), generator=self.gen))

    def integers(self, low: int, high: int) -> int:
        return int(torch.randint(low, high, (), generator=self.gen))


class _Unpadded(nn.Module):
    """The TDNN called with absolute frame counts (``frames``) instead of relative lengths, so that a
    batch's inputs can be sliced like any other tensor (lesions, gradient flow); or with features only."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, feats: Tensor, frames: Tensor | None = None) -> Tensor:
        lengths = None if frames is None else frames.double().div(feats.shape[1]).to(feats.dtype)
        return self.model(feats, lengths)


SWEEPS: dict[str, type] = {"text": TextSweep, "speech": SpeechSweep}
RECIPES: dict[str, type] = {"text": TextRecipe, "speech": SpeechRecipe}
