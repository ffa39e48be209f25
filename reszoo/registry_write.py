"""Write facts into a registry.yaml, keeping its comments, order and layers (defaults sets, plain twins).

Training recipes (``scripts/registry_io.py``) write what their run measured; ``reszoo publish``
(:mod:`reszoo.publish`) writes the Hub commit it made. Both go through :func:`update_entry`, which
writes only what differs from what an entry inherits: its ``defaults:`` sets or, for a plain twin
``<entry>-plain``, its entry (into the entry's ``plain:``). See docs/registry.md.

Needs ``ruamel.yaml`` (the ``publish`` extra; it is imported only here, when a registry is written):
pyyaml, which reads the registry, would drop its comments.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import RegistryError, ReszooError
from .registry_layers import (
    LAYERED,
    PLAIN_SUFFIX,
    WEIGHT_PINS,
    apply_defaults,
    defaults_table,
    expand_plain,
    plain_twin_base,
)

__all__ = ["check_writer", "read_entry", "update_entries", "update_entry", "yaml_writer"]

_ABSENT = object()  # a field or key not given at all (null is a value: it removes what is inherited)


def yaml_writer() -> Any:
    """A ruamel.yaml round-trip writer set up as registry.yaml is written (its comments, quotes, `null`)."""
    try:
        from ruamel.yaml import YAML
    except ImportError:
        raise ReszooError("writing registry.yaml needs ruamel.yaml (it keeps the file's comments): "
                          "pip install 'reszoo[publish]' (or ruamel.yaml)") from None

    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 4096
    yaml.indent(mapping=2, sequence=4, offset=2)
    # ruamel writes None as an empty value by default; the registry spells unknown pins `null`.
    yaml.representer.add_representer(type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null"))
    return yaml


def check_writer() -> None:
    """Raise now (a :class:`ReszooError` saying what to install) if registry.yaml cannot be written:
    before work whose result must be recorded there."""
    yaml_writer()


def _entry_layers(doc: Any, name: str, path: Path) -> tuple[Any, bool]:
    """``(item, is_twin)``: the ``models:`` item that holds entry ``name``: the entry itself, or the
    entry whose ``plain:`` declares it (``<entry>-plain``)."""
    for item in doc["models"]:
        if item["name"] == name:
            return item, False
    for item in doc["models"]:
        if "plain" in item and item["name"] + PLAIN_SUFFIX == name:
            return item, True
    raise KeyError(f"{path}: no entry named {name!r}; add it (with its static fields) first")


def _expand(item: Any, table: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    return expand_plain(apply_defaults(item, table))


def _below(item: Any, table: dict[str, Any], is_twin: bool) -> dict[str, Any]:
    """What the layer that holds the entry's own fields (the item, or its ``plain:``) is laid over:
    the defaults sets the item names, or what the plain twin inherits from its entry."""
    if is_twin:
        return plain_twin_base(_expand(item, table)[0])
    return apply_defaults({"name": item["name"], "defaults": item.get("defaults")}, table)


def _layer_value(field: str, inherited: Any, value: Any) -> Any:
    """What a layer must say for ``field`` to end up ``value`` over ``inherited`` (the registry's
    overlay: mappings key by key, null removes), or ``_ABSENT`` where it need say nothing."""
    if value is _ABSENT or value is None:
        return None if inherited not in (_ABSENT, None) else _ABSENT
    if field in LAYERED and isinstance(value, dict) and isinstance(inherited, dict):
        # Pins name the twin's own file: written out even where they equal its entry's (an RL twin's size).
        keep = WEIGHT_PINS if field == "weights" else ()
        out = {k: v for k, v in value.items() if inherited.get(k, _ABSENT) != v or (k in keep and v is not None)}
        out.update({k: None for k in inherited if k not in value})
        return out or _ABSENT
    return _ABSENT if value == inherited else value


def _put(layer: Any, key: str, value: Any) -> None:
    """Set ``layer[key]``, changing as little of the file as possible (equal values keep their
    quotes and style; a mapping is updated in place)."""
    if value is _ABSENT:
        layer.pop(key, None)
        return
    current = layer.get(key, _ABSENT)
    if current == value:
        return
    if isinstance(current, dict) and isinstance(value, dict):
        for k in [k for k in current if k not in value]:
            del current[k]
        for k, v in value.items():
            if current.get(k, _ABSENT) != v:
                current[k] = v
    elif key in layer:
        layer[key] = value
    else:
        # Before the last key: ruamel keeps the comment that follows an entry (the next section's
        # header) on its last key, and an appended key would land after it.
        layer.insert(max(len(layer) - 1, 0), key, value)


def _write(item: Any, table: dict[str, Any], is_twin: bool, wanted: dict[str, Any], keys: Any) -> None:
    """Make the expanded entry (or twin) of ``item`` have ``wanted[key]`` for each of ``keys``,
    writing into its own layer only what differs from what it inherits."""
    # What the layer lies over does not change while it is written (an entry's layer lies over its
    # defaults sets, a twin's over its entry's layer): computed once, as expanding copies the item.
    below = _below(item, table, is_twin)
    layer = item["plain"] if is_twin else item
    for key in keys:
        if key in ("name", "twin"):
            continue
        _put(layer, key, _layer_value(key, below.get(key, _ABSENT), wanted.get(key, _ABSENT)))


def _load(path: Path) -> tuple[Any, Any, dict[str, Any]]:
    yaml = yaml_writer()
    doc = yaml.load(path.read_text(encoding="utf-8"))
    return yaml, doc, defaults_table(doc, str(path))


def read_entry(name: str, path: Path) -> dict[str, Any]:
    """Entry ``name`` as the registry reads it (defaults applied, a plain twin expanded), to merge
    a run's results into what is already there."""
    _, doc, table = _load(path)
    item, is_twin = _entry_layers(doc, name, path)
    entry, twin = _expand(item, table)
    return twin if is_twin else entry  # type: ignore[return-value]


def _update(doc: Any, table: dict[str, Any], path: Path, name: str, fields: Mapping[str, Any]) -> None:
    item, is_twin = _entry_layers(doc, name, path)
    entry, twin = _expand(item, table)
    current = twin if is_twin else entry
    assert current is not None
    wanted = dict(current)
    for key, value in fields.items():
        if key == "weights" and isinstance(current.get("weights"), dict) and isinstance(value, dict):
            merged = {**current["weights"], **value}
            # A key given as None is removed (a pin_note once the pin is known), as null does in a layer.
            value = {k: v for k, v in merged.items() if not (k in value and value[k] is None)}
        wanted[key] = value
    _write(item, table, is_twin, wanted, fields)
    if twin is not None and not is_twin:
        _write(item, table, True, twin, set(twin) | set(_expand(item, table)[1] or {}))
    after, after_twin = _expand(item, table)
    if (after_twin if is_twin else after) != wanted or (not is_twin and after_twin != twin):
        raise RegistryError(f"{path}: writing {name!r} did not give the entry asked for (a bug in reszoo.registry_write)")


def update_entries(path: Path, updates: Mapping[str, Mapping[str, Any]]) -> None:
    """:func:`update_entry` for several entries (``{name: fields}``, in order), read and written once."""
    yaml, doc, table = _load(path)
    for name, fields in updates.items():
        _update(doc, table, path, name, fields)
    with path.open("w", encoding="utf-8") as f:
        yaml.dump(doc, f)


def update_entry(name: str, path: Path, **fields: Any) -> None:
    """Set top-level ``fields`` of entry ``name`` (e.g. ``metrics=[...]``, ``weights={...}``).

    ``weights`` is merged key by key, so a recipe can update ``sha256``/``size`` alone, and a key
    given as None is removed (``weights={"revision": commit, "pin_note": None}``). What is written
    is only what differs from what the entry inherits: its defaults sets, or, for a plain twin
    ``<entry>-plain``, its entry (into the entry's ``plain:``). Updating an entry never changes its
    plain twin: what the twin inherited and would lose is written into its ``plain:``.
    """
    update_entries(path, {name: fields})
