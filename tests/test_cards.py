"""Generated model cards: the Hub refuses bad metadata, the committed cards are up to date, fine-tuned
models name their base. (Every entry's card, its Hub validation and its model-index for every metric are
checked in test_contract.py.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from huggingface_hub import ModelCard

import reszoo
from reszoo.registry import info

ROOT = Path(__file__).resolve().parent.parent
NAMES = reszoo.list_models()


def test_bad_license_is_rejected_by_the_hub(hub):
    card = ModelCard("---\nlicense: not-a-license\nlibrary_name: reszoo\n---\n# x\n")
    with pytest.raises(ValueError):
        card.validate()


def test_model_cards_folder_is_up_to_date():
    out = subprocess.run([sys.executable, "scripts/make_cards.py", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, "stale cards; run `python scripts/make_cards.py`:\n" + out.stdout


def test_fine_tuned_card_names_base_model_repo(tmp_path, monkeypatch):
    import dataclasses

    base = info(NAMES[0])
    child = dataclasses.replace(base, name="child-model", base_model=base.name, usage=None)
    from reszoo.cards import card_for_entry

    card = card_for_entry(child, repo_id="someone/child-model")
    assert card.data.base_model == (base.weights.repo if base.weights else base.name)
    assert 'reszoo.load("hf://someone/child-model")' in card.text
