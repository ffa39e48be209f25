"""``reszoo finetune NAME --data PATH [--val PATH] --out DIR [options]``.

Exit status: 0 done (or stopped resumably by --stop-after-epoch), 2 bad options, 65 unusable
data, 73 ``--out`` already holds a run (or other files) and neither --resume nor --overwrite was
given, or another run is writing it, 75 a run that cannot be resumed as asked, 130 interrupted (the run resumes from its last
epoch checkpoint). Light on import: argparse only; the core CLI builds its parser with it.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from .options import FinetuneOptions

__all__ = ["add_parser", "run"]

_DEFAULTS = FinetuneOptions()
_EPILOG = """\
examples:
  reszoo finetune resnet-mnist --data fashion/train --test fashion/test --epochs 3 --out runs/fashion
  reszoo finetune minilm-l6-sentence --data train.tsv --val test.tsv --out runs/intents
  reszoo finetune tdnn-fsdd-digits --data speakers/train --out runs/speakers --freeze-backbone
  reszoo finetune minilm-l6-sentence --data train.tsv --out runs/intents-lora --lora --lora-rank 16
  reszoo finetune resnet-mnist --data fashion/train --out runs/fashion --resume      # continue a run

several processes (DDP; the same command, started by accelerate or torchrun):
  accelerate launch --multi_gpu --num_processes 8 -m reszoo.cli finetune NAME --data D --out R
  torchrun --nproc_per_node 2 -m reszoo.cli finetune NAME --data D --out R --cpu

exit status: 0 done, 2 bad options, 65 unusable data, 73 --out holds a run or other files (or
another run is writing it), 75 cannot resume as asked, 130 interrupted (continue with --resume). See docs/finetune.md.
"""


def _opt(p: argparse.ArgumentParser, flag: str, help: str, **kwargs: Any) -> None:
    """An option whose default stays FinetuneOptions' (SUPPRESS: only what is given is passed,
    so --resume can tell the options given now from the run's own)."""
    dest = flag.lstrip("-").replace("-", "_")
    kwargs.setdefault("dest", dest)
    default = getattr(_DEFAULTS, kwargs["dest"], None)
    if kwargs.get("action") not in ("store_true", "store_false") and default is not None:
        help = f"{help} (default {default})"
    p.add_argument(flag, default=argparse.SUPPRESS, help=help, **kwargs)


def _data_formats() -> dict[str, str]:
    """Domain name -> how its training data comes, for every domain that can be fine-tuned."""
    from .. import domains

    out = {}
    for name in domains.names():  # light: each domain's declaration only
        domain = domains.get(name)
        kinds = [spec.data.describe() for spec in (domain.finetune, *domain.finetune_tasks.values()) if spec is not None]
        if kinds:
            out[name] = " or ".join(dict.fromkeys(kinds)) + (" (by the model's task)" if len(kinds) > 1 else "")
    return out


def add_parser(subparsers: Any) -> None:
    formats = _data_formats()
    p = subparsers.add_parser(
        "finetune",
        help=f"fine-tune a classifier or recogniser ({', '.join(formats)}) on your data; scales out with accelerate/torchrun",
        description="Fine-tune a model of the zoo (a classifier, or a recogniser on manifests of files and text) on "
                    "your data; one CPU, one GPU, several "
                    "GPUs or nodes (launched by accelerate or torchrun).",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("name", help="registry name, saved-model folder or hf://owner/name[@rev] of the base model")
    data = p.add_argument_group("data")
    data.add_argument("--data", dest="train_data", default=None,
                      help="training data, by the model's domain: " + "; ".join(f"{n}: {f}" for n, f in formats.items()))
    data.add_argument("--val", dest="val_data", default=None,
                      help="validation data (same format); default: a seeded, stratified --val-split of --data")
    _opt(data, "--test", "test data, evaluated once at the end", dest="test_data")
    _opt(data, "--val-split", "fraction of --data held out for validation when --val is not given", type=float)
    _opt(data, "--dataset-name", "dataset name for the model card (default: the data folder/file name)")
    _opt(data, "--text-column", "tables: the column holding the inputs (default: the domain's)")
    _opt(data, "--label-column", "tables: the column holding the labels (default: the domain's)")
    _opt(data, "--delimiter", "tables: the column separator (default: tab for .tsv, comma otherwise)")
    _opt(data, "--max-length", "tokenized inputs: tokens per example after truncation (default: the model's)", type=int)
    _opt(data, "--on-bad-file", "unreadable files/malformed rows: skip them (counted) or stop with an error",
         choices=("skip", "error"))
    _opt(data, "--num-workers", "data loader worker processes", type=int)

    train = p.add_argument_group("training")
    _opt(train, "--epochs", "epochs", type=int)
    _opt(train, "--batch-size", "examples per batch and process", type=int)
    _opt(train, "--lr", "peak learning rate (AdamW)", type=float)
    _opt(train, "--head-lr", "peak learning rate of the head (default: --lr)", type=float)
    _opt(train, "--weight-decay", "AdamW weight decay (not on biases and norms)", type=float)
    _opt(train, "--warmup", "linear warm-up: a fraction (< 1) of the optimizer steps, or a step count", type=float)
    _opt(train, "--schedule", "learning-rate decay after warm-up", choices=("cosine", "linear", "constant"))
    _opt(train, "--min-lr-ratio", "final learning rate as a fraction of --lr", type=float)
    _opt(train, "--label-smoothing", "cross-entropy label smoothing", type=float)
    _opt(train, "--grad-accum", "gradient accumulation steps", type=int)
    _opt(train, "--max-grad-norm", "clip the gradient norm to this", type=float)
    _opt(train, "--mixed-precision", "auto: bf16 (or fp16) on GPUs, off on CPU", choices=("auto", "no", "fp16", "bf16"))
    _opt(train, "--seed", "seed of the head init, the shuffling, the validation split and dropout", type=int)
    _opt(train, "--freeze-backbone", "train the new head only", action="store_true")
    _opt(train, "--batchnorm", "BatchNorm statistics: updated per process, frozen, or synced across GPUs",
         choices=("train", "frozen", "sync"))
    _opt(train, "--head", "auto: a new head unless the data has the base's own classes", choices=("auto", "new", "keep"))
    _opt(train, "--from-scratch", "random init instead of the pretrained weights (a baseline)",
         action="store_false", dest="pretrained")
    lora = p.add_argument_group("LoRA (low-rank adapters through peft; the head is trained in full)")
    _opt(lora, "--lora", "train LoRA adapters on the base's layers (and the head) instead of every weight; "
                         "saved as a PEFT adapter naming its base", action="store_true")
    _opt(lora, "--lora-rank", "rank of the adapters", type=int)
    _opt(lora, "--lora-alpha", "scale numerator: updates are scaled by alpha/rank (default 2 x rank)", type=float)
    _opt(lora, "--lora-dropout", "dropout on the adapters' input", type=float)
    _opt(lora, "--lora-targets", "module names to adapt, e.g. qkv proj (default: the domain's lora_targets; "
                                 "see docs/finetune.md)", nargs="+", metavar="NAME")
    _opt(train, "--early-stopping", "stop after this many epochs without validation improvement", type=int)
    _opt(train, "--monitor", "validation metric for the best epoch and early stopping: accuracy, macro_f1, loss, "
                             "or one a sequence criterion reports (default: the criterion's, else accuracy)")
    _opt(train, "--vocabulary", "manifest data: the characters the text is spelt with, e.g. \" abc'\" (default: the "
                                "base's when they cover the text, else the text's own)")
    _opt(train, "--cpu", "train on CPU even where a GPU is present", action="store_true")

    run_group = p.add_argument_group("run")
    run_group.add_argument("--out", required=True, help="run folder: checkpoints, metrics.jsonl, summary.json, the model")
    _opt(run_group, "--resume", "continue the run in --out from its last epoch checkpoint", action="store_true")
    _opt(run_group, "--overwrite", "replace the run in --out (only a run's own files are removed)", action="store_true")
    _opt(run_group, "--stop-after-epoch", "stop (resumably) after this epoch, e.g. to fit a job's time limit", type=int)
    _opt(run_group, "--keep-checkpoints", "epoch checkpoints kept", type=int)
    _opt(run_group, "--model-name", "name of the new model in its card (default: from --push-to or --out)")
    _opt(run_group, "--license", "license of the new model (default: the base model's)")
    _opt(run_group, "--push-to", "publish the result to this Hub repo (owner/name)")
    _opt(run_group, "--private", "make the pushed repo private", action="store_true")
    _opt(run_group, "--log-every", "also log the loss every N optimizer steps (0: per epoch only)", type=int)
    _opt(run_group, "--log-sample-ids", "record the sample ids each process trained on (sample_ids.jsonl)",
         action="store_true")
    _opt(run_group, "--no-progress", "no progress bars", action="store_false", dest="progress")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .options import FinetuneError

    skip = {"command", "func", "name", "train_data", "val_data"}
    options = {k: v for k, v in vars(args).items() if k not in skip}
    try:
        from . import finetune

        result = finetune(args.name, args.train_data, args.val_data, **options)
    except FinetuneError as err:
        if os.environ.get("RANK", "0") == "0":  # one message, not one per process
            print(f"reszoo finetune: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        if os.environ.get("RANK", "0") == "0":
            print(f"reszoo finetune: interrupted; continue with: reszoo finetune {args.name} --out {args.out} --resume",
                  file=sys.stderr)
        return 130
    finally:
        _leave_process_group()
    return 0 if result is not None else 1


def _leave_process_group() -> None:
    """Tear down the torchrun/accelerate process group before the interpreter exits: a gloo group
    left alive aborts its process at exit ("terminate called without an active exception"), which
    torchrun then reports instead of the run's own exit status."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
