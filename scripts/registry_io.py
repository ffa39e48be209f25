"""Write a training run's measured results into registry.yaml, keeping its comments and order.

Recipes call :func:`update_entry` with what their own run measured, so that every
``source: {kind: measured}`` number in the registry comes from a script's output, never by hand.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the recipes run from a checkout
REGISTRY = ROOT / "registry.yaml"
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


def read_entry(name: str, path: Path = REGISTRY) -> dict[str, Any]:
    """Entry ``name`` as ruamel data (to merge a run's results into what is already there)."""
    doc = _yaml().load(path.read_text(encoding="utf-8"))
    for entry in doc["models"]:
        if entry["name"] == name:
            return entry
    raise KeyError(f"{path}: no entry named {name!r}")


def update_entry(name: str, path: Path = REGISTRY, **fields: Any) -> None:
    """Set top-level ``fields`` of entry ``name`` (e.g. ``metrics=[...]``, ``weights={...}``).

    ``weights`` is merged key by key, so a recipe can update ``sha256``/``size`` alone.
    """
    yaml = _yaml()
    doc = yaml.load(path.read_text(encoding="utf-8"))
    for entry in doc["models"]:
        if entry["name"] == name:
            for key, value in fields.items():
                if key == "weights" and isinstance(entry.get("weights"), dict):
                    entry["weights"].update(value)
                elif key in entry:
                    entry[key] = value
                else:
                    # Before the last key: ruamel keeps the comment that follows an entry (the
                    # next section's header) on its last key, and an appended key would land after it.
                    entry.insert(len(entry) - 1, key, value)
            break
    else:
        raise KeyError(f"{path}: no entry named {name!r}; add it (with its static fields) first")
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
