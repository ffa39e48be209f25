"""LoRA adapters for the zoo's classifiers, through Hugging Face ``peft``: wrap, save, load, merge.

An adapter is a small file of low-rank updates to chosen layers of a *base* model plus the new
classification head, trained in full (peft's ``modules_to_save``). Which layers: each domain
declares its defaults in one place, ``lora_targets`` of its :class:`~reszoo.domains.Domain`
(attention and feed-forward linears of the text encoder, the convolutions of a ResNet, the 1x1
TDNN convolutions of a speech model); ``targets=`` names others.

Saved, an adapter is PEFT's own pair of files, readable by ``peft.PeftModel.from_pretrained``::

    adapter_config.json         peft's LoraConfig (rank, alpha, target modules, modules_to_save)
    adapter_model.safetensors   the LoRA matrices and the head
    config.json                 reszoo's: the entry, "base" (a registry name) and "base_weights"
                                ({repo, revision, sha256} of the base file it was trained on)
    README.md                   the card: base_model: <the base's repo>, base_model_relation: adapter

:func:`reszoo.load` of an adapter (a registry entry with ``base:``, a folder or ``hf://`` repo
holding the files above) loads the base through the normal, verified path, checks that its
sha256 is the one the adapter was trained on, applies the adapter, and with ``merge=True`` folds
it into the weights: a plain module again, as fast as the base.

The unmerged model is the base's own module class (a ``TextEncoder``, ``ResNet`` …) with peft's
LoRA layers injected in place, so everything that works on the base works on it; the
``peft.PeftModel`` around it is :func:`peft_model`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ._text import listing
from .errors import InputError, IntegrityError, LoadError, RegistryError, UnknownModelError
from .registry import Entry

__all__ = [
    "ADAPTER_CONFIG_FILE",
    "ADAPTER_WEIGHTS_FILE",
    "DEFAULT_RANK",
    "adapter_entry",
    "apply_lora",
    "is_adapter_model",
    "load_adapter",
    "merge_adapter",
    "peft_model",
    "resolve_targets",
    "write_adapter",
]

logger = logging.getLogger(__name__)

ADAPTER_CONFIG_FILE = "adapter_config.json"  # peft's CONFIG_NAME
ADAPTER_WEIGHTS_FILE = "adapter_model.safetensors"  # peft's SAFETENSORS_WEIGHTS_NAME
DEFAULT_RANK = 8
# Layers peft's LoRA adapts (Conv3d and MultiheadAttention are not used in the zoo).
_ADAPTABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Embedding)
# Where the PeftModel of an adapted module is kept: in __dict__, not as a submodule (it holds the module).
_PEFT_ATTR = "_reszoo_peft"
_BASE_ATTR = "_reszoo_lora_base"


# =========================================================================== wrapping


def is_adapter_model(model: nn.Module) -> bool:
    """Whether ``model`` carries an unmerged LoRA adapter made or loaded by reszoo."""
    return _PEFT_ATTR in getattr(model, "__dict__", {})


def peft_model(model: nn.Module) -> Any:
    """The ``peft.PeftModel`` around an adapter model (for peft's own API: ``save_pretrained``, …)."""
    if not is_adapter_model(model):
        raise InputError(f"{type(model).__name__} has no LoRA adapter (load one with reszoo.load, or apply_lora)")
    return model.__dict__[_PEFT_ATTR]


def _head_modules(model: nn.Module) -> list[str]:
    """Names of the classifier head's modules (``head_prefixes`` minus the dot): trained in full."""
    prefixes = tuple(getattr(model, "head_prefixes", ()))
    names = {p.rstrip(".") for p in prefixes}
    present = {n for n, _ in model.named_modules() if n in names}
    if not present:
        raise InputError(f"{type(model).__name__} has no classifier head ({', '.join(prefixes) or 'no head_prefixes'}); "
                         "LoRA fine-tuning trains an adapter and a head")
    return sorted(present)


def _short(name: str) -> str:
    """How a layer is named to the user: its last component, or last two when that is an index."""
    parts = name.split(".")
    return ".".join(parts[-2:]) if parts[-1].isdigit() and len(parts) > 1 else parts[-1]


def _unsupported(name: str, module: nn.Module) -> str | None:
    """Why peft's LoRA cannot adapt ``module`` exactly (None when it can).

    peft builds a convolution's ``lora_A`` with the base's kernel, stride and padding but not its
    dilation, padding mode or groups, so there the adapter would compute something other than its
    merged weights."""
    if not isinstance(module, _ADAPTABLE):
        return f"a {type(module).__name__}; LoRA adapts Linear, Conv1d, Conv2d and Embedding layers"
    if isinstance(module, nn.Conv1d | nn.Conv2d):
        if any(d != 1 for d in module.dilation):
            return f"a dilated convolution (dilation {module.dilation}), which peft's LoRA does not reproduce"
        if module.padding_mode != "zeros" and any(p for p in module.padding):
            return f"a convolution padded in {module.padding_mode!r} mode, which peft's LoRA does not reproduce"
        if module.groups != 1:
            return f"a grouped convolution (groups {module.groups}), which peft's LoRA cannot merge"
    return None


def resolve_targets(model: nn.Module, domain: str, targets: Sequence[str] | None = None) -> tuple[str, list[str]]:
    """(peft ``target_modules`` regex, names of the layers it adapts) for ``model``.

    ``targets=None``: the domain's ``Domain.lora_targets`` (layers peft cannot adapt exactly are skipped).
    Otherwise module names, matched as peft matches a list (the name, or its end after a dot:
    ``qkv`` is every ``*.qkv``); each must name at least one layer, every layer it names must be
    adaptable, and none may be in the head (trained in full). Raises :class:`InputError`."""
    from . import domains

    declared = domains.get(domain)
    heads = tuple(_head_modules(model))
    exclude = declared.lora_exclude
    modules = dict(model.named_modules())

    def in_head(name: str) -> bool:
        return any(name == h or name.startswith(h + ".") for h in heads)

    def problem(name: str) -> str | None:
        if in_head(name):
            return "part of the classifier head, which is trained in full"
        if exclude and re.fullmatch(exclude, name):
            return f"excluded by the {domain} domain (its lora_exclude): the model reads its weight directly"
        return _unsupported(name, modules[name])

    what = f"{type(model).__name__} ({getattr(getattr(model, 'entry', None), 'name', domain)})"
    adaptable = sorted({_short(n) for n in modules if n and problem(n) is None})
    if targets is None:
        pattern = declared.lora_targets
        if pattern is None:
            raise InputError(f"the {domain} domain declares no default LoRA targets; name them (lora_targets / --lora-targets)")
        matched = [n for n in modules if n and re.fullmatch(pattern, n)]
        skipped = {n: why for n in matched if (why := problem(n)) is not None}
        chosen = [n for n in matched if n not in skipped]
        for name, why in skipped.items():
            logger.info("LoRA: default target %s skipped: %s", name, why)
        if not chosen:
            raise InputError(f"{what}: none of the {domain} domain's default LoRA targets is in this model; name its "
                             f"layers with --lora-targets (adaptable: {', '.join(adaptable) or 'none'})")
        if skipped:  # the regex given to peft names exactly the layers chosen
            pattern = "|".join(re.escape(n) for n in chosen)
        return pattern, chosen

    names = [targets] if isinstance(targets, str) else list(targets)
    if not names or not all(isinstance(t, str) and t.strip() and t == t.strip() for t in names):
        raise InputError(f"lora_targets must be module names, e.g. {adaptable[:3]}; got {targets!r}")
    unknown, bad, chosen = [], [], []
    for target in names:
        hits = [n for n in modules if n and (n == target or n.endswith("." + target))]
        if not hits:
            unknown.append(target)
            continue
        for name in hits:
            if (why := problem(name)) is not None:
                bad.append(f"{name} is {why}")
            elif name not in chosen:
                chosen.append(name)
    if unknown:
        raise InputError(f"unknown LoRA target module(s) {', '.join(map(repr, unknown))} in {what}; "
                         f"its adaptable layers: {', '.join(adaptable) or 'none'}")
    if bad:
        raise InputError(f"LoRA target(s) {', '.join(map(repr, names))} in {what} name layers it cannot adapt: "
                         f"{listing(bad, 3, sep='; ')}")
    # peft's list semantics (the name or a dotted suffix), as one regex: a string stays as written in
    # adapter_config.json, where a list would be saved in set order (a different file every run).
    pattern = r"(?:.*\.)?(?:" + "|".join(re.escape(t) for t in names) + ")"
    return pattern, sorted(chosen, key=list(modules).index)


def _base_pins(base: Entry) -> dict[str, Any]:
    w = base.weights
    return {"repo": w.repo if w else None, "revision": w.revision if w else None, "sha256": w.sha256 if w else None}


def _registry_base(model: nn.Module) -> Entry:
    """The registry entry ``model`` was loaded from: an adapter names its base by registry name."""
    from .registry import info

    entry = getattr(model, "entry", None)
    if entry is None:
        raise InputError(f"{type(model).__name__} has no registry entry: load the base with reszoo.load(name)")
    try:
        registered = info(entry.name)
    except UnknownModelError:
        registered = None
    if registered is None or registered.weights != entry.weights:
        raise InputError(f"{entry.name!r} was not loaded from the registry (a folder or hf:// repo?); a LoRA adapter "
                         "names its base by registry name: fine-tune a registry model, or fully fine-tune this one")
    if registered.base is not None:
        raise InputError(f"{entry.name!r} is itself a LoRA adapter (of {registered.base!r}); train a new adapter on "
                         f"{registered.base!r}, or fine-tune {entry.name!r} without LoRA (it is merged first)")
    return registered


def apply_lora(model: nn.Module, *, rank: int = DEFAULT_RANK, alpha: float | None = None, dropout: float = 0.0,
               targets: Sequence[str] | None = None) -> nn.Module:
    """Inject trainable LoRA layers (rank ``rank``, scale ``alpha / rank``; ``alpha`` defaults to
    ``2 * rank``) into ``model``, a classifier loaded from the registry, in place; the head is
    trained in full, everything else is frozen. Returns ``model`` (its class unchanged)."""
    from peft import LoraConfig, get_peft_model

    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise InputError(f"LoRA rank must be an integer >= 1, got {rank!r}")
    if alpha is not None and not alpha > 0:
        raise InputError(f"LoRA alpha must be > 0, got {alpha!r}")
    if not 0 <= dropout < 1:
        raise InputError(f"LoRA dropout must be in [0, 1), got {dropout!r}")
    if is_adapter_model(model):
        raise InputError(f"{type(model).__name__} already carries a LoRA adapter; merge it first (merge_adapter)")
    base = _registry_base(model)
    pattern, chosen = resolve_targets(model, model.entry.domain, targets)
    heads = _head_modules(model)
    config = LoraConfig(r=rank, lora_alpha=alpha if alpha is not None else 2 * rank, lora_dropout=dropout,
                        target_modules=pattern, modules_to_save=heads)
    wrapped = get_peft_model(model, config)
    # Informative only (peft sets it from transformers models): the base's Hub repo.
    wrapped.peft_config["default"].base_model_name_or_path = base.weights.repo if base.weights else base.name
    _check_wrapped(model, chosen, heads)
    model.__dict__[_PEFT_ATTR] = wrapped
    model.__dict__[_BASE_ATTR] = base.name
    logger.info("LoRA rank %d on %d layer(s) of %s; head %s trained in full", rank, len(chosen), base.name, ", ".join(heads))
    return model


def _check_wrapped(model: nn.Module, chosen: list[str], heads: list[str]) -> None:
    """peft matches modules_to_save by plain suffix: check that exactly the head and the chosen
    layers were wrapped (an internal invariant; a failure here is a bug)."""
    from peft.tuners.lora import LoraLayer
    from peft.utils import ModulesToSaveWrapper

    lora = sorted(n for n, m in model.named_modules() if isinstance(m, LoraLayer))
    saved = sorted(n for n, m in model.named_modules() if isinstance(m, ModulesToSaveWrapper))
    if lora != sorted(chosen) or saved != sorted(heads):
        raise LoadError(f"peft adapted {lora} and saves {saved}; expected {sorted(chosen)} and {heads}")


def lora_summary(model: nn.Module) -> str:
    """One line: rank, alpha, how many layers, trainable parameters."""
    config = peft_model(model).peft_config["default"]
    from peft.tuners.lora import LoraLayer

    layers = sum(isinstance(m, LoraLayer) for m in model.modules())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for n, p in model.named_parameters() if "lora_" not in n and "modules_to_save" not in n)
    return (f"LoRA rank {config.r} (alpha {config.lora_alpha:g}) on {layers} layer(s) + the head in full: "
            f"{trainable:,} trainable of {total:,} parameters")


# =========================================================================== saving


def adapter_entry(model: nn.Module, entry: Entry) -> Entry:
    """``entry`` as an adapter's: ``base`` set (to the registry model the adapter was made on)."""
    if entry.base is not None:
        return entry
    base = model.__dict__.get(_BASE_ATTR)
    if not base:
        raise InputError("this adapter names no base model (entry.base)")
    name = entry.name if entry.name != base else f"{base}-lora"  # an entry is never its own base
    return dataclasses.replace(entry, name=name, base=base, base_model=entry.base_model or base)


def write_adapter(model: nn.Module, folder: Path, config: dict[str, Any]) -> dict[str, Any]:
    """Write PEFT's ``adapter_config.json`` and ``adapter_model.safetensors`` to ``folder`` (through
    ``PeftModel.save_pretrained``) and return reszoo's ``config.json`` for it: ``config`` (the
    entry's) with ``base``, ``base_weights`` and the adapter as weight file."""
    from .registry import info

    base_name = config.get("base") or model.__dict__.get(_BASE_ATTR)
    if not base_name:
        raise InputError("this adapter names no base model (entry.base)")
    try:
        base = info(base_name)
    except UnknownModelError as err:
        raise RegistryError(f"the adapter's base {base_name!r} is not in the registry; save it with the registry "
                            "it was trained with") from err
    wrapped = peft_model(model)
    # save_embedding_layers=False: peft's "auto" would look the base repo up on the Hub (saving never goes
    # online); embedding layers are saved anyway when they are LoRA targets. peft's README.md is replaced
    # by reszoo's card.
    wrapped.save_pretrained(str(folder), save_embedding_layers=False)
    path = folder / ADAPTER_CONFIG_FILE
    # Stable bytes: sorted keys, lists sorted where peft saves sets.
    data = json.loads(path.read_text(encoding="utf-8"))
    for key in ("modules_to_save",):
        if isinstance(data.get(key), list):
            data[key] = sorted(data[key])
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return {**config, "base": base.name, "base_weights": _base_pins(base), "weights_file": ADAPTER_WEIGHTS_FILE}


# =========================================================================== loading


@contextlib.contextmanager
def _quiet(name: str) -> Iterator[None]:
    log = logging.getLogger(name)
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def _read_config(path: Path, where: str) -> Any:
    from peft import LoraConfig, PeftConfig

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise LoadError(f"{where}: {path.name} is not readable JSON ({err})") from None
    if not isinstance(data, dict) or data.get("peft_type") != "LORA":
        raise LoadError(f"{where}: {path.name} is not a LoRA adapter config (peft_type {data.get('peft_type') if isinstance(data, dict) else None!r})")
    try:
        config = PeftConfig.from_peft_type(**data)
    except (TypeError, ValueError) as err:
        raise LoadError(f"{where}: {path.name} is not a valid LoRA config: {err}") from None
    if not isinstance(config, LoraConfig):
        raise LoadError(f"{where}: {path.name} is a {type(config).__name__}, not a LoRA config")
    return config


def _check_base_weights(entry: Entry, base: Entry, pins: dict[str, Any] | None, mirror: Any) -> None:
    """Refuse a base whose weights are not the ones the adapter was trained on (``base_weights``)."""
    from .hub import fetch_weights, file_digest

    expected = (pins or {}).get("sha256")
    if not expected or base.weights is None:
        return
    registered = base.weights.sha256
    if registered is None:  # the registry pins no sha256: hash the file the base would load
        registered = file_digest(fetch_weights(base.weights, mirror=mirror))
    if registered != expected:
        raise IntegrityError(f"{entry.name}: the adapter was trained on {base.name!r} weights with sha256 {expected}, "
                             f"but {base.name!r} here has {registered}; refused (use the registry the adapter was made "
                             "with, or retrain the adapter on this base)")


def load_adapter(entry: Entry, *, adapter_path: Path | None = None, base_weights: dict[str, Any] | None = None,
                 num_classes: int | None = None, revision: str | None = None, device: torch.device | str = "cpu",
                 dtype: torch.dtype | None = None, mirror: str | os.PathLike[str] | None = None,
                 base_mirror: str | os.PathLike[str] | None = None, merge: bool = False) -> nn.Module:
    """The base of adapter ``entry``, loaded and verified by :func:`reszoo.load`, with the adapter
    applied (merged with ``merge``). ``adapter_path``: the adapter file already fetched (a folder or
    ``hf://`` load), else the entry's pinned file; ``base_weights``: the pins the adapter was saved
    with (its config.json), checked against the base. ``mirror`` is where the adapter's files are
    looked up (for a saved folder, its parent's parent); ``base_mirror`` where the base's are
    (for a registry adapter, default ``mirror``)."""
    from peft import PeftModel
    from peft.utils import set_peft_model_state_dict
    from safetensors.torch import load_file

    from .api import _finish, load
    from .hub import fetch_file, fetch_weights
    from .registry import info

    if entry.weights is None:
        raise LoadError(f"{entry.name}: an adapter entry needs its adapter file (weights)")
    try:
        base = info(entry.base)
    except UnknownModelError:
        raise UnknownModelError(f"{entry.name}: its base model {entry.base!r} is not in the registry; load it with the "
                                "registry it was made with (RESZOO_REGISTRY), or add the base entry") from None
    if base.base is not None or base.domain != entry.domain:
        raise RegistryError(f"{entry.name}: its base {base.name!r} is "
                            + ("itself an adapter" if base.base else f"a {base.domain} model, not {entry.domain}"))
    if num_classes is not None and num_classes != entry.num_classes and not merge:
        raise InputError(f"{entry.name}: the adapter's head has {entry.num_classes} classes; a head for {num_classes} "
                         "replaces it only on the merged model (merge=True)")
    if base_mirror is None and adapter_path is None:
        base_mirror = mirror
    _check_base_weights(entry, base, base_weights, base_mirror)
    w = entry.weights
    if adapter_path is None:
        adapter_path = fetch_weights(w, revision=revision, mirror=mirror)  # sha256-verified when pinned
    config_rev = revision if revision is not None else w.revision
    config = _read_config(fetch_file(w.repo, ADAPTER_CONFIG_FILE, revision=config_rev, mirror=mirror), entry.name)

    with _quiet("reszoo.api"):  # the base's head is replaced by the adapter's: no "new head" warning
        model = load(base.name, num_classes=entry.num_classes, device=device, mirror=base_mirror)
    wrapped = PeftModel(model, config)
    state = load_file(adapter_path, device=str(torch.device(device)))
    result = set_peft_model_state_dict(wrapped, state)
    unexpected = sorted(result.unexpected_keys)
    missing = sorted(k for k in result.missing_keys if ".lora_" in k or ".modules_to_save." in k)
    if unexpected or missing:
        shown = "; ".join(f"{label}: {listing(keys, 6)}"
                          for label, keys in (("unexpected", unexpected), ("missing", missing)) if keys)
        raise LoadError(f"{entry.name}: the adapter file does not fit {base.name} with its adapter config ({shown})")
    model.__dict__[_PEFT_ATTR] = wrapped
    model.__dict__[_BASE_ATTR] = base.name
    if merge:
        return merge_adapter(_finish(model, entry, dtype=None, mirror=mirror), num_classes=num_classes, dtype=dtype,
                             device=device, mirror=mirror)
    return _finish(model, entry, dtype=dtype, mirror=mirror)


def merge_adapter(model: nn.Module, *, num_classes: int | None = None, dtype: torch.dtype | None = None,
                  device: torch.device | str | None = None, mirror: str | os.PathLike[str] | None = None) -> nn.Module:
    """Fold the adapter into the weights (peft's ``merge_and_unload``): the plain module again, at
    the base's speed. Its entry is no longer an adapter (``base`` cleared; ``base_model`` names the
    base). ``num_classes`` other than the adapter's gives the merged model a new head."""
    from .api import _fill, _finish, build

    wrapped = peft_model(model)
    attrs = {k: getattr(model, k) for k in ("entry", "preprocess", "labels") if hasattr(model, k)}
    merged = wrapped.merge_and_unload()
    for key in (_PEFT_ATTR, _BASE_ATTR):
        merged.__dict__.pop(key, None)
    entry = attrs["entry"]
    entry = dataclasses.replace(entry, base=None, base_model=entry.base or entry.base_model)
    if num_classes is not None and num_classes != entry.num_classes:
        entry = dataclasses.replace(entry, arch_args={**entry.arch_args, "num_classes": num_classes}, labels=None)
        fresh = build(entry, device="meta")
        target = device if device is not None else next(merged.parameters()).device
        _fill(fresh, dict(merged.state_dict()), replace_head=True, device=target, name=entry.name)
        return _finish(fresh, entry, dtype=dtype, mirror=mirror)
    for key, value in attrs.items():
        setattr(merged, key, value)
    merged.entry = entry
    if dtype is not None:
        merged.to(dtype=dtype)
    return merged.eval()
