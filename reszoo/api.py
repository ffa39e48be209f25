"""Building, loading, saving and pushing models.

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
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import __version__
from .domains import arch_builder, aux_files, domain_module
from .errors import InputError, LoadError
from .hub import entry_state_dict, fetch_file, file_digest, load_state_dict
from .registry import Entry, RegistryError, Weights, get_entry, parse_entry

__all__ = ["LoadError", "build", "load", "push", "save_pretrained", "CONFIG_FILE", "WEIGHTS_FILE"]

logger = logging.getLogger(__name__)
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
_HF_URI = re.compile(r"^hf://(?P<repo>[^/@\s]+/[^/@\s]+)(?:@(?P<rev>[^\s]+))?$")
# Fields of an entry that describe the registry, not the model: they stay out of config.json.
_NOT_IN_CONFIG = {"aliases", "weights", "usage"}


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
    builder = arch_builder(entry.domain, entry.arch)
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


def _fill(model: nn.Module, state: dict[str, torch.Tensor], *, replace_head: bool, device: torch.device | str, name: str) -> None:
    """Strict load into a meta-built model, except a head that ``num_classes`` replaced."""
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
                parts.append(f"{label}: {', '.join(keys[:8])}{' …' if len(keys) > 8 else ''}")
        raise LoadError(f"{name}: checkpoint does not fit the architecture ({'; '.join(parts)})")
    model.load_state_dict(state, strict=False, assign=True)
    _materialize(model, device)


def _finish(model: nn.Module, entry: Entry, *, dtype: torch.dtype | None, mirror: Any) -> nn.Module:
    """Eval mode, the entry's facts and preprocessing attached, the domain's ``prepare`` run."""
    if dtype is not None:
        model.to(dtype=dtype)
    model.eval()
    domain = domain_module(entry.domain)
    model.entry = entry
    model.labels = entry.labels
    model.preprocess = domain.build_preprocess(entry)
    if hasattr(domain, "prepare"):
        domain.prepare(model, entry, mirror=mirror)
    return model


def _config_to_entry(config: dict[str, Any], where: str) -> Entry:
    if not isinstance(config, dict) or "arch" not in config or "domain" not in config:
        raise RegistryError(f"{where}: not a reszoo config (needs 'domain' and 'arch'); reszoo never runs code from a repo")
    fields = {k: v for k, v in config.items() if k not in {"reszoo_version", "weights_file"}}
    return parse_entry(fields, where=where)


def _resolve_uri(uri: str, *, revision: str | None, mirror: Any) -> tuple[Entry, Path, Any]:
    """(entry, weight file, mirror for auxiliary files) of ``hf://owner/name[@rev]`` or of a
    saved-model folder."""
    if (m := _HF_URI.match(uri)) is not None:
        repo, rev = m["repo"], revision or m["rev"]
        config_path = fetch_file(repo, CONFIG_FILE, revision=rev, mirror=mirror)
        snap = config_path.parent.name  # hf cache: .../snapshots/<commit>/config.json
        commit = snap if re.fullmatch(r"[0-9a-f]{40}", snap) else None
        rev = commit or rev  # the rest comes from the very commit the config came from
    elif uri.startswith("hf://"):
        raise ValueError(f"expected hf://owner/name[@revision], got {uri!r}")
    else:
        # A saved-model folder is one repo of a mirror: <parent>/<folder> under <parent's parent>.
        folder = Path(uri).resolve()
        config_path = folder / CONFIG_FILE
        if not config_path.is_file():
            raise FileNotFoundError(f"{uri}: no {CONFIG_FILE}; not a folder written by reszoo.save_pretrained")
        repo, rev, commit, mirror = f"{folder.parent.name}/{folder.name}", None, None, folder.parent.parent
    config = json.loads(config_path.read_text(encoding="utf-8"))
    weights_file = config.get("weights_file", WEIGHTS_FILE) if isinstance(config, dict) else WEIGHTS_FILE
    entry = _config_to_entry(config, uri)
    weights_path = fetch_file(repo, weights_file, revision=rev, mirror=mirror)
    weights = Weights(repo=repo, file=weights_file, revision=commit, sha256=file_digest(weights_path),
                      pin_note="loaded by URI: pinned to what was fetched")
    return dataclasses.replace(entry, weights=weights), weights_path, mirror


def _is_uri(name: str) -> bool:
    return name.startswith("hf://") or "/" in name or name.startswith(".") or Path(name, CONFIG_FILE).is_file()


def load(
    name: str,
    *,
    pretrained: bool = True,
    num_classes: int | None = None,
    revision: str | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    mirror: str | os.PathLike[str] | None = None,
) -> nn.Module:
    """A ready model: ``name`` is a registry name or alias, ``hf://owner/name[@revision]`` (a repo
    in reszoo's format) or a folder written by :func:`save_pretrained`.

    The model is in eval mode and carries ``model.entry``, ``model.preprocess`` (raw input to
    model input) and ``model.labels``. ``num_classes`` different from the checkpoint replaces the
    head (the dropped keys are logged); everything else loads strictly.
    """
    target = _resolve_device(device)
    num_classes = _checked_num_classes(num_classes)
    if _is_uri(name):
        entry, path, mirror = _resolve_uri(name, revision=revision, mirror=mirror)
        state_of = lambda: load_state_dict(path, device=target)  # noqa: E731
    else:
        entry = get_entry(name)
        state_of = lambda: entry_state_dict(entry, revision=revision, mirror=mirror, device=target)  # noqa: E731
    replace_head = num_classes is not None and num_classes != entry.num_classes
    if replace_head:
        arch_args = {**entry.arch_args, "num_classes": num_classes}
        entry = dataclasses.replace(entry, arch_args=arch_args, labels=None)
    if not pretrained:
        return _finish(build(entry, device=target), entry, dtype=dtype, mirror=mirror)
    model = build(entry, device="meta")  # first: a config naming no known architecture fails before any read
    state = state_of()
    _fill(model, state, replace_head=replace_head, device=target, name=entry.name)
    return _finish(model, entry, dtype=dtype, mirror=mirror)


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
    the domain loads besides the weights (a tokenizer), to ``folder``: a self-contained repo."""
    from safetensors.torch import save_file

    from .cards import card_for_entry

    entry = _entry_of(model, entry)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    copied = set()
    for repo, rev, filename in aux_files(entry):
        shutil.copyfile(fetch_file(repo, filename, revision=rev, mirror=mirror), folder / filename)
        copied.add(filename)
    if copied:
        entry = dataclasses.replace(entry, preprocess=_localize(entry.preprocess, copied))
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    save_file(state, folder / WEIGHTS_FILE, metadata={"format": "pt", "reszoo_version": __version__})
    (folder / CONFIG_FILE).write_text(json.dumps(model_config(entry), indent=2) + "\n", encoding="utf-8")
    repo = repo_id or (entry.weights.repo if entry.weights else entry.name)
    card_for_entry(entry, repo_id=repo).save(folder / "README.md")
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
        api.create_repo(repo_id, exist_ok=True, private=private)
        info = api.upload_folder(
            repo_id=repo_id,
            folder_path=tmp,
            commit_message=commit_message or f"Upload {entry.name} with reszoo {__version__}",
        )
    return info.oid
