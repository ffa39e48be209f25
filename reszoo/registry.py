"""The model registry: ``registry.yaml`` read into typed, validated entries.

An entry says what to build (``domain``, ``arch``, ``arch_args``), which bytes to load
(``weights``: Hub repo, pinned revision, file, sha256, format, converter), how to turn raw
input into model input (``preprocess``), the settings the domain uses at run time (``runtime``),
the figures stored beside the weights (``figures``), and what the model is (labels, metrics with
their source, license, dataset, paper, recipe). Bad entries fail when read, naming entry and field.

Two things keep the file short without hiding anything (docs/registry.md):

* ``defaults:`` — named sets of shared facts; an entry names the sets it uses
  (``defaults: [trained-here, mnist]``) and states only what differs.
* ``plain:`` — inside an entry, what its plain twin (the same network without residual
  connections) changes; it is expanded on read into a complete entry ``<name>-plain``.
"""

from __future__ import annotations

import difflib
import fnmatch
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any


from ._text import natural_key
from .domains import get as get_domain
from .domains import names as domain_names
from .errors import RegistryError, UnknownModelError
from .names import filename_problem, repo_id_problem
from .registry_layers import (  # noqa: F401  (PLAIN_SUFFIX: re-exported for the recipes and publish)
    _ENTRY_FIELDS, _NAME, PLAIN_SUFFIX, PLAIN_TAG, _is_twin, expand_registry, read_yaml,
)

__all__ = [
    "PLAIN_SUFFIX",
    "PLAIN_TAG",
    "Entry",
    "Metric",
    "RegistryError",
    "UnknownModelError",
    "Weights",
    "expand_registry",
    "info",
    "list_models",
    "load_registry",
    "registry_path",
]

WEIGHT_FORMATS = ("safetensors", "torch", "tar")
_HEX40 = re.compile(r"^[0-9a-f]{40}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_LABEL_FILE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]+)*$")  # no '/', no '..'
_PACKAGE_DIR = Path(__file__).resolve().parent


def _fail(entry: str, field_name: str, problem: str) -> RegistryError:
    return RegistryError(f"registry entry {entry!r}, field {field_name!r}: {problem}")


@dataclass(frozen=True)
class Source:
    """Where a metric value comes from: measured here by ``script``, or reported upstream at ``url``."""

    kind: str  # "measured" | "reported"
    script: str | None = None
    url: str | None = None
    note: str | None = None

    @property
    def measured(self) -> bool:
        return self.kind == "measured"


@dataclass(frozen=True)
class Metric:
    dataset: str
    split: str
    metric: str
    value: float
    source: Source
    name: str | None = None  # a human label, e.g. "top-1 accuracy (224px, crop 0.95)"
    dataset_type: str | None = None  # Hub dataset id, e.g. "imagenet-1k"


@dataclass(frozen=True)
class Weights:
    repo: str
    file: str
    revision: str | None  # a 40-hex commit; None where it is unknown (pin_note says why)
    sha256: str | None  # None only where unknown (pin_note says why)
    format: str = "safetensors"
    converter: str | None = None  # name of a domain converter; None: reszoo's own layout
    pin_note: str | None = None
    size: int | None = None


@dataclass(frozen=True)
class Entry:
    name: str
    domain: str
    task: str
    arch: str
    arch_args: dict[str, Any]
    weights: Weights | None
    preprocess: dict[str, Any]
    license: str
    aliases: tuple[str, ...] = ()
    labels: tuple[str, ...] | None = None
    metrics: tuple[Metric, ...] = ()
    dataset: tuple[str, ...] = ()
    paper: dict[str, str] | None = None
    recipe: str | None = None
    description: str | None = None
    base_model: str | None = None
    # A LoRA adapter entry (reszoo/lora.py): the registry entry of its base model; ``weights`` is then the
    # adapter file (adapter_model.safetensors), applied to the base's own verified weights.
    base: str | None = None
    tags: tuple[str, ...] = ()
    usage: str | None = None
    limitations: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # domain-specific card facts (no behaviour)
    runtime: dict[str, Any] = field(default_factory=dict)  # settings the domain uses at run time (Domain.runtime)
    figures: dict[str, str] = field(default_factory=dict)  # figure name -> image file in the weights repo
    twin: str | None = None  # the residual entry of a plain twin, or the plain twin of a residual entry

    @property
    def num_classes(self) -> int | None:
        return len(self.labels) if self.labels else self.arch_args.get("num_classes")

    def to_dict(self) -> dict[str, Any]:
        """Plain data (lists, dicts), in the registry's own field names."""
        data = asdict(self)
        return {k: _plain(v) for k, v in data.items() if v not in (None, (), {}, [])}


def _plain(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if v is not None}
    return value


# --------------------------------------------------------------------------- parsing


def _take(raw: Mapping[str, Any], key: str, types: type | tuple[type, ...], entry: str, *, required: bool = True, default: Any = None) -> Any:
    if key not in raw or raw[key] is None:
        if required:
            raise _fail(entry, key, "missing")
        return default
    value = raw[key]
    if not isinstance(value, types):
        names = types.__name__ if isinstance(types, type) else " or ".join(t.__name__ for t in types)
        raise _fail(entry, key, f"expected {names}, got {type(value).__name__} {value!r}")
    return value


def _str_list(raw: Mapping[str, Any], key: str, entry: str) -> tuple[str, ...]:
    value = raw.get(key)
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _fail(entry, key, f"expected a string or a list of strings, got {value!r}")
    return tuple(value)


def _parse_weights(raw: Any, entry: str) -> Weights | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise _fail(entry, "weights", f"expected a mapping, got {raw!r}")
    known = {"repo", "file", "revision", "sha256", "format", "converter", "pin_note", "size"}
    for key in raw:
        if key not in known:
            raise _fail(entry, f"weights.{key}", f"unknown field (known: {', '.join(sorted(known))})")
    repo = _take(raw, "repo", str, entry)
    if (problem := repo_id_problem(repo)) is not None:
        raise _fail(entry, "weights.repo", f"{problem}, got {repo!r}")
    file = _take(raw, "file", str, entry)
    if (problem := filename_problem(file)) is not None:  # joined onto mirror folders: must stay inside the repo
        raise _fail(entry, "weights.file", f"unsafe file name {file[:80]!r}: {problem}")
    revision = raw.get("revision")
    sha256 = raw.get("sha256")
    pin_note = raw.get("pin_note")
    if revision is not None and not (isinstance(revision, str) and _HEX40.match(revision)):
        raise _fail(entry, "weights.revision", f"expected a 40-hex commit id, got {revision!r}")
    if sha256 is not None and not (isinstance(sha256, str) and _HEX64.match(sha256)):
        raise _fail(entry, "weights.sha256", f"expected 64 lowercase hex digits, got {sha256!r}")
    if (revision is None or sha256 is None) and not pin_note:
        missing = "revision" if revision is None else "sha256"
        raise _fail(entry, f"weights.{missing}", "unknown pins need a 'pin_note' saying why")
    fmt = raw.get("format", "safetensors")
    if fmt not in WEIGHT_FORMATS:
        raise _fail(entry, "weights.format", f"expected one of {WEIGHT_FORMATS}, got {fmt!r}")
    if fmt == "tar" and not raw.get("converter"):  # an archive is a state dict only through a converter
        raise _fail(entry, "weights.converter", "a 'tar' archive needs the converter that reads it")
    size = raw.get("size")
    if size is not None and not isinstance(size, int):
        raise _fail(entry, "weights.size", f"expected an integer byte count, got {size!r}")
    return Weights(
        repo=repo,
        file=file,
        revision=revision,
        sha256=sha256,
        format=fmt,
        converter=raw.get("converter"),
        pin_note=pin_note,
        size=size,
    )


def _parse_metric(raw: Any, entry: str, i: int) -> Metric:
    where = f"metrics[{i}]"
    if not isinstance(raw, dict):
        raise _fail(entry, where, f"expected a mapping, got {raw!r}")
    value = raw.get("value")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail(entry, f"{where}.value", f"expected a number, got {value!r}")
    src = raw.get("source")
    if not isinstance(src, dict) or src.get("kind") not in ("measured", "reported"):
        raise _fail(entry, f"{where}.source", "expected {kind: measured, script: ...} or {kind: reported, url: ...}")
    if src["kind"] == "measured" and not src.get("script"):
        raise _fail(entry, f"{where}.source.script", "a measured metric names the script that measured it")
    if src["kind"] == "reported" and not src.get("url"):
        raise _fail(entry, f"{where}.source.url", "a reported metric links where it was reported")
    for key in ("dataset", "split", "metric"):
        if not isinstance(raw.get(key), str):
            raise _fail(entry, f"{where}.{key}", f"expected a string, got {raw.get(key)!r}")
    return Metric(
        dataset=raw["dataset"],
        split=raw["split"],
        metric=raw["metric"],
        value=float(value),
        source=Source(kind=src["kind"], script=src.get("script"), url=src.get("url"), note=src.get("note")),
        name=raw.get("name"),
        dataset_type=raw.get("dataset_type"),
    )


def _parse_labels(raw: Any, entry: str) -> tuple[str, ...] | None:
    if raw is None:
        return None
    if isinstance(raw, str):  # a bundled label file, e.g. "imagenet-1k"
        if len(raw) > 100 or not _LABEL_FILE.match(raw):  # joined onto reszoo/labels/: a plain name, never a path
            raise _fail(entry, "labels", f"expected a list of names or a bundled label file name of [A-Za-z0-9._-], got {raw[:80]!r}")
        path = _PACKAGE_DIR / "labels" / f"{raw}.txt"
        if not path.is_file():
            raise _fail(entry, "labels", f"no bundled label file {raw!r} (looked for {path})")
        return tuple(path.read_text(encoding="utf-8").splitlines())
    if isinstance(raw, list) and all(isinstance(v, str) for v in raw):
        return tuple(raw)
    raise _fail(entry, "labels", f"expected a list of names or a bundled label file name, got {raw!r}")


def _check_file_refs(preprocess: dict[str, Any], entry: str) -> None:
    """``{file, repo?, revision?}`` references in ``preprocess`` (a tokenizer) name files inside a repo."""
    for key, value in preprocess.items():
        if not (isinstance(value, dict) and "file" in value):
            continue
        if (problem := filename_problem(value["file"])) is not None:
            raise _fail(entry, f"preprocess.{key}.file", f"unsafe file name {str(value['file'])[:80]!r}: {problem}")
        if "repo" in value and (problem := repo_id_problem(value["repo"])) is not None:
            raise _fail(entry, f"preprocess.{key}.repo", f"{problem}, got {str(value['repo'])[:80]!r}")


# --------------------------------------------------------------------------- runtime settings and figures


FIGURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".svg", ".webp")
_FIGURE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.-]{0,63}$")


def _parse_runtime(raw: Mapping[str, Any], domain: str, entry: str, preprocess: dict[str, Any],
                   extra: dict[str, Any]) -> dict[str, Any]:
    """``runtime``, checked against the settings the domain declares (``Domain.runtime``). A setting
    still in its old place (``preprocess`` or ``extra``, its ``RuntimeSetting.legacy``: a config.json
    saved before ``runtime`` existed) is moved here, so such a model keeps behaving as it did."""
    runtime = dict(_take(raw, "runtime", dict, entry, required=False, default={}))
    known = get_domain(domain).runtime  # the domain declares its settings (Domain.runtime)
    for key, setting in known.items():
        if setting.legacy is None:
            continue
        old_place = preprocess if setting.legacy == "preprocess" else extra
        if key not in old_place:
            continue
        old = old_place.pop(key)
        if key in runtime and old is not None and runtime[key] != old:
            raise _fail(entry, f"{setting.legacy}.{key}", f"{old!r} disagrees with runtime.{key} = {runtime[key]!r}; keep only runtime.{key}")
        runtime.setdefault(key, old)
    for key in list(runtime):
        if key not in known:
            have = f"known for domain {domain!r}: {', '.join(sorted(known))}" if known else f"domain {domain!r} has none"
            raise _fail(entry, f"runtime.{key}", f"unknown runtime setting ({have})")
        if runtime[key] is None:  # null: not set (the domain's default applies)
            del runtime[key]
        elif (problem := known[key].problem(runtime[key])) is not None:
            raise _fail(entry, f"runtime.{key}", f"{problem}, got {runtime[key]!r}")
    return runtime


def _parse_figures(raw: Mapping[str, Any], entry: str) -> dict[str, str]:
    """``figures``: name -> an image file inside the weights repo (shown in the card, mirrored with the weights)."""
    figures = _take(raw, "figures", dict, entry, required=False, default={})
    for key, file in figures.items():
        if not isinstance(key, str) or not _FIGURE_NAME.match(key):
            raise _fail(entry, "figures", f"a figure name is up to 64 letters, digits, spaces and '_.-', got {key!r}")
        if (problem := filename_problem(file)) is not None:
            raise _fail(entry, f"figures.{key}", f"unsafe file name {str(file)[:80]!r}: {problem}")
        if not file.lower().endswith(FIGURE_SUFFIXES):
            raise _fail(entry, f"figures.{key}", f"expected an image file ({', '.join(FIGURE_SUFFIXES)}), got {file!r}")
    return dict(figures)




def parse_entry(raw: Any, where: str = "?") -> Entry:
    """One registry entry (a mapping) into an :class:`Entry`; raises :class:`RegistryError`."""
    if not isinstance(raw, dict):
        raise RegistryError(f"registry entry {where}: expected a mapping, got {raw!r}")
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise _fail(where, "name", f"expected a lowercase name of [a-z0-9._-], got {name!r}")
    for key in raw:
        if key not in _ENTRY_FIELDS:
            raise _fail(name, key, f"unknown field (known: {', '.join(sorted(_ENTRY_FIELDS))})")
    domain = _take(raw, "domain", str, name)
    if domain not in (known := domain_names()):  # the installed domains (reszoo/domains.py), no domain imported
        raise _fail(name, "domain", f"expected one of {known}, got {domain!r}")
    paper = raw.get("paper")
    if paper is not None and not (isinstance(paper, dict) and "title" in paper):
        raise _fail(name, "paper", f"expected {{title: ..., url: ...}}, got {paper!r}")
    metrics = raw.get("metrics") or []
    if not isinstance(metrics, list):
        raise _fail(name, "metrics", f"expected a list, got {metrics!r}")
    labels = _parse_labels(raw.get("labels"), name)
    base = _take(raw, "base", str, name, required=False)
    if base is not None and (base == name or not re.match(r"^[a-z0-9][a-z0-9._-]*$", base)):
        raise _fail(name, "base", f"expected the registry name of another entry (the adapter's base model), got {base!r}")
    arch_args = _take(raw, "arch_args", dict, name, required=False, default={})
    preprocess = dict(_take(raw, "preprocess", dict, name, required=False, default={}))
    _check_file_refs(preprocess, name)
    extra = dict(_take(raw, "extra", dict, name, required=False, default={}))
    runtime = _parse_runtime(raw, domain, name, preprocess, extra)
    twin = _take(raw, "twin", str, name, required=False)
    if twin is not None and not _NAME.match(twin):
        raise _fail(name, "twin", f"expected the name of the twin entry, got {twin!r}")
    if labels and "num_classes" in arch_args and arch_args["num_classes"] != len(labels):
        raise _fail(name, "labels", f"{len(labels)} labels but arch_args.num_classes = {arch_args['num_classes']}")
    return Entry(
        name=name,
        aliases=_str_list(raw, "aliases", name),
        domain=domain,
        task=_take(raw, "task", str, name),
        arch=_take(raw, "arch", str, name),
        arch_args=dict(arch_args),
        weights=_parse_weights(raw.get("weights"), name),
        preprocess=preprocess,
        labels=labels,
        metrics=tuple(_parse_metric(m, name, i) for i, m in enumerate(metrics)),
        license=_take(raw, "license", str, name),
        dataset=_str_list(raw, "dataset", name),
        paper=paper,
        recipe=_take(raw, "recipe", str, name, required=False),
        description=_take(raw, "description", str, name, required=False),
        base_model=_take(raw, "base_model", str, name, required=False),
        base=base,
        tags=_str_list(raw, "tags", name),
        usage=_take(raw, "usage", str, name, required=False),
        limitations=_take(raw, "limitations", str, name, required=False),
        extra=extra,
        runtime=runtime,
        figures=_parse_figures(raw, name),
        twin=twin,
    )


# --------------------------------------------------------------------------- the registry


def registry_path() -> Path:
    """``$RESZOO_REGISTRY``, else the checkout's ``registry.yaml``, else the copy inside the wheel."""
    if env := os.environ.get("RESZOO_REGISTRY"):
        return Path(env)
    for candidate in (_PACKAGE_DIR.parent / "registry.yaml", _PACKAGE_DIR / "_data" / "registry.yaml"):
        if candidate.is_file():
            return candidate
    raise RegistryError("no registry.yaml found (set RESZOO_REGISTRY to its path)")


@lru_cache(maxsize=4)
def _load(path: Path, mtime_ns: int) -> dict[str, Entry]:
    expanded = expand_registry(read_yaml(path), str(path))
    written = {item.get("name") for item in expanded if not _is_twin(item)}
    by_name: dict[str, Entry] = {}
    for i, item in enumerate(expanded):
        twin = _is_twin(item)
        if twin and item["name"] in written:
            raise _fail(item["twin"], "plain", f"declares the plain twin {item['name']!r}, which is also an entry of "
                                               "its own; keep one of the two")
        try:
            entry = parse_entry(item, where=f"#{i}")
        except RegistryError as err:
            if not twin:
                raise
            raise RegistryError(f"{err} (the plain twin declared by {item['twin']!r}'s 'plain:')") from None
        for key in (entry.name, *entry.aliases):
            if key in by_name:
                raise _fail(entry.name, "name" if key == entry.name else "aliases", f"{key!r} is already used by {by_name[key].name!r}")
            by_name[key] = entry
    for entry in {e.name: e for e in by_name.values()}.values():
        if entry.base is not None:
            _check_adapter_entry(entry, by_name)
    return by_name


def _check_adapter_entry(entry: Entry, by_name: Mapping[str, Entry]) -> None:
    """An adapter entry (``base: NAME``) is its base's architecture with a LoRA adapter file: the base
    must be a full model of this registry, of the same domain and architecture."""
    base = by_name.get(entry.base)
    if base is None:
        raise _fail(entry.name, "base", f"no entry named {entry.base!r} in this registry (an adapter's base must be one)")
    if base.base is not None:
        raise _fail(entry.name, "base", f"{base.name!r} is itself an adapter (of {base.base!r}); name a full model")
    if base.domain != entry.domain:
        raise _fail(entry.name, "base", f"{base.name!r} is a {base.domain} model; this entry's domain is {entry.domain}")
    if base.arch != entry.arch:
        raise _fail(entry.name, "arch", f"an adapter has its base's architecture: {base.arch!r} ({base.name}), got {entry.arch!r}")
    mine = {k: v for k, v in entry.arch_args.items() if k != "num_classes"}
    theirs = {k: v for k, v in base.arch_args.items() if k != "num_classes"}
    if mine != theirs:
        raise _fail(entry.name, "arch_args", f"an adapter has its base's arch_args (num_classes aside): {theirs} ({base.name}), got {mine}")
    if entry.weights is None or entry.weights.format != "safetensors":
        raise _fail(entry.name, "weights", "an adapter entry names its adapter file (safetensors, e.g. adapter_model.safetensors)")


def load_registry(path: str | os.PathLike[str] | None = None) -> dict[str, Entry]:
    """Every entry by name and by alias (cached until the file changes)."""
    p = Path(path) if path is not None else registry_path()
    try:
        mtime_ns = p.stat().st_mtime_ns
    except OSError as err:
        raise RegistryError(f"registry file {p} cannot be read: {err.strerror}") from None
    if not p.is_file():
        raise RegistryError(f"registry file {p} is not a file")
    return _load(p, mtime_ns)


def info(name: str) -> Entry:
    """The typed registry entry of ``name`` (a name or an alias); an unknown name raises
    :class:`UnknownModelError` with the closest names. (``reszoo.info``; the one registry lookup.)"""
    reg = load_registry()
    if name in reg:
        return reg[name]
    # Names are short: no fuzzy matching over a long string (slow, and never a near miss).
    close = difflib.get_close_matches(name, list(reg), n=3, cutoff=0.5) if len(name) <= 100 else []
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else "; see `reszoo list`"
    shown = repr(name) if len(name) <= 100 else f"{name[:60]!r}… ({len(name)} characters)"
    raise UnknownModelError(f"unknown model {shown}{hint}")


def list_models(pattern: str = "*", domain: str | None = None, task: str | None = None) -> list[str]:
    """Names matching the fnmatch ``pattern`` (on names or aliases), in natural order."""
    if domain is not None and domain not in (known := domain_names()):
        raise ValueError(f"unknown domain {domain!r}; expected one of {known}")
    names = set()
    for key, entry in load_registry().items():
        if domain and entry.domain != domain or task and entry.task != task:
            continue
        if fnmatch.fnmatchcase(key, pattern):
            names.add(entry.name)
    return sorted(names, key=natural_key)
