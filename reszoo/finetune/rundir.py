"""The run folder (``out``): its state, what a run writes there, resume bookkeeping and checkpoints.

Layout::

    .lock                    held by the run in progress: one run at a time (see runlock.py)
    run.json                 what was asked: model, data, the run's options, data fingerprint
    metrics.jsonl            one JSON record per epoch (and per ``log_every`` steps), then a summary
    summary.json             the final metrics
    checkpoints/epoch-NNNN/  accelerate state + trainer_state.json (the last ``keep_checkpoints``)
    checkpoints/best.safetensors   weights of the best validation epoch so far
    model.safetensors, config.json, README.md   the result, in reszoo's Hub format

Only the main process writes here; the other processes read (resume) and wait at barriers.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .data import LabeledData
from .options import (
    INVOCATION_OPTIONS,
    RUNTIME_OPTIONS,
    FinetuneOptions,
    OptionsError,
    ResumeError,
    RunExistsError,
    saved_options,
)
from .runlock import LOCK_FILES

__all__ = [
    "BEST_WEIGHTS", "CHECKPOINTS_DIR", "METRICS_FILE", "RUN_ARTIFACTS", "RUN_FILE", "SAMPLE_IDS_FILE",
    "SUMMARY_FILE", "TRAINER_STATE", "MetricsLog", "check_overlap", "load_best", "new_state", "open_run",
    "restore_state", "save_checkpoint", "save_weights", "start_run_folder", "finish_run_folder", "write_json",
]

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


# --------------------------------------------------------------------------- folder state


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


def check_overlap(out: Path, data: dict[str, Any]) -> None:
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


def write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)


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


# --------------------------------------------------------------------------- start, resume, finish


def fingerprint(data: LabeledData) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps([data.classes, data.ids, data.targets]).encode())
    return digest.hexdigest()


def data_ref(source: Any) -> Any:
    return str(Path(source).resolve()) if isinstance(source, str | os.PathLike) else "<in-memory pairs>"


def _merge_resume(saved: dict[str, Any], given: dict[str, Any], name: str, train_data: Any,
                  val_data: Any) -> tuple[dict[str, Any], Any, Any]:
    """Options of the saved run, with the runtime ones given now; anything else given must agree."""
    conflicts = []
    if name != saved["model"]:
        conflicts.append(f"model {name!r} (the run fine-tunes {saved['model']!r})")
    for label, now, then in (("--data", train_data, saved["train_data"]), ("--val", val_data, saved["val_data"])):
        if now is not None and data_ref(now) != then:
            conflicts.append(f"{label} {data_ref(now)} (the run used {then})")
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


def open_run(out: Path | None, opts: FinetuneOptions, given: dict[str, Any], name: str, train_data: Any,
             val_data: Any) -> tuple[FinetuneOptions, dict[str, Any] | None, Any, Any]:
    """Check the run folder; for a resume, the saved run.json and the options and data it continues with."""
    saved = None
    if out is not None:
        _check_out(out, opts)
        if opts.resume:
            saved = json.loads((out / RUN_FILE).read_text(encoding="utf-8"))
            merged, train_data, val_data = _merge_resume(saved, given, name, train_data, val_data)
            opts = FinetuneOptions.from_kwargs(merged)
            check_overlap(out, {"--data": train_data, "--val": val_data, "--test": opts.test_data})
    return opts, saved, train_data, val_data


def start_run_folder(out: Path, opts: FinetuneOptions, saved: dict[str, Any] | None, *, name: str, train_data: Any,
                     val_data: Any, fingerprint: str, num_train: int, classes: tuple[str, ...]) -> None:
    """Main process: clear an --overwrite'd run's files, create the folder, write run.json for a new run."""
    if opts.overwrite:
        _remove_run_artifacts(out)
    out.mkdir(parents=True, exist_ok=True)
    if saved is None:
        write_json(out / RUN_FILE, {
            "model": name, "train_data": data_ref(train_data),
            "val_data": data_ref(val_data) if val_data is not None else None,
            "options": saved_options(opts), "fingerprint": fingerprint, "num_train": num_train,
            "classes": list(classes), "status": "running",
        })


def finish_run_folder(out: Path, summary: dict[str, Any], log: MetricsLog, written: list[str]) -> None:
    """Main process: summary.json, the summary record, and run.json marked complete with what was written."""
    write_json(out / SUMMARY_FILE, summary)
    log.write({"event": "summary", **summary})
    run_info = json.loads((out / RUN_FILE).read_text(encoding="utf-8"))
    written = sorted(set(run_info.get("written", [])) | set(written))
    write_json(out / RUN_FILE, {**run_info, "status": "complete", "written": written})


def new_state() -> dict[str, Any]:
    """The loop's own state, saved with every checkpoint (trainer_state.json)."""
    return {"epoch": 0, "global_step": 0, "best_epoch": None, "best": None, "bad_epochs": 0,
            "history": [], "stopped_early": False}


def _checkpoints(folder: Path) -> list[Path]:
    """Complete epoch checkpoints (they hold trainer_state.json), oldest first."""
    root = folder / CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if re.fullmatch(r"epoch-\d{4,}", p.name) and (p / TRAINER_STATE).is_file()]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


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


def restore_state(accelerator: Any, out: Path, log: MetricsLog, say: Any) -> dict[str, Any]:
    """A resumed run: accelerate's state and the loop's from the last complete checkpoint."""
    state = new_state()
    checkpoints = _checkpoints(out)
    if checkpoints:
        last = checkpoints[-1]
        accelerator.load_state(str(last))
        _verify_rng_restored(accelerator, last)
        state = json.loads((last / TRAINER_STATE).read_text(encoding="utf-8"))
        say(f"resuming {out} after epoch {state['epoch']} (step {state['global_step']})")
    else:
        say(f"resuming {out}: no checkpoint was written yet, starting from epoch 1")
    if accelerator.is_main_process:
        log.truncate_after(state["epoch"])
    return state


# --------------------------------------------------------------------------- weights and checkpoints


def save_weights(model: nn.Module, path: Path) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}, tmp)
    tmp.replace(path)


def load_best(model: nn.Module, out: Path) -> None:
    from safetensors.torch import load_file

    # Read on the CPU: load_state_dict copies onto the model's own device. (safetensors
    # refuses accelerate's "cpu:0", the device of CPU processes under torchrun.)
    model.load_state_dict(load_file(out / CHECKPOINTS_DIR / BEST_WEIGHTS))


def save_checkpoint(accelerator: Any, out: Path, epoch: int, state: dict[str, Any], keep: int) -> None:
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
        write_json(partial / TRAINER_STATE, {k: v for k, v in state.items() if k != "best_weights"})
        if final.exists():
            shutil.rmtree(final)
        partial.rename(final)
        for old in _checkpoints(out)[:-keep]:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()
