"""Helpers the test files share: what the zoo holds, registry entries to test with, and upstream checkpoints
published on the loopback Hub (the `registry` and `upstream` fixtures in conftest.py use them).

A module of its own, with no side effects, because test modules are also imported outside pytest (by the
worker processes of multiprocessing tests): importing conftest.py there would start another loopback Hub
and point that process at a fresh HF_HOME and reszoo cache.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hub import HubServer

ROOT = Path(__file__).resolve().parent.parent

# --------------------------------------------------------------------------- what the zoo holds


def architectures() -> list[tuple[str, str]]:
    """(domain, arch) of every architecture reszoo can build, in a stable order.

    The one place that enumerates them (tests parametrise over it, as timm's over ``list_models()``)."""
    from reszoo import domains

    return [(n, a) for n in domains.names() for a in sorted(domains.get(n).archs)]


def registry_entry(name: str) -> dict[str, Any]:
    """A copy of entry ``name`` of the checkout's registry.yaml, raw but complete: its defaults sets
    applied and plain twins expanded (``expand_registry``), so it stands alone in a one-entry registry."""
    import yaml

    from reszoo.registry import expand_registry

    models = expand_registry(yaml.safe_load((ROOT / "registry.yaml").read_text(encoding="utf-8")))
    for raw in models:
        if raw["name"] == name:
            return copy.deepcopy(raw)
    raise KeyError(f"registry.yaml has no entry {name!r}")


TINY_PREPROCESS = {"size": 28, "channels": 1, "interpolation": "bilinear", "crop_pct": 1.0, "mean": [0.1307],
                   "std": [0.3081]}


def tiny_entry(name: str, repo: str, *, file: str = "model.safetensors", fmt: str = "safetensors",
               revision: str | None = None, sha256: str | None = None) -> dict[str, Any]:
    """A raw registry entry of a 10-class ``resnet_mnist`` (small, quick to build) reading ``file`` of ``repo``;
    unpinned (``pin_note``) unless both ``revision`` and ``sha256`` are given."""
    weights: dict[str, Any] = {"repo": repo, "file": file, "format": fmt, "revision": revision, "sha256": sha256}
    if revision is None or sha256 is None:
        weights["pin_note"] = "test"
    return {
        "name": name, "domain": "image", "task": "image-classification", "arch": "resnet_mnist",
        "arch_args": {"num_classes": 10}, "weights": weights, "preprocess": dict(TINY_PREPROCESS),
        "labels": [str(i) for i in range(10)], "license": "mit", "dataset": ["mnist"],
        "metrics": [{"dataset": "MNIST", "dataset_type": "mnist", "split": "test", "metric": "accuracy",
                     "value": 0.5, "source": {"kind": "measured", "script": "tests/conftest.py"}}],
    }


def write_registry(path: Path, entries: Iterable[Mapping[str, Any]]) -> Path:
    """A registry.yaml at ``path`` holding ``entries`` (raw mappings)."""
    import yaml

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"models": [dict(e) for e in entries]}, sort_keys=False), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- upstream checkpoints on the Hub

FileData = bytes | Path | Mapping[str, Any]  # bytes, a file, or a state dict (written as safetensors)


@dataclass(frozen=True)
class Upstream:
    """A checkpoint published on the loopback Hub, and the registry entry that pins it."""

    name: str  # the entry's name
    repo: str
    commit: str  # the Hub commit holding the files: the entry's weights.revision
    sha256: str  # of the weights file: the entry's weights.sha256
    entry: dict[str, Any]  # the raw entry as written to the registry
    registry: Path


def _file_bytes(data: FileData) -> bytes | Path:
    if isinstance(data, bytes | Path):
        return data
    from safetensors.torch import save

    return save({k: v.contiguous() for k, v in data.items()})


def _sha256(data: bytes | Path) -> str:
    if isinstance(data, bytes):
        return hashlib.sha256(data).hexdigest()
    digest = hashlib.sha256()
    with data.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def publish_upstream(hub: HubServer, registry: Path, entry: str | Mapping[str, Any], files: Mapping[str, FileData], *,
                     repo: str | None = None, weights: Mapping[str, Any] | None = None, **fields: Any) -> Upstream:
    """Publish ``files`` as an upstream repo on the loopback Hub and write a registry at ``registry`` whose one
    entry reads them, pinned the way real entries are: ``weights.revision`` is the Hub's commit and
    ``weights.sha256`` the digest of the weights file.

    ``entry`` is the name of a registry.yaml entry (copied: labels, preprocess, metrics stay real) or a raw
    entry; ``fields`` replace its top-level fields (``arch_args=...``), ``weights`` update its weights mapping
    (an explicit ``sha256`` there wins: a wrong pin), ``repo`` moves it to another repo. The upstream's own
    commit ids cannot be reproduced here, so every entry published this way is re-pinned to the loopback's.
    """
    raw = registry_entry(entry) if isinstance(entry, str) else copy.deepcopy(dict(entry))
    raw.update(copy.deepcopy(fields))
    pins = {**(raw.get("weights") or {}), **(weights or {})}
    if repo is not None:
        pins["repo"] = repo
    data = {path: _file_bytes(value) for path, value in files.items()}
    if pins.get("file") not in data:
        raise KeyError(f"the weights file {pins.get('file')!r} of {raw['name']!r} is not among the files {sorted(data)}")
    commit = hub.add_repo(pins["repo"], data)
    pins.pop("pin_note", None)  # pinned now
    pins = {**pins, "revision": commit, "sha256": (weights or {}).get("sha256") or _sha256(data[pins["file"]])}
    raw["weights"] = pins
    write_registry(registry, [raw])
    return Upstream(raw["name"], pins["repo"], commit, pins["sha256"], raw, registry)


def write_tones(root: Path, per_class: int) -> Path:
    """``root/{low,high}/<i>.wav``: two classes of 16 kHz sine tones (300 Hz and 2 kHz, 0.3 s and
    0.05 s longer per take, a little seeded noise): audio a tiny speech model tells apart."""
    import numpy as np
    import soundfile

    rng = np.random.RandomState(0)
    for name, freq in (("low", 300.0), ("high", 2000.0)):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            t = np.arange(int(16000 * (0.3 + 0.05 * i))) / 16000
            wave = 0.5 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.randn(t.size)
            soundfile.write(root / name / f"{i}.wav", wave.astype(np.float32), 16000)
    return root
