"""Building and loading models (saving and pushing: :mod:`reszoo.saving`).

``load`` builds the architecture on the meta device (no random init that is thrown away),
fills it from the verified checkpoint with ``load_state_dict(assign=True)``, and only
materialises what the checkpoint does not hold (a replaced head, counters, non-persistent
buffers). A model carries its registry entry, its preprocessing and its labels.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import numbers
import os
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ._text import listing
from . import domains
from .errors import InputError, LoadError, UnknownModelError
from .checkpoints import entry_weights, load_state_dict
from .hub import LocalRepo, fetch_file, file_digest
from .names import check_repo_filename
from .registry import Entry, RegistryError, Weights, info, parse_entry
from .saving import CONFIG_FILE, WEIGHTS_FILE, push, save_pretrained

__all__ = ["LoadError", "build", "load", "push", "resolve_entry", "save_pretrained", "CONFIG_FILE", "WEIGHTS_FILE"]

logger = logging.getLogger(__name__)
_HF_URI = re.compile(r"^hf://(?P<repo>[^/@\s]+/[^/@\s]+)(?:@(?P<rev>[^\s]+))?$")
_MAX_NAME = 200  # registry names and hf:// URIs are far shorter; longer is a mistake, not a model
_MAX_PATH = 4096  # PATH_MAX: a folder path longer than this cannot be opened


# The most memory (parameters and buffers, in bytes) a model may need: ~40x the largest zoo model.
# An absurd num_classes or width is refused by this check before anything is allocated.
MAX_MODEL_BYTES = 16 * 2**30


def build(entry: Entry, *, num_classes: int | None = None, device: torch.device | str | None = None) -> nn.Module:
    """The architecture of ``entry`` (``num_classes`` overriding its head), on ``device``.

    It is first built on the meta device (nothing allocated), to refuse a model over
    :data:`MAX_MODEL_BYTES` or arguments the architecture cannot be built from.
    """
    num_classes = _checked_num_classes(num_classes)
    target = _resolve_device(device)
    builder = domains.get(entry.domain).arch(entry.arch)
    args = dict(entry.arch_args)
    if num_classes is not None:
        args["num_classes"] = num_classes

    with torch.device("meta"):  # arguments are checked here, where a wrong size allocates nothing
        try:
            model = builder(**args)
        except (TypeError, RuntimeError, OverflowError) as err:  # unknown argument, negative or huge size
            detail = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise RegistryError(f"{entry.name!r}: architecture {entry.arch!r} cannot be built from arguments "
                                f"{args}: {detail}") from err
    tensors = [*model.parameters(), *model.buffers()]
    size = sum(t.numel() * t.element_size() for t in tensors)
    if size > MAX_MODEL_BYTES:
        count = sum(t.numel() for t in tensors)
        raise InputError(f"{entry.name!r}: architecture {entry.arch!r} with arguments {args} would take "
                         f"{size / 2**30:,.1f} GiB ({count:,} parameter and buffer values), over reszoo's limit of "
                         f"{MAX_MODEL_BYTES / 2**30:g} GiB (reszoo.api.MAX_MODEL_BYTES); check num_classes and the "
                         "size arguments (widths, layers) of arch_args")
    if target.type == "meta":
        return model
    with torch.device(target):
        return builder(**args)


def _checked_num_classes(num_classes: Any) -> int | None:
    """``num_classes`` as given to load/build: None (keep the head) or a positive integer."""
    if num_classes is None:
        return None
    if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) or num_classes < 1:
        raise InputError(f"num_classes must be a positive integer (the size of the new classifier head), got {num_classes!r}")
    if num_classes > MAX_MODEL_BYTES // 4:  # a head this wide cannot fit even with one input feature
        raise InputError(f"num_classes={num_classes} would need a classifier head over reszoo's limit of "
                         f"{MAX_MODEL_BYTES / 2**30:g} GiB (reszoo.api.MAX_MODEL_BYTES)")
    return int(num_classes)


def _resolve_device(device: torch.device | str | int | None) -> torch.device:
    """``device`` as a torch.device that exists here (default: the CPU), or one clear error."""
    if device is None:
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as err:
        raise InputError(f"unknown device {device!r}: expected cpu, cuda, cuda:N, mps, xpu or meta") from err
    if dev.type in ("cpu", "meta"):
        return dev
    backend = torch.backends.mps if dev.type == "mps" else getattr(torch, dev.type, None)
    is_available = getattr(backend, "is_available", None)
    if is_available is None:  # an out-of-tree backend: it exists if it can hold a tensor
        try:
            torch.empty(0, device=dev)
        except Exception as err:
            detail = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise InputError(f"device {str(device)!r} is not available here ({detail})") from err
        return dev
    where = "torch.backends.mps" if dev.type == "mps" else f"torch.{dev.type}"
    if not is_available():
        raise InputError(f"device {str(device)!r} is not available here ({where}.is_available() is False)")
    count = getattr(backend, "device_count", None)
    if dev.index is not None and count is not None and dev.index >= count():
        raise InputError(f"device {str(device)!r} is not available here ({where}.device_count() is {count()})")
    return dev


def _materialize(model: nn.Module, device: torch.device | str) -> list[str]:
    """Give real storage to whatever the checkpoint left on the meta device; return their names."""
    fresh: list[str] = []
    for mod_name, module in model.named_modules():
        new_params = False
        for name, param in list(module._parameters.items()):
            if param is not None and param.is_meta:
                module._parameters[name] = nn.Parameter(torch.empty_like(param, device=device), param.requires_grad)
                fresh.append(f"{mod_name}.{name}".lstrip("."))
                new_params = True
        for name, buf in list(module._buffers.items()):
            if buf is not None and buf.is_meta:
                module._buffers[name] = torch.zeros_like(buf, device=device)
        if new_params:
            if not hasattr(module, "reset_parameters"):
                raise LoadError(f"{mod_name or type(module).__name__}: parameters missing from the checkpoint and no reset_parameters() to initialise them")
            module.reset_parameters()
    for module in model.modules():
        if hasattr(module, "init_non_persistent_buffers"):
            module.init_non_persistent_buffers()
    return fresh


def _check_values(state: dict[str, torch.Tensor], own: dict[str, torch.Tensor], *, source: str, name: str) -> None:
    """Refuse what would make a broken model (dtype of another kind, NaN/inf); cast floating
    tensors to the model's dtype (a float64 checkpoint would make a float64 model that fails on
    float32 input)."""
    cast: dict[str, int] = {}
    for key, value in state.items():
        want = own[key].dtype
        if value.dtype != want:
            if not (value.is_floating_point() and want.is_floating_point):
                raise LoadError(f"{source}: {key} is {str(value.dtype).removeprefix('torch.')} in the checkpoint but "
                                f"{str(want).removeprefix('torch.')} in the model; not weights for {name}")
            what = f"{str(value.dtype).removeprefix('torch.')} -> {str(want).removeprefix('torch.')}"
            cast[what] = cast.get(what, 0) + 1
            state[key] = value = value.to(want)
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise LoadError(f"{source}: non-finite values (NaN or inf) in {key}; the checkpoint is broken "
                            "(a diverged training run?): use another file")
    if cast:
        logger.info("%s: checkpoint tensors cast to the model's dtype (%s)", name,
                    ", ".join(f"{n} x {what}" for what, n in cast.items()))


def _fill(model: nn.Module, state: dict[str, torch.Tensor], *, replace_head: bool, device: torch.device | str, name: str,
          source: str | None = None) -> None:
    """Strict load into a meta-built model, except a head that ``num_classes`` replaced. The one
    place every checkpoint passes: keys, shapes, dtypes and finiteness are checked here."""
    source = source or name
    own = model.state_dict()
    head = tuple(getattr(model, "head_prefixes", ()))
    dropped = []
    if replace_head and head:
        for key in list(state):
            if key.startswith(head) and (key not in own or own[key].shape != state[key].shape):
                dropped.append(key)
                del state[key]
    if dropped:
        logger.warning("%s: new head, dropped from the checkpoint: %s", name, ", ".join(dropped))
    unexpected = sorted(set(state) - set(own))
    missing = sorted(
        k for k in set(own) - set(state)
        if not k.endswith("num_batches_tracked") and not (replace_head and head and k.startswith(head))
    )
    mismatched = sorted(k for k in state if k in own and own[k].shape != state[k].shape)
    if unexpected or missing or mismatched:
        parts = []
        for label, keys in (("unexpected", unexpected), ("missing", missing), ("wrong shape", mismatched)):
            if keys:
                parts.append(f"{label}: {listing(keys, 8)}")
        where = f" ({source})" if source != name else ""
        raise LoadError(f"{name}: checkpoint{where} does not fit the architecture ({'; '.join(parts)})")
    _check_values(state, own, source=source, name=name)
    model.load_state_dict(state, strict=False, assign=True)
    _materialize(model, device)


def _finish(model: nn.Module, entry: Entry, *, dtype: torch.dtype | None, mirror: Any) -> nn.Module:
    """Eval mode, the entry's facts and preprocessing attached, the domain's ``prepare`` run."""
    if dtype is not None:
        model.to(dtype=dtype)
    model.eval()
    domain = domains.get(entry.domain)
    model.entry = entry
    model.labels = entry.labels
    model.source_mirror = mirror  # where load found its files; save_pretrained copies the aux files from there too
    model.preprocess = domain.build_preprocess(entry)
    domain.prepare(model, entry, mirror=mirror)
    return model


def _config_to_entry(config: dict[str, Any], where: str) -> Entry:
    if not isinstance(config, dict) or "arch" not in config or "domain" not in config:
        raise RegistryError(f"{where}: not a reszoo config (needs 'domain' and 'arch'); reszoo never runs code from a repo")
    fields = {k: v for k, v in config.items() if k not in {"reszoo_version", "weights_file", "base_weights"}}
    return parse_entry(fields, where=where)


def read_config(path: Path) -> dict[str, Any]:
    """A ``config.json`` as a mapping; anything else is a :class:`RegistryError` naming the file."""
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise RegistryError(f"{path}: not a reszoo config (not UTF-8 text: {err.reason})") from None
    except json.JSONDecodeError as err:
        raise RegistryError(f"{path}: not a reszoo config (invalid JSON: {err.msg} at line {err.lineno} column {err.colno})") from None
    if not isinstance(config, dict):
        raise RegistryError(f"{path}: not a reszoo config (expected a JSON object, got a {type(config).__name__})")
    return config


def _fetch_config(uri: str, *, revision: str | None, mirror: Any) -> tuple[Path, str, str | None, str | None, Any]:
    """(config.json, repo, revision to fetch the rest at, its commit if known, mirror for the
    rest) of ``hf://owner/name[@rev]`` or of a saved-model folder."""
    if (m := _HF_URI.match(uri)) is not None:
        repo, rev = m["repo"], revision or m["rev"]
        config_path = fetch_file(repo, CONFIG_FILE, revision=rev, mirror=mirror, exact_revision=rev is not None)
        snap = config_path.parent.name  # hf cache: .../snapshots/<commit>/config.json
        commit = snap if re.fullmatch(r"[0-9a-f]{40}", snap) else None
        return config_path, repo, commit or rev, commit, mirror  # the rest from the very commit the config came from
    if uri.startswith("hf://"):
        raise ValueError(f"expected hf://owner/name[@revision], got {uri!r}")
    # A saved-model folder is local: every file comes from inside it, never from a mirror or the Hub.
    folder = Path(uri).resolve()
    config_path = folder / CONFIG_FILE
    if not config_path.is_file():
        raise FileNotFoundError(f"{uri}: no {CONFIG_FILE}; not a folder written by reszoo.save_pretrained")
    if revision is not None:
        raise ValueError(f"{uri}: a saved-model folder has no revisions (got revision={revision!r})")
    repo = f"{folder.parent.name}/{folder.name}"
    return config_path, repo, None, None, LocalRepo(folder, repo)


def _resolve_uri(uri: str, *, revision: str | None, mirror: Any) -> tuple[Entry, Path, Any]:
    """(entry, weight file, mirror for auxiliary files) of ``hf://owner/name[@rev]`` or of a
    saved-model folder."""
    config_path, repo, rev, commit, mirror = _fetch_config(uri, revision=revision, mirror=mirror)
    config = read_config(config_path)
    entry = _config_to_entry(config, uri)
    weights_file = check_repo_filename(config.get("weights_file", WEIGHTS_FILE), f"{config_path}: weights_file")
    weights_path = fetch_file(repo, weights_file, revision=rev, mirror=mirror, exact_revision=rev is not None)
    weights = Weights(repo=repo, file=weights_file, revision=commit, sha256=file_digest(weights_path),
                      pin_note="loaded by URI: pinned to what was fetched")
    return dataclasses.replace(entry, weights=weights), weights_path, mirror


def resolve_entry(name: str, *, revision: str | None = None, mirror: str | os.PathLike[str] | None = None) -> Entry:
    """The entry of what :func:`load` would load from ``name`` (a registry name or alias,
    ``hf://owner/name[@revision]`` or a saved-model folder), read without fetching weights: its
    registry entry (:func:`reszoo.info`, the registry lookup, which this extends to what only
    ``load`` accepts), or its ``config.json`` (whose entry names no weights)."""
    name = _check_name(name)
    if not _is_uri(name):
        return info(name)
    config_path = _fetch_config(name, revision=revision, mirror=mirror)[0]
    return _config_to_entry(read_config(config_path), name)


def _check_name(name: object) -> str:
    """Refuse what cannot be a model name before it touches the filesystem (an empty name would
    pick up ./config.json; a very long one fails inside path operations)."""
    if not isinstance(name, str):
        raise TypeError(f"a model name is a string, got {type(name).__name__}")
    if not name.strip():
        raise UnknownModelError(f"empty model name {name!r}: give a registry name (see `reszoo list`), "
                                "hf://owner/name or a saved-model folder")
    looks_like_path = "/" in name or name.startswith(".")
    if len(name) > (_MAX_PATH if looks_like_path else _MAX_NAME):
        raise UnknownModelError(f"unknown model {name[:60]!r}… ({len(name)} characters): registry names are short; "
                                "see `reszoo list`")
    if "\0" in name:
        raise UnknownModelError(f"unknown model {name!r}: a name or path never holds a NUL character")
    return name


def _is_uri(name: str) -> bool:
    if name.startswith("hf://") or "/" in name or name.startswith("."):
        return True
    try:  # a bare name is a folder only if it holds a config.json
        return Path(name, CONFIG_FILE).is_file()
    except (OSError, ValueError):
        return False


def load(
    name: str,
    *,
    pretrained: bool = True,
    num_classes: int | None = None,
    revision: str | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    mirror: str | os.PathLike[str] | None = None,
    merge: bool = False,
    features_only: bool = False,
    optimize: bool = False,
) -> nn.Module:
    """A ready model: ``name`` is a registry name or alias, ``hf://owner/name[@revision]`` (a repo
    in reszoo's format) or a folder written by :func:`save_pretrained`.

    The model is in eval mode and carries ``model.entry``, ``model.preprocess`` (raw input to
    model input) and ``model.labels``. ``num_classes`` different from the checkpoint replaces the
    head (the dropped keys are logged); everything else loads strictly.

    A LoRA adapter (a registry entry, or a saved folder's/repo's config.json, naming a ``base``)
    loads its base, verified, and applies the adapter; ``merge=True`` folds it into the weights (a
    plain module; no effect on other models). See :mod:`reszoo.lora`.

    ``features_only=True`` builds the architecture with ``features_only`` (timm's meaning: the
    image ResNets' ``forward`` returns the stages' feature maps, described by ``model.feature_info``).
    ``optimize=True`` rewrites the loaded model for fast inference (:func:`reszoo.optimize.optimize`:
    batch norms folded, channels-last, bfloat16 autocast on CPUs with AVX512-BF16).
    """
    if optimize:
        from .optimize import optimize as optimize_model

        return optimize_model(load(name, pretrained=pretrained, num_classes=num_classes, revision=revision, device=device,
                                   dtype=dtype, mirror=mirror, merge=merge, features_only=features_only))
    target = _resolve_device(device)
    num_classes = _checked_num_classes(num_classes)
    name = _check_name(name)
    adapter_path, given_mirror = None, mirror
    if _is_uri(name):
        entry, path, mirror = _resolve_uri(name, revision=revision, mirror=mirror)
        state_of = lambda: (path, load_state_dict(path, device=target))  # noqa: E731
        adapter_path = path
    else:
        entry = info(name)
        state_of = lambda: entry_weights(entry, revision=revision, mirror=mirror, device=target)  # noqa: E731
    if features_only:
        if entry.base is not None:
            raise InputError(f"{entry.name}: features_only applies to a model, not to a LoRA adapter; load the adapter "
                             "with merge=True and use model.forward_intermediates(x)")
        entry = dataclasses.replace(entry, arch_args={**entry.arch_args, "features_only": True})
    # --- LoRA adapters (reszoo/lora.py): the base, fetched and verified, with the adapter applied
    if entry.base is not None and pretrained:
        from .lora import load_adapter

        return load_adapter(entry, adapter_path=adapter_path, base_weights=_saved_base_weights(entry, adapter_path, mirror),
                            num_classes=num_classes, revision=None if adapter_path else revision, device=target,
                            dtype=dtype, mirror=mirror, base_mirror=given_mirror, merge=merge)
    # ---
    replace_head = num_classes is not None and num_classes != entry.num_classes
    if replace_head:
        arch_args = {**entry.arch_args, "num_classes": num_classes}
        entry = dataclasses.replace(entry, arch_args=arch_args, labels=None)
    if features_only:
        _check_features_only(entry)
    if not pretrained:
        return _finish(build(entry, device=target), entry, dtype=dtype, mirror=mirror)
    model = build(entry, device="meta")  # first: a config naming no known architecture fails before any read
    path, state = state_of()
    _fill(model, state, replace_head=replace_head, device=target, name=entry.name, source=str(path))
    return _finish(model, entry, dtype=dtype, mirror=mirror)


def _check_features_only(entry: Entry) -> None:
    """An architecture that takes no ``features_only`` is one clear error, not a builder's TypeError."""
    try:
        build(entry, device="meta")
    except RegistryError as err:
        if "features_only" in str(err):
            raise InputError(f"{entry.name}: features_only applies to architectures with intermediate feature maps "
                             f"(the image ResNets); {entry.arch!r} has none") from None
        raise


def _saved_base_weights(entry: Entry, adapter_path: Path | None, mirror: Any) -> dict[str, Any] | None:
    """The ``base_weights`` pins in the config.json of an adapter loaded from a folder or repo
    (registry adapters take their base from the same registry: None)."""
    if adapter_path is None or entry.weights is None:
        return None
    config = json.loads(fetch_file(entry.weights.repo, CONFIG_FILE, revision=entry.weights.revision,
                                   mirror=mirror).read_text(encoding="utf-8"))
    pins = config.get("base_weights")
    if pins is not None and not (isinstance(pins, dict) and set(pins) <= {"repo", "revision", "sha256"}):
        raise RegistryError(f"{entry.weights.repo}/{CONFIG_FILE}: base_weights must be {{repo, revision, sha256}}, got {pins!r}")
    return pins
