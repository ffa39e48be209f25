"""Reading registry YAML safely, and the two layers that keep registry.yaml short: ``defaults:``
sets of shared facts, and ``plain:`` variants expanded into complete ``<name>-plain`` entries.

Raw data in, raw data out (mappings, as written): :mod:`reszoo.registry` validates the result into
typed entries, and the recipes' writer (:mod:`reszoo.registry_write`) uses the same layering to
write back only what an entry does not inherit.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from .errors import RegistryError


# Every field an entry may have (registry.parse_entry validates each), and the form of a name.
_ENTRY_FIELDS = {
    "name", "aliases", "domain", "task", "arch", "arch_args", "weights", "preprocess", "labels",
    "metrics", "license", "dataset", "paper", "recipe", "description", "base_model", "base", "tags",
    "usage", "limitations", "extra", "runtime", "figures", "twin",
}
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


def _fail(entry: str, field_name: str, problem: str) -> RegistryError:
    return RegistryError(f"registry entry {entry!r}, field {field_name!r}: {problem}")


# A registry is a few thousand nodes; YAML aliases let a small file stand for an exponentially
# large tree ("billion laughs"), so the expanded size is bounded before anything walks it.
MAX_EXPANDED_NODES = 1_000_000


def _expanded_size(node: yaml.Node, sizes: dict[int, int]) -> int:
    """Nodes in the tree ``node`` stands for once every alias is expanded (memoised per node)."""
    if id(node) in sizes:
        return sizes[id(node)]
    sizes[id(node)] = 1  # a recursive alias counts once, and recursion is refused below anyway
    if isinstance(node, yaml.SequenceNode):
        total = 1 + sum(_expanded_size(child, sizes) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        total = 1 + sum(_expanded_size(k, sizes) + _expanded_size(v, sizes) for k, v in node.value)
    else:
        total = 1
    sizes[id(node)] = min(total, MAX_EXPANDED_NODES + 1)
    return sizes[id(node)]


def read_yaml(path: Path) -> Any:
    """A YAML file of plain data, with every failure as one :class:`RegistryError` naming the file:
    not UTF-8 text, not YAML, a tag asking for a Python object (never built), an alias bomb."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise RegistryError(f"{path}: not a UTF-8 text file (byte {err.start}); a registry is YAML text") from None
    if "\x00" in text:
        raise RegistryError(f"{path}: contains NUL bytes; a registry is YAML text")
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node, {}) > MAX_EXPANDED_NODES:
            raise RegistryError(f"{path}: YAML aliases expand to more than {MAX_EXPANDED_NODES:,} nodes; refused (an alias bomb?)")
        return loader.construct_document(node)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise RegistryError(f"{path}: not a plain-data YAML file{where}: {' '.join(str(problem).split())}") from None
    except RecursionError:
        raise RegistryError(f"{path}: YAML nested too deeply (or a recursive alias); refused") from None
    finally:
        loader.dispose()


# --------------------------------------------------------------------------- defaults and plain twins

PLAIN_SUFFIX = "-plain"
PLAIN_TAG = "plain-twin"
# Mapping fields are layered key by key (a default preprocess block, an entry changing one key of it);
# every other field is replaced whole. In a layer, null removes what the layer below gave.
LAYERED = ("arch_args", "weights", "preprocess", "extra", "runtime", "figures")
# What belongs to one set of weights, or names it, is never shared through defaults.
_NOT_DEFAULTS = ("name", "aliases", "metrics", "twin", "base")
WEIGHT_PINS = ("revision", "sha256", "size")
# A plain twin is the same model without its skips: it cannot be another domain, task or architecture.
_TWIN_FIXED = ("name", "domain", "task", "arch")
# What describes one model and not its twin: not inherited (description and limitations get a default).
_TWIN_OWN = ("aliases", "metrics", "usage", "description", "limitations", "figures", "base")
_TOP_LEVEL = ("models", "defaults")


def overlay(base: Mapping[str, Any], layer: Mapping[str, Any]) -> dict[str, Any]:
    """``layer`` on top of ``base``: a value replaces the base's, a mapping field (``LAYERED``) is
    overlaid key by key, and null removes what ``base`` gave (a null for anything ``base`` lacks
    stays as written). Key order: the base's, then what the layer adds."""
    out = dict(base)
    for key, value in layer.items():
        if key in LAYERED and isinstance(value, dict) and isinstance(out.get(key), dict):
            inner = dict(out[key])
            for k, v in value.items():
                if v is None and k in inner:
                    del inner[k]
                else:
                    inner[k] = v
            out[key] = inner
        elif value is None and key in out:
            del out[key]
        else:
            out[key] = value
    return out


def _in_set(where: str, set_name: str, field_name: str) -> str:
    return f"{where}: defaults {set_name!r}, field {field_name!r}"


def defaults_table(doc: Mapping[str, Any], where: str = "registry") -> dict[str, dict[str, Any]]:
    """The ``defaults:`` table of a registry document: set name -> the entry fields it gives."""
    table = doc.get("defaults")
    if table is None:
        return {}
    if not isinstance(table, dict):
        raise RegistryError(f"{where}: 'defaults:' must map set names to entry fields, got {type(table).__name__}")
    for set_name, fields in table.items():
        if not isinstance(set_name, str) or not _NAME.match(set_name):
            raise RegistryError(f"{where}: defaults set name {set_name!r}: expected a lowercase name of [a-z0-9._-]")
        if not isinstance(fields, dict):
            raise RegistryError(f"{where}: defaults {set_name!r}: expected a mapping of entry fields, got {fields!r}")
        for key in fields:
            if key in _NOT_DEFAULTS or key in ("plain", "defaults") or key not in _ENTRY_FIELDS:
                why = ("belongs to one entry, never to a defaults set" if key in _ENTRY_FIELDS or key in ("plain", "defaults")
                       else f"unknown field (known: {', '.join(sorted(set(_ENTRY_FIELDS) - set(_NOT_DEFAULTS)))})")
                raise RegistryError(f"{_in_set(where, set_name, key)}: {why}")
        weights = fields.get("weights")
        if isinstance(weights, dict):
            for pin in WEIGHT_PINS:
                if pin in weights:
                    raise RegistryError(f"{_in_set(where, set_name, 'weights.' + pin)}: a pin names one file; give it in the entry")
    return table


def apply_defaults(raw: Mapping[str, Any], table: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """An entry with the defaults sets it names (``defaults: NAME`` or a list, in order) under it."""
    name = raw.get("name", "?")
    sets = raw.get("defaults")
    body = {k: v for k, v in raw.items() if k != "defaults"}
    if sets is None:
        return body
    sets = [sets] if isinstance(sets, str) else sets
    if not isinstance(sets, list) or not all(isinstance(s, str) for s in sets):
        raise _fail(name, "defaults", f"expected a defaults set name or a list of them, got {sets!r}")
    merged: dict[str, Any] = {}
    for set_name in sets:
        if set_name not in table:
            known = ", ".join(sorted(table)) or "none"
            raise _fail(name, "defaults", f"no defaults set {set_name!r} in the registry's 'defaults:' (defined: {known})")
        merged = overlay(merged, copy.deepcopy(table[set_name]))
    return overlay(merged, body)


def plain_twin_base(entry: Mapping[str, Any]) -> dict[str, Any]:
    """What the plain twin of ``entry`` (defaults applied) inherits, before its ``plain:`` layer:
    everything but what describes one model only (aliases, metrics, usage, description,
    limitations, figures), with ``arch_args.residual: false``, the tag ``plain-twin``, a default
    description and limitations, and ``twin`` naming the entry."""
    name = str(entry.get("name", "?"))
    base = {k: copy.deepcopy(v) for k, v in entry.items() if k not in _TWIN_OWN and k not in ("plain", "twin")}
    tags = base.get("tags") or []
    tags = [tags] if isinstance(tags, str) else list(tags)
    base.update(
        name=name + PLAIN_SUFFIX,
        arch_args={**(entry.get("arch_args") or {}), "residual": False},
        description=(f"The plain twin of {name}: the same network without its residual connections "
                     "(residual=False), trained with the same recipe, for the residual-vs-plain comparison."),
        limitations=f"An ablation baseline, trained like {name} (see its card).",
        tags=tags if PLAIN_TAG in tags else [*tags, PLAIN_TAG],
        twin=name,
    )
    return base


def expand_plain(raw: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """``(entry, twin)``: an entry (defaults applied) and, where its ``plain:`` declares one, its
    plain twin as a complete entry ``<name>-plain`` (:func:`plain_twin_base` with the ``plain:``
    mapping laid over it); ``twin`` is None without ``plain:``. Both name each other in ``twin``."""
    entry = {k: v for k, v in raw.items() if k != "plain"}
    name = str(raw.get("name", "?"))
    if "twin" in raw:
        raise _fail(name, "twin", "set by the registry, not written: declare a plain twin with a 'plain:' mapping")
    if "plain" not in raw:
        return entry, None
    layer = raw["plain"]
    if not isinstance(layer, dict):
        raise _fail(name, "plain", f"expected a mapping of what the plain twin changes, got {layer!r}")
    for key in layer:
        if key in _TWIN_FIXED:
            raise _fail(name, f"plain.{key}", f"a plain twin keeps its entry's {', '.join(_TWIN_FIXED[1:])} and is named "
                                              f"'{name}{PLAIN_SUFFIX}'; declare a separate entry for another model")
        if key not in _ENTRY_FIELDS or key == "twin":
            raise _fail(name, f"plain.{key}", "not a field a plain twin can set (known: "
                                              f"{', '.join(sorted(set(_ENTRY_FIELDS) - set(_TWIN_FIXED) - {'twin'}))})")
    # A twin has weights of its own, once its entry has any (an entry being trained has none yet).
    if not isinstance(layer.get("weights"), dict) and entry.get("weights") is not None:
        raise _fail(name, "plain.weights", "a plain twin has weights of its own: give their file (or repo) and sha256")
    twin = overlay(plain_twin_base(entry), copy.deepcopy(layer))
    tags = twin.get("tags") or []
    tags = [tags] if isinstance(tags, str) else list(tags)
    twin["tags"] = tags if PLAIN_TAG in tags else [*tags, PLAIN_TAG]
    mine, theirs = entry.get("weights") or {}, twin.get("weights") or {}
    if isinstance(mine, dict) and mine and all(mine.get(k) == theirs.get(k) for k in ("repo", "file", "revision")):
        raise _fail(name, "plain.weights", f"the twin would load {name}'s own file {mine.get('repo')}/{mine.get('file')}; "
                                           "give the twin's own 'file' (same repo) or 'repo'")
    entry["twin"] = twin["name"]
    return entry, twin


def expand_registry(doc: Any, where: str = "registry") -> list[dict[str, Any]]:
    """The ``models:`` of a registry document as complete, standalone entry mappings: defaults
    applied, each plain twin right after its entry. What :func:`parse_entry` reads."""
    if doc is None:
        doc = {}
    models = doc.get("models", ...) if isinstance(doc, dict) else ...
    models = [] if models is None else models  # a registry with no entries yet
    if not isinstance(models, list):
        raise RegistryError(f"{where}: expected a top-level 'models:' list")
    for key in doc:
        if key not in _TOP_LEVEL and not (isinstance(key, str) and key.startswith("x-")):
            raise RegistryError(f"{where}: unknown top-level key {key!r} (known: {', '.join(_TOP_LEVEL)}; "
                                "'x-...' keys may hold YAML anchors)")
    table = defaults_table(doc, where)
    out: list[dict[str, Any]] = []
    for i, item in enumerate(models):
        if not isinstance(item, dict):
            raise RegistryError(f"registry entry #{i}: expected a mapping, got {item!r}")
        entry, twin = expand_plain(apply_defaults(item, table))
        out.append(entry)
        if twin is not None:
            out.append(twin)
    return out


def _is_twin(item: Mapping[str, Any]) -> bool:
    """Whether an expanded entry is a plain twin (named after the entry it links to)."""
    return isinstance(item.get("twin"), str) and item.get("name") == item["twin"] + PLAIN_SUFFIX
