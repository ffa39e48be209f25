"""Fine-tuning any classification model of the zoo on your own data (every domain whose
:class:`~reszoo.domains.Domain` declares a ``finetune`` spec: how its data is read and batched).

    import reszoo
    result = reszoo.finetune("resnet-mnist", "data/train", epochs=3, out="runs/fashion")
    result.metrics["val_accuracy"], result.model          # a ready model, like reszoo.load's
    reszoo.load("runs/fashion")                             # the saved model, in reszoo's Hub format

The same from the command line, on one CPU, one GPU or many (``accelerate launch`` /
``torchrun`` start the processes; see docs/finetune.md)::

    reszoo finetune resnet-mnist --data data/train --epochs 3 --out runs/fashion

Light on import (no torch): the core CLI imports :mod:`reszoo.finetune.cli` to build its parser.
"""

from __future__ import annotations

import os
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .options import (
    DataError,
    FinetuneError,
    FinetuneOptions,
    OptionsError,
    ResumeError,
    RunExistsError,
    RunInUseError,
)

__all__ = [
    "DataError",
    "FinetuneError",
    "FinetuneOptions",
    "FinetuneResult",
    "OptionsError",
    "ResumeError",
    "RunExistsError",
    "RunInUseError",
    "finetune",
]


@dataclass
class FinetuneResult:
    """What a run gives back: the trained model (eval mode, with ``entry``, ``labels`` and
    ``preprocess`` like a loaded one), its metrics, the per-epoch history and where it was saved.

    ``completed`` is False when the run stopped early on request (``stop_after_epoch``) and is
    meant to be resumed; ``entry`` is then None.
    """

    model: Any
    metrics: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    out: Path | None = None
    entry: Any = None
    completed: bool = True


def finetune(name: str, train_data: str | os.PathLike[str] | list[tuple[Any, str]] | None,
             val_data: str | os.PathLike[str] | list[tuple[Any, str]] | None = None, **options: Any) -> FinetuneResult:
    """Fine-tune the model ``name`` (a registry name, a saved-model folder or ``hf://owner/name``)
    on ``train_data`` and return the trained model with its metrics.

    ``train_data``/``val_data``: what the model's domain reads (``FinetuneSpec.data``): a folder
    with one subfolder per class, or a CSV/TSV file (columns named by ``label_column`` and
    ``text_column``, by default the domain's), or a list of ``(input, label)`` pairs. Without ``val_data`` a seeded, stratified ``val_split`` of the
    training data is held out. ``options`` are the fields of :class:`FinetuneOptions`; with
    ``out=DIR`` the run writes checkpoints, metrics and the final model there (loadable with
    ``reszoo.load(DIR)``) and can be resumed with ``resume=True``.

    Raises :class:`DataError` for unusable data, :class:`RunExistsError` when ``out`` already
    holds a run (without ``resume``/``overwrite``; :class:`RunInUseError` while another run is
    writing it), :class:`OptionsError` for bad options (``out`` overlapping the data, say).
    """
    from .trainer import run_finetune

    if isinstance(train_data, os.PathLike):
        train_data = os.fspath(train_data)
    if isinstance(val_data, os.PathLike):
        val_data = os.fspath(val_data)
    for key in ("out", "test_data"):
        if isinstance(options.get(key), os.PathLike):
            options[key] = os.fspath(options[key])
    return run_finetune(name, train_data, val_data, dict(options))


class _CallableModule(types.ModuleType):
    """``reszoo.finetune`` is both this package and the function: importing the package (the core
    CLI imports ``reszoo.finetune.cli``) binds the *module* to ``reszoo.finetune``, over the
    function that ``reszoo``'s lazy exports would give. Calling the module calls the function,
    so ``reszoo.finetune(name, data, ...)`` works whichever got there first."""

    def __call__(self, name: str, train_data: Any, val_data: Any = None, **options: Any) -> FinetuneResult:
        return finetune(name, train_data, val_data, **options)


sys.modules[__name__].__class__ = _CallableModule
