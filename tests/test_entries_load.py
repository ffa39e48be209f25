"""Every registry entry loads on a fresh install: models trained here from the bundled mirror,
offline, with an empty cache; the rest are upstream repos published on the Hub (pinned there)."""

from __future__ import annotations

import pytest

import reszoo
from reszoo.hub import bundled_mirror, sha256_of
from reszoo.registry import load_registry

OWN_ORG = "reszoo/"  # repos of models trained here: not on the public Hub until published


def _own_entries() -> list[str]:
    entries = {e.name: e for e in load_registry().values()}
    return sorted(n for n, e in entries.items() if e.weights is not None and e.weights.repo.startswith(OWN_ORG))


@pytest.mark.parametrize("name", _own_entries())
def test_entry_trained_here_loads_offline_from_the_bundled_mirror(name, offline, tmp_path, monkeypatch):
    monkeypatch.setenv("RESZOO_CACHE", str(tmp_path / "cache"))  # a fresh install: nothing verified yet
    entry = reszoo.info(name)
    bundled = bundled_mirror() / entry.weights.repo / entry.weights.file
    assert bundled.is_file(), f"{name}: {bundled} is missing: bundle it (≤ 8 MB) or publish it and pin the commit"
    assert bundled.stat().st_size <= 8 * 1024 * 1024
    assert sha256_of(bundled) == entry.weights.sha256
    model = reszoo.load(name)
    assert model.entry.name == name
    assert all(p.isfinite().all() for p in model.parameters())
