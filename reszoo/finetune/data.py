"""Labelled data in the formats users already have, checked before anything is trained.

Each fine-tunable domain says which format its data comes in (``FinetuneSpec.data``,
:mod:`reszoo.domains`):

- :class:`~reszoo.domains.ClassFolders`: a folder with one subfolder per class
  (``root/<class>/**/<file>``), as torchvision's ``ImageFolder`` reads it, with the domain's file
  extensions (images, audio);
- :class:`~reszoo.domains.Table`: a CSV or TSV file with a header line; the label and input
  columns are named by options (by default the domain's);
- :class:`~reszoo.domains.Manifest`: a JSON-lines manifest of files and their text (NeMo's
  ``audio_filepath``/``duration``/``text``); the targets are sequences of symbols (characters);
- or, from Python, a list of ``(input, label)`` pairs (paths or texts; for sequence models the
  label is the text).

Class names come from the data (subfolder names or label values, in natural order) and become
the fine-tuned model's labels. Every failure is a :class:`DataError` that names the path and
what to do. Decoding every file (to find unreadable ones) is left to :func:`drop_unreadable`,
which the trainer runs with the model's own preprocessing, so a file is decoded once.
"""

from __future__ import annotations

import csv
import json
import os
import random
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._text import listing, natural_key
from ..domains import ClassFolders, FinetuneSpec, Manifest, Table
from ..errors import InputError
from .options import DataError

__all__ = [
    "READ_ERRORS",
    "LabeledData",
    "Splits",
    "drop_unreadable",
    "finetune_spec",
    "is_sequence",
    "read_data",
    "split_validation",
]

_SHOWN = 5  # how many offending files an error message lists
# What decoding a bad file raises: reszoo's input errors (the domains' preprocess), I/O and format
# errors of the decoders (PIL's are OSError or ValueError, soundfile's RuntimeError). A domain adds
# its decoder's others (PIL's DecompressionBombError is none of these): Adapter.read_errors.
READ_ERRORS: tuple[type[BaseException], ...] = (InputError, OSError, ValueError, RuntimeError, TypeError)


@dataclass
class LabeledData:
    """Inputs (paths or texts), their class ids, and the class names the ids index; for sequence
    data (a :class:`~reszoo.domains.Manifest`), each target is a list of ids of ``classes`` (symbols)."""

    items: list[Any]
    targets: list[Any]
    classes: tuple[str, ...]
    source: str
    ids: list[str]  # where each item came from (relative path, "line N"), for messages
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (id, why) of records left out

    def __len__(self) -> int:
        return len(self.items)

    @property
    def sequences(self) -> bool:
        return is_sequence(self.targets)

    def counts(self) -> dict[str, int]:
        if self.sequences:  # how often each symbol occurs
            per = Counter(t for seq in self.targets for t in seq)
            return {name: per.get(i, 0) for i, name in enumerate(self.classes)}
        per = Counter(self.targets)
        return {name: per.get(i, 0) for i, name in enumerate(self.classes)}

    def subset(self, indices: Sequence[int], source: str | None = None) -> LabeledData:
        return LabeledData(
            items=[self.items[i] for i in indices],
            targets=[self.targets[i] for i in indices],
            classes=self.classes,
            source=source or self.source,
            ids=[self.ids[i] for i in indices],
        )


def _shown(pairs: Sequence[tuple[str, str]]) -> str:
    return listing((f"{where}: {why}" for where, why in pairs), _SHOWN, sep="; ")


# --------------------------------------------------------------------------- folders


def _read_class_folder(root: Path, extensions: frozenset[str], kind: str, role: str) -> tuple[dict[str, list[Path]], list[Path]]:
    """``{class: files}`` of a class-per-subfolder tree, and the files directly under ``root``."""
    if not root.exists():
        raise DataError(f"{role} data: no such folder {root}")
    if not root.is_dir():
        raise DataError(f"{role} data: {root} is a file, but {kind} data is a folder with one subfolder per class")
    subdirs = sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: natural_key(p.name))
    loose = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in extensions)
    if not subdirs:
        what = f"{len(loose)} {kind} file(s) but no class subfolders" if loose else "nothing"
        raise DataError(f"{role} data: {root} holds {what}; expected one subfolder per class, "
                        f"e.g. {root}/cat/1.png, {root}/dog/2.png")
    files: dict[str, list[Path]] = {}
    for sub in subdirs:
        files[sub.name] = sorted(
            (p for p in sub.rglob("*") if p.is_file() and p.suffix.lower() in extensions
             and not any(part.startswith(".") for part in p.relative_to(sub).parts)),
            key=lambda p: str(p),
        )
    return files, loose


def _folder_data(root: Path, extensions: frozenset[str], kind: str, role: str, classes: Sequence[str] | None) -> LabeledData:
    files, loose = _read_class_folder(root, extensions, kind, role)
    empty = [name for name, found in files.items() if not found]
    if all(not found for found in files.values()):
        raise DataError(f"{role} data: {root} has {len(files)} class subfolder(s) but no {kind} files "
                        f"(extensions {', '.join(sorted(extensions))})")
    if empty:
        raise DataError(f"{role} data: class(es) with no {kind} files: "
                        + listing((f"{name!r} ({root / name})" for name in empty), _SHOWN)
                        + "; add examples or remove the empty folder(s)")
    names = tuple(files)
    if classes is not None:
        unknown = [n for n in names if n not in classes]
        if unknown:
            raise DataError(f"{role} data: class(es) {', '.join(map(repr, unknown))} in {root} are not among the "
                            f"training classes ({', '.join(classes)})")
        names = tuple(classes)
    index = {name: i for i, name in enumerate(names)}
    items, targets, ids = [], [], []
    for name, found in files.items():
        for path in found:
            items.append(str(path))
            targets.append(index[name])
            ids.append(str(path.relative_to(root)))
    data = LabeledData(items=items, targets=targets, classes=names, source=str(root), ids=ids)
    if loose:
        data.skipped += [(str(p.relative_to(root)), "not in a class subfolder") for p in loose]
    return data


# --------------------------------------------------------------------------- tables


def _table_data(path: Path, *, text_column: str, label_column: str, delimiter: str | None, role: str,
                classes: Sequence[str] | None) -> LabeledData:
    if not path.exists():
        raise DataError(f"{role} data: no such file {path}")
    if path.is_dir():
        raise DataError(f"{role} data: {path} is a folder; this model's data is a CSV/TSV file with a header line "
                        f"naming a {label_column!r} and a {text_column!r} column")
    tsv = path.suffix.lower() in (".tsv", ".tab")
    sep = delimiter or ("\t" if tsv else ",")
    # TSV files have no quoting convention (texts contain quote characters): read them literally.
    quoting = csv.QUOTE_NONE if sep == "\t" else csv.QUOTE_MINIMAL
    try:
        with path.open(encoding="utf-8", newline="") as f:
            rows = list(csv.reader(f, delimiter=sep, quoting=quoting))
    except UnicodeDecodeError as err:
        raise DataError(f"{role} data: {path} is not UTF-8 text ({err})") from err
    except csv.Error as err:
        raise DataError(f"{role} data: {path} is not valid CSV/TSV ({err})") from err
    if not rows:
        raise DataError(f"{role} data: {path} is empty (expected a header line, then one example per line)")
    header = [h.strip() for h in rows[0]]
    missing = [c for c in (label_column, text_column) if c not in header]
    if missing:
        sep_name = "tab" if sep == "\t" else repr(sep)
        raise DataError(f"{role} data: {path} has no column(s) {', '.join(map(repr, missing))} "
                        f"(its header, split on {sep_name}: {', '.join(map(repr, header)) or 'nothing'}); "
                        f"name the columns with --label-column/--text-column (label_column=/text_column=)"
                        + ("" if delimiter else ", or the separator with --delimiter"))
    li, ti = header.index(label_column), header.index(text_column)
    texts, labels, ids, bad = [], [], [], []
    for n, row in enumerate(rows[1:], start=2):
        where = f"line {n}"
        if not row or all(not cell.strip() for cell in row):
            continue  # blank lines carry nothing
        if len(row) != len(header):
            bad.append((where, f"{len(row)} fields, the header has {len(header)}"))
            continue
        label, text = row[li].strip(), row[ti].strip()
        if not label or not text:
            bad.append((where, "empty label" if not label else "empty text"))
            continue
        texts.append(text)
        labels.append(label)
        ids.append(where)
    if not texts:
        raise DataError(f"{role} data: {path} has a header but no usable examples"
                        + (f" ({_shown(bad)})" if bad else ""))
    names = tuple(classes) if classes is not None else tuple(sorted(set(labels), key=natural_key))
    if classes is not None:
        unknown = sorted(set(labels) - set(classes), key=natural_key)
        if unknown:
            raise DataError(f"{role} data: label(s) {listing(map(repr, unknown), _SHOWN)} in {path} are not among "
                            f"the {len(classes)} training classes")
    index = {name: i for i, name in enumerate(names)}
    data = LabeledData(items=texts, targets=[index[x] for x in labels], classes=names, source=str(path), ids=ids)
    data.skipped = bad  # malformed rows: the on_bad_file policy decides (see check_skipped)
    return data


def _pairs_data(pairs: Iterable[Any], role: str, classes: Sequence[str] | None) -> LabeledData:
    items, labels, ids = [], [], []
    for i, pair in enumerate(pairs):
        if not isinstance(pair, tuple | list) or len(pair) != 2:
            raise DataError(f"{role} data: item {i} is {pair!r}; in-memory data is a list of (input, label) pairs")
        items.append(str(pair[0]) if isinstance(pair[0], Path) else pair[0])
        labels.append(str(pair[1]))
        ids.append(f"item {i}")
    if not items:
        raise DataError(f"{role} data: the list of (input, label) pairs is empty")
    names = tuple(classes) if classes is not None else tuple(sorted(set(labels), key=natural_key))
    unknown = sorted(set(labels) - set(names), key=natural_key)
    if unknown:
        raise DataError(f"{role} data: label(s) {listing(map(repr, unknown), _SHOWN)} are not among the training classes")
    index = {name: i for i, name in enumerate(names)}
    return LabeledData(items=items, targets=[index[x] for x in labels], classes=names, source="<in-memory pairs>", ids=ids)


# --------------------------------------------------------------------------- manifests


def is_sequence(targets: Sequence[Any]) -> bool:
    """Whether ``targets`` are sequences of ids (text), not one class id each."""
    return bool(targets) and isinstance(targets[0], list | tuple)


def _symbols(texts: Sequence[str], classes: Sequence[str] | None, ids: Sequence[str], role: str,
             source: str) -> tuple[list[list[int]], tuple[str, ...]]:
    """Texts as lists of symbol ids (one symbol a character); the symbols are ``classes`` when
    given (every character must be one), else the texts' own characters, sorted."""
    names = tuple(classes) if classes is not None else tuple(sorted(set("".join(texts))))
    index = {name: i for i, name in enumerate(names)}
    for text, where in zip(texts, ids, strict=True):
        unknown = sorted(set(text) - index.keys())
        if unknown:
            raise DataError(f"{role} data: {source} {where}: character(s) {listing(map(repr, unknown), _SHOWN)} are not "
                            f"in the vocabulary ({''.join(names)!r}); give a vocabulary that holds them "
                            "(--vocabulary) or normalise the text")
    return [[index[c] for c in text] for text in texts], names


def _manifest_data(path: Path, reader: Manifest, role: str, classes: Sequence[str] | None) -> LabeledData:
    """A JSON-lines manifest: one object a line with the file (relative to the manifest, or
    absolute) and its text; malformed lines are an error that names the line."""
    if not path.exists():
        raise DataError(f"{role} data: no such file {path}")
    if path.is_dir():
        raise DataError(f"{role} data: {path} is a folder; this model's data is {reader.describe()}")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise DataError(f"{role} data: {path} is not UTF-8 text ({err})") from err
    items, texts, ids = [], [], []
    for n, line in enumerate(lines, start=1):
        where = f"line {n}"
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{role} data: {path} {where}: not valid JSON ({err.msg}); a manifest holds one JSON "
                            f"object a line") from None
        if not isinstance(record, dict):
            raise DataError(f"{role} data: {path} {where}: expected a JSON object, got {type(record).__name__}")
        missing = [k for k in (reader.path_key, reader.text_key) if k not in record]
        if missing:
            raise DataError(f"{role} data: {path} {where}: no {' or '.join(map(repr, missing))} key "
                            f"(a manifest line names {reader.path_key!r} and {reader.text_key!r})")
        file, text = record[reader.path_key], record[reader.text_key]
        if not isinstance(file, str) or not file.strip():
            raise DataError(f"{role} data: {path} {where}: {reader.path_key!r} must be a non-empty path string")
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"{role} data: {path} {where}: empty text; every {reader.kind} file needs its transcript")
        file_path = Path(os.path.expanduser(file))
        file_path = file_path if file_path.is_absolute() else path.parent / file_path
        if not file_path.is_file():
            raise DataError(f"{role} data: {path} {where}: no {reader.kind} file at {file_path}")
        items.append(str(file_path))
        texts.append(text.strip())
        ids.append(where)
    if not items:
        raise DataError(f"{role} data: {path} holds no manifest lines")
    targets, names = _symbols(texts, classes, ids, role, str(path))
    return LabeledData(items=items, targets=targets, classes=names, source=str(path), ids=ids)


def _text_pairs_data(pairs: Iterable[Any], role: str, classes: Sequence[str] | None) -> LabeledData:
    items, texts, ids = [], [], []
    for i, pair in enumerate(pairs):
        if not isinstance(pair, tuple | list) or len(pair) != 2 or not isinstance(pair[1], str):
            raise DataError(f"{role} data: item {i} is {pair!r}; in-memory data is a list of (input, text) pairs")
        if not pair[1].strip():
            raise DataError(f"{role} data: item {i} has an empty text")
        items.append(str(pair[0]) if isinstance(pair[0], Path) else pair[0])
        texts.append(pair[1].strip())
        ids.append(f"item {i}")
    if not items:
        raise DataError(f"{role} data: the list of (input, text) pairs is empty")
    targets, names = _symbols(texts, classes, ids, role, "<in-memory pairs>")
    return LabeledData(items=items, targets=targets, classes=names, source="<in-memory pairs>", ids=ids)


# --------------------------------------------------------------------------- entry points


def finetune_spec(domain: str, task: str | None = None) -> FinetuneSpec:
    """How models of ``domain`` (and ``task``, an entry's) are fine-tuned; a :class:`DataError`
    where the domain declares no fine-tuning."""
    from .. import domains

    spec = domains.get(domain).finetune_spec(task)
    if spec is None:
        tunable = [name for name in domains.names() if domains.get(name).finetune is not None]
        raise DataError(f"the {domain} domain declares no fine-tuning (its Domain.finetune is None); fine-tuning "
                        f"covers classification models of the {', '.join(tunable) or 'no'} domain(s)")
    return spec


def read_data(source: Any, domain: str, *, role: str = "train", classes: Sequence[str] | None = None,
              text_column: str | None = None, label_column: str | None = None, delimiter: str | None = None,
              on_bad_file: str = "skip", task: str | None = None) -> LabeledData:
    """Read ``source`` (a folder, a CSV/TSV file or a list of pairs) for a ``domain`` model, in
    the format the domain's ``FinetuneSpec.data`` names (table columns: ``text_column`` and
    ``label_column``, else the domain's).

    ``classes``: the training classes, for validation/test data (their labels must be among them).
    Training data must hold at least two classes, each with at least one example.
    """
    reader = finetune_spec(domain, task).data
    if isinstance(source, list | tuple):
        data = (_text_pairs_data if isinstance(reader, Manifest) else _pairs_data)(source, role, classes)
    elif isinstance(reader, Manifest):
        data = _manifest_data(Path(source).expanduser(), reader, role, classes)
    elif isinstance(reader, ClassFolders):
        data = _folder_data(Path(source).expanduser(), reader.extensions, reader.kind, role, classes)
    elif isinstance(reader, Table):
        data = _table_data(Path(source).expanduser(), text_column=text_column or reader.text_column,
                           label_column=label_column or reader.label_column, delimiter=delimiter, role=role, classes=classes)
    else:
        raise DataError(f"the {domain} domain reads its data as {type(reader).__name__}, which reszoo.finetune does not "
                        "know (expected reszoo.domains.ClassFolders, Table or Manifest)")
    check_skipped(data, role, on_bad_file, what="malformed or misplaced record(s)")
    if classes is None:
        check_classes(data, role)
    return data


def check_skipped(data: LabeledData, role: str, on_bad_file: str, what: str = "unreadable file(s)") -> None:
    """Apply the ``on_bad_file`` policy to ``data.skipped``: an error, or a count in the report."""
    if data.skipped and on_bad_file == "error":
        raise DataError(f"{role} data: {len(data.skipped)} {what} in {data.source}: {_shown(data.skipped)}; "
                        "fix or remove them, or pass --on-bad-file skip (on_bad_file='skip') to leave them out")


def check_classes(data: LabeledData, role: str) -> None:
    """Training data needs two classes or more, and an example of each (sequence data: any symbols)."""
    if data.sequences:
        return
    counts = data.counts()
    if len(data.classes) < 2:
        only = f"({data.classes[0]!r})" if data.classes else ""
        raise DataError(f"{role} data: only one class {only} in {data.source}; classification needs at least two")
    empty = [name for name, n in counts.items() if n == 0]
    if empty:
        raise DataError(f"{role} data: class(es) with no usable examples in {data.source}: "
                        + listing(map(repr, empty), _SHOWN))


def drop_unreadable(data: LabeledData, encode: Callable[[Any], Any], *, role: str, on_bad_file: str,
                    keep: bool = True, budget_bytes: int = 2 << 30,
                    errors: tuple[type[BaseException], ...] = READ_ERRORS) -> tuple[LabeledData, list[Any] | None]:
    """Encode every item once; items whose encoding raises one of ``errors`` are unreadable:
    skipped (counted) or an error, by ``on_bad_file``.

    Returns the readable data and, when ``keep`` and the encodings fit ``budget_bytes``, the
    encodings (so training does not decode files again); else None.
    """
    encoded: list[Any] | None = [] if keep else None
    ok: list[int] = []
    bad: list[tuple[str, str]] = []
    size = 0
    for i, item in enumerate(data.items):
        try:
            value = encode(item)
        except errors as err:
            bad.append((data.ids[i], f"{type(err).__name__}: {err}".splitlines()[0][:200]))
            continue
        ok.append(i)
        if encoded is not None:
            size += _nbytes(value)
            if size > budget_bytes:
                encoded = None  # too big to hold: encode again on the fly
            else:
                encoded.append(value)
    if bad:
        gone = LabeledData(items=[], targets=[], classes=data.classes, source=data.source, ids=[], skipped=bad)
        check_skipped(gone, role, on_bad_file)
    kept = data.subset(ok) if bad else data
    kept.skipped = list(data.skipped) + bad
    if bad and role == "train":
        check_classes(kept, role)
    if not kept.items:
        raise DataError(f"{role} data: none of the {len(data)} file(s) in {data.source} could be read: {_shown(bad)}")
    return kept, encoded


def _nbytes(value: Any) -> int:
    if hasattr(value, "element_size") and hasattr(value, "numel"):
        return int(value.element_size() * value.numel())
    if isinstance(value, dict):
        return sum(_nbytes(v) for v in value.values())
    if isinstance(value, list | tuple):
        return sum(_nbytes(v) for v in value)
    return 64


def split_validation(data: LabeledData, fraction: float, seed: int) -> tuple[LabeledData, LabeledData | None]:
    """A seeded, stratified hold-out: about ``fraction`` of each class (at least one where the
    class has two examples or more; never a class's last training example)."""
    if fraction <= 0:
        return data, None
    rng = random.Random(seed)
    by_class: dict[int, list[int]] = {}
    for i, t in enumerate(data.targets):
        by_class.setdefault(-1 if data.sequences else t, []).append(i)  # sequences: one random hold-out
    val: list[int] = []
    for t in sorted(by_class):
        members = by_class[t]
        n = len(members)
        take = min(max(round(n * fraction), 1 if n >= 2 else 0), n - 1)
        picked = list(members)
        rng.shuffle(picked)
        val += picked[:take]
    if not val:
        return data, None
    val_set = set(val)
    train_idx = [i for i in range(len(data)) if i not in val_set]
    source = f"{data.source} (seeded {fraction:g} hold-out, seed {seed})"
    train, held = data.subset(train_idx), data.subset(sorted(val_set), source=source)
    train.skipped = data.skipped
    return train, held


@dataclass
class Splits:
    """A run's data: the training split, validation (given or held out) and test splits, as read."""

    train: LabeledData
    val: LabeledData | None
    test: LabeledData | None
    held_out: bool  # the validation split is a seeded hold-out of the training data

    @property
    def classes(self) -> tuple[str, ...]:
        return self.train.classes

    def skipped(self) -> dict[str, int]:
        return {"train": len(self.train.skipped), "validation": len(self.val.skipped) if self.val else 0,
                "test": len(self.test.skipped) if self.test else 0}
