"""Saving and pushing models: a self-contained repo folder (weights, ``config.json``, the files
the domain loads besides the weights, a generated card) that ``reszoo.load`` reads back, and
``push``, which publishes that folder to the Hub."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from torch import nn

from . import __version__, network
from .domains import aux_files
from .hub import fetch_file
from .registry import Entry

__all__ = ["CONFIG_FILE", "WEIGHTS_FILE", "model_config", "push", "save_pretrained"]

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
# Fields of an entry that describe the registry, not the model: they stay out of config.json.
_NOT_IN_CONFIG = {"aliases", "weights", "usage"}


def _entry_of(model: nn.Module, entry: Entry | None) -> Entry:
    entry = entry or getattr(model, "entry", None)
    if entry is None:
        raise ValueError("this model has no registry entry: load it with reszoo.load, or pass entry=")
    return entry


def model_config(entry: Entry) -> dict[str, Any]:
    """The ``config.json`` of a model in reszoo's Hub format: everything but the weight pins."""
    data = {k: v for k, v in entry.to_dict().items() if k not in _NOT_IN_CONFIG}
    return {"reszoo_version": __version__, **data, "weights_file": WEIGHTS_FILE}


def _localize(preprocess: dict[str, Any], files: set[str]) -> dict[str, Any]:
    """Point ``{file, repo, revision}`` references at copies saved next to the weights."""
    out: dict[str, Any] = {}
    for key, value in preprocess.items():
        if isinstance(value, dict) and value.get("file") in files:
            value = {k: v for k, v in value.items() if k not in ("repo", "revision", "sha256")}
        out[key] = value
    return out


def save_pretrained(model: nn.Module, folder: str | os.PathLike[str], *, entry: Entry | None = None,
                    repo_id: str | None = None, mirror: str | os.PathLike[str] | None = None) -> Path:
    """Write ``model.safetensors``, ``config.json``, a generated ``README.md`` card, and the files
    the domain loads besides the weights (a tokenizer), to ``folder``: a self-contained repo.
    A LoRA adapter model is saved as its adapter (:func:`reszoo.lora.write_adapter`: PEFT's
    ``adapter_config.json`` and ``adapter_model.safetensors``), its config naming the base."""
    from safetensors.torch import save_file

    from .cards import card_for_entry
    from .lora import ADAPTER_CONFIG_FILE, adapter_entry, is_adapter_model, write_adapter

    entry = _entry_of(model, entry)
    if is_adapter_model(model):
        entry = adapter_entry(model, entry)
    if mirror is None:  # a model loaded from a folder finds its tokenizer and figures there
        mirror = getattr(model, "source_mirror", None)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    copied = set()
    for repo, rev, filename in aux_files(entry):
        if filename == ADAPTER_CONFIG_FILE and is_adapter_model(model):
            continue  # written from the model by write_adapter, below
        (folder / filename).parent.mkdir(parents=True, exist_ok=True)  # checked by fetch_file: inside the folder
        shutil.copyfile(fetch_file(repo, filename, revision=rev, mirror=mirror), folder / filename)
        copied.add(filename)
    if copied:
        entry = dataclasses.replace(entry, preprocess=_localize(entry.preprocess, copied))
    # Figures that travel with the model (a fine-tuning run's plots), named in entry.extra.
    for filename, source in getattr(model, "figure_files", {}).items():
        if Path(source).resolve() != (folder / filename).resolve():
            shutil.copyfile(source, folder / filename)
    config = model_config(entry)
    if is_adapter_model(model):  # --- a LoRA adapter (reszoo/lora.py): PEFT's files instead of the weights
        config = write_adapter(model, folder, config)
    else:
        state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
        save_file(state, folder / WEIGHTS_FILE, metadata={"format": "pt", "reszoo_version": __version__})
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    repo = repo_id or (entry.weights.repo if entry.weights else entry.name)
    card_for_entry(entry, repo_id=repo, location=None if repo_id else folder).save(folder / "README.md")
    return folder


def push(
    model: nn.Module,
    repo_id: str,
    *,
    entry: Entry | None = None,
    commit_message: str | None = None,
    private: bool | None = None,
    token: str | None = None,
) -> str:
    """Publish ``model`` to ``repo_id`` (weights, config, generated card); return the commit id."""
    from huggingface_hub import HfApi

    entry = _entry_of(model, entry)
    api = HfApi(token=token, library_name="reszoo", library_version=__version__)
    with tempfile.TemporaryDirectory(prefix="reszoo-push-") as tmp:
        save_pretrained(model, tmp, entry=entry, repo_id=repo_id)
        try:
            # Every wait bounded by RESZOO_HUB_TIMEOUT; no retries: a commit that failed may still have landed.
            with network.guarded():
                api.create_repo(repo_id, exist_ok=True, private=private)
                commit = api.upload_folder(
                    repo_id=repo_id,
                    folder_path=tmp,
                    commit_message=commit_message or f"Upload {entry.name} with reszoo {__version__}",
                )
        except Exception as err:
            if (error := network.push_error(err, repo_id)) is None:
                raise
            raise error from err
    return commit.oid
