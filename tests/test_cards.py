"""Generated model cards: valid Hub metadata, model-index for every metric, up-to-date files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from huggingface_hub import ModelCard

import reszoo
from reszoo.registry import get_entry

ROOT = Path(__file__).resolve().parent.parent
NAMES = reszoo.list_models()


@pytest.mark.parametrize("name", NAMES)
def test_card_metadata_and_round_trip(name):
    entry = get_entry(name)
    card = reszoo.card(name)
    data = card.data
    assert data.library_name == "reszoo" and data.license == entry.license
    assert "reszoo" in data.tags and entry.domain in data.tags
    results = data.eval_results or []
    assert [(r.dataset_name, r.dataset_split, r.metric_value) for r in results] == [
        (m.dataset, m.split, m.value) for m in entry.metrics
    ]
    group_source = {}  # model-index keeps one source per (task, dataset, split): the group's first
    for r, m in zip(results, entry.metrics):
        url = None if m.source.measured else m.source.url
        assert r.source_url == group_source.setdefault(r.unique_identifier, url)
    parsed = ModelCard(str(card))
    assert parsed.data.eval_results == data.eval_results
    assert parsed.data.to_dict() == data.to_dict()
    body = card.text
    for m in entry.metrics:
        assert (f"measured here by `{m.source.script}`" if m.source.measured else f"]({m.source.url})") in body
    if entry.weights and entry.weights.sha256:
        assert entry.weights.sha256 in body


def test_cards_validate_on_the_hub(hub):
    for name in NAMES:
        reszoo.card(name).validate()  # POST /api/validate-yaml; raises on errors


def test_bad_license_is_rejected_by_the_hub(hub):
    card = ModelCard("---\nlicense: not-a-license\nlibrary_name: reszoo\n---\n# x\n")
    with pytest.raises(ValueError):
        card.validate()


def test_model_cards_folder_is_up_to_date():
    out = subprocess.run([sys.executable, "scripts/make_cards.py", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, "stale cards; run `python scripts/make_cards.py`:\n" + out.stdout


def test_fine_tuned_card_names_base_model_repo(tmp_path, monkeypatch):
    import dataclasses

    base = get_entry(NAMES[0])
    child = dataclasses.replace(base, name="child-model", base_model=base.name, usage=None)
    from reszoo.cards import card_for_entry

    card = card_for_entry(child, repo_id="someone/child-model")
    assert card.data.base_model == (base.weights.repo if base.weights else base.name)
    assert 'reszoo.load("hf://someone/child-model")' in card.text
