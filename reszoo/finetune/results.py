"""What a finished run gives: the best epoch's weights, test metrics, the fine-tuned model's entry
(what config.json and the card say), the figures, the saved model, summary.json and the push."""

from __future__ import annotations

import dataclasses
import os
import re
import time
from pathlib import Path
from typing import Any

from torch import nn

from ..cards import load_path
from ..domains import FinetuneSpec
from ..domains import get as get_domain
from ..registry import Entry, Metric, Source
from .batches import TensorData
from .data import Splits
from .loop import Loop, Trained, _fmt, evaluate, scores_sequences
from .options import FinetuneOptions
from .rundir import finish_run_folder, load_best

__all__ = ["finetuned_entry", "finish"]

_SPLIT_NAMES = {"train", "training", "trn", "val", "valid", "validation", "dev", "test", "data"}


# --------------------------------------------------------------------------- the entry of the result


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
    if isinstance(train_data, TensorData) and not train_data.name.startswith("<"):
        return train_data.name
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
    if opts.freeze and not opts.freeze_backbone:
        what += f" but {', '.join(opts.freeze)} (frozen)"
    if opts.lora:
        what = (f"LoRA adapters (rank {opts.lora_rank}, alpha {opts.lora_alpha or 2 * opts.lora_rank:g}, dropout "
                f"{opts.lora_dropout:g}, on {' '.join(opts.lora_targets) if opts.lora_targets else 'the domain default layers'}) "
                "and the head in full, the base's weights and BatchNorm statistics frozen")
    parts = [
        (f"Fine-tuned from `{base.name}` with `{opts.script}` ({head}), training {what}." if opts.pretrained else
         f"Trained from scratch (random init) with the architecture of `{base.name}` by `{opts.script}`."),
        _optimizer_text(opts) + (f" (new head {opts.head_lr:g})" if opts.head_lr else "")
        + f", weight decay {opts.weight_decay:g} (not on biases/norms), " + _schedule_text(opts, warm) + "; "
        + _loss_text(opts) + "; "
        f"batch {opts.batch_size} x {processes} process(es) x {opts.grad_accum} accumulation step(s); "
        f"{opts.epochs} epoch(s) ({steps} optimizer steps) with seed {opts.seed}; BatchNorm {opts.batchnorm}; "
        f"mixed precision {mixed_precision}"
        + (f"; early stopping on validation {opts.monitor or 'its default metric'} (patience {opts.early_stopping})"
           if opts.early_stopping else "")
        + (f"; gradient norm clipped at {opts.max_grad_norm:g}" if opts.max_grad_norm else "") + ".",
        f"{n_train} training examples; {val_note}. The weights are those of the best validation epoch "
        "when there is validation data, else of the last epoch.",
    ]
    return "\n".join(parts)


def _optimizer_text(opts: FinetuneOptions) -> str:
    if opts.optimizer == "sgd":
        return f"SGD (Nesterov momentum {opts.momentum:g}), lr {opts.lr:g}" if opts.momentum else f"SGD, lr {opts.lr:g}"
    return f"AdamW, lr {opts.lr:g}"


def _schedule_text(opts: FinetuneOptions, warm: str) -> str:
    if opts.schedule == "onecycle":
        return f"one-cycle schedule (rising over {warm}, then cosine decay)"
    return f"linear warm-up over {warm} then {opts.schedule} decay to {opts.min_lr_ratio:g}x"


def _loss_text(opts: FinetuneOptions) -> str:
    from .options import callable_ref

    if opts.criterion is None:
        text = f"cross-entropy, label smoothing {opts.label_smoothing:g}"
    else:
        name = callable_ref(opts.criterion)
        text = f"loss {name.removeprefix('callable:') if isinstance(name, str) else name}"
    if opts.augment is not None:
        text += f"; augmentation {str(callable_ref(opts.augment)).removeprefix('callable:')}"
    if opts.group_by_length:
        text += f"; batches grouped by length (pools of {opts.group_by_length} batches)"
    return text


def _usage(spec: FinetuneSpec | None, opts: FinetuneOptions) -> str:
    # The card replaces the load target with where the model is (its folder or Hub repo).
    where = f"hf://{opts.push_to}" if opts.push_to else (load_path(opts.out) if opts.out else "path/to/model")
    return f'model = reszoo.load("{where}")\n{spec.usage if spec else ""}'.rstrip()


def finetuned_entry(base: Entry, *, name: str, classes: tuple[str, ...], dataset: str, metrics: list[Metric],
                    opts: FinetuneOptions, recipe: str, preprocess: dict[str, Any],
                    facts: dict[str, Any] | None = None) -> Entry:
    """The new model's entry: what config.json and the card say.

    It states this run's facts (``metrics``, ``facts``: epochs, examples, time), never the
    base's: the base's metrics, ``extra`` facts (its epochs, training time, residual-vs-plain
    scores, token limits), tags and limitations describe the base's own training. What still
    holds (architecture, license, paper) stays; ``base_model`` links the base for the rest.
    """
    spec = get_domain(base.domain).finetune_spec(base.task)  # the task and usage of a fine-tuned model of the domain
    return dataclasses.replace(
        base,
        name=name,
        aliases=(),
        task=spec.task if spec else base.task,
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
        usage=_usage(spec, opts),
        extra=dict(facts or {}),
        # The base's plain twin, figures (files of its repo) and run-time settings measured for its
        # weights (a verification threshold) are not this model's.
        twin=None,
        figures={},
        runtime={},
        limitations=("Fine-tuned and evaluated only on the data named above (validation and test splits as "
                     "listed); accuracy on other data is not measured."),
    )


# --------------------------------------------------------------------------- the run's end


@dataclasses.dataclass
class RunInfo:
    """Facts of the run that the result states, beside the loop's."""

    entry: Entry  # the base's
    head: str
    train_data: Any
    val_data: Any
    splits: Splits
    mixed_precision: str
    wall_start: float
    prior_wall: float


def _final_metrics(loop: Loop, state: dict[str, Any]) -> tuple[dict[str, Any], tuple[str, Any] | None]:
    """The best validation epoch's weights back in the model, its validation metrics and the test
    split's; and the confusion matrix for the run's figure (the test split's, else the validation's)."""
    if state["best_epoch"] is not None:
        if loop.out is not None:
            load_best(loop.unwrapped, loop.out)
        elif "best_weights" in state:
            loop.unwrapped.load_state_dict(state.pop("best_weights"))
    chosen = next((r for r in state["history"] if r["epoch"] == state["best_epoch"]), state["history"][-1])
    final: dict[str, Any] = {k: v for k, v in chosen.items() if k.startswith("val_")}
    final["best_epoch"] = state["best_epoch"]
    confusion = None
    classifying = not scores_sequences(loop.criterion)  # a sequence criterion has no confusion matrix
    if "test" in loop.eval_loaders:
        test_metrics = evaluate(loop, "test", with_confusion=True)
        if classifying:
            confusion = ("test", test_metrics.pop("confusion"))
        final.update({f"test_{k}": v for k, v in test_metrics.items()})
    elif "validation" in loop.eval_loaders and loop.out is not None and classifying:
        confusion = ("validation", evaluate(loop, "validation", with_confusion=True)["confusion"])
    loop.unwrapped.eval()
    return final, confusion


def _result_entry(loop: Loop, state: dict[str, Any], run: RunInfo, final: dict[str, Any]) -> Entry:
    opts, entry, splits = loop.opts, run.entry, run.splits
    train, val, test = splits.train, splits.val, splits.test
    processes = loop.accelerator.num_processes
    dataset = _dataset_name(opts, run.train_data)
    val_note = (f"validated on {len(val)} examples" + (f" (a seeded {opts.val_split:g} stratified hold-out of the "
                "training data)" if splits.held_out else f" ({Path(str(run.val_data)).name})")) if val is not None else "no validation data"
    note = f"fine-tuned from {entry.name}" if opts.pretrained else f"{entry.name}'s architecture, from scratch"
    metrics = []
    labels = getattr(loop.criterion, "metric_labels", None) if scores_sequences(loop.criterion) else None
    for split in ("val", "test"):
        for key, label in (labels or {"accuracy": "accuracy (%)", "macro_f1": "macro-F1 (%)"}).items():
            if f"{split}_{key}" in final:
                # In percent, as the registry's accuracies are; summary.json keeps fractions.
                metrics.append(Metric(dataset=dataset, split="validation" if split == "val" else "test", metric=key,
                                      value=round(100 * float(final[f"{split}_{key}"]), 4), name=label,
                                      source=Source(kind="measured", script=opts.script, note=note)))
    preprocess = loop.adapter.saved_preprocess(entry.preprocess, getattr(loop.unwrapped.entry, "weights", None))
    # This run's facts for the card, over every invocation of a resumed run (the history is restored).
    facts = {"epochs": state["epoch"], "best_epoch": state["best_epoch"], "train_examples": len(train),
             "validation_examples": len(val) if val else 0, "test_examples": len(test) if test else None,
             "skipped_files": sum(splits.skipped().values()), "processes": processes,
             "train_seconds": round(sum(r["seconds"] for r in state["history"]), 2),
             "wall_seconds": round(run.prior_wall + time.perf_counter() - run.wall_start, 2)}
    return finetuned_entry(
        entry, name=_model_name(opts, entry), classes=splits.classes, dataset=dataset, metrics=metrics, opts=opts,
        recipe=_recipe(entry, opts, head=run.head, processes=processes, n_train=len(train), val_note=val_note,
                       steps=loop.total_steps, mixed_precision=run.mixed_precision),
        preprocess=preprocess, facts={k: v for k, v in facts.items() if v is not None},
    )


def _with_figures(loop: Loop, state: dict[str, Any], new_entry: Entry, confusion: Any,
                  classes: tuple[str, ...]) -> tuple[Entry, dict[str, Path]]:
    """The figures (reszoo/finetune/plots.py), carried with the model and its card."""
    from .plots import write_figures

    figure_paths = write_figures(loop.out, state["history"], confusion, classes, model_name=new_entry.name)
    new_entry = dataclasses.replace(new_entry, figures={k: p.name for k, p in figure_paths.items()})
    loop.unwrapped.figure_files = {p.name: p for p in figure_paths.values()}
    return new_entry, figure_paths


def _push(model: nn.Module, opts: FinetuneOptions, entry: Entry) -> dict[str, Any]:
    from ..saving import push

    return {"repo": opts.push_to, "commit": push(model, opts.push_to, entry=entry, private=opts.private or None)}


def finish(loop: Loop, state: dict[str, Any], run: RunInfo, trained: Trained) -> Any:
    """The best weights, final metrics, the new entry; the saved model, summary and push (main process)."""
    from . import FinetuneResult

    accelerator, opts, out, unwrapped = loop.accelerator, loop.opts, loop.out, loop.unwrapped
    splits, classes = run.splits, run.splits.classes
    accelerator.wait_for_everyone()
    final, confusion = _final_metrics(loop, state)
    new_entry = _result_entry(loop, state, run, final)
    figure_paths: dict[str, Path] = {}
    if loop.main and out is not None:
        new_entry, figure_paths = _with_figures(loop, state, new_entry, confusion, classes)
    unwrapped.entry, unwrapped.labels = new_entry, classes
    processes = accelerator.num_processes
    summary = {
        "model": new_entry.name, "base_model": run.entry.name, "dataset": new_entry.dataset[0], "classes": list(classes),
        "num_train": len(splits.train), "num_val": len(splits.val) if splits.val else 0,
        "num_test": len(splits.test) if splits.test else 0,
        "skipped": splits.skipped(), "epochs_run": state["epoch"], "stopped_early": state["stopped_early"],
        "global_steps": state["global_step"], "processes": processes, "device": str(accelerator.device),
        "mixed_precision": run.mixed_precision, "head": run.head, "pretrained": opts.pretrained, **final,
        "train_seconds": round(trained.train_seconds, 2), "wall_seconds": round(time.perf_counter() - run.wall_start, 2),
        "train_samples_per_s": round(trained.train_samples / trained.train_seconds, 1) if trained.train_seconds else None,
        "out": str(out) if out else None,
    }
    if loop.main and out is not None:
        from ..saving import save_pretrained

        before = {p.name for p in out.iterdir()}
        save_pretrained(unwrapped, out, entry=new_entry, repo_id=opts.push_to)
        written = sorted({p.name for p in out.iterdir()} - before | {p.name for p in figure_paths.values()})
        if opts.push_to:
            summary["pushed"] = _push(unwrapped, opts, new_entry)
        finish_run_folder(out, summary, loop.log, written)
    elif loop.main and opts.push_to:
        summary["pushed"] = _push(unwrapped, opts, new_entry)
    accelerator.wait_for_everyone()
    loop.say(_summary_line(summary))
    return FinetuneResult(model=unwrapped, metrics=summary, history=list(state["history"]), out=out, entry=new_entry,
                          completed=True)


def _summary_line(summary: dict[str, Any]) -> str:
    what = (f"fine-tuned {summary['base_model']}" if summary["pretrained"] else
            f"trained {summary['base_model']}'s architecture from scratch")
    lines = [f"{what} on {summary['dataset']}: {len(summary['classes'])} classes, "
             f"{summary['num_train']} train / {summary['num_val']} validation / {summary['num_test']} test examples"
             f" ({sum(summary['skipped'].values())} skipped), {summary['epochs_run']} epoch(s)"
             + (" (stopped early)" if summary["stopped_early"] else "")]
    if summary.get("best_epoch") and "val_accuracy" in summary:
        lines.append(f"best epoch {summary['best_epoch']}: validation accuracy {_fmt(summary['val_accuracy'])}, "
                     f"macro-F1 {_fmt(summary['val_macro_f1'])}, loss {_fmt(summary['val_loss'])}")
    elif summary.get("best_epoch"):
        lines.append(f"best epoch {summary['best_epoch']}: validation " + ", ".join(
            f"{k[4:]} {_fmt(v)}" for k, v in summary.items() if k.startswith("val_") and k != "val_n"))
    if "test_accuracy" in summary:
        lines.append(f"test accuracy {_fmt(summary['test_accuracy'])}, macro-F1 {_fmt(summary['test_macro_f1'])}")
    elif any(k.startswith("test_") for k in summary):
        lines.append("test " + ", ".join(f"{k[5:]} {_fmt(v)}" for k, v in summary.items()
                                         if k.startswith("test_") and k != "test_n"))
    if summary["out"]:
        lines.append(f"saved to {summary['out']}: reszoo.load({load_path(summary['out'])!r})")
    if "pushed" in summary:
        lines.append(f"pushed to {summary['pushed']['repo']} at commit {summary['pushed']['commit']}")
    trained = (f"{summary['train_seconds']:.1f} s training ({summary['train_samples_per_s']} samples/s)"
               if summary["train_seconds"] else "no epoch left to train (the run was complete)")
    lines.append(f"{trained}, {summary['wall_seconds']:.1f} s in all, {summary['processes']} process(es) on {summary['device']}")
    return "\n".join(lines)
