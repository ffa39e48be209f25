"""Options of a fine-tuning run, and the errors it reports: standard library only.

Kept free of torch so that ``reszoo finetune --help`` and the core CLI, which imports
:mod:`reszoo.finetune.cli` to build its parser, stay fast.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

from ..errors import ReszooError

__all__ = [
    "DataError",
    "FinetuneError",
    "FinetuneOptions",
    "OptionsError",
    "ResumeError",
    "RunExistsError",
    "INVOCATION_OPTIONS",
    "RECORD_OPTIONS",
    "RUNTIME_OPTIONS",
    "RunInUseError",
    "CALLABLE_OPTIONS",
    "callable_ref",
    "is_callable_ref",
    "saved_options",
]


class FinetuneError(ReszooError, ValueError):
    """A fine-tuning run cannot start or continue; ``exit_code`` is the CLI's exit status."""

    exit_code = 1


class OptionsError(FinetuneError):
    """Options that contradict each other or are out of range."""

    exit_code = 2  # like argparse's usage errors


class DataError(FinetuneError):
    """The training/validation data cannot be used (empty, one class, missing columns, ...)."""

    exit_code = 65  # sysexits EX_DATAERR


class RunExistsError(FinetuneError):
    """``out`` already holds a run (or other files) and neither resume nor overwrite was asked."""

    exit_code = 73  # sysexits EX_CANTCREAT


class RunInUseError(RunExistsError):
    """Another run holds the run folder's lock (two runs writing one folder would mix their files)."""


class ResumeError(FinetuneError):
    """``resume`` was asked but the run on disk cannot be continued as asked."""

    exit_code = 75  # sysexits EX_TEMPFAIL


@dataclass
class FinetuneOptions:
    """Every option of :func:`reszoo.finetune` (the CLI flags are the same names with dashes).

    Batch size is per process: the global batch is ``batch_size * processes * grad_accum``.
    """

    out: str | None = None  # run folder: checkpoints, metrics.jsonl, summary.json, the saved model
    dataset_name: str | None = None  # the dataset name written into the card (default: the data folder/file name)
    model_name: str | None = None  # registry-style name of the new model (default: from push_to or out)
    test_data: Any = None  # evaluated once at the end, reported as split "test" (a path, pairs or TensorData)
    # --- optimisation
    epochs: int = 3
    batch_size: int = 32
    lr: float = 1e-3
    head_lr: float | None = None  # learning rate of the new head (default: lr), e.g. 10-20x lr for a big backbone
    optimizer: str = "adamw"  # adamw | sgd (with Nesterov momentum)
    momentum: float = 0.9  # sgd's momentum
    weight_decay: float = 0.01
    warmup: float = 0.1  # < 1: fraction of the optimizer steps; >= 1: a number of steps
    # cosine | linear | constant after a linear warm-up; onecycle: torch's OneCycleLR (warm-up = its pct_start)
    schedule: str = "cosine"
    min_lr_ratio: float = 0.0  # where cosine/linear decay ends, as a fraction of lr
    label_smoothing: float = 0.0
    # None: cross-entropy (with label_smoothing); a name the base's domain provides in its
    # training module's CRITERIA (e.g. speech's "aam-softmax"); or a callable (logits, target) -> loss
    criterion: str | Callable[..., Any] | None = None
    # Train-time transform of a batch's model inputs (dict -> dict), e.g. SpecAugment or a random
    # affine; it draws from torch's RNG, which checkpoints save, so a resumed run stays exact
    augment: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    grad_accum: int = 1
    max_grad_norm: float | None = None
    mixed_precision: str = "auto"  # auto (bf16/fp16 on GPUs, off on CPU) | no | fp16 | bf16
    channels_last: bool | None = None  # image batches in channels-last memory order; None: on CUDA
    seed: int = 0
    # --- what is trained
    freeze_backbone: bool = False  # train the new head only (backbone in eval mode)
    freeze: list[str] | None = None  # parameter-name prefixes kept frozen, e.g. ["embeddings.word"]
    batchnorm: str = "train"  # train | frozen (running stats fixed) | sync (SyncBatchNorm across GPUs)
    head: str = "auto"  # auto (new head unless the classes are the base's own) | new | keep
    pretrained: bool = True  # False: the same architecture from random init (a from-scratch baseline)
    # --- LoRA (reszoo/lora.py, through peft): low-rank adapters on the base's layers + the head in full
    lora: bool = False
    lora_rank: int = 8
    lora_alpha: float | None = None  # scale alpha/rank; default 2 x rank
    lora_dropout: float = 0.0  # dropout on the adapters' input
    lora_targets: list[str] | None = None  # module names (peft's suffix match); default: the domain's lora_targets
    # --- validation
    val_split: float = 0.1  # fraction of train held out (stratified, seeded) when no val data is given
    early_stopping: int | None = None  # patience in epochs without improvement of `monitor`
    monitor: str | None = None  # validation metric: accuracy | macro_f1 | loss, or a sequence criterion's (default: its own, else accuracy)
    # --- data
    text_column: str | None = None  # tables: the column of inputs (default: the domain's, FinetuneSpec.data)
    label_column: str | None = None  # tables: the column of labels (default: the domain's)
    delimiter: str | None = None  # default: tab for .tsv, comma otherwise
    max_length: int | None = None  # text: tokens per example after truncation (default: the model's)
    on_bad_file: str = "skip"  # skip (counted, listed) | error
    # Sequence data (manifests): the symbols the targets are spelt with, one character each, which
    # become the model's labels (default: the base's when they hold every character of the training
    # text, else the text's own characters, sorted). A new vocabulary gets a new head.
    vocabulary: str | None = None
    group_by_length: int = 0  # > 0: batches of similar lengths (less padding), sorted within pools of N batches
    num_workers: int = 0
    # --- run management
    resume: bool = False
    overwrite: bool = False
    stop_after_epoch: int | None = None  # stop (resumably) after this epoch, e.g. to fit a job time limit
    keep_checkpoints: int = 1
    push_to: str | None = None
    private: bool = False
    license: str | None = None  # default: the base model's
    cpu: bool = False  # train on CPU even where a GPU is present
    progress: bool = True
    log_every: int = 0  # also log a step record every N optimizer steps (0: epoch records only)
    log_sample_ids: bool = False  # record which sample ids each process trained on (sample_ids.jsonl)
    script: str = "reszoo finetune"  # what the card names as the source of the measured metrics

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise OptionsError(message)

        need(isinstance(self.epochs, int) and self.epochs >= 1, f"epochs must be an integer >= 1, got {self.epochs!r}")
        need(isinstance(self.batch_size, int) and self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size!r}")
        need(self.lr > 0, f"lr must be > 0, got {self.lr!r}")
        need(self.head_lr is None or self.head_lr > 0, f"head_lr must be > 0, got {self.head_lr!r}")
        need(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay!r}")
        need(self.warmup >= 0, f"warmup must be >= 0 (a fraction < 1 or a step count), got {self.warmup!r}")
        need(self.schedule in ("cosine", "linear", "constant", "onecycle"),
             f"schedule must be cosine, linear, constant or onecycle, got {self.schedule!r}")
        need(self.schedule != "onecycle" or self.warmup > 0, "schedule='onecycle' needs warmup > 0 (its rising phase)")
        need(self.optimizer in ("adamw", "sgd"), f"optimizer must be adamw or sgd, got {self.optimizer!r}")
        need(0 <= self.momentum < 1, f"momentum must be in [0, 1), got {self.momentum!r}")
        need(self.criterion is None or callable(self.criterion) or (isinstance(self.criterion, str) and self.criterion.strip() != ""),
             f"criterion must be a name or a callable (logits, target) -> loss, got {self.criterion!r}")
        need(self.augment is None or callable(self.augment), f"augment must be a callable (inputs) -> inputs, got {self.augment!r}")
        need(isinstance(self.group_by_length, int) and self.group_by_length >= 0,
             f"group_by_length is a pool size in batches (>= 0), got {self.group_by_length!r}")
        if isinstance(self.vocabulary, list | tuple):
            self.vocabulary = "".join(self.vocabulary)
        need(self.vocabulary is None or (isinstance(self.vocabulary, str) and len(set(self.vocabulary)) == len(self.vocabulary)
                                         and len(self.vocabulary) > 0),
             f"vocabulary must be a string of distinct characters (one symbol each), got {self.vocabulary!r}")
        if isinstance(self.freeze, str):
            self.freeze = [self.freeze]
        need(self.freeze is None or all(isinstance(f, str) and f.strip() for f in self.freeze),
             f"freeze must be parameter-name prefixes, got {self.freeze!r}")
        need(0 <= self.min_lr_ratio <= 1, f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio!r}")
        need(0 <= self.label_smoothing < 1, f"label_smoothing must be in [0, 1), got {self.label_smoothing!r}")
        need(isinstance(self.grad_accum, int) and self.grad_accum >= 1, f"grad_accum must be an integer >= 1, got {self.grad_accum!r}")
        need(self.max_grad_norm is None or self.max_grad_norm > 0, f"max_grad_norm must be > 0, got {self.max_grad_norm!r}")
        need(self.mixed_precision in ("auto", "no", "fp16", "bf16"),
             f"mixed_precision must be auto, no, fp16 or bf16, got {self.mixed_precision!r}")
        need(self.batchnorm in ("train", "frozen", "sync"), f"batchnorm must be train, frozen or sync, got {self.batchnorm!r}")
        need(self.head in ("auto", "new", "keep"), f"head must be auto, new or keep, got {self.head!r}")
        need(0 <= self.val_split < 1, f"val_split must be in [0, 1), got {self.val_split!r}")
        need(self.early_stopping is None or (isinstance(self.early_stopping, int) and self.early_stopping >= 1),
             f"early_stopping is a patience in epochs (>= 1), got {self.early_stopping!r}")
        need(self.monitor is None or (isinstance(self.monitor, str) and bool(self.monitor)),
             f"monitor must be a validation metric's name (accuracy, macro_f1, loss, ...), got {self.monitor!r}")
        need(self.max_length is None or self.max_length >= 2, f"max_length must be >= 2, got {self.max_length!r}")
        need(self.on_bad_file in ("skip", "error"), f"on_bad_file must be skip or error, got {self.on_bad_file!r}")
        need(self.num_workers >= 0, f"num_workers must be >= 0, got {self.num_workers!r}")
        need(self.keep_checkpoints >= 1, f"keep_checkpoints must be >= 1, got {self.keep_checkpoints!r}")
        need(self.log_every >= 0, f"log_every must be >= 0, got {self.log_every!r}")
        need(self.stop_after_epoch is None or self.stop_after_epoch >= 1, f"stop_after_epoch must be >= 1, got {self.stop_after_epoch!r}")
        need(not (self.resume and self.overwrite), "resume and overwrite exclude each other: continue the run, or start it again")
        need(self.push_to is None or self.push_to.count("/") == 1, f"push_to must be a Hub repo id 'owner/name', got {self.push_to!r}")
        need(self.stop_after_epoch is None or self.out is not None, "stop_after_epoch needs out= (a run folder to resume from)")
        need(not self.resume or self.out is not None, "resume needs out= (the run folder to continue)")
        self._validate_lora(need)

    def _validate_lora(self, need: Any) -> None:
        if isinstance(self.lora_targets, str):
            self.lora_targets = [self.lora_targets]
        elif isinstance(self.lora_targets, tuple):
            self.lora_targets = list(self.lora_targets)
        rank = self.lora_rank
        need(isinstance(rank, int) and not isinstance(rank, bool) and rank >= 1, f"lora_rank must be an integer >= 1, got {rank!r}")
        need(self.lora_alpha is None or self.lora_alpha > 0, f"lora_alpha must be > 0, got {self.lora_alpha!r}")
        need(0 <= self.lora_dropout < 1, f"lora_dropout must be in [0, 1), got {self.lora_dropout!r}")
        need(self.lora_targets is None or (len(self.lora_targets) > 0 and all(isinstance(t, str) and t.strip()
                                                                               for t in self.lora_targets)),
             f"lora_targets must be one or more module names, got {self.lora_targets!r}")
        if not self.lora:
            given = [f.name for f in fields(self) if f.name.startswith("lora_") and getattr(self, f.name) != f.default]
            need(not given, f"{', '.join(given)} given without lora (pass --lora / lora=True to train an adapter)")
            return
        need(not self.freeze_backbone, "lora and freeze_backbone exclude each other: LoRA already freezes the base "
                                       "and trains adapters and the head; freeze_backbone trains the head only")
        need(self.pretrained, "lora adapts pretrained weights; it does not combine with from_scratch (pretrained=False)")
        need(self.batchnorm != "sync", "lora keeps the base's BatchNorm statistics (the adapter holds none): "
                                       "batchnorm='sync' does not apply")

    @classmethod
    def from_kwargs(cls, options: dict[str, Any]) -> FinetuneOptions:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise OptionsError(f"unknown fine-tuning option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**options)

    def to_dict(self) -> dict[str, Any]:
        # Shallow: a value may be a callable or in-memory data (tensors), never worth a deep copy.
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def replace(self, **changes: Any) -> FinetuneOptions:
        return dataclasses.replace(self, **changes)


# Options of one invocation (where and how this process runs, whether it starts, resumes or
# replaces the run): never saved in run.json, so a --resume does not re-apply them (a run started
# with --overwrite or --stop-after-epoch would otherwise refuse to resume, or stop again).
INVOCATION_OPTIONS = frozenset({"out", "resume", "overwrite", "stop_after_epoch", "cpu", "progress", "num_workers"})

# Options that say how the run is recorded and published, not what is trained: saved, so that
# ``--resume`` from the run folder alone ends the run as it was started, but they may change.
RECORD_OPTIONS = frozenset({
    "keep_checkpoints", "push_to", "private", "log_every", "log_sample_ids", "model_name", "license",
    "dataset_name", "script", "test_data",
})

# Everything else (model, data, hyper-parameters, seed) defines the run: saved, and a --resume
# that gives a different value is refused.
RUNTIME_OPTIONS = INVOCATION_OPTIONS | RECORD_OPTIONS


# Options that may hold a Python callable: run.json keeps a reference (``callable_ref``), and a
# resume needs the same callable given again.
CALLABLE_OPTIONS = frozenset({"criterion", "augment"})
_CALLABLE_PREFIX = "callable:"


def callable_ref(value: Any) -> Any:
    """A callable as run.json records it (``callable:module.qualname``); other values as they are."""
    if value is None or isinstance(value, str) or not callable(value):
        return value
    kind = value if isinstance(value, type) or hasattr(value, "__qualname__") else type(value)
    return f"{_CALLABLE_PREFIX}{getattr(kind, '__module__', '?')}.{getattr(kind, '__qualname__', repr(kind))}"


def is_callable_ref(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(_CALLABLE_PREFIX)


def saved_options(opts: FinetuneOptions) -> dict[str, Any]:
    """The options run.json keeps: all but the invocation's own; callables by reference."""
    saved = {k: callable_ref(v) if k in CALLABLE_OPTIONS else v
             for k, v in opts.to_dict().items() if k not in INVOCATION_OPTIONS}
    if saved.get("test_data") is not None and not isinstance(saved["test_data"], str):
        saved["test_data"] = "<in-memory data>"  # pairs or tensors: given again on resume
    return saved
