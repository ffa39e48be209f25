"""Fine-tuning a :class:`~reszoo.text.models.TextEncoder` classifier on labelled texts (CPU-friendly).

Small, reusable pieces: read a ``label<TAB>text`` file, split off a stratified validation set,
batch by length (each batch pads only to its own longest text, which on short queries is most of
the saving), and a plain AdamW loop with linear warm-up and decay. ``scripts/train_minilm_banking77.py``
is the recipe built on them.
"""

from __future__ import annotations

import csv
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from .models import TextEncoder
from .preprocess import TextPreprocess

__all__ = [
    "LabelledTexts",
    "TrainConfig",
    "TrainResult",
    "evaluate_accuracy",
    "length_batches",
    "read_labelled_tsv",
    "read_label_names",
    "stratified_split",
    "train_classifier",
]


@dataclass(frozen=True)
class LabelledTexts:
    texts: list[str]
    labels: list[int]

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, indices: Sequence[int]) -> LabelledTexts:
        return LabelledTexts([self.texts[i] for i in indices], [self.labels[i] for i in indices])


def read_label_names(path: str | Path) -> list[str]:
    """One label name a line (line number - 1 = class id)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"label file not found: {path}")
    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: duplicate label names")
    return names


def read_labelled_tsv(path: str | Path, label_names: Sequence[str]) -> LabelledTexts:
    """A ``label<TAB>text`` file with a header line (BANKING77's layout); labels by name."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    ids = {name: i for i, name in enumerate(label_names)}
    texts, labels = [], []
    with path.open(encoding="utf-8", newline="") as f:
        rows = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(rows, None)
        if header != ["label", "text"]:
            raise ValueError(f"{path}: expected the header 'label<TAB>text', got {header!r}")
        for line, row in enumerate(rows, start=2):
            if len(row) != 2:
                raise ValueError(f"{path}:{line}: expected 2 tab-separated fields, got {len(row)}")
            if row[0] not in ids:
                raise ValueError(f"{path}:{line}: unknown label {row[0]!r}")
            labels.append(ids[row[0]])
            texts.append(row[1])
    return LabelledTexts(texts, labels)


def stratified_split(labels: Sequence[int], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(keep, held_out) indices; ``fraction`` of every class (at least one) is held out."""
    rng = random.Random(seed)
    by_class: dict[int, list[int]] = {}
    for i, y in enumerate(labels):
        by_class.setdefault(y, []).append(i)
    keep, held = [], []
    for y in sorted(by_class):
        idx = by_class[y][:]
        rng.shuffle(idx)
        n = max(1, round(len(idx) * fraction))
        held += idx[:n]
        keep += idx[n:]
    return sorted(keep), sorted(held)


def length_batches(lengths: Sequence[int], batch_size: int, rng: random.Random, *, pool: int = 50) -> list[list[int]]:
    """Shuffled batches of similar lengths: shuffle, sort within pools of ``pool`` batches, split,
    shuffle the batches. Randomness stays (pools differ each epoch); padding nearly vanishes."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    batches = []
    chunk = batch_size * pool
    for start in range(0, len(order), chunk):
        block = sorted(order[start:start + chunk], key=lambda i: lengths[i])
        batches += [block[i:i + batch_size] for i in range(0, len(block), batch_size)]
    rng.shuffle(batches)
    return batches


@dataclass
class TrainConfig:
    epochs: int = 4
    batch_size: int = 32
    lr: float = 1e-4  # encoder
    head_lr: float = 1e-3  # the new classifier starts from scratch: a larger step
    weight_decay: float = 0.01
    warmup: float = 0.06  # fraction of all steps
    freeze_embeddings: bool = True  # the 11.7M-entry word table: most of the optimizer's work, little gain
    seed: int = 0
    log_every: int = 50
    max_steps: int | None = None  # stop early (tests)


@dataclass
class TrainResult:
    steps: int
    losses: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)
    best_epoch: int | None = None
    wall_seconds: float = 0.0
    config: dict[str, Any] = field(default_factory=dict)


@torch.inference_mode()
def evaluate_accuracy(model: TextEncoder, preprocess: TextPreprocess, data: LabelledTexts, *,
                      batch_size: int = 128) -> float:
    """Top-1 accuracy (in [0, 1]); length-sorted batches, eval mode restored afterwards."""
    was_training = model.training
    model.eval()
    encodings = preprocess.tokenize(data.texts)
    order = sorted(range(len(encodings)), key=lambda i: len(encodings[i].ids))
    correct = 0
    try:
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            batch = preprocess.collate([encodings[i] for i in idx])
            pred = model(**batch).argmax(-1)
            correct += int((pred == torch.tensor([data.labels[i] for i in idx])).sum())
    finally:
        model.train(was_training)
    return correct / len(data)


def _optimizer(model: TextEncoder, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.freeze_embeddings:
        model.embeddings.word.weight.requires_grad_(False)
    decay, no_decay, head = [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if name.startswith(model.head_prefixes):
            head.append(p)
        elif p.ndim < 2:  # biases and LayerNorm: no weight decay (BERT's convention)
            no_decay.append(p)
        else:
            decay.append(p)
    return torch.optim.AdamW([
        {"params": decay, "lr": cfg.lr, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "lr": cfg.lr, "weight_decay": 0.0},
        {"params": head, "lr": cfg.head_lr, "weight_decay": cfg.weight_decay},
    ])


def train_classifier(model: TextEncoder, preprocess: TextPreprocess, train: LabelledTexts,
                     val: LabelledTexts | None = None, cfg: TrainConfig | None = None,
                     log: Callable[[str], None] = print) -> TrainResult:
    """Fine-tune ``model`` (which has a ``num_classes`` head) on ``train``; if ``val`` is given,
    evaluate it after every epoch and end with the weights of the best epoch."""
    cfg = cfg or TrainConfig()
    if model.head is None:
        raise ValueError("train_classifier needs a model with a classification head (num_classes)")
    bad = [y for y in set(train.labels) if not 0 <= y < model.num_classes]
    if bad:
        raise ValueError(f"labels {sorted(bad)[:5]} are outside the model's {model.num_classes} classes")
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    encodings = preprocess.tokenize(train.texts)
    lengths = [len(e.ids) for e in encodings]
    steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs if cfg.max_steps is None else min(cfg.max_steps, steps_per_epoch * cfg.epochs)
    warmup = max(1, round(total * cfg.warmup))
    opt = _optimizer(model, cfg)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warmup if s < warmup else max(0.0, (total - s) / max(1, total - warmup)))
    result = TrainResult(steps=0, config=asdict(cfg))
    best_state: dict[str, torch.Tensor] | None = None
    best_acc = -1.0
    start = time.perf_counter()
    model.train()
    for epoch in range(cfg.epochs):
        running, seen = 0.0, 0
        for idx in length_batches(lengths, cfg.batch_size, rng):
            batch = preprocess.collate([encodings[i] for i in idx])
            target = torch.tensor([train.labels[i] for i in idx])
            loss = F.cross_entropy(model(**batch), target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            result.steps += 1
            value = loss.item()
            result.losses.append(value)
            running, seen = running + value, seen + 1
            if cfg.log_every and result.steps % cfg.log_every == 0:
                log(f"epoch {epoch + 1} step {result.steps}/{total} loss {running / seen:.4f} "
                    f"({time.perf_counter() - start:.0f}s)")
                running, seen = 0.0, 0
            if result.steps >= total:
                break
        if val is not None:
            acc = evaluate_accuracy(model, preprocess, val)
            result.val_accuracy.append(acc)
            log(f"epoch {epoch + 1}: validation accuracy {acc:.4f} ({time.perf_counter() - start:.0f}s)")
            if acc > best_acc:
                best_acc, result.best_epoch = acc, epoch + 1
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if result.steps >= total:
            break
    if best_state is not None and result.best_epoch != len(result.val_accuracy):
        model.load_state_dict(best_state)
        log(f"restored the weights of epoch {result.best_epoch} (best validation accuracy {best_acc:.4f})")
    model.eval()
    result.wall_seconds = time.perf_counter() - start
    return result
