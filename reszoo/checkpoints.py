"""Reading weight files into state dicts, safely: safetensors, or pickled torch checkpoints read
with ``weights_only=True`` (a checkpoint is data, never code), checked to hold only tensors, and
converted once to safetensors in reszoo's cache (under a file lock, written atomically), so later
loads read safetensors only. Every failure is one :class:`~reszoo.errors.LoadError` naming the file.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .errors import LoadError, WeightsNotFoundError
from .hub import cache_dir, fetch_weights, file_digest
from .registry import Entry

__all__ = ["entry_state_dict", "entry_weights", "load_state_dict"]

logger = logging.getLogger(__name__)


def _reason(err: BaseException) -> str:
    """The part of a reader's error worth one line (torch's unpickler messages are paragraphs of advice)."""
    text = str(err)
    if m := re.search(r"unsupported GLOBAL:? (?:GLOBAL )?([\w.]+)", text, re.IGNORECASE):
        return f"it references {m[1]}, which is code, not data"
    if m := re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", text):
        return f"it holds something other than tensors and plain containers ({m[1].strip().rstrip('.')})"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0].rstrip(".") if lines else type(err).__name__


def _read_safetensors(path: Path, device: str | torch.device) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(path, device=str(device))
    except SafetensorError as err:
        raise LoadError(f"{path}: not a valid safetensors file ({_reason(err)}); the file is damaged or is not "
                        "weights: replace it with a good copy") from err


def _read_pickled_state_dict(path: Path) -> dict[str, Any]:
    import pickle

    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": noise on the way to our error
            warnings.simplefilter("ignore")
            # weights_only=True: a checkpoint is data, never code.
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # `from None`: torch's message advises turning the safety off; it must not reach the user.
        raise LoadError(f"{path}: refused to read this pickled checkpoint: {_reason(err)}; reszoo reads "
                        "checkpoints as data only and never runs code from them") from None
    except (RuntimeError, EOFError, ValueError, OSError) as err:
        reason = _reason(err) if str(err) else "the file is empty or cut short"
        raise LoadError(f"{path}: not a readable torch checkpoint ({reason}); the file is damaged or is not "
                        "a checkpoint: replace it with a good copy") from None
    if not isinstance(obj, dict):
        raise LoadError(f"{path}: expected a pickled state dict (a mapping of names to tensors), got {type(obj).__name__}")
    return obj


def _check_tensors(state: Any, path: Path) -> dict[str, torch.Tensor]:
    """``state`` if it maps names to tensors (what a converter or a checkpoint must give)."""
    if not isinstance(state, dict):
        raise LoadError(f"{path}: expected a state dict (a mapping of names to tensors), got {type(state).__name__}")
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise LoadError(f"{path}: not a state dict: entry {str(key)[:80]!r} holds {type(value).__name__!r}, not "
                            "a tensor (a training checkpoint? save its model's state_dict() alone)")
    return state


def _convert_pickle(path: Path, convert: Callable[[dict[str, Any]], dict[str, torch.Tensor]] | None) -> dict[str, torch.Tensor]:
    state = _read_pickled_state_dict(path)
    return _check_tensors(convert(state) if convert else state, path)


def _convert_once(path: Path, converted: Path, convert: Callable[[dict[str, Any]], dict[str, torch.Tensor]] | None,
                  device: str | torch.device) -> dict[str, torch.Tensor]:
    """Convert ``path`` into the safetensors file ``converted`` unless it is there: one process
    converts (a file lock) and the file appears whole or not at all (unique temp file + rename)."""
    from filelock import FileLock
    from safetensors.torch import save_file

    if converted.is_file():
        try:
            return _read_safetensors(converted, device)
        except LoadError:  # a damaged cache file is only a cache: convert again
            logger.warning("re-converting %s: cached copy %s is unreadable", path, converted)
    try:
        converted.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(f"{converted}.lock")
        lock.acquire()
    except OSError as err:  # a read-only cache: convert in memory, every time
        logger.debug("cannot cache the conversion of %s: %s", path, err)
        return {k: v.to(device) for k, v in _convert_pickle(path, convert).items()}
    try:
        if converted.is_file():  # another process converted it while this one waited
            try:
                return _read_safetensors(converted, device)
            except LoadError:
                converted.unlink(missing_ok=True)
        state = _convert_pickle(path, convert)
        fd, tmp = tempfile.mkstemp(dir=converted.parent, prefix=f".{converted.name}.", suffix=".tmp")
        os.close(fd)
        try:
            save_file({k: v.contiguous() for k, v in state.items()}, tmp)
            os.replace(tmp, converted)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    finally:
        lock.release()
    return {k: v.to(device) for k, v in state.items()}


def load_state_dict(
    path: Path,
    *,
    fmt: str = "safetensors",
    convert: Callable[[dict[str, Any]], dict[str, torch.Tensor]] | None = None,
    cache_key: str | None = None,
    device: str | torch.device = "cpu",
) -> dict[str, torch.Tensor]:
    """A reszoo-layout state dict from a weight file; an unreadable or unsafe file is a
    :class:`LoadError` naming it.

    Pickled torch checkpoints are read with ``weights_only=True``, converted, and written once
    as safetensors under the cache (keyed by ``cache_key``, e.g. the file's sha256 and the
    converter), so later loads read safetensors only.
    """
    if fmt == "safetensors":
        state = _read_safetensors(path, device)
        return _check_tensors(convert(state), path) if convert else state
    if fmt != "torch":
        raise LoadError(f"{path}: unknown weight format {fmt!r} (expected 'safetensors' or 'torch')")
    if cache_key is None:
        return {k: v.to(device) for k, v in _convert_pickle(path, convert).items()}
    return _convert_once(path, cache_dir() / "converted" / f"{cache_key}.safetensors", convert, device)


def entry_state_dict(entry: Entry, *, revision: str | None = None, mirror: str | os.PathLike[str] | None = None,
                     device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Fetch, verify and convert the weights of a registry entry."""
    return entry_weights(entry, revision=revision, mirror=mirror, device=device)[1]


def entry_weights(entry: Entry, *, revision: str | None = None, mirror: str | os.PathLike[str] | None = None,
                  device: str | torch.device = "cpu") -> tuple[Path, dict[str, torch.Tensor]]:
    """(local weight file, state dict) of a registry entry: fetched, verified and converted."""
    from . import domains

    if entry.weights is None:
        raise WeightsNotFoundError(f"registry entry {entry.name!r} has no weights")
    w = entry.weights
    path = fetch_weights(w, revision=revision, mirror=mirror)
    convert = domains.get(entry.domain).converter(w.converter) if w.converter else None
    key = None
    if w.format == "torch":
        digest = w.sha256 if (revision is None and w.sha256) else file_digest(path)
        key = f"{digest}-{w.converter or 'none'}"
    return path, load_state_dict(path, fmt=w.format, convert=convert, cache_key=key, device=device)
