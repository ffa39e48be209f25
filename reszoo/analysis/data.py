"""What ``reszoo analyze --data PATH`` reads, turned into model inputs and targets.

Models whose ``preprocess`` makes fixed-size images (it has an integer ``size`` and 1 or 3
``channels``; :func:`image_data`):

- an ``.npz`` file of uint8 images and integer labels, MNIST-style: the first of the key pairs
  ``x_test``/``y_test``, ``x``/``y``, ``images``/``labels`` that it holds; images ``(N, H, W)`` or
  ``(N, H, W, C)`` with C 1 or 3;
- a folder with one subfolder per class (``root/<class>/<image>``); a subfolder is the label of
  the model that it names, compared ignoring case and punctuation (``t-shirt_top`` is
  ``T-shirt/top``), or a class index;
- a folder of images named ``<anything>_<label>.<ext>`` (``examples/digits/digit_7.png``);
- nothing: random uniform-noise images of the model's input size, whose "labels" are the intact
  model's own predictions (the lesion metric is then agreement with the intact model).

Every image goes through the model's own ``preprocess``. ``limit`` keeps a seeded random subset.

Any other classifier (:func:`labelled_data`) is read the way its domain's fine-tuning reads data
(``Domain.finetune``): a table (CSV/TSV with a header, or JSONL objects; the text and label columns
are the domain's unless named) read as ``reszoo predict`` reads tables, or a folder with one
subfolder per class holding files of the domain's extensions. Each item is encoded and the items
collated into one batch by the domain's fine-tuning adapter, so the model sees what training fed it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .._text import listing
from .core import AnalysisError

__all__ = ["AnalysisData", "IMAGE_EXTENSIONS", "analysis_data", "image_data", "labelled_data", "reads_images"]

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})
_NPZ_KEYS = (("x_test", "y_test"), ("x", "y"), ("images", "labels"))


@dataclass
class AnalysisData:
    """Model inputs, targets, and how they were made (written into the results).

    A domain whose models are not classifiers (its optional ``analysis.py``) also says how to score
    them: ``metric(outputs, targets)`` for the lesion study, ``loss_fn(outputs, targets)`` for the
    gradient flow, and ``module``, the part of the model that is analysed (an agent's policy)."""

    inputs: Tensor | dict[str, Tensor]  # what the model is called with (a dict: as keyword arguments)
    targets: Tensor
    labelled: bool  # False: targets are the intact model's predictions (synthetic inputs)
    source: str
    metric: Callable[[Tensor, Any], float] | None = None  # None: top-1 accuracy (%)
    metric_name: str | None = None
    loss_fn: Callable[[Any, Any], Tensor] | None = None  # None: cross-entropy
    module: nn.Module | None = None  # None: the whole model

    @property
    def samples(self) -> int:
        return len(self.targets)

    def describe(self) -> dict[str, Any]:
        return {"source": self.source, "samples": self.samples, "labelled": self.labelled}


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "", name.lower())


def _label_index(name: str, labels: Sequence[str] | None, num_classes: int, where: str) -> int:
    """The class index a folder or file name stands for: a label of the model, or an index."""
    if labels:
        keys = {_key(label): i for i, label in enumerate(labels)}
        if _key(name) in keys:
            return keys[_key(name)]
    if name.isdigit() and int(name) < num_classes:
        return int(name)
    known = listing(labels, 12) if labels else f"0..{num_classes - 1}"
    raise AnalysisError(f"{where}: {name!r} is not a class of this model (its classes: {known})")


def _subset(n: int, limit: int | None, seed: int) -> np.ndarray:
    if limit is None or limit >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))


def _num_classes(model: nn.Module) -> int:
    labels = getattr(model, "labels", None)
    if labels:
        return len(labels)
    entry = getattr(model, "entry", None)
    if entry is not None and entry.num_classes:
        return int(entry.num_classes)
    raise AnalysisError("the model names no classes (no labels, no num_classes): not an image classifier")


def image_data(model: nn.Module, path: str | os.PathLike[str] | None, *, limit: int | None = None, seed: int = 0) -> AnalysisData:
    """Inputs and targets for an image classifier loaded with :func:`reszoo.load` (see module doc)."""
    preprocess = getattr(model, "preprocess", None)
    if preprocess is None:
        raise AnalysisError("the model has no .preprocess; load it with reszoo.load(name)")
    if path is None:
        return _synthetic(model, limit or 64, seed)
    path = Path(path)
    if not path.exists():
        raise AnalysisError(f"--data {path}: no such file or folder")
    labels = getattr(model, "labels", None)
    num_classes = _num_classes(model)
    if path.is_file():
        if path.suffix != ".npz":
            raise AnalysisError(f"--data {path}: expected an .npz file or an image folder")
        return _npz(path, preprocess, num_classes, limit, seed)
    return _folder(path, preprocess, labels, num_classes, limit, seed)


def _npz(path: Path, preprocess: Any, num_classes: int, limit: int | None, seed: int) -> AnalysisData:
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise AnalysisError(f"--data {path}: not a readable .npz file ({err})") from err
    with archive:
        keys = next(((x, y) for x, y in _NPZ_KEYS if x in archive.files and y in archive.files), None)
        if keys is None:
            raise AnalysisError(f"--data {path}: holds {sorted(archive.files)}; expected images and labels as one of "
                                + ", ".join(f"{x}/{y}" for x, y in _NPZ_KEYS))
        try:
            images, targets = archive[keys[0]], archive[keys[1]]
        except ValueError as err:  # object arrays would need pickle, which is never allowed
            raise AnalysisError(f"--data {path}: {keys[0]}/{keys[1]} are not plain arrays ({err})") from err
    ok_shape = images.ndim == 3 or (images.ndim == 4 and images.shape[-1] in (1, 3))
    if images.dtype != np.uint8 or not ok_shape:
        raise AnalysisError(f"--data {path}: {keys[0]} must be uint8 images (N, H, W) or (N, H, W, C) with C 1 or 3, "
                            f"got {images.dtype} {images.shape}")
    if targets.shape != (images.shape[0],) or not np.issubdtype(targets.dtype, np.integer):
        raise AnalysisError(f"--data {path}: {keys[1]} must be {images.shape[0]} integer labels, got {targets.dtype} {targets.shape}")
    if len(targets) == 0:
        raise AnalysisError(f"--data {path}: {keys[0]} is empty")
    if targets.min() < 0 or targets.max() >= num_classes:
        raise AnalysisError(f"--data {path}: labels span {targets.min()}..{targets.max()}, but the model has {num_classes} classes")
    idx = _subset(len(targets), limit, seed)
    x = torch.from_numpy(np.ascontiguousarray(images[idx]))
    x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)
    return AnalysisData(preprocess(x), torch.from_numpy(targets[idx].astype(np.int64)), True,
                        f"{path} ({keys[0]}/{keys[1]}, {len(idx)} of {len(targets)})")


def _folder(root: Path, preprocess: Any, labels: Sequence[str] | None, num_classes: int, limit: int | None,
            seed: int) -> AnalysisData:
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    items: list[tuple[Path, int]] = []
    if subdirs:
        for sub in subdirs:
            cls = _label_index(sub.name, labels, num_classes, f"--data {root}: class folder")
            items += [(f, cls) for f in sorted(sub.rglob("*")) if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS]
        layout = "class folders"
    else:
        for f in sorted(root.iterdir()):
            if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS:
                if "_" not in f.stem:
                    raise AnalysisError(f"--data {root}: {f.name} carries no label; name images <anything>_<label>"
                                        f"{f.suffix} or put them in one subfolder per class")
                items.append((f, _label_index(f.stem.rsplit("_", 1)[1], labels, num_classes, f"--data {f}: label")))
        layout = "labelled file names"
    if not items:
        raise AnalysisError(f"--data {root}: no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) found")
    idx = _subset(len(items), limit, seed)
    chosen = [items[i] for i in idx]
    inputs = preprocess([str(f) for f, _ in chosen])
    return AnalysisData(inputs, torch.tensor([c for _, c in chosen]), True, f"{root} ({layout}, {len(chosen)} of {len(items)} images)")


def _synthetic(model: nn.Module, n: int, seed: int) -> AnalysisData:
    pre = model.preprocess
    size, channels = getattr(pre, "size", None), getattr(pre, "channels", None)
    if not isinstance(size, int) or channels not in (1, 3):
        raise AnalysisError("cannot make synthetic inputs: the model's preprocess names no image size; pass --data")
    gen = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, channels, size, size), generator=gen, dtype=torch.uint8)
    inputs = pre(images)
    param = next(model.parameters())
    with torch.no_grad():
        was_training = model.training
        model.eval()
        out = model(inputs.to(device=param.device, dtype=param.dtype))
        model.train(was_training)
    return AnalysisData(inputs, out.argmax(-1).cpu(), False,
                        f"synthetic: {n} uniform-noise {channels}x{size}x{size} images (seed {seed}), "
                        "targets = the intact model's predictions")


# --------------------------------------------------------------------------- any other domain


def reads_images(model: nn.Module) -> bool:
    """Whether the model's ``preprocess`` makes fixed-size images (what :func:`image_data` feeds)."""
    pre = getattr(model, "preprocess", None)
    return isinstance(getattr(pre, "size", None), int) and getattr(pre, "channels", None) in (1, 3)


def analysis_data(model: nn.Module, domain: str, path: str | os.PathLike[str] | None, *, limit: int | None = None,
                  seed: int = 0, text_column: str | None = None, label_column: str | None = None) -> AnalysisData:
    """``image_data`` for image models; the domain's own ``analysis.analysis_data`` where it has one
    (models that are not classifiers: agents, generators); else ``labelled_data`` through the domain."""
    if reads_images(model):
        return image_data(model, path, limit=limit, seed=seed)
    from ..domains import get

    own = get(domain).module("analysis", required=False)
    if own is not None:
        return own.analysis_data(model, path, limit=limit, seed=seed)
    return labelled_data(model, domain, path, limit=limit, seed=seed, text_column=text_column, label_column=label_column)


def labelled_data(model: nn.Module, domain: str, path: str | os.PathLike[str] | None, *, limit: int | None = None,
                  seed: int = 0, text_column: str | None = None, label_column: str | None = None) -> AnalysisData:
    """Inputs and targets for a classifier of ``domain`` from its fine-tuning data format (see module doc)."""
    from ..domains import ClassFolders, Table
    from ..finetune.adapters import make_adapter
    from ..finetune.data import finetune_spec
    from ..finetune.options import DataError

    try:
        spec = finetune_spec(domain)
    except DataError as err:
        raise AnalysisError(f"`reszoo analyze` reads data through a domain's fine-tuning format: {err}. Call "
                            "reszoo.analysis.gradient_flow / branch_ratio / lesion_study from Python with your own inputs") from None
    reader = spec.data
    if path is None:
        raise AnalysisError(f"this model needs --data: {reader.describe()}")
    path = Path(path)
    if not path.exists():
        raise AnalysisError(f"--data {path}: no such file or folder")
    labels = getattr(model, "labels", None)
    num_classes = _num_classes(model)
    if isinstance(reader, Table):
        items, targets, layout = _table(path, text_column or reader.text_column, label_column or reader.label_column,
                                        labels, num_classes)
    elif isinstance(reader, ClassFolders):
        items, targets, layout = _class_folders(path, reader.extensions, reader.kind, labels, num_classes)
    else:
        raise AnalysisError(f"the {domain} domain reads its data as {type(reader).__name__}, which `reszoo analyze` does not know")
    idx = _subset(len(items), limit, seed)
    adapter = make_adapter(model, domain)
    encoded = []
    for i in idx:
        try:
            encoded.append(adapter.encode(items[i]))
        except adapter.read_errors as err:
            raise AnalysisError(f"--data {path}: cannot read {items[i]!s:.80} ({err})") from None
    inputs = adapter.collate(encoded)  # one batch: padded to the longest item, with the mask the model reads
    return AnalysisData(inputs, torch.tensor([targets[i] for i in idx]), True, f"{path} ({layout}, {len(idx)} of {len(items)})")


def _table(path: Path, text_column: str, label_column: str, labels: Sequence[str] | None,
           num_classes: int) -> tuple[list[Any], list[int], str]:
    from ..rows import JSONL_SUFFIXES, TABLE_SUFFIXES, read_table

    if path.is_dir() or path.suffix.lower() not in (*TABLE_SUFFIXES, *JSONL_SUFFIXES):
        raise AnalysisError(f"--data {path}: expected a table ({', '.join((*TABLE_SUFFIXES, *JSONL_SUFFIXES))}) with "
                            f"a {text_column!r} and a {label_column!r} column")
    columns = []
    for column in (text_column, label_column):
        values = []
        for where, value in read_table(path, column):
            if isinstance(value, BaseException):
                raise AnalysisError(f"--data {value}")
            values.append((where, value))
        columns.append(values)
    if not columns[0]:
        raise AnalysisError(f"--data {path}: no rows")
    targets = [_label_index(str(label), labels, num_classes, f"--data {where}: label") for where, label in columns[1]]
    return [text for _, text in columns[0]], targets, f"{text_column!r}/{label_column!r} columns"


def _class_folders(root: Path, extensions: frozenset[str], kind: str, labels: Sequence[str] | None,
                   num_classes: int) -> tuple[list[Any], list[int], str]:
    if not root.is_dir():
        raise AnalysisError(f"--data {root}: expected a folder with one subfolder of {kind} files per class")
    items: list[Any] = []
    targets: list[int] = []
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        cls = _label_index(sub.name, labels, num_classes, f"--data {root}: class folder")
        files = [str(f) for f in sorted(sub.rglob("*")) if f.is_file() and f.suffix.lower() in extensions]
        items += files
        targets += [cls] * len(files)
    if not items:
        raise AnalysisError(f"--data {root}: no {kind} files ({', '.join(sorted(extensions))}) in class subfolders")
    return items, targets, "class folders"
