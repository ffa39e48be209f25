"""Write a training run's measured results into registry.yaml, keeping its comments and order.

Recipes call :func:`update_entry` with what their own run measured, so that every
``source: {kind: measured}`` number in the registry comes from a script's output, never by hand.
A plain twin is written into its entry's ``plain:`` mapping, and any entry holds only what
differs from what it inherits (its ``defaults:`` sets; for a twin, its entry): see docs/registry.md.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the recipes run from a checkout
REGISTRY = ROOT / "registry.yaml"

from reszoo.registry import (  # noqa: E402
    LAYERED,
    PLAIN_SUFFIX,
    WEIGHT_PINS,
    apply_defaults,
    defaults_table,
    expand_plain,
    plain_twin_base,
)

_ABSENT = object()  # a field or key not given at all (null is a value: it removes what is inherited)
COMMIT_LIMIT = 8 * 1024 * 1024  # committed weight files (the bundled mirror) stay under 8 MB


def write_weights(state: dict[str, Any], path: Path, *, max_bytes: int | None = None) -> dict[str, Any]:
    """Write a state dict as safetensors and return ``{"sha256", "size"}`` for the registry.

    The header holds only ``{"format": "pt"}``: safetensors writes a multi-key metadata map in no
    fixed order, so extra keys would make a rerun's bytes (and its sha256 pin) differ.
    """
    from safetensors.torch import save_file

    from reszoo.hub import sha256_of

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().to("cpu").contiguous() for k, v in state.items()}, path, metadata={"format": "pt"})
    size = path.stat().st_size
    if max_bytes is not None and size > max_bytes:
        path.unlink()
        raise SystemExit(f"{path} would be {size} bytes, over the {max_bytes}-byte limit for committed weights")
    return {"sha256": sha256_of(path), "size": size}


def _yaml() -> Any:
    from ruamel.yaml import YAML  # here: a machine that only trains (write_weights) needs no ruamel

    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 4096
    yaml.indent(mapping=2, sequence=4, offset=2)
    # ruamel writes None as an empty value by default; the registry spells unknown pins `null`.
    yaml.representer.add_representer(type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null"))
    return yaml


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
    for key in keys:
        if key in ("name", "twin"):
            continue
        layer = item["plain"] if is_twin else item
        _put(layer, key, _layer_value(key, _below(item, table, is_twin).get(key, _ABSENT), wanted.get(key, _ABSENT)))


def read_entry(name: str, path: Path = REGISTRY) -> dict[str, Any]:
    """Entry ``name`` as the registry reads it (defaults applied, a plain twin expanded), to merge
    a run's results into what is already there."""
    doc = _yaml().load(path.read_text(encoding="utf-8"))
    item, is_twin = _entry_layers(doc, name, path)
    entry, twin = _expand(item, defaults_table(doc, str(path)))
    return twin if is_twin else entry  # type: ignore[return-value]


def update_entry(name: str, path: Path = REGISTRY, **fields: Any) -> None:
    """Set top-level ``fields`` of entry ``name`` (e.g. ``metrics=[...]``, ``weights={...}``).

    ``weights`` is merged key by key, so a recipe can update ``sha256``/``size`` alone. What is
    written is only what differs from what the entry inherits: its defaults sets, or, for a plain
    twin ``<entry>-plain``, its entry (into the entry's ``plain:``). Updating an entry never changes
    its plain twin: what the twin inherited and would lose is written into its ``plain:``.
    """
    yaml = _yaml()
    doc = yaml.load(path.read_text(encoding="utf-8"))
    table = defaults_table(doc, str(path))
    item, is_twin = _entry_layers(doc, name, path)
    entry, twin = _expand(item, table)
    current = twin if is_twin else entry
    assert current is not None
    wanted = dict(current)
    for key, value in fields.items():
        if key == "weights" and isinstance(current.get("weights"), dict):
            value = {**current["weights"], **value}
        wanted[key] = value
    _write(item, table, is_twin, wanted, fields)
    if twin is not None and not is_twin:
        _write(item, table, True, twin, set(twin) | set(_expand(item, table)[1] or {}))
    after, after_twin = _expand(item, table)
    if (after_twin if is_twin else after) != wanted or (not is_twin and after_twin != twin):
        raise RuntimeError(f"{path}: writing {name!r} did not give the entry asked for (a bug in registry_io)")
    with path.open("w", encoding="utf-8") as f:
        yaml.dump(doc, f)


def _flow(value: Any, top: bool = False) -> Any:
    """``value`` laid out as the registry's hand-written entries are: short lists and mappings on
    one line (``[16, 32, 64]``, ``{size: 28, ...}``), longer ones in block style."""
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    if isinstance(value, dict):
        out = CommentedMap((k, _flow(v)) for k, v in value.items())
    elif isinstance(value, list):
        out = CommentedSeq(_flow(v) for v in value)
    else:
        return value
    if not top and len(repr(value)) <= 120 and all(not isinstance(v, dict | list) or len(repr(v)) <= 60 for v in
                                                  (value.values() if isinstance(value, dict) else value)):
        out.fa.set_flow_style()
    return out


def add_entry(raw: dict[str, Any], path: Path = REGISTRY) -> None:
    """Append a new entry (raw, as it would be written) to ``models:``; an existing name is refused:
    a recipe re-registering its own entry updates it with :func:`update_entry` instead."""
    yaml = _yaml()
    doc = yaml.load(path.read_text(encoding="utf-8"))
    taken = {item["name"] for item in doc["models"]} | {item["name"] + PLAIN_SUFFIX for item in doc["models"] if "plain" in item}
    if raw["name"] in taken:
        raise KeyError(f"{path}: {raw['name']!r} is already an entry; update it instead")
    doc["models"].append(_flow(raw, top=True))
    with path.open("w", encoding="utf-8") as f:
        yaml.dump(doc, f)


def measured(script: str, dataset: str, split: str, metric: str, value: float, *, name: str | None = None,
             dataset_type: str | None = None, note: str | None = None) -> dict[str, Any]:
    """One metric record whose source is the recipe ``script`` (its path relative to the project)."""
    rec: dict[str, Any] = {"dataset": dataset, "split": split, "metric": metric, "value": round(float(value), 6)}
    if name:
        rec["name"] = name
    if dataset_type:
        rec["dataset_type"] = dataset_type
    source: dict[str, Any] = {"kind": "measured", "script": script}
    if note:
        source["note"] = note
    rec["source"] = source
    return rec


if __name__ == "__main__":  # pragma: no cover - a tiny manual check
    print(REGISTRY, file=sys.stderr)
