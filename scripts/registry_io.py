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

from reszoo import registry_write  # noqa: E402
from reszoo.registry import PLAIN_SUFFIX  # noqa: E402, F401  (for recipes that add entries)

_yaml = registry_write.yaml_writer  # the writer set up as registry.yaml is written

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


def read_entry(name: str, path: Path = REGISTRY) -> dict[str, Any]:
    """Entry ``name`` as the registry reads it (defaults applied, a plain twin expanded), to merge
    a run's results into what is already there (:func:`reszoo.registry_write.read_entry`)."""
    return registry_write.read_entry(name, path)


def update_entry(name: str, path: Path = REGISTRY, **fields: Any) -> None:
    """Set top-level ``fields`` of entry ``name`` (e.g. ``metrics=[...]``, ``weights={...}``),
    writing only what differs from what it inherits: :func:`reszoo.registry_write.update_entry`
    (the writer ``reszoo publish`` shares)."""
    registry_write.update_entry(name, path, **fields)


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
