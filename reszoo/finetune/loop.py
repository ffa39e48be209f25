"""The training loop, on Hugging Face ``accelerate``: epochs of optimizer steps, evaluation,
best-epoch tracking, early stopping and a checkpoint per epoch.

The same program runs in every process that ``accelerate launch`` or ``torchrun`` starts.
``Accelerator.prepare`` wraps the model in DDP and shards each data loader by process; every
process sees the same seeded permutation each epoch (accelerate's seedable sampler, seeded by
``seed + epoch``) and takes its own batches of it, so a global step covers the same examples
as one process with the same global batch. Metrics are gathered (``gather_for_metrics``) or
summed (``reduce``) across processes; only the main process writes files.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .adapters import Adapter, Collate, EncodedDataset
from .batches import LengthGroupedBatchSampler, TensorRows
from .model import param_groups, set_train_mode
from .options import FinetuneOptions, OptionsError
from .rundir import BEST_WEIGHTS, CHECKPOINTS_DIR, SAMPLE_IDS_FILE, MetricsLog, save_checkpoint, save_weights

__all__ = ["Loop", "Trained", "as_float", "bf16_supported", "evaluate", "make_accelerator", "prepare_loop",
           "resolve_criterion", "train"]

HIGHER_IS_BETTER = frozenset({"accuracy", "macro_f1"})  # validation metrics to maximise; the rest are minimised


def as_float(outputs: Any) -> Any:
    """The model's outputs with floating tensors in float32 (logits, or a tuple such as
    ``(log_probs, lengths)`` for a sequence criterion; integer tensors stay as they are)."""
    if isinstance(outputs, Tensor):
        return outputs.float() if outputs.is_floating_point() else outputs
    if isinstance(outputs, tuple | list):
        return type(outputs)(as_float(o) for o in outputs)
    return outputs


def scores_sequences(criterion: Any) -> bool:
    """Whether ``criterion`` scores its own outputs (a sequence criterion: ``counts`` and
    ``summarise``, see :func:`evaluate`) rather than class logits."""
    return callable(getattr(criterion, "counts", None)) and callable(getattr(criterion, "summarise", None))


def resolve_monitor(opts: FinetuneOptions, criterion: Any) -> str:
    """The validation metric that picks the best epoch: ``opts.monitor``, else the criterion's
    (``criterion.monitor``), else accuracy; it must be one the criterion's evaluation reports."""
    sequence = scores_sequences(criterion)
    monitor = opts.monitor or (getattr(criterion, "monitor", None) if sequence else None) or "accuracy"
    known = ("loss", *getattr(criterion, "metric_labels", {})) if sequence else ("accuracy", "macro_f1", "loss")
    if monitor not in known:
        raise OptionsError(f"monitor {monitor!r}: this run's validation reports {', '.join(known)}")
    return monitor


@lru_cache(maxsize=None)
def _cpu_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def bf16_supported(device: str | torch.device) -> bool:
    """Whether bf16 autocast is fast on ``device``: CUDA GPUs with bf16 (Ampere and later), or
    CPUs with bf16 instructions (AVX512-BF16 or AMX, from /proc/cpuinfo); elsewhere it is emulated
    and slower than float32."""
    kind = torch.device(device).type
    if kind == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return kind == "cpu" and bool(_cpu_flags() & {"avx512_bf16", "amx_bf16"})


def _resolve_mixed_precision(opts: FinetuneOptions) -> str:
    cuda = torch.cuda.is_available() and not opts.cpu
    if opts.mixed_precision == "auto":
        if not cuda:
            return "no"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if opts.mixed_precision == "fp16" and not cuda:
        raise OptionsError("mixed_precision='fp16' needs a CUDA GPU; on CPU use 'no' (or 'bf16')")
    return opts.mixed_precision


def make_accelerator(opts: FinetuneOptions) -> tuple[Any, str]:
    """The run's Accelerator and the mixed precision it runs with."""
    from accelerate import Accelerator, PartialState
    from accelerate.state import AcceleratorState
    from accelerate.utils import DataLoaderConfiguration

    mixed_precision = _resolve_mixed_precision(opts)
    # accelerate keeps the first run's precision in a process-wide singleton and refuses another one;
    # one process may well run several fine-tunes (a notebook, a script comparing recipes). Without a
    # launcher that state is this run's alone, so it starts afresh; under one, every run of the
    # launch shares it.
    if AcceleratorState._shared_state and PartialState().num_processes == 1:
        AcceleratorState._reset_state()
    accelerator = Accelerator(
        cpu=opts.cpu,
        mixed_precision=mixed_precision,
        gradient_accumulation_steps=opts.grad_accum,
        step_scheduler_with_optimizer=False,  # stepped once per optimizer step, below
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=opts.seed),
    )
    return accelerator, mixed_precision


def _scheduler(optimizer: Any, opts: FinetuneOptions, total_steps: int) -> Any:
    if opts.schedule == "onecycle":
        # torch's one-cycle: from lr/25 up to lr over the warm-up fraction, cosine down to lr/25e4;
        # momentum (or Adam's beta1) cycles the other way, 0.95 -> 0.85 -> 0.95.
        pct = opts.warmup if opts.warmup < 1 else opts.warmup / max(1, total_steps)
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=[g["lr"] for g in optimizer.param_groups],
                                                   total_steps=max(1, total_steps), pct_start=min(pct, 1.0))
    factor, _ = _schedule(opts, total_steps)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _optimizer(model: nn.Module, opts: FinetuneOptions) -> torch.optim.Optimizer:
    groups = param_groups(model, opts)
    if opts.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=opts.lr, momentum=opts.momentum, nesterov=opts.momentum > 0)
    return torch.optim.AdamW(groups, lr=opts.lr)


def resolve_criterion(opts: FinetuneOptions, domain: str, task: str | None = None) -> Callable[[Any, Tensor], Tensor]:
    """The training loss: cross-entropy, a callable, or a criterion the domain names in the
    ``CRITERIA`` of its optional ``training.py`` (see reszoo/domains.py); without one given, the
    criterion the domain's fine-tuning spec for ``task`` names, else cross-entropy."""
    from .. import domains

    name = opts.criterion
    if name is None and domain:
        spec = domains.get(domain).finetune_spec(task)
        name = spec.criterion if spec is not None else None
    if name is None:
        smoothing = opts.label_smoothing
        return lambda logits, target: F.cross_entropy(logits, target, label_smoothing=smoothing)
    if callable(name):
        return name
    training = domains.get(domain).module("training", required=False) if domain else None
    known = getattr(training, "CRITERIA", {}) if training is not None else {}
    if name not in known:
        raise OptionsError(f"criterion {name!r}: the {domain} domain provides "
                           + (f"only {', '.join(sorted(known))}" if known else "no named criteria")
                           + "; give a callable (logits, target) -> loss, or leave it out for cross-entropy")
    return known[name]()


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


# --------------------------------------------------------------------------- metrics


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


def _evaluate_sequences(loop: Loop, split: str) -> dict[str, Any]:
    """A sequence criterion's metrics on ``split``: its ``counts(outputs, target)`` (a 1-d tensor
    of sums, e.g. loss, errors, reference words, examples) summed over batches and processes,
    then ``summarise(counts) -> {"loss", ..., "n"}``. Under several processes the few examples
    accelerate repeats to even out the last batch are counted twice."""
    accelerator, model, criterion = loop.accelerator, loop.model, loop.criterion
    model.eval()
    total: Tensor | None = None
    with torch.no_grad():
        for batch in loop.eval_loaders[split]:
            outputs = as_float(loop.adapter.forward(model, loop.model_inputs(batch["inputs"])))
            counts = criterion.counts(outputs, batch["target"]).double().to(accelerator.device)
            total = counts if total is None else total + counts
    if total is None:
        raise ValueError(f"the {split} split has no batches")
    return criterion.summarise(accelerator.reduce(total, reduction="sum").cpu())


def evaluate(loop: Loop, split: str, with_confusion: bool = False) -> dict[str, Any]:
    """Cross-entropy loss, accuracy and macro-F1 of the model on the ``split`` loader, over all
    processes; for a sequence criterion its own metrics (:func:`_evaluate_sequences`)."""
    if scores_sequences(loop.criterion):
        return _evaluate_sequences(loop, split)
    accelerator, model = loop.accelerator, loop.model
    model.eval()
    losses, preds, targets = [], [], []
    with torch.no_grad():
        for batch in loop.eval_loaders[split]:
            logits = loop.adapter.forward(model, loop.model_inputs(batch["inputs"])).float()
            loss = F.cross_entropy(logits, batch["target"], reduction="none")
            # gather_for_metrics drops the samples accelerate repeated to even out the last batch.
            loss, pred, target = accelerator.gather_for_metrics((loss, logits.argmax(-1), batch["target"]))
            losses.append(loss.cpu())
            preds.append(pred.cpu())
            targets.append(target.cpu())
    return _summarise(float(torch.cat(losses).double().sum()), torch.cat(preds), torch.cat(targets), loop.num_classes,
                      with_confusion)


# --------------------------------------------------------------------------- setup


@dataclass
class Loop:
    """What the loop runs with, after ``accelerator.prepare``."""

    accelerator: Any
    model: nn.Module  # as prepared (DDP-wrapped under several processes)
    unwrapped: nn.Module
    optimizer: Any
    scheduler: Any
    train_loader: Any
    eval_loaders: dict[str, Any]
    adapter: Adapter
    num_classes: int
    opts: FinetuneOptions
    log: MetricsLog
    out: Path | None
    steps_per_epoch: int
    total_steps: int
    criterion: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy
    channels_last: bool = False
    epoch_hooks: list[Any] = field(default_factory=list)  # samplers/datasets whose order is set per epoch
    monitor: str = "accuracy"  # the validation metric that picks the best epoch (resolve_monitor)

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process

    def model_inputs(self, inputs: dict[str, Any]) -> dict[str, Any]:
        if not self.channels_last:
            return inputs
        return {k: v.contiguous(memory_format=torch.channels_last) if isinstance(v, Tensor) and v.dim() == 4 else v
                for k, v in inputs.items()}

    def say(self, *args: Any, **kwargs: Any) -> None:
        self.accelerator.print(*args, **kwargs)


def _loaders(accelerator: Any, collate: Collate, train_set: Any, eval_sets: dict[str, Any], opts: FinetuneOptions,
             encoded: list[Any] | None) -> tuple[Any, dict[str, Any], list[Any]]:
    """The data loaders, and what must hear of each new epoch (its order is a function of seed + epoch)."""
    DataLoader = torch.utils.data.DataLoader
    if isinstance(train_set, TensorRows):
        # Batches are cut from rows already on the device; the dataset shuffles them per epoch,
        # or (group_by_length, padded rows of known lengths) a length-grouping sampler picks them.
        args = dict(collate_fn=TensorRows.collate, num_workers=0)
        evals = {k: DataLoader(v, batch_size=opts.batch_size, shuffle=False, **args) for k, v in eval_sets.items()}
        if opts.group_by_length:
            if train_set.lengths is None:
                raise OptionsError("group_by_length groups rows by their lengths: give TensorData(lengths=...) "
                                   "(each row's length before padding), or leave group_by_length out")
            sampler = LengthGroupedBatchSampler(train_set.lengths, opts.batch_size, pool=opts.group_by_length, seed=opts.seed)
            return DataLoader(train_set, batch_sampler=sampler, **args), evals, [sampler]
        train_loader = DataLoader(train_set, batch_size=opts.batch_size, shuffle=False, **args)
        return train_loader, evals, [train_set]
    args = dict(collate_fn=collate, num_workers=opts.num_workers, pin_memory=accelerator.device.type == "cuda")
    evals = {k: DataLoader(v, batch_size=opts.batch_size, shuffle=False, **args) for k, v in eval_sets.items()}
    if opts.group_by_length:
        length = collate.adapter.length  # the domain's measure: frames, tokens
        lengths = [length(e) for e in encoded] if encoded is not None else \
            [length(train_set[i][1]) for i in range(len(train_set))]
        sampler = LengthGroupedBatchSampler(lengths, opts.batch_size, pool=opts.group_by_length, seed=opts.seed)
        return DataLoader(train_set, batch_sampler=sampler, **args), evals, [sampler]
    return DataLoader(train_set, batch_size=opts.batch_size, shuffle=True, **args), evals, []


def prepare_loop(accelerator: Any, model: nn.Module, adapter: Adapter, collate: Collate, train_set: EncodedDataset | TensorRows,
                 eval_sets: dict[str, Any], *, num_classes: int, opts: FinetuneOptions, log: MetricsLog,
                 out: Path | None, domain: str = "", criterion: Callable[[Tensor, Tensor], Tensor] | None = None) -> Loop:
    """Optimizer, loaders and schedule, prepared by accelerate; the loss is ``criterion``, else
    the options' (:func:`resolve_criterion`)."""
    channels_last = opts.channels_last if opts.channels_last is not None else accelerator.device.type == "cuda"
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = _optimizer(model, opts)
    encoded = getattr(train_set, "encoded", None)
    train_loader, eval_loaders, hooks = _loaders(accelerator, collate, train_set, eval_sets, opts, encoded)
    wrapped, optimizer, train_loader = accelerator.prepare(model, optimizer, train_loader)
    eval_loaders = {k: accelerator.prepare(v) for k, v in eval_loaders.items()}
    steps_per_epoch = math.ceil(len(train_loader) / opts.grad_accum)
    total_steps = steps_per_epoch * opts.epochs
    scheduler = accelerator.prepare(_scheduler(optimizer, opts, total_steps))
    criterion = criterion if criterion is not None else resolve_criterion(opts, domain)
    return Loop(accelerator=accelerator, model=wrapped, unwrapped=accelerator.unwrap_model(wrapped),
                optimizer=optimizer, scheduler=scheduler, train_loader=train_loader, eval_loaders=eval_loaders,
                adapter=adapter, num_classes=num_classes, opts=opts, log=log, out=out,
                steps_per_epoch=steps_per_epoch, total_steps=total_steps,
                criterion=criterion, channels_last=channels_last, epoch_hooks=hooks,
                monitor=resolve_monitor(opts, criterion))


# --------------------------------------------------------------------------- the loop


@dataclass
class Trained:
    """What :func:`train` did in this invocation."""

    stopped_by_request: bool
    epoch: int
    train_seconds: float
    train_samples: int


def _train_epoch(loop: Loop, epoch: int, state: dict[str, Any]) -> tuple[dict[str, Any], float]:
    """One epoch of optimizer steps; the epoch's record (train loss, accuracy, speed) and its seconds."""
    from tqdm.auto import tqdm

    accelerator, opts, scheduler = loop.accelerator, loop.opts, loop.scheduler
    wrapped, optimizer = loop.model, loop.optimizer
    sums = torch.zeros(3, dtype=torch.float64, device=accelerator.device)  # loss sum, correct, count
    seen_ids: list[int] = []
    bar = tqdm(total=len(loop.train_loader), desc=f"epoch {epoch}/{opts.epochs}", unit="batch", leave=True,
               disable=not (loop.main and opts.progress), dynamic_ncols=True,
               mininterval=0.5 if sys.stderr.isatty() else 30.0, file=sys.stderr)
    step_sums = torch.zeros(2, dtype=torch.float64, device=accelerator.device)
    classifying = not scores_sequences(loop.criterion)  # else there is no accuracy to count
    start = time.perf_counter()
    for batch in loop.train_loader:
        inputs = batch["inputs"]
        if opts.augment is not None:
            with torch.no_grad():
                inputs = opts.augment(inputs)
        with accelerator.accumulate(wrapped):
            logits = as_float(loop.adapter.forward(wrapped, loop.model_inputs(inputs)))
            loss = loop.criterion(logits, batch["target"])
            accelerator.backward(loss)
            if accelerator.sync_gradients and opts.max_grad_norm:
                accelerator.clip_grad_norm_(wrapped.parameters(), opts.max_grad_norm)
            optimizer.step()
            if accelerator.sync_gradients and not accelerator.optimizer_step_was_skipped:
                scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        n = batch["target"].shape[0]
        with torch.no_grad():  # on the device, without a host copy: no step waits for the GPU here
            weighted = loss.detach().double() * n
            sums[0] += weighted
            if classifying:
                sums[1] += (logits.argmax(-1) == batch["target"]).sum()
            sums[2] += n
            step_sums[0] += weighted
            step_sums[1] += n
        if opts.log_sample_ids:
            seen_ids += batch["index"].tolist()
        if accelerator.sync_gradients:
            state["global_step"] += 1
            if opts.log_every and state["global_step"] % opts.log_every == 0:
                totals = accelerator.reduce(step_sums, reduction="sum")
                loop.log.write({"event": "step", "epoch": epoch, "step": state["global_step"],
                                "loss": float(totals[0] / totals[1]), "lr": scheduler.get_last_lr()[0]})
                step_sums.zero_()
        bar.update(1)
        if not bar.disable:  # reading the sums waits for the GPU: only for a bar that shows them
            elapsed = time.perf_counter() - start
            bar.set_postfix(loss=f"{float(sums[0] / sums[2]):.4f}",
                            samples_s=f"{float(sums[2]) * accelerator.num_processes / max(elapsed, 1e-9):.0f}", refresh=False)
    bar.close()
    totals = accelerator.reduce(sums, reduction="sum")
    count = int(totals[2])  # waits for the epoch's last step: the time below is the whole epoch's
    seconds = time.perf_counter() - start
    if opts.log_sample_ids:
        from accelerate.utils import gather_object

        gathered = gather_object([{"rank": accelerator.process_index, "ids": seen_ids}])
        if loop.main and loop.out is not None:
            with (loop.out / SAMPLE_IDS_FILE).open("a", encoding="utf-8") as f:
                for item in gathered:
                    f.write(json.dumps({"epoch": epoch, **item}) + "\n")
    record = {
        "event": "epoch", "epoch": epoch, "step": state["global_step"], "lr": scheduler.get_last_lr()[0],
        "train_loss": float(totals[0] / count), "train_accuracy": float(totals[1] / count),
        "train_samples": count, "seconds": round(seconds, 3), "samples_per_s": round(count / seconds, 1),
    }
    if not classifying:
        del record["train_accuracy"]
    return record, seconds


def _validate(loop: Loop, epoch: int, state: dict[str, Any], record: dict[str, Any]) -> None:
    """Validation metrics into ``record``; the best epoch's weights kept; early stopping decided."""
    opts = loop.opts
    metrics = evaluate(loop, "validation")
    record.update({f"val_{k}": v for k, v in metrics.items()})
    score = (1.0 if loop.monitor in HIGHER_IS_BETTER else -1.0) * metrics[loop.monitor]
    if state["best"] is None or score > state["best"]:
        state.update(best=score, best_epoch=epoch, bad_epochs=0)
        record["best"] = True
        if loop.main and loop.out is not None:
            save_weights(loop.unwrapped, loop.out / CHECKPOINTS_DIR / BEST_WEIGHTS)
        elif loop.out is None:
            state["best_weights"] = {k: v.detach().clone() for k, v in loop.unwrapped.state_dict().items()}
    else:
        state["bad_epochs"] += 1
    if opts.early_stopping and state["bad_epochs"] >= opts.early_stopping:
        state["stopped_early"] = True


def train(loop: Loop, state: dict[str, Any], *, wall_start: float, prior_wall: float) -> Trained:
    """Epochs until ``opts.epochs``, early stopping or ``stop_after_epoch``; a checkpoint after each."""
    opts = loop.opts
    train_seconds, train_samples = 0.0, 0
    done = state["epoch"] >= opts.epochs or state["stopped_early"]
    epoch = state["epoch"]
    while not done:
        epoch = state["epoch"] + 1
        loop.train_loader.set_epoch(epoch - 1)  # the permutation is a function of seed + epoch alone
        for hook in loop.epoch_hooks:
            hook.set_epoch(epoch - 1)
        set_train_mode(loop.unwrapped, opts)
        record, seconds = _train_epoch(loop, epoch, state)
        train_seconds += seconds
        train_samples += record["train_samples"]
        if "validation" in loop.eval_loaders:
            _validate(loop, epoch, state, record)
        state["epoch"] = epoch
        state["history"].append(record)
        loop.log.write(record)
        loop.say(_epoch_line(record, opts.epochs))
        done = epoch >= opts.epochs or state["stopped_early"]
        state["wall_seconds"] = round(prior_wall + time.perf_counter() - wall_start, 3)
        if loop.out is not None:
            save_checkpoint(loop.accelerator, loop.out, epoch, state, opts.keep_checkpoints)
        if state["stopped_early"]:
            loop.say(f"early stopping: validation {loop.monitor} has not improved for {opts.early_stopping} epoch(s)")
        if not done and opts.stop_after_epoch is not None and epoch >= opts.stop_after_epoch:
            return Trained(stopped_by_request=True, epoch=epoch, train_seconds=train_seconds, train_samples=train_samples)
    return Trained(stopped_by_request=False, epoch=epoch, train_seconds=train_seconds, train_samples=train_samples)


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _epoch_line(record: dict[str, Any], epochs: int) -> str:
    parts = [f"epoch {record['epoch']}/{epochs}", f"train_loss {_fmt(record['train_loss'])}"]
    if "train_accuracy" in record:
        parts.append(f"train_acc {_fmt(record['train_accuracy'])}")
    if "val_accuracy" in record:
        parts += [f"val_loss {_fmt(record['val_loss'])}", f"val_acc {_fmt(record['val_accuracy'])}",
                  f"val_f1 {_fmt(record['val_macro_f1'])}"]
    elif "val_loss" in record:  # a sequence criterion's metrics
        parts += [f"val_{k} {_fmt(v)}" for k, v in ((k[4:], v) for k, v in record.items() if k.startswith("val_")) if k != "n"]
    parts += [f"{record['samples_per_s']:.0f} samples/s", f"{record['seconds']:.1f} s"]
    return "  ".join(parts) + ("  *best*" if record.get("best") else "")
