"""The fine-tuning loop, on Hugging Face ``accelerate``: one code path for one CPU, one GPU, DDP, many nodes.

The same program runs in every process that ``accelerate launch`` or ``torchrun`` starts.
``Accelerator.prepare`` wraps the model in DDP and shards each data loader by process; every
process sees the same seeded permutation each epoch (accelerate's seedable sampler, seeded by
``seed + epoch``) and takes its own batches of it, so a global step covers the same examples
as one process with the same global batch. Metrics are gathered (``gather_for_metrics``) or
summed (``reduce``) across processes; only the main process writes files and pushes.

Exact resume: each epoch ends with ``accelerator.save_state`` (model, optimizer, scheduler,
gradient scaler, every process's RNG states, accelerate's step counter) plus this loop's own
state (epoch, step, best score, early-stopping counter) in ``trainer_state.json``. A resumed run
loads them and goes on from the next epoch, so it ends with the same weights as an
uninterrupted run (tests/test_finetune.py checks this bit for bit).

Run folder (``out``)::

    .lock                    held by the run in progress: one run at a time (see runlock.py)
    run.json                 what was asked: model, data, the run's options, data fingerprint
    metrics.jsonl            one JSON record per epoch (and per ``log_every`` steps), then a summary
    summary.json             the final metrics
    checkpoints/epoch-NNNN/  accelerate state + trainer_state.json (the last ``keep_checkpoints``)
    checkpoints/best.safetensors   weights of the best validation epoch so far
    model.safetensors, config.json, README.md   the result, in reszoo's Hub format
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..cards import load_path
from ..registry import Entry, Metric, Source
from .adapters import Adapter, Collate, EncodedDataset, make_adapter
from .data import LabeledData, drop_unreadable, read_data, split_validation
from .options import (
    INVOCATION_OPTIONS,
    RUNTIME_OPTIONS,
    FinetuneError,
    FinetuneOptions,
    OptionsError,
    ResumeError,
    RunExistsError,
    saved_options,
)
from .runlock import LOCK_FILES, locked_run_folder

__all__ = ["run_finetune", "RUN_FILE", "METRICS_FILE", "SUMMARY_FILE", "CHECKPOINTS_DIR"]

logger = logging.getLogger(__name__)

RUN_FILE = "run.json"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
SAMPLE_IDS_FILE = "sample_ids.jsonl"
CHECKPOINTS_DIR = "checkpoints"
TRAINER_STATE = "trainer_state.json"
BEST_WEIGHTS = "best.safetensors"
# Everything a run writes into its folder: --overwrite removes these, and nothing else.
RUN_ARTIFACTS = (RUN_FILE, METRICS_FILE, SUMMARY_FILE, SAMPLE_IDS_FILE, CHECKPOINTS_DIR, "model.safetensors",
                 "config.json", "README.md", "adapter_config.json", "adapter_model.safetensors",
                 "learning_curve.png", "confusion_matrix.png")
_SPLIT_NAMES = {"train", "training", "trn", "val", "valid", "validation", "dev", "test", "data"}
TASKS = {"image": "image-classification", "text": "text-classification", "speech": "audio-classification"}


# =========================================================================== the run folder


def _folder_state(folder: Path) -> str:
    """absent | empty | run (holds run.json) | foreign (other files) | file."""
    if not folder.exists():
        return "absent"
    if not folder.is_dir():
        return "file"
    if (folder / RUN_FILE).is_file():
        return "run"
    return "foreign" if any(p.name not in LOCK_FILES for p in folder.iterdir()) else "empty"


def _check_out(folder: Path, opts: FinetuneOptions) -> str:
    state = _folder_state(folder)
    if state == "file":
        raise RunExistsError(f"--out {folder} is a file; give a folder for the run")
    if opts.resume:
        if state != "run":
            raise ResumeError(f"nothing to resume in {folder}: no {RUN_FILE} there (start the run without --resume)")
        return state
    if state == "run" and not opts.overwrite:
        raise RunExistsError(f"{folder} already holds a fine-tuning run; pass --resume to continue it or "
                             "--overwrite to start it again (its checkpoints, metrics and model are then replaced)")
    if state == "foreign" and not opts.overwrite:
        raise RunExistsError(f"{folder} is not empty and holds no run ({RUN_FILE}); choose a new folder, or pass "
                             "--overwrite (only a run's own files are replaced; other files stay)")
    return state


def _check_overlap(out: Path, data: dict[str, Any]) -> None:
    """Refuse a run folder that is, holds or lies inside a data folder or file: the run would
    write its checkpoints and model into the dataset (and --overwrite would delete from it)."""
    where = out.expanduser().resolve()
    for flag, source in data.items():
        if not isinstance(source, str | os.PathLike):
            continue  # in-memory pairs
        path = Path(source).expanduser().resolve()
        if path == where or where in path.parents or path in where.parents:
            relation = "is" if path == where else ("holds" if where in path.parents else "lies inside")
            raise OptionsError(f"--out {out} {relation} the {flag} {source}: the run would write its files "
                               "into the dataset; choose a run folder outside the data")


def _remove_run_artifacts(folder: Path) -> None:
    names = set(RUN_ARTIFACTS)
    try:  # what save_pretrained wrote besides the weights (a tokenizer, say), as the run recorded it
        names |= set(json.loads((folder / RUN_FILE).read_text(encoding="utf-8")).get("written", []))
    except (OSError, ValueError, AttributeError):
        pass
    for name in sorted(names):
        if "/" in name or name in (".", ".."):
            continue
        path = folder / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)


def _checkpoints(folder: Path) -> list[Path]:
    """Complete epoch checkpoints (they hold trainer_state.json), oldest first."""
    root = folder / CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if re.fullmatch(r"epoch-\d{4,}", p.name) and (p / TRAINER_STATE).is_file()]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


class MetricsLog:
    """``metrics.jsonl``: appended by the main process only."""

    def __init__(self, path: Path | None, enabled: bool) -> None:
        self.path = path if enabled else None

    def write(self, record: dict[str, Any]) -> None:
        if self.path is not None:
            with self.path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")

    def truncate_after(self, epoch: int) -> None:
        """Drop records of epochs after ``epoch`` (a resumed run redoes them)."""
        if self.path is None or not self.path.is_file():
            return
        kept = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by the interruption
            if record.get("event") in ("epoch", "step") and record.get("epoch", 0) > epoch:
                continue
            kept.append(line)
        self.path.write_text("".join(k + "\n" for k in kept), encoding="utf-8")


# =========================================================================== model


def base_entry(name: str) -> Entry:
    """The entry of a registry name/alias, a saved-model folder or ``hf://owner/name[@rev]``,
    without loading weights (the domain decides how the data is read)."""
    from ..api import CONFIG_FILE, _config_to_entry, _is_uri
    from ..hub import fetch_file
    from ..registry import get_entry

    if not _is_uri(name):
        return get_entry(name)
    if name.startswith("hf://"):
        repo, _, rev = name[len("hf://"):].partition("@")
        path = fetch_file(repo, CONFIG_FILE, revision=rev or None)
    else:
        path = Path(name) / CONFIG_FILE
    return _config_to_entry(json.loads(path.read_text(encoding="utf-8")), name)


def _head_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    prefixes = tuple(getattr(model, "head_prefixes", ()))
    return [(n, m) for n, m in model.named_modules() if n and (n + ".").startswith(prefixes)]


def _is_head(name: str, prefixes: tuple[str, ...]) -> bool:
    return (name + ".").startswith(prefixes) or name.startswith(prefixes)


def load_model(name: str, entry: Entry, classes: tuple[str, ...], opts: FinetuneOptions) -> tuple[nn.Module, str]:
    """The base model with a head for ``classes``; returns it and what happened to the head."""
    from ..api import load

    n = len(classes)
    same_classes = entry.labels is not None and tuple(entry.labels) == classes
    if opts.head == "keep" and entry.num_classes != n:
        raise OptionsError(f"head='keep' needs the base's {entry.num_classes} classes; the data has {n}")
    # A headless base gets a new head; a LoRA adapter base is merged first (a plain model to train).
    model = load(name, num_classes=n, pretrained=opts.pretrained, merge=True)
    if not hasattr(model, "head_prefixes") or not _head_modules(model):
        raise FinetuneError(f"{entry.name}: {type(model).__name__} names no classifier head (head_prefixes); "
                            "only classification models can be fine-tuned")
    if not opts.pretrained:
        return model, "random init (from scratch)"
    if entry.num_classes != n:
        return model, f"new head for {n} classes (the base has {entry.num_classes or 'none'})"
    if opts.head == "new" or (opts.head == "auto" and not same_classes):
        # Same number of classes, other classes: the base's class weights would only mislead.
        for _, module in _head_modules(model):
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
        return model, f"new head for {n} classes (the base's {n} classes are other ones)"
    return model, f"the base's head kept (the data has the base's {n} classes)"


def _apply_lora(model: nn.Module, opts: FinetuneOptions, head: str) -> tuple[nn.Module, str]:
    """LoRA adapters (reszoo/lora.py) on the base's layers; the head stays trainable in full."""
    from ..errors import InputError
    from ..lora import apply_lora, lora_summary

    try:
        apply_lora(model, rank=opts.lora_rank, alpha=opts.lora_alpha, dropout=opts.lora_dropout, targets=opts.lora_targets)
    except InputError as err:
        raise OptionsError(str(err)) from None
    return model, f"{head}; {lora_summary(model)}"


def _configure_trainable(model: nn.Module, opts: FinetuneOptions) -> int:
    if opts.lora:  # peft chose: the LoRA matrices and the head's trainable copy, nothing else
        return sum(p.numel() for p in model.parameters() if p.requires_grad)
    prefixes = tuple(model.head_prefixes)
    count = 0
    for name, param in model.named_parameters():
        param.requires_grad_(not opts.freeze_backbone or _is_head(name, prefixes))
        count += param.numel() if param.requires_grad else 0
    if count == 0:
        raise FinetuneError("no trainable parameters (the head has none?)")
    return count


def _set_train_mode(model: nn.Module, opts: FinetuneOptions) -> None:
    """Train mode, except what stays fixed: a frozen backbone (BN statistics and dropout
    included) and, with batchnorm='frozen', every BatchNorm's running statistics."""
    model.train()
    prefixes = tuple(model.head_prefixes)
    for name, module in model.named_modules():
        if opts.freeze_backbone and name and not _is_head(name, prefixes):
            module.eval()
        # With LoRA the statistics stay the base's too: the adapter saves none, so the saved model
        # would otherwise not be the one trained.
        if (opts.batchnorm == "frozen" or opts.lora) and isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()


def _param_groups(model: nn.Module, opts: FinetuneOptions) -> list[dict[str, Any]]:
    """AdamW groups: no weight decay on biases and normalisation scales (1-d parameters), as is
    usual; the head at ``head_lr`` when given (a fresh head learns faster than a trained backbone)."""
    prefixes = tuple(model.head_prefixes)
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            groups.setdefault((opts.head_lr is not None and _is_head(name, prefixes), p.ndim >= 2), []).append(p)
    return [{"params": params, "weight_decay": opts.weight_decay if decay else 0.0,
             "lr": opts.head_lr if head else opts.lr}
            for (head, decay), params in sorted(groups.items())]


def _freeze_unused(model: nn.Module, adapter: Adapter, dataset: EncodedDataset, collate: Collate) -> list[str]:
    """Freeze parameters that get no gradient (e.g. BERT's pooler under mean pooling): DDP needs
    every trainable parameter used, and an unused one is never updated anyway. Runs in eval
    mode, so no RNG and no BatchNorm statistics are touched."""
    was_training = model.training
    model.eval()
    batch = collate([dataset[i] for i in range(min(2, len(dataset)))])
    device = next(model.parameters()).device
    inputs = {k: v.to(device) for k, v in batch["inputs"].items()}
    adapter.forward(model, inputs).float().sum().backward()
    unused = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    for n, p in model.named_parameters():
        if n in unused:
            p.requires_grad_(False)
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return unused


def _schedule(opts: FinetuneOptions, total_steps: int) -> tuple[Any, int]:
    warmup = round(opts.warmup * total_steps) if opts.warmup < 1 else int(opts.warmup)
    warmup = min(warmup, total_steps)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if opts.schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        shape = 0.5 * (1 + math.cos(math.pi * progress)) if opts.schedule == "cosine" else 1 - progress
        return opts.min_lr_ratio + (1 - opts.min_lr_ratio) * shape

    return factor, warmup


# =========================================================================== metrics


def _summarise(loss_sum: float, preds: Tensor, targets: Tensor, num_classes: int,
               with_confusion: bool = False) -> dict[str, Any]:
    n = int(targets.numel())
    if n == 0:
        return {"loss": float("nan"), "accuracy": float("nan"), "macro_f1": float("nan"), "n": 0}
    confusion = torch.bincount(targets * num_classes + preds, minlength=num_classes * num_classes).view(num_classes, num_classes)
    tp = confusion.diag().double()
    precision = tp / confusion.sum(0).clamp(min=1)
    recall = tp / confusion.sum(1).clamp(min=1)
    f1 = torch.where(tp > 0, 2 * precision * recall / (precision + recall), torch.zeros_like(tp))
    present = confusion.sum(1) > 0  # macro average over the classes this split holds
    summary: dict[str, Any] = {
        "loss": loss_sum / n,
        "accuracy": float((preds == targets).double().mean()),
        "macro_f1": float(f1[present].mean()),
        "n": n,
    }
    if with_confusion:  # rows: true class, columns: predicted (for the run's figure)
        summary["confusion"] = confusion.tolist()
    return summary


def _evaluate(accelerator: Any, model: nn.Module, loader: Any, adapter: Adapter, num_classes: int,
              with_confusion: bool = False) -> dict[str, Any]:
    model.eval()
    losses, preds, targets = [], [], []
    with torch.no_grad():
        for batch in loader:
            logits = adapter.forward(model, batch["inputs"]).float()
            loss = F.cross_entropy(logits, batch["target"], reduction="none")
            # gather_for_metrics drops the samples accelerate repeated to even out the last batch.
            loss, pred, target = accelerator.gather_for_metrics((loss, logits.argmax(-1), batch["target"]))
            losses.append(loss.cpu())
            preds.append(pred.cpu())
            targets.append(target.cpu())
    return _summarise(float(torch.cat(losses).double().sum()), torch.cat(preds), torch.cat(targets), num_classes,
                      with_confusion)


# =========================================================================== the entry of the result


def _slug(text: str) -> str:
    slug = re.sub(r"[^a-z0-9._-]+", "-", text.lower()).strip("-._")
    return slug or "finetuned"


def _model_name(opts: FinetuneOptions, base: Entry) -> str:
    if opts.model_name:
        return _slug(opts.model_name)
    if opts.push_to:
        return _slug(opts.push_to.split("/")[1])
    if opts.out:
        return _slug(Path(opts.out).resolve().name)
    return f"{base.name}-finetuned"


def _dataset_name(opts: FinetuneOptions, train_data: Any) -> str:
    if opts.dataset_name:
        return opts.dataset_name
    if isinstance(train_data, str | os.PathLike):
        p = Path(train_data).resolve()
        name = p.stem if p.is_file() else p.name
        # data/fashion-mnist/train -> "fashion-mnist": a split's name says little about the dataset
        return p.parent.name if name.lower() in _SPLIT_NAMES and p.parent.name else name
    return "custom"


def _recipe(base: Entry, opts: FinetuneOptions, *, head: str, processes: int, n_train: int, val_note: str,
            steps: int, mixed_precision: str) -> str:
    warm = f"{opts.warmup:g} of the steps" if opts.warmup < 1 else f"{int(opts.warmup)} steps"
    what = "the new head only (backbone frozen)" if opts.freeze_backbone else "all layers"
    if opts.lora:
        what = (f"LoRA adapters (rank {opts.lora_rank}, alpha {opts.lora_alpha or 2 * opts.lora_rank:g}, dropout "
                f"{opts.lora_dropout:g}, on {' '.join(opts.lora_targets) if opts.lora_targets else 'the domain default layers'}) "
                "and the head in full, the base's weights and BatchNorm statistics frozen")
    parts = [
        (f"Fine-tuned from `{base.name}` with `{opts.script}` ({head}), training {what}." if opts.pretrained else
         f"Trained from scratch (random init) with the architecture of `{base.name}` by `{opts.script}`."),
        f"AdamW, lr {opts.lr:g}" + (f" (new head {opts.head_lr:g})" if opts.head_lr else "")
        + f", weight decay {opts.weight_decay:g} (not on biases/norms), linear warm-up over "
        f"{warm} then {opts.schedule} decay to {opts.min_lr_ratio:g}x; label smoothing {opts.label_smoothing:g}; "
        f"batch {opts.batch_size} x {processes} process(es) x {opts.grad_accum} accumulation step(s); "
        f"{opts.epochs} epoch(s) ({steps} optimizer steps) with seed {opts.seed}; BatchNorm {opts.batchnorm}; "
        f"mixed precision {mixed_precision}"
        + (f"; early stopping on validation {opts.monitor} (patience {opts.early_stopping})" if opts.early_stopping else "")
        + (f"; gradient norm clipped at {opts.max_grad_norm:g}" if opts.max_grad_norm else "") + ".",
        f"{n_train} training examples; {val_note}. The weights are those of the best validation epoch "
        "when there is validation data, else of the last epoch.",
    ]
    return "\n".join(parts)


def _saved_preprocess(base: Entry, opts: FinetuneOptions, weights: Any) -> dict[str, Any]:
    """The base's preprocess; for text, the tokenizer pinned to where the base model was loaded
    from (``weights``: the loaded base's; a registry repo and revision, an ``hf://`` repo at its
    commit, or a saved folder), since the text domain reads it from the weights' repo, which the
    new model's folder or Hub repo is not until save_pretrained copies it there."""
    preprocess = dict(base.preprocess)
    if base.domain == "text":
        spec = preprocess.get("tokenizer", {"file": "tokenizer.json"})
        spec = {"file": spec} if isinstance(spec, str) else dict(spec)
        if "repo" not in spec and weights is not None:
            spec["repo"] = weights.repo
            if weights.revision:
                spec["revision"] = weights.revision
        preprocess["tokenizer"] = spec
        if opts.max_length is not None:
            preprocess["max_length"] = opts.max_length
    return preprocess


_USAGE = {
    "image": 'probs = model(model.preprocess("image.png")).softmax(-1)\nprint(model.labels[int(probs.argmax())])',
    "text": 'probs = model(**model.preprocess(["a text to classify"])).softmax(-1)\nprint(model.labels[int(probs.argmax())])',
    "speech": 'print(model.classify("clip.wav", top_k=3))   # [(label, probability), ...]',
}


def _usage(domain: str, opts: FinetuneOptions) -> str:
    # The card replaces the load target with where the model is (its folder or Hub repo).
    where = f"hf://{opts.push_to}" if opts.push_to else (load_path(opts.out) if opts.out else "path/to/model")
    return f'model = reszoo.load("{where}")\n{_USAGE.get(domain, "")}'.rstrip()


def finetuned_entry(base: Entry, *, name: str, classes: tuple[str, ...], dataset: str, metrics: list[Metric],
                    opts: FinetuneOptions, recipe: str, preprocess: dict[str, Any],
                    facts: dict[str, Any] | None = None) -> Entry:
    """The new model's entry: what config.json and the card say.

    It states this run's facts (``metrics``, ``facts``: epochs, examples, time), never the
    base's: the base's metrics, ``extra`` facts (its epochs, training time, residual-vs-plain
    scores, token limits), tags and limitations describe the base's own training. What still
    holds (architecture, license, paper) stays; ``base_model`` links the base for the rest.
    """
    return dataclasses.replace(
        base,
        name=name,
        aliases=(),
        task=TASKS.get(base.domain, base.task),
        arch_args={**base.arch_args, "num_classes": len(classes)},
        weights=None,
        preprocess=preprocess,
        labels=classes,
        metrics=tuple(metrics),
        license=opts.license or base.license,
        dataset=(dataset,),
        recipe=recipe,
        description=(f"`{base.name}` fine-tuned on {dataset} ({len(classes)} classes)." if opts.pretrained else
                     f"The architecture of `{base.name}` trained from scratch on {dataset} ({len(classes)} classes)."),
        base_model=base.name if opts.pretrained else None,
        base=base.name if opts.lora else None,  # a LoRA adapter over the base (reszoo/lora.py)
        tags=("fine-tuned" if opts.pretrained else "trained-from-scratch", *(("lora", "peft") if opts.lora else ())),
        usage=_usage(base.domain, opts),
        extra=dict(facts or {}),
        # The base's plain twin, figures (files of its repo) and run-time settings measured for its
        # weights (a verification threshold) are not this model's.
        twin=None,
        figures={},
        runtime={},
        limitations=("Fine-tuned and evaluated only on the data named above (validation and test splits as "
                     "listed); accuracy on other data is not measured."),
    )


# =========================================================================== resume bookkeeping


def _fingerprint(data: LabeledData) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps([data.classes, data.ids, data.targets]).encode())
    return digest.hexdigest()


def _data_ref(source: Any) -> Any:
    return str(Path(source).resolve()) if isinstance(source, str | os.PathLike) else "<in-memory pairs>"


def _merge_resume(saved: dict[str, Any], given: dict[str, Any], name: str, train_data: Any,
                  val_data: Any) -> tuple[dict[str, Any], Any, Any]:
    """Options of the saved run, with the runtime ones given now; anything else given must agree."""
    conflicts = []
    if name != saved["model"]:
        conflicts.append(f"model {name!r} (the run fine-tunes {saved['model']!r})")
    for label, now, then in (("--data", train_data, saved["train_data"]), ("--val", val_data, saved["val_data"])):
        if now is not None and _data_ref(now) != then:
            conflicts.append(f"{label} {_data_ref(now)} (the run used {then})")
    # A run.json of an older reszoo also holds the invocation's options (overwrite, stop_after_epoch):
    # they belong to the invocation that saved them, never to this one.
    options = {k: v for k, v in saved["options"].items() if k not in INVOCATION_OPTIONS}
    for key, value in given.items():
        if key in RUNTIME_OPTIONS:
            options[key] = value
        elif options.get(key) != value:
            conflicts.append(f"{key}={value!r} (the run has {options.get(key)!r})")
    if conflicts:
        raise ResumeError("--resume continues the run as it was started; these differ: " + "; ".join(conflicts)
                          + ". Drop them, or start a new run (another --out, or --overwrite)")
    train = train_data if train_data is not None else saved["train_data"]
    val = val_data if val_data is not None else saved["val_data"]
    if train == "<in-memory pairs>":
        raise ResumeError("this run was trained on in-memory pairs: pass the same pairs again to resume it")
    return options, train, val


def _verify_rng_restored(accelerator: Any, checkpoint: Path) -> None:
    """accelerate logs (not raises) when it cannot restore RNG states; exact resume needs them."""
    from accelerate.utils.other import load

    path = checkpoint / f"random_states_{accelerator.process_index}.pkl"
    if not path.is_file():
        raise ResumeError(f"{checkpoint} holds no RNG state for process {accelerator.process_index} ({path.name}); "
                          "resume with the same number of processes, on a file system all nodes share")
    states = load(path)
    if not torch.equal(states["torch_manual_seed"], torch.get_rng_state()):
        raise ResumeError(f"could not restore the RNG state from {path}; the run cannot continue exactly")


# =========================================================================== the run


def _resolve_mixed_precision(opts: FinetuneOptions) -> str:
    cuda = torch.cuda.is_available() and not opts.cpu
    if opts.mixed_precision == "auto":
        if not cuda:
            return "no"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if opts.mixed_precision == "fp16" and not cuda:
        raise OptionsError("mixed_precision='fp16' needs a CUDA GPU; on CPU use 'no' (or 'bf16')")
    return opts.mixed_precision


def run_finetune(name: str, train_data: Any, val_data: Any, given: dict[str, Any]) -> Any:
    """Fine-tune ``name``; ``given`` are the options passed explicitly (see :class:`FinetuneOptions`).

    With a run folder, the run holds its lock from before the folder is first looked at until
    the end (see :mod:`.runlock`)."""
    opts = FinetuneOptions.from_kwargs(given)
    if opts.out is None:
        return _run(name, train_data, val_data, given, opts)
    out = Path(opts.out).expanduser()
    _check_overlap(out, {"--data": train_data, "--val": val_data, "--test": opts.test_data})
    from accelerate import PartialState

    # The process group (one process without a launcher), so that the processes agree on the lock.
    # Accelerator() below reuses it; ``cpu`` is an option of the invocation, the same in both.
    state = PartialState(cpu=opts.cpu)
    with locked_run_folder(out, state):
        return _run(name, train_data, val_data, given, opts)


def _run(name: str, train_data: Any, val_data: Any, given: dict[str, Any], opts: FinetuneOptions) -> Any:
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration, set_seed

    from . import FinetuneResult

    wall_start = time.perf_counter()
    out = Path(opts.out).expanduser() if opts.out else None
    saved = None
    if out is not None:
        _check_out(out, opts)
        if opts.resume:
            saved = json.loads((out / RUN_FILE).read_text(encoding="utf-8"))
            merged, train_data, val_data = _merge_resume(saved, given, name, train_data, val_data)
            opts = FinetuneOptions.from_kwargs(merged)
            _check_overlap(out, {"--data": train_data, "--val": val_data, "--test": opts.test_data})
    if train_data is None:
        raise OptionsError("no training data: give --data (train_data=)")

    mixed_precision = _resolve_mixed_precision(opts)
    accelerator = Accelerator(
        cpu=opts.cpu,
        mixed_precision=mixed_precision,
        gradient_accumulation_steps=opts.grad_accum,
        step_scheduler_with_optimizer=False,  # stepped once per optimizer step, below
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=opts.seed),
    )
    main = accelerator.is_main_process
    say = accelerator.print
    if not main:  # one copy of reszoo's warnings (e.g. the replaced head), not one per process
        logging.getLogger("reszoo").setLevel(logging.ERROR)
    processes = accelerator.num_processes
    if opts.batchnorm == "sync" and processes > 1 and accelerator.device.type != "cuda":
        raise OptionsError("batchnorm='sync' needs GPUs (torch's SyncBatchNorm); on CPU processes use 'frozen'")

    # ---- data (all checks before the run folder is touched)
    entry = base_entry(name)
    read = dict(text_column=opts.text_column, label_column=opts.label_column, delimiter=opts.delimiter,
                on_bad_file=opts.on_bad_file)
    train = read_data(train_data, entry.domain, role="train", **read)
    classes = train.classes
    val = read_data(val_data, entry.domain, role="validation", classes=classes, **read) if val_data is not None else None
    test = read_data(opts.test_data, entry.domain, role="test", classes=classes, **read) if opts.test_data else None
    held_out = val is None and opts.val_split > 0
    if val is None:
        train, val = split_validation(train, opts.val_split, opts.seed)
    if opts.early_stopping and val is None:
        raise OptionsError("early_stopping needs validation data: give --val, or a --val-split > 0")

    set_seed(opts.seed)  # before the head is initialised: the same head on every process and every run
    model, head = load_model(name, entry, classes, opts)
    if opts.lora:
        model, head = _apply_lora(model, opts, head)
        say(head)
    adapter = make_adapter(model, entry.domain, max_length=opts.max_length)
    unreadable = dict(on_bad_file=opts.on_bad_file, errors=adapter.read_errors)
    train, train_enc = drop_unreadable(train, adapter.encode, role="train", **unreadable)
    val_enc = test_enc = None
    if val is not None:
        val, val_enc = drop_unreadable(val, adapter.encode, role="validation", **unreadable)
    if test is not None:
        test, test_enc = drop_unreadable(test, adapter.encode, role="test", **unreadable)
    fingerprint = _fingerprint(train)
    if saved is not None and saved.get("fingerprint") != fingerprint:
        raise ResumeError(f"the training data changed since the run started ({saved.get('num_train')} examples "
                          f"then, {len(train)} now, or other files/labels); resume needs the same data")
    skipped = {"train": len(train.skipped), "validation": len(val.skipped) if val else 0,
               "test": len(test.skipped) if test else 0}
    for role, data in (("train", train), ("validation", val), ("test", test)):
        if data is not None and data.skipped:
            say(f"{role}: skipped {len(data.skipped)} unreadable or malformed record(s) in {data.source}, e.g. "
                f"{data.skipped[0][0]} ({data.skipped[0][1]})", file=sys.stderr)

    # ---- the run folder: every process has checked it; the main process changes it
    accelerator.wait_for_everyone()
    log = MetricsLog(out / METRICS_FILE if out else None, enabled=main)
    if out is not None and main:
        if opts.overwrite:
            _remove_run_artifacts(out)
        out.mkdir(parents=True, exist_ok=True)
        if saved is None:
            _write_json(out / RUN_FILE, {
                "model": name, "train_data": _data_ref(train_data),
                "val_data": _data_ref(val_data) if val_data is not None else None,
                "options": saved_options(opts), "fingerprint": fingerprint, "num_train": len(train),
                "classes": list(classes), "status": "running",
            })
    accelerator.wait_for_everyone()

    # ---- model, optimizer, loaders, schedule
    trainable = _configure_trainable(model, opts)
    collate = Collate(adapter)
    train_set = EncodedDataset(train, adapter, train_enc)
    if processes > 1:
        unused = _freeze_unused(model, adapter, train_set, collate)
        if unused:
            logger.info("frozen (unused by the forward pass): %s", ", ".join(unused))
    if opts.batchnorm == "sync" and processes > 1:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    optimizer = torch.optim.AdamW(_param_groups(model, opts), lr=opts.lr)
    loader_args = dict(collate_fn=collate, num_workers=opts.num_workers, pin_memory=accelerator.device.type == "cuda")
    train_loader = torch.utils.data.DataLoader(train_set, batch_size=opts.batch_size, shuffle=True, **loader_args)
    eval_loaders = {}
    for split, data, enc in (("validation", val, val_enc), ("test", test, test_enc)):
        if data is not None:
            eval_loaders[split] = torch.utils.data.DataLoader(EncodedDataset(data, adapter, enc),
                                                              batch_size=opts.batch_size, shuffle=False, **loader_args)
    wrapped, optimizer, train_loader = accelerator.prepare(model, optimizer, train_loader)
    eval_loaders = {k: accelerator.prepare(v) for k, v in eval_loaders.items()}
    steps_per_epoch = math.ceil(len(train_loader) / opts.grad_accum)
    total_steps = steps_per_epoch * opts.epochs
    factor, warmup_steps = _schedule(opts, total_steps)
    scheduler = accelerator.prepare(torch.optim.lr_scheduler.LambdaLR(optimizer, factor))
    unwrapped = accelerator.unwrap_model(wrapped)

    # ---- resume
    state: dict[str, Any] = {"epoch": 0, "global_step": 0, "best_epoch": None, "best": None, "bad_epochs": 0,
                             "history": [], "stopped_early": False}
    if opts.resume:
        checkpoints = _checkpoints(out)
        if checkpoints:
            last = checkpoints[-1]
            accelerator.load_state(str(last))
            _verify_rng_restored(accelerator, last)
            state = json.loads((last / TRAINER_STATE).read_text(encoding="utf-8"))
            say(f"resuming {out} after epoch {state['epoch']} (step {state['global_step']})")
        else:
            say(f"resuming {out}: no checkpoint was written yet, starting from epoch 1")
        if main:
            log.truncate_after(state["epoch"])
    prior_wall = float(state.get("wall_seconds", 0.0))  # of the invocations before this one
    log.write({"event": "resume" if opts.resume else "start", "epoch": state["epoch"], "model": name,
               "processes": processes, "device": str(accelerator.device), "mixed_precision": mixed_precision,
               "num_train": len(train), "num_val": len(val) if val else 0, "classes": len(classes),
               "trainable_params": trainable, "steps_per_epoch": steps_per_epoch, "head": head})

    # ---- train
    from tqdm.auto import tqdm

    monitor_sign = 1.0 if opts.monitor == "accuracy" else -1.0
    train_seconds, train_samples = 0.0, 0
    done = state["epoch"] >= opts.epochs or state["stopped_early"]
    stopped_by_request = False
    epoch = state["epoch"]
    while not done:
        epoch = state["epoch"] + 1
        train_loader.set_epoch(epoch - 1)  # the permutation is a function of seed + epoch alone
        _set_train_mode(unwrapped, opts)
        sums = torch.zeros(3, dtype=torch.float64, device=accelerator.device)  # loss sum, correct, count
        seen_ids: list[int] = []
        bar = tqdm(total=len(train_loader), desc=f"epoch {epoch}/{opts.epochs}", unit="batch", leave=True,
                   disable=not (main and opts.progress), dynamic_ncols=True,
                   mininterval=0.5 if sys.stderr.isatty() else 30.0, file=sys.stderr)
        step_sums = torch.zeros(2, dtype=torch.float64, device=accelerator.device)
        start = time.perf_counter()
        for batch in train_loader:
            with accelerator.accumulate(wrapped):
                logits = adapter.forward(wrapped, batch["inputs"]).float()
                loss = F.cross_entropy(logits, batch["target"], label_smoothing=opts.label_smoothing)
                accelerator.backward(loss)
                if accelerator.sync_gradients and opts.max_grad_norm:
                    accelerator.clip_grad_norm_(wrapped.parameters(), opts.max_grad_norm)
                optimizer.step()
                if accelerator.sync_gradients and not accelerator.optimizer_step_was_skipped:
                    scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            n = batch["target"].numel()
            with torch.no_grad():
                sums += torch.stack([loss.detach().double() * n, (logits.argmax(-1) == batch["target"]).sum().double(),
                                     torch.tensor(float(n), dtype=torch.float64, device=sums.device)])
                step_sums += torch.stack([loss.detach().double() * n, torch.tensor(float(n), dtype=torch.float64, device=sums.device)])
            if opts.log_sample_ids:
                seen_ids += batch["index"].tolist()
            if accelerator.sync_gradients:
                state["global_step"] += 1
                if opts.log_every and state["global_step"] % opts.log_every == 0:
                    totals = accelerator.reduce(step_sums, reduction="sum")
                    log.write({"event": "step", "epoch": epoch, "step": state["global_step"],
                               "loss": float(totals[0] / totals[1]), "lr": scheduler.get_last_lr()[0]})
                    step_sums.zero_()
            elapsed = time.perf_counter() - start
            bar.update(1)
            bar.set_postfix(loss=f"{float(sums[0] / sums[2]):.4f}",
                            samples_s=f"{float(sums[2]) * processes / max(elapsed, 1e-9):.0f}", refresh=False)
        bar.close()
        seconds = time.perf_counter() - start
        totals = accelerator.reduce(sums, reduction="sum")
        count = int(totals[2])
        train_seconds += seconds
        train_samples += count
        record: dict[str, Any] = {
            "event": "epoch", "epoch": epoch, "step": state["global_step"], "lr": scheduler.get_last_lr()[0],
            "train_loss": float(totals[0] / count), "train_accuracy": float(totals[1] / count),
            "train_samples": count, "seconds": round(seconds, 3), "samples_per_s": round(count / seconds, 1),
        }
        if opts.log_sample_ids:
            from accelerate.utils import gather_object

            gathered = gather_object([{"rank": accelerator.process_index, "ids": seen_ids}])
            if main and out is not None:
                with (out / SAMPLE_IDS_FILE).open("a", encoding="utf-8") as f:
                    for item in gathered:
                        f.write(json.dumps({"epoch": epoch, **item}) + "\n")
        if "validation" in eval_loaders:
            metrics = _evaluate(accelerator, wrapped, eval_loaders["validation"], adapter, len(classes))
            record.update({f"val_{k}": v for k, v in metrics.items()})
            score = monitor_sign * metrics[opts.monitor]
            if state["best"] is None or score > state["best"]:
                state.update(best=score, best_epoch=epoch, bad_epochs=0)
                record["best"] = True
                if main and out is not None:
                    _save_weights(unwrapped, out / CHECKPOINTS_DIR / BEST_WEIGHTS)
                elif out is None:
                    state["best_weights"] = {k: v.detach().clone() for k, v in unwrapped.state_dict().items()}
            else:
                state["bad_epochs"] += 1
            if opts.early_stopping and state["bad_epochs"] >= opts.early_stopping:
                state["stopped_early"] = True
        state["epoch"] = epoch
        state["history"].append(record)
        log.write(record)
        say(_epoch_line(record, opts.epochs))
        done = epoch >= opts.epochs or state["stopped_early"]
        state["wall_seconds"] = round(prior_wall + time.perf_counter() - wall_start, 3)
        if out is not None:
            _save_checkpoint(accelerator, out, epoch, state, opts.keep_checkpoints)
        if state["stopped_early"]:
            say(f"early stopping: validation {opts.monitor} has not improved for {opts.early_stopping} epoch(s)")
        if not done and opts.stop_after_epoch is not None and epoch >= opts.stop_after_epoch:
            stopped_by_request = True
            break

    if stopped_by_request:
        say(f"stopped after epoch {epoch} as asked; continue with --resume (resume=True)")
        accelerator.wait_for_everyone()
        return FinetuneResult(model=unwrapped, metrics=dict(state["history"][-1]), history=list(state["history"]),
                              out=out, entry=None, completed=False)

    # ---- the result: best validation epoch's weights, test metrics, the saved model
    accelerator.wait_for_everyone()
    if state["best_epoch"] is not None:
        if out is not None:
            from safetensors.torch import load_file

            # Read on the CPU: load_state_dict copies onto the model's own device. (safetensors
            # refuses accelerate's "cpu:0", the device of CPU processes under torchrun.)
            unwrapped.load_state_dict(load_file(out / CHECKPOINTS_DIR / BEST_WEIGHTS))
        elif "best_weights" in state:
            unwrapped.load_state_dict(state.pop("best_weights"))
    chosen = next((r for r in state["history"] if r["epoch"] == state["best_epoch"]), state["history"][-1])
    final: dict[str, Any] = {k: v for k, v in chosen.items() if k.startswith("val_")}
    final["best_epoch"] = state["best_epoch"]
    confusion = None  # (split, matrix) for the run's figure: the test split's, else the validation's
    if "test" in eval_loaders:
        test_metrics = _evaluate(accelerator, wrapped, eval_loaders["test"], adapter, len(classes), with_confusion=True)
        confusion = ("test", test_metrics.pop("confusion"))
        final.update({f"test_{k}": v for k, v in test_metrics.items()})
    elif "validation" in eval_loaders and out is not None:
        confusion = ("validation", _evaluate(accelerator, wrapped, eval_loaders["validation"], adapter, len(classes),
                                             with_confusion=True)["confusion"])
    unwrapped.eval()

    dataset = _dataset_name(opts, train_data)
    val_note = (f"validated on {len(val)} examples" + (f" (a seeded {opts.val_split:g} stratified hold-out of the "
                "training data)" if held_out else f" ({Path(str(val_data)).name})")) if val is not None else "no validation data"
    note = f"fine-tuned from {entry.name}" if opts.pretrained else f"{entry.name}'s architecture, from scratch"
    metrics = []
    for split in ("val", "test"):
        for key, label in (("accuracy", "accuracy (%)"), ("macro_f1", "macro-F1 (%)")):
            if f"{split}_{key}" in final:
                # In percent, as the registry's accuracies are; summary.json keeps fractions.
                metrics.append(Metric(dataset=dataset, split="validation" if split == "val" else "test", metric=key,
                                      value=round(100 * float(final[f"{split}_{key}"]), 4), name=label,
                                      source=Source(kind="measured", script=opts.script, note=note)))
    preprocess = _saved_preprocess(entry, opts, getattr(unwrapped.entry, "weights", None))
    epochs_run = state["epoch"]
    # This run's facts for the card, over every invocation of a resumed run (the history is restored).
    facts = {"epochs": epochs_run, "best_epoch": state["best_epoch"], "train_examples": len(train),
             "validation_examples": len(val) if val else 0, "test_examples": len(test) if test else None,
             "skipped_files": sum(skipped.values()), "processes": processes,
             "train_seconds": round(sum(r["seconds"] for r in state["history"]), 2),
             "wall_seconds": round(prior_wall + time.perf_counter() - wall_start, 2)}
    new_entry = finetuned_entry(
        entry, name=_model_name(opts, entry), classes=classes, dataset=dataset, metrics=metrics, opts=opts,
        recipe=_recipe(entry, opts, head=head, processes=processes, n_train=len(train), val_note=val_note,
                       steps=total_steps, mixed_precision=mixed_precision),
        preprocess=preprocess, facts={k: v for k, v in facts.items() if v is not None},
    )
    figure_paths: dict[str, Path] = {}
    if main and out is not None:  # --- the figures (reszoo/finetune/plots.py), carried with the model and its card
        from .plots import write_figures

        figure_paths = write_figures(out, state["history"], confusion, classes, model_name=new_entry.name)
        new_entry = dataclasses.replace(new_entry, figures={k: p.name for k, p in figure_paths.items()})
        unwrapped.figure_files = {p.name: p for p in figure_paths.values()}
    unwrapped.entry, unwrapped.labels = new_entry, classes
    summary = {
        "model": new_entry.name, "base_model": entry.name, "dataset": dataset, "classes": list(classes),
        "num_train": len(train), "num_val": len(val) if val else 0, "num_test": len(test) if test else 0,
        "skipped": skipped, "epochs_run": epochs_run, "stopped_early": state["stopped_early"],
        "global_steps": state["global_step"], "processes": processes, "device": str(accelerator.device),
        "mixed_precision": mixed_precision, "head": head, "pretrained": opts.pretrained, **final,
        "train_seconds": round(train_seconds, 2), "wall_seconds": round(time.perf_counter() - wall_start, 2),
        "train_samples_per_s": round(train_samples / train_seconds, 1) if train_seconds else None,
        "out": str(out) if out else None,
    }
    if main and out is not None:
        from ..api import save_pretrained

        before = {p.name for p in out.iterdir()}
        save_pretrained(unwrapped, out, entry=new_entry, repo_id=opts.push_to)
        written = sorted({p.name for p in out.iterdir()} - before | {p.name for p in figure_paths.values()})
        if opts.push_to:
            from ..api import push

            summary["pushed"] = {"repo": opts.push_to,
                                 "commit": push(unwrapped, opts.push_to, entry=new_entry, private=opts.private or None)}
        _write_json(out / SUMMARY_FILE, summary)
        log.write({"event": "summary", **summary})
        run_info = json.loads((out / RUN_FILE).read_text(encoding="utf-8"))
        written = sorted(set(run_info.get("written", [])) | set(written))
        _write_json(out / RUN_FILE, {**run_info, "status": "complete", "written": written})
    elif main and opts.push_to:
        from ..api import push

        summary["pushed"] = {"repo": opts.push_to,
                             "commit": push(unwrapped, opts.push_to, entry=new_entry, private=opts.private or None)}
    accelerator.wait_for_everyone()
    say(_summary_line(summary))
    return FinetuneResult(model=unwrapped, metrics=summary, history=list(state["history"]), out=out, entry=new_entry,
                          completed=True)


def _save_weights(model: nn.Module, path: Path) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}, tmp)
    tmp.replace(path)


def _save_checkpoint(accelerator: Any, out: Path, epoch: int, state: dict[str, Any], keep: int) -> None:
    """accelerate's state into a partial folder, renamed when every process has written its part,
    so an interruption never leaves a half-written checkpoint that looks complete."""
    root = out / CHECKPOINTS_DIR
    final = root / f"epoch-{epoch:04d}"
    partial = root / f".epoch-{epoch:04d}.partial"
    if accelerator.is_main_process and partial.exists():
        shutil.rmtree(partial)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(partial))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        _write_json(partial / TRAINER_STATE, {k: v for k, v in state.items() if k != "best_weights"})
        if final.exists():
            shutil.rmtree(final)
        partial.rename(final)
        for old in _checkpoints(out)[:-keep]:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _epoch_line(record: dict[str, Any], epochs: int) -> str:
    parts = [f"epoch {record['epoch']}/{epochs}", f"train_loss {_fmt(record['train_loss'])}",
             f"train_acc {_fmt(record['train_accuracy'])}"]
    if "val_accuracy" in record:
        parts += [f"val_loss {_fmt(record['val_loss'])}", f"val_acc {_fmt(record['val_accuracy'])}",
                  f"val_f1 {_fmt(record['val_macro_f1'])}"]
    parts += [f"{record['samples_per_s']:.0f} samples/s", f"{record['seconds']:.1f} s"]
    return "  ".join(parts) + ("  *best*" if record.get("best") else "")


def _summary_line(summary: dict[str, Any]) -> str:
    what = (f"fine-tuned {summary['base_model']}" if summary["pretrained"] else
            f"trained {summary['base_model']}'s architecture from scratch")
    lines = [f"{what} on {summary['dataset']}: {len(summary['classes'])} classes, "
             f"{summary['num_train']} train / {summary['num_val']} validation / {summary['num_test']} test examples"
             f" ({sum(summary['skipped'].values())} skipped), {summary['epochs_run']} epoch(s)"
             + (" (stopped early)" if summary["stopped_early"] else "")]
    if summary.get("best_epoch"):
        lines.append(f"best epoch {summary['best_epoch']}: validation accuracy {_fmt(summary['val_accuracy'])}, "
                     f"macro-F1 {_fmt(summary['val_macro_f1'])}, loss {_fmt(summary['val_loss'])}")
    if "test_accuracy" in summary:
        lines.append(f"test accuracy {_fmt(summary['test_accuracy'])}, macro-F1 {_fmt(summary['test_macro_f1'])}")
    if summary["out"]:
        lines.append(f"saved to {summary['out']}: reszoo.load({load_path(summary['out'])!r})")
    if "pushed" in summary:
        lines.append(f"pushed to {summary['pushed']['repo']} at commit {summary['pushed']['commit']}")
    trained = (f"{summary['train_seconds']:.1f} s training ({summary['train_samples_per_s']} samples/s)"
               if summary["train_seconds"] else "no epoch left to train (the run was complete)")
    lines.append(f"{trained}, {summary['wall_seconds']:.1f} s in all, {summary['processes']} process(es) on {summary['device']}")
    return "\n".join(lines)
