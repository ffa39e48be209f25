"""Batch prediction for every domain: ``reszoo.predict(model, inputs)`` and ``reszoo predict``.

The core holds no domain code. A domain's ``predict.py`` describes, for one loaded model, how its
inputs are read and run (a :class:`Task`); this module does the rest, the same way everywhere:

* **inputs**: files, folders (searched recursively for the domain's file extensions, hidden
  files and folders skipped, in sorted order), rows of tables (the text domain: TSV/CSV/JSONL
  columns or plain text lines), literal values (texts, observations, labels) and Python objects
  (PIL images, tensors, waveforms). Only the list of names and paths is made up front; the
  inputs themselves are read batch by batch.
* **batches**: a ``torch.utils.data.DataLoader`` reads and preprocesses inputs (in
  ``num_workers`` worker processes), the model runs on each batch under ``torch.inference_mode``;
  memory does not grow with the number of inputs.
* **rows**: every input gets one *row group*, in input order: its rows (one per top-k class,
  one embedding, ...) or one row ``{"input": NAME, "error": MESSAGE}`` when it cannot be read or
  run. An unreadable input never stops the run. The fields of each kind of model are listed in
  docs/inference.md (``input``, ``rank``, ``label``, ``prob`` for every classifier).
* **names**: ``input`` is the path, the text, ``FILE:LINE`` for a table row, or a description of
  a Python object. A name given twice is made unique (``NAME#2``), so that a resumed run
  (:class:`reszoo.rows.RowWriter`, ``--resume``) can tell every input apart.

Light on import: torch and tqdm are imported when predicting.
"""

from __future__ import annotations

import os
import sys
import time
import types
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import InputError, ReszooError

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = [
    "Options",
    "Task",
    "classify_rows",
    "describe",
    "domain_predict",
    "embedding_rows",
    "list_inputs",
    "predict",
    "predict_groups",
]



# --------------------------------------------------------------------------- what a domain provides


@dataclass(frozen=True)
class Options:
    """What a caller may ask of a prediction; each domain's ``task`` takes what applies to it.

    ``top_k``: classes (or tokens, actions) per input. ``reference``: an input every other one is
    compared with (embedding models: cosine ``score``; speaker models add ``match``). ``out_dir``:
    where generators write their images. ``column``: the column of a table of texts."""

    top_k: int = 5
    reference: Any = None
    out_dir: str | os.PathLike[str] | None = None
    column: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 1:
            raise InputError(f"top_k must be a whole number >= 1, got {self.top_k!r}")


@dataclass(frozen=True)
class Task:
    """How one model predicts, as its domain's ``predict.task(model, options)`` describes it.

    ``read(value, index)`` turns one input (``index``: its position among all inputs, the seed of
    a generator's sample) into a sample; it runs in the DataLoader's workers and raises for an
    input that cannot be used. ``collate(samples)`` makes a batch of samples; ``run(batch)`` runs
    the model and returns, for each sample, its rows without ``input`` (the core adds it).
    ``fields`` are the row fields in order, ``input`` first (``None``: not known in advance).
    A folder given as input is searched for ``extensions`` (None: folders are not inputs).
    ``expand(arg)`` reads an argument that stands for several inputs (a table of texts) as
    ``(name, value)`` pairs, a value that is an exception marking an unreadable one; None: not
    such an argument."""

    fields: tuple[str, ...] | None
    read: Callable[[Any, int], Any]
    run: Callable[[Any], list[list[dict[str, Any]]]]
    collate: Callable[[list[Any]], Any] = list
    extensions: frozenset[str] | None = None
    kind: str = "input"  # how messages name the files of a folder
    expand: Callable[[str], Iterable[tuple[str, Any]] | None] | None = None


def describe(item: Any) -> str:
    """How an input is named in the rows: paths as given, other objects by type and shape."""
    if isinstance(item, str | os.PathLike):
        return os.fspath(item)
    shape = getattr(item, "shape", None)
    if shape is None and hasattr(item, "size") and not callable(item.size):
        shape = item.size  # PIL images
    if shape is None and isinstance(item, tuple) and item and hasattr(item[0], "shape"):
        shape = item[0].shape  # (waveform, sample_rate)
    return f"<{type(item).__name__} {tuple(shape)}>" if shape is not None else f"<{type(item).__name__}>"


def classify_rows(probs: torch.Tensor, labels: Sequence[str] | None, top_k: int) -> list[list[dict[str, Any]]]:
    """Rows ``{rank, label, prob}`` of the top ``top_k`` classes of each row of ``probs`` ``(B, C)``."""
    top = probs.float().topk(min(top_k, probs.shape[-1]), dim=-1)
    groups = []
    for values, indices in zip(top.values.tolist(), top.indices.tolist(), strict=True):
        groups.append([{"rank": rank, "label": labels[i] if labels else str(i), "prob": round(p, 6)}
                       for rank, (p, i) in enumerate(zip(values, indices, strict=True), start=1)])
    return groups


def embedding_rows(embeddings: torch.Tensor, reference: tuple[str, torch.Tensor] | None = None,
                   threshold: float | None = None) -> list[list[dict[str, Any]]]:
    """One row per embedding ``(B, D)``: ``{embedding}``, or with a ``reference`` ``(name, vector)``
    ``{reference, score}`` (cosine similarity), plus ``{match, threshold}`` where the model has a
    decision threshold (speaker verification)."""
    import torch.nn.functional as F

    if reference is None:
        return [[{"embedding": [round(v, 6) for v in e]}] for e in embeddings.float().tolist()]
    name, vector = reference
    scores = F.cosine_similarity(embeddings.float(), vector.float().to(embeddings.device)[None], dim=-1).tolist()
    groups = []
    for score in scores:
        row: dict[str, Any] = {"reference": name, "score": round(score, 6)}
        if threshold is not None:
            row |= {"match": score >= threshold, "threshold": threshold}
        groups.append([row])
    return groups


# --------------------------------------------------------------------------- expanding the arguments


def _files_under(folder: Path, extensions: frozenset[str]) -> Iterator[Path]:
    """Files with one of ``extensions`` under ``folder``, recursively, sorted, hidden ones skipped."""
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in extensions:
                yield Path(root, name)


def _expand(inputs: Iterable[Any], task: Task) -> Iterator[tuple[str, Any]]:
    """``(name, value)`` of every input the arguments stand for, in order."""
    for arg in inputs:
        if not isinstance(arg, str | os.PathLike):
            yield describe(arg), arg
            continue
        text = os.fspath(arg)
        expanded = task.expand(text) if task.expand is not None else None
        if expanded is not None:
            yield from expanded
            continue
        if task.extensions is not None and os.path.isdir(text):
            found = False
            for path in _files_under(Path(text), task.extensions):
                found = True
                yield str(path), str(path)
            if not found:
                yield text, InputError(f"{text}: a folder with no {task.kind} files ({', '.join(sorted(task.extensions))}) "
                                       "in it or below")
            continue
        yield text, arg


def _unique(pairs: Iterable[tuple[str, Any]]) -> list[tuple[int, str, Any]]:
    """``(index, name, value)`` with every name unique: a repeated name gets ``#2``, ``#3``, ..."""
    used: set[str] = set()
    out = []
    for index, (name, value) in enumerate(pairs):
        unique, n = name, 1
        while unique in used:
            n += 1
            unique = f"{name}#{n}"
        used.add(unique)
        out.append((index, unique, value))
    return out


# --------------------------------------------------------------------------- running


class _Failure:
    """An input that could not be read: the exception, carried through the DataLoader (from a
    worker process, pickled: one that cannot be is sent as an InputError with its message)."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def __reduce__(self) -> tuple[Any, ...]:
        import pickle

        try:
            pickle.loads(pickle.dumps(self.error))
            return _Failure, (self.error,)
        except Exception:
            return _Failure, (InputError(_message(self.error)),)


def _message(error: BaseException) -> str:
    """One line saying what is wrong with an input."""
    text = str(error).strip() or type(error).__name__
    if isinstance(error, KeyError) and not isinstance(error, ReszooError) and len(error.args) == 1:
        text = f"KeyError: {error.args[0]}"
    elif not isinstance(error, ReszooError | OSError | ValueError | TypeError):
        text = f"{type(error).__name__}: {text}"  # a decoder's own error: say whose
    return " ".join(text.split())


class _Inputs:
    """The DataLoader's map-style data set: input ``i`` read by the task, or its failure."""

    def __init__(self, items: list[tuple[int, str, Any]], read: Callable[[Any, int], Any]) -> None:
        self.items = items
        self.read = read

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[str, Any]:
        index, name, value = self.items[i]
        if isinstance(value, BaseException):
            return name, _Failure(value)
        try:
            return name, self.read(value, index)
        except Exception as err:  # any unreadable input becomes its error row; the run goes on
            return name, _Failure(err)


def _as_list(batch: list[Any]) -> list[Any]:
    return batch  # samples travel as they are; the task collates them in the main process


def _run_isolated(task: Task, samples: list[Any]) -> list[list[dict[str, Any]] | BaseException]:
    """The rows of each sample; when the batch fails, each sample alone, so that only the inputs
    that fail get an error row."""
    try:
        groups = task.run(task.collate(samples))
        if len(groups) != len(samples):  # a task's bug, not an input's
            raise RuntimeError(f"the task returned {len(groups)} row groups for {len(samples)} inputs")
        return list(groups)
    except Exception as err:
        if len(samples) == 1:
            return [err]
        return [_run_isolated(task, [s])[0] for s in samples]


def _resolve(model: Any, device: Any, mirror: Any) -> nn.Module:
    if isinstance(model, str | os.PathLike):
        from .api import load

        return load(os.fspath(model), device=device, mirror=mirror)
    if device is not None:
        raise InputError("device= applies to a model given by name; move a loaded model with model.to(device)")
    return model


def _domain_of(model: Any) -> str:
    """The domain of a loaded model (``model.entry``), or of a model built by hand (its class's package)."""
    from . import domains

    entry = getattr(model, "entry", None)
    if entry is not None:
        return entry.domain
    module = type(model).__module__
    for name in domains.names():
        package = domains.get(name).package
        if module == package or module.startswith(package + "."):
            return name
    raise InputError(f"cannot tell the domain of a {type(model).__name__}: load the model with reszoo.load, "
                     "or call the domain's own predict (reszoo.<domain>.predict)")


def _legacy_task(domain: Any, model: Any, options: Options) -> Task:
    """A domain whose predict.py has only ``predict(model, inputs, top_k)``: one input at a time."""
    predict_fn = domain.module("predict").predict

    def run(values: list[Any]) -> list[list[dict[str, Any]]]:
        return [[{k: v for k, v in row.items() if k != "input"} for row in predict_fn(model, [value], top_k=options.top_k)]
                for value in values]

    return Task(fields=None, read=lambda value, index: value, run=run)


def make_task(model: Any, options: Options) -> Task:
    """The task of ``model``'s domain for these options."""
    from . import domains

    domain = domains.get(_domain_of(model))
    factory = getattr(domain.module("predict"), "task", None)
    return factory(model, options) if factory is not None else _legacy_task(domain, model, options)


def list_inputs(inputs: Any, task: Task, skip: Iterable[str] = ()) -> list[tuple[int, str, Any]]:
    """``(index, unique name, value)`` of every input the arguments stand for, in order, less the
    names in ``skip``: what :func:`predict_groups` runs (values are read later, batch by batch)."""
    # One input (a path, text, tensor, array, image, (waveform, sample_rate)), or a list or iterator of them.
    if not isinstance(inputs, list | Iterator):
        inputs = [inputs]
    skip = set(skip)
    return [item for item in _unique(_expand(inputs, task)) if item[1] not in skip]


def predict_groups(model: Any, inputs: Any, *, task: Task | None = None, batch_size: int = 32, num_workers: int = 0,
                   skip: Iterable[str] = (), progress: bool | None = None, options: Options | None = None,
                   device: Any = None, mirror: Any = None, shard: tuple[int, int] | None = None
                   ) -> Iterator[tuple[list[dict[str, Any]], BaseException | None]]:
    """``(rows, error)`` of each input, in order (see :func:`predict`; ``skip``: names not to run):
    its row group, and the exception behind its error row (None when it has none). ``shard``
    ``(rank, world)``: only the batches ``rank``, ``rank + world``, ... of the inputs (one process
    of a multi-process run, :mod:`reszoo.distributed`)."""
    import torch

    _check_count("batch_size", batch_size, 1)
    _check_count("num_workers", num_workers, 0)
    model = _resolve(model, device, mirror)
    task = task or make_task(model, options or Options())
    items = list_inputs(inputs, task, skip)
    if shard is not None:
        rank, world = shard
        items = [item for i, item in enumerate(items) if (i // batch_size) % world == rank]
    if not items:
        return
    loader = torch.utils.data.DataLoader(_Inputs(items, task.read), batch_size=batch_size, num_workers=num_workers,
                                         collate_fn=_as_list, shuffle=False, multiprocessing_context=_context(num_workers))
    from .optimize import CompilePolicy

    policy = CompilePolicy.wanted(model, len(items))  # an optimized model compiles when the input count pays
    bar = _progress(len(items), progress)
    was_training = getattr(model, "training", False)
    if was_training:
        model.eval()  # predictions never use dropout or update batch-norm statistics
    try:
        for batch in loader:
            ok = [i for i, (_, sample) in enumerate(batch) if not isinstance(sample, _Failure)]
            # Inference mode around the model only: a generator suspended at a yield inside it would
            # leave it on for the caller's code.
            started = time.perf_counter()
            with torch.inference_mode():
                results = dict(zip(ok, _run_isolated(task, [batch[i][1] for i in ok]) if ok else [], strict=True))
            if policy is not None and ok:
                policy.after_batch(started, len(ok))
            for i, (name, sample) in enumerate(batch):
                result = sample.error if isinstance(sample, _Failure) else results[i]
                if isinstance(result, BaseException):
                    yield [{"input": name, "error": _message(result)}], result
                else:
                    yield [{"input": name, **row} for row in result], None
            bar.update(len(batch))
    finally:
        bar.close()
        if was_training:
            model.train()


def predict(model: Any, inputs: Any, *, batch_size: int = 32, num_workers: int = 0, top_k: int = 5,
            reference: Any = None, out_dir: str | os.PathLike[str] | None = None, column: str | None = None,
            skip: Iterable[str] = (), errors: str = "row", progress: bool | None = None, device: Any = None,
            mirror: Any = None, task: Task | None = None) -> Iterator[dict[str, Any]]:
    """Predict ``model`` (a loaded model, or a name for :func:`reszoo.load`) on ``inputs``: rows.

    ``inputs``: one input or a list (or iterator) of them: paths, folders (searched recursively for the domain's files),
    tables of texts (``column``), texts, observations, labels or Python objects (PIL images,
    tensors, ``(waveform, sample_rate)``). Rows come in input order, one *group* per input
    (``top_k`` rows for a classifier; the fields of each kind of model: docs/inference.md), read
    and run ``batch_size`` at a time (``num_workers`` processes read the inputs). An input that
    cannot be read or run gives one row ``{"input", "error"}`` (``errors="raise"``: its exception
    is raised instead). ``reference``: embedding models compare every input with it; ``out_dir``:
    where generators write images (default: a new temporary folder); ``skip``: input names not
    to run (what a resumed run has). ``progress``: a bar on stderr (None: on a terminal, for work
    that lasts over two seconds).
    """
    if errors not in ("row", "raise"):
        raise InputError(f"errors must be 'row' or 'raise', got {errors!r}")
    options = Options(top_k=top_k, reference=reference, out_dir=out_dir, column=column)
    groups = predict_groups(model, inputs, task=task, batch_size=batch_size, num_workers=num_workers, skip=skip,
                            progress=progress, options=options, device=device, mirror=mirror)
    return _rows(groups, errors)


def domain_predict(factory: Callable[[Any, Options], Task], model: Any, inputs: Any, top_k: int = 5,
                   **options: Any) -> list[dict[str, Any]]:
    """What a domain's ``predict(model, inputs, top_k, **options)`` returns: the rows of
    :func:`predict` with the domain's own task (``factory``), as a list."""
    chosen = {k: options.pop(k) for k in ("reference", "out_dir", "column") if k in options}
    return list(predict(model, inputs, top_k=top_k, task=factory(model, Options(top_k=top_k, **chosen)), **options))


def _rows(groups: Iterator[tuple[list[dict[str, Any]], BaseException | None]], errors: str) -> Iterator[dict[str, Any]]:
    for group, error in groups:
        if error is not None and errors == "raise":
            raise error
        yield from group


def _context(num_workers: int) -> Any:
    """Workers are forked: a task's ``read`` is a closure over the model's preprocessing, which the
    spawn start method would have to pickle (and the fork copies for free)."""
    import multiprocessing

    if num_workers == 0:
        return None
    if "fork" not in multiprocessing.get_all_start_methods():
        raise InputError("num_workers > 0 needs the 'fork' start method, which this platform lacks; use num_workers=0")
    return multiprocessing.get_context("fork")


def _check_count(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise InputError(f"{name} must be a whole number >= {low}, got {value!r}")


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, progress: bool | None) -> Any:
    """A tqdm bar on stderr: always (True), never (False), or on a terminal once the work has
    lasted two seconds (None), so that short runs and pipes print nothing."""
    if progress is False:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="input", file=sys.stderr, disable=None if progress is None else False,
                delay=2.0 if progress is None else 0.0, dynamic_ncols=True)


# --------------------------------------------------------------------------- `reszoo.predict` is callable


class _CallableModule(types.ModuleType):
    """``reszoo.predict`` is both this module and the function: importing the module (a domain's
    predict.py does) binds the *module* to ``reszoo.predict``, over the function that reszoo's
    lazy exports give. Calling the module calls the function, whichever got there first."""

    def __call__(self, model: Any, inputs: Any, **options: Any) -> Iterator[dict[str, Any]]:
        return predict(model, inputs, **options)


sys.modules[__name__].__class__ = _CallableModule
