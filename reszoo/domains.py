"""How reszoo's core reaches a domain, without importing any domain code up front.

Each domain is a subpackage ``reszoo.<domain>`` (image, text, speech, rl, gan) whose
``__init__`` is light (torch only; torchvision, torchaudio, transformers, gymnasium are imported
inside the functions that need them) and defines:

``ARCHS: dict[str, Callable[..., nn.Module]]``
    Architecture builders. Every builder takes ``residual: bool = True`` (False builds the
    plain twin) and, where the model has a classifier head, ``num_classes``. Model classes name
    their head in ``head_prefixes`` (state-dict prefixes replaced when ``num_classes`` changes),
    and recompute non-persistent buffers in ``init_non_persistent_buffers()``, since models are
    built on the meta device and filled from the checkpoint with ``assign=True``.
``CONVERTERS: dict[str, Callable[[dict[str, Tensor]], dict[str, Tensor]]]``
    Upstream checkpoint layouts onto reszoo's (``weights.converter`` in an entry names one).
``build_preprocess(entry: Entry) -> Callable``
    Raw input (a path, PIL image, text, waveform, observation …) to model input, from
    ``entry.preprocess``. Settings used at run time that are not preprocessing (an RL agent's
    environment, a GAN's default truncation, a verification threshold) are in ``entry.runtime``
    (the keys each domain accepts: ``reszoo.registry.RUNTIME_SETTINGS``), read by ``prepare``.
``predict(model, inputs: list[str], top_k: int) -> list[dict]``
    What ``reszoo predict`` prints for the inputs given on the command line.
``prepare(model, entry, *, mirror=None) -> None`` (optional)
    Called once a model is built and loaded, to attach what the domain's methods need (a
    tokenizer, say): ``load`` has already set ``model.entry``, ``model.preprocess`` and
    ``model.labels``.
``LORA_TARGETS: str`` (optional; fine-tunable domains)
    The layers a LoRA adapter adapts by default (:mod:`reszoo.lora`, ``reszoo finetune --lora``):
    a regex over module names, full match. ``LORA_EXCLUDE: str`` (optional) names layers LoRA must
    not wrap (e.g. ones whose weight the model reads directly, bypassing their forward).
``aux_files(entry) -> list[tuple[str, str | None, str]]`` (optional)
    ``(repo, revision, file)`` of the files besides the weights that ``prepare`` reads (a
    tokenizer). ``reszoo pull --to`` mirrors them; ``save_pretrained`` copies them next to the
    weights and rewrites each ``preprocess`` reference ``{file, repo, revision}`` to ``{file}``,
    i.e. "in this repo".
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from types import ModuleType
from typing import Any

from torch import nn

from .registry import DOMAINS, RegistryError

__all__ = ["domain_module", "arch_builder", "converter", "aux_files"]


def domain_module(domain: str) -> ModuleType:
    if domain not in DOMAINS:
        raise RegistryError(f"unknown domain {domain!r}; expected one of {DOMAINS}")
    return importlib.import_module(f"reszoo.{domain}")


def arch_builder(domain: str, arch: str) -> Callable[..., nn.Module]:
    archs: dict[str, Callable[..., nn.Module]] = domain_module(domain).ARCHS
    if arch not in archs:
        raise RegistryError(f"domain {domain!r} has no architecture {arch!r}; known: {', '.join(sorted(archs))}")
    return archs[arch]


def converter(domain: str, name: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    converters = domain_module(domain).CONVERTERS
    if name not in converters:
        raise RegistryError(f"domain {domain!r} has no converter {name!r}; known: {', '.join(sorted(converters))}")
    return converters[name]


def aux_files(entry: Any) -> list[tuple[str, str | None, str]]:
    """``(repo, revision, file)`` of what travels with the weights: what the domain loads besides
    them (e.g. a tokenizer), and the entry's ``figures`` (image files in the weights repo)."""
    module = domain_module(entry.domain)
    files = list(module.aux_files(entry)) if hasattr(module, "aux_files") else []
    if entry.weights is not None:
        files += [(entry.weights.repo, entry.weights.revision, f) for f in entry.figures.values()]
        if entry.base:  # a LoRA adapter: peft's config beside the adapter file
            files.append((entry.weights.repo, entry.weights.revision, "adapter_config.json"))
    return files
