"""A fine-tuning run, composed of its parts: one code path for one CPU, one GPU, DDP, many nodes.

- :mod:`.rundir`: the run folder (its state, run.json, resume, checkpoints; the lock is :mod:`.runlock`);
- :mod:`.data` and :mod:`.adapters`: the data, read and checked, batched the model's way;
- :mod:`.model`: the base entry and model, its head, what trains and what stays frozen;
- :mod:`.loop`: epochs, steps, evaluation, early stopping, on ``accelerate``;
- :mod:`.results`: the best weights, metrics, the new model's entry, card figures, save and push.

Exact resume: each epoch ends with ``accelerator.save_state`` (model, optimizer, scheduler,
gradient scaler, every process's RNG states, accelerate's step counter) plus the loop's own
state (epoch, step, best score, early-stopping counter) in ``trainer_state.json``. A resumed run
loads them and goes on from the next epoch, so it ends with the same weights as an
uninterrupted run (tests/test_finetune.py checks this bit for bit).
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .adapters import Adapter, Collate, EncodedDataset, make_adapter
from .batches import TensorData, TensorRows
from .data import LabeledData, Splits, drop_unreadable, read_data, split_validation
from .loop import make_accelerator, prepare_loop, resolve_criterion, train
from .model import apply_lora, configure_trainable, criterion_head, deterministic_pools, freeze_unused, load_model
from .options import DataError, FinetuneOptions, OptionsError, ResumeError
from .results import RunInfo, finish
from .rundir import (
    METRICS_FILE,
    MetricsLog,
    check_overlap,
    fingerprint,
    new_state,
    open_run,
    restore_state,
    start_run_folder,
)
from .runlock import locked_run_folder

__all__ = ["run_finetune"]

logger = logging.getLogger(__name__)


def run_finetune(name: str, train_data: Any, val_data: Any, given: dict[str, Any]) -> Any:
    """Fine-tune ``name``; ``given`` are the options passed explicitly (see :class:`FinetuneOptions`).

    With a run folder, the run holds its lock from before the folder is first looked at until
    the end (see :mod:`.runlock`)."""
    opts = FinetuneOptions.from_kwargs(given)
    if opts.out is None:
        return _run(name, train_data, val_data, given, opts)
    out = Path(opts.out).expanduser()
    check_overlap(out, {"--data": train_data, "--val": val_data, "--test": opts.test_data})
    from accelerate import PartialState

    # The process group (one process without a launcher), so that the processes agree on the lock.
    # Accelerator() below reuses it; ``cpu`` is an option of the invocation, the same in both.
    state = PartialState(cpu=opts.cpu)
    with locked_run_folder(out, state):
        return _run(name, train_data, val_data, given, opts)


def _vocabulary(train: LabeledData, base_labels: Any, opts: FinetuneOptions) -> tuple[str, ...]:
    """The symbols sequence data is spelt with: ``opts.vocabulary``, else the base's labels when
    they hold every symbol of the training text (the base's head then still fits), else the text's own."""
    if opts.vocabulary is not None:
        return tuple(opts.vocabulary)
    if opts.pretrained and base_labels and set(train.classes) <= set(base_labels):
        return tuple(base_labels)
    return train.classes


def _read_splits(train_data: Any, val_data: Any, entry: Any, opts: FinetuneOptions) -> Splits:
    """Read and check every split before anything is written; hold out validation data if none is given."""
    domain = entry.domain
    read = dict(text_column=opts.text_column, label_column=opts.label_column, delimiter=opts.delimiter,
                on_bad_file=opts.on_bad_file, task=entry.task)
    tensors = isinstance(train_data, TensorData)
    for role, source in (("validation", val_data), ("test", opts.test_data)):
        if source is not None and isinstance(source, TensorData) != tensors:
            raise DataError(f"{role} data: give it as {'TensorData' if tensors else 'a path or pairs'}, like the training data")

    def read_split(source: Any, role: str, classes: tuple[str, ...] | None = None) -> LabeledData:
        if tensors:
            return source.labeled(role, classes)
        return read_data(source, domain, role=role, classes=classes, **read)

    train = read_split(train_data, "train")
    if train.sequences:
        vocabulary = _vocabulary(train, entry.labels, opts)
        if vocabulary != train.classes:
            train = read_split(train_data, "train", vocabulary)  # checks the text against it, line by line
    elif opts.vocabulary is not None:
        raise OptionsError("vocabulary is for sequence data (manifests of files and text); this data has one class per item")
    classes = train.classes
    val = read_split(val_data, "validation", classes) if val_data is not None else None
    test = read_split(opts.test_data, "test", classes) if opts.test_data is not None else None
    held_out = val is None and opts.val_split > 0
    if val is None:
        train, val = split_validation(train, opts.val_split, opts.seed)
    if opts.early_stopping and val is None:
        raise OptionsError("early_stopping needs validation data: give --val, or a --val-split > 0")
    return Splits(train=train, val=val, test=test, held_out=held_out)


def _tensor_key(adapter: Adapter, data: TensorData) -> str:
    """The adapter's input name for a bare tensor: the one key its collate makes of a row."""
    if not isinstance(data.inputs, torch.Tensor):
        return ""
    try:
        keys = list(adapter.collate([data.inputs[0]]))
    except Exception:  # noqa: BLE001 - any failure means the same: this domain's batches are not one tensor
        keys = []
    if len(keys) != 1:
        raise DataError(f"{data.name}: the {adapter.domain} model takes {', '.join(keys) or 'other inputs'}, not one "
                        "tensor; give TensorData inputs as a dict of the model's batch inputs")
    return keys[0]


def _tensor_sets(splits: Splits, sources: dict[str, Any], adapter: Adapter, device: Any,
                 opts: FinetuneOptions) -> dict[str, TensorRows]:
    """Rows of in-memory tensors, on the training device."""
    sets = {}
    for role, data in (("train", splits.train), ("validation", splits.val), ("test", splits.test)):
        if data is not None:
            source = sources[role]
            # Training rows are shuffled per epoch, unless a length-grouping sampler picks them (loop._loaders).
            shuffled = role == "train" and not opts.group_by_length
            sets[role] = TensorRows(source, data.items, device, _tensor_key(adapter, source),
                                    shuffle_seed=opts.seed if shuffled else None)
    return sets


def _encode_splits(splits: Splits, adapter: Adapter, opts: FinetuneOptions) -> dict[str, EncodedDataset]:
    """Decode every item once with the model's preprocessing; unreadable ones skipped (or an error)."""
    unreadable = dict(on_bad_file=opts.on_bad_file, errors=adapter.read_errors)
    sets = {}
    for role, split in (("train", "train"), ("validation", "val"), ("test", "test")):
        data = getattr(splits, split)
        if data is not None:
            data, encoded = drop_unreadable(data, adapter.encode, role=role, **unreadable)
            setattr(splits, split, data)
            sets[role] = EncodedDataset(data, adapter, encoded)
    return sets


def _report_skipped(splits: Splits, say: Any) -> None:
    for role, data in (("train", splits.train), ("validation", splits.val), ("test", splits.test)):
        if data is not None and data.skipped:
            say(f"{role}: skipped {len(data.skipped)} unreadable or malformed record(s) in {data.source}, e.g. "
                f"{data.skipped[0][0]} ({data.skipped[0][1]})", file=sys.stderr)


def _prepare_model(model: nn.Module, adapter: Adapter, collate: Collate, train_set: EncodedDataset | TensorRows,
                   opts: FinetuneOptions, processes: int) -> tuple[nn.Module, int]:
    trainable = configure_trainable(model, opts)
    if processes > 1:
        unused = freeze_unused(model, adapter, train_set, TensorRows.collate if isinstance(train_set, TensorRows) else collate)
        if unused:
            logger.info("frozen (unused by the forward pass): %s", ", ".join(unused))
    if opts.batchnorm == "sync" and processes > 1:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model, trainable


def _run(name: str, train_data: Any, val_data: Any, given: dict[str, Any], opts: FinetuneOptions) -> Any:
    from accelerate.utils import set_seed

    from ..api import resolve_entry
    from . import FinetuneResult

    wall_start = time.perf_counter()
    out = Path(opts.out).expanduser() if opts.out else None
    opts, saved, train_data, val_data = open_run(out, opts, given, name, train_data, val_data)
    if train_data is None:
        raise OptionsError("no training data: give --data (train_data=)")

    accelerator, mixed_precision = make_accelerator(opts)
    main, say = accelerator.is_main_process, accelerator.print
    if not main:  # one copy of reszoo's warnings (e.g. the replaced head), not one per process
        logging.getLogger("reszoo").setLevel(logging.ERROR)
    processes = accelerator.num_processes
    if opts.batchnorm == "sync" and processes > 1 and accelerator.device.type != "cuda":
        raise OptionsError("batchnorm='sync' needs GPUs (torch's SyncBatchNorm); on CPU processes use 'frozen'")

    # ---- data and model (all checks before the run folder is touched)
    entry = resolve_entry(name)  # without weights: the domain decides how the data is read, before anything loads
    splits = _read_splits(train_data, val_data, entry, opts)
    classes = splits.classes
    set_seed(opts.seed)  # before the head is initialised: the same head on every process and every run
    model, head = load_model(name, entry, classes, opts)
    criterion = resolve_criterion(opts, entry.domain, entry.task)
    if callable(getattr(criterion, "set_labels", None)):  # a sequence criterion decodes with the vocabulary
        criterion.set_labels(classes)
    fitted = criterion_head(model, criterion, opts)  # e.g. AAM-softmax's cosine head, in place of the linear one
    if fitted:
        head = f"{head}; {fitted}"
    if opts.lora:
        model, head = apply_lora(model, opts, head)
        say(head)
    adapter = make_adapter(model, entry.domain, opts, entry.task)
    if isinstance(train_data, TensorData):
        sources = {"train": train_data, "validation": val_data if val_data is not None else train_data,
                   "test": opts.test_data}
        sets: dict[str, Any] = _tensor_sets(splits, sources, adapter, accelerator.device, opts)
    else:
        sets = _encode_splits(splits, adapter, opts)
    data_fingerprint = fingerprint(splits.train)
    if saved is not None and saved.get("fingerprint") != data_fingerprint:
        raise ResumeError(f"the training data changed since the run started ({saved.get('num_train')} examples "
                          f"then, {len(splits.train)} now, or other files/labels); resume needs the same data")
    _report_skipped(splits, say)

    # ---- the run folder: every process has checked it; the main process changes it
    accelerator.wait_for_everyone()
    log = MetricsLog(out / METRICS_FILE if out else None, enabled=main)
    if out is not None and main:
        start_run_folder(out, opts, saved, name=name, train_data=train_data, val_data=val_data,
                         fingerprint=data_fingerprint, num_train=len(splits.train), classes=classes)
    accelerator.wait_for_everyone()

    # ---- the loop
    collate = Collate(adapter)
    model, trainable = _prepare_model(model, adapter, collate, sets["train"], opts, processes)
    deterministic_pools(model, accelerator.device)
    loop = prepare_loop(accelerator, model, adapter, collate, sets.pop("train"), sets, num_classes=len(classes),
                        opts=opts, log=log, out=out, domain=entry.domain, criterion=criterion)
    state = restore_state(accelerator, out, log, say) if opts.resume else new_state()
    prior_wall = float(state.get("wall_seconds", 0.0))  # of the invocations before this one
    log.write({"event": "resume" if opts.resume else "start", "epoch": state["epoch"], "model": name,
               "processes": processes, "device": str(accelerator.device), "mixed_precision": mixed_precision,
               "num_train": len(splits.train), "num_val": len(splits.val) if splits.val else 0, "classes": len(classes),
               "trainable_params": trainable, "steps_per_epoch": loop.steps_per_epoch, "head": head})
    trained = train(loop, state, wall_start=wall_start, prior_wall=prior_wall)
    if trained.stopped_by_request:
        say(f"stopped after epoch {trained.epoch} as asked; continue with --resume (resume=True)")
        accelerator.wait_for_everyone()
        return FinetuneResult(model=loop.unwrapped, metrics=dict(state["history"][-1]), history=list(state["history"]),
                              out=out, entry=None, completed=False)
    run = RunInfo(entry=entry, head=head, train_data=train_data, val_data=val_data, splits=splits,
                  mixed_precision=mixed_precision, wall_start=wall_start, prior_wall=prior_wall)
    return finish(loop, state, run, trained)
