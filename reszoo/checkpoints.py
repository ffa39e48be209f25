"""Reading weight files into state dicts, safely: safetensors, or pickled torch checkpoints read
with ``weights_only=True`` (a checkpoint is data, never code), or tar archives holding a checkpoint
and its description (NeMo's ``.nemo``; read member by member in memory, never extracted, and handed
to the entry's converter), checked to hold only tensors, and converted once to safetensors in reszoo's cache (under a file lock, written atomically), so later
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

__all__ = ["TarArchive", "entry_state_dict", "entry_weights", "load_state_dict"]

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


def _read_pickled_state_dict(path: Path | str, data: bytes | None = None) -> dict[str, Any]:
    """The pickled state dict in file ``path``, or in ``data`` (a member of an archive named ``path``)."""
    import io
    import pickle

    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": noise on the way to our error
            warnings.simplefilter("ignore")
            # weights_only=True: a checkpoint is data, never code.
            obj = torch.load(path if data is None else io.BytesIO(data), map_location="cpu", weights_only=True)
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


def _check_tensors(state: Any, path: Path | str) -> dict[str, torch.Tensor]:
    """``state`` if it maps names to tensors (what a converter or a checkpoint must give)."""
    if not isinstance(state, dict):
        raise LoadError(f"{path}: expected a state dict (a mapping of names to tensors), got {type(state).__name__}")
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise LoadError(f"{path}: not a state dict: entry {str(key)[:80]!r} holds {type(value).__name__!r}, not "
                            "a tensor (a training checkpoint? save its model's state_dict() alone)")
    return state


class TarArchive:
    """A tar archive (gzip, bz2 or xz compression allowed) that a converter reads, e.g. NeMo's ``.nemo``
    files: members are read by their exact name (a leading ``./`` aside) into memory, never extracted, and
    an archive holding a member name that could escape a folder (absolute, ``..``) or a link is refused
    as a whole. Pickled members are read as state dicts with ``weights_only=True``.

    ``entry``: the registry entry the weights are loaded for (None outside one), so that a converter can
    check the archive's own description of the model (a config member) against what reszoo builds.
    """

    def __init__(self, path: Path, entry: Entry | None = None) -> None:
        import tarfile

        self.path, self.entry = Path(path), entry
        try:
            with tarfile.open(self.path, "r:*") as tar:
                members = tar.getmembers()
                for m in members:
                    if problem := _member_problem(m):
                        raise LoadError(f"{self.path}: refused archive member {m.name[:120]!r}: {problem}")
                files = [m for m in members if m.isfile()]
                self._members = {_member_name(m.name): m for m in files}
                if len(self._members) != len(files):  # which copy would be meant is not for reszoo to guess
                    seen = [_member_name(m.name) for m in files]
                    twice = sorted({n for n in seen if seen.count(n) > 1})
                    raise LoadError(f"{self.path}: the archive holds {', '.join(map(repr, twice))} more than once")
                self._data = {name: tar.extractfile(m).read() for name, m in self._members.items()}
        except (tarfile.TarError, EOFError, OSError) as err:
            raise LoadError(f"{self.path}: not a readable tar archive ({_reason(err)}); the file is damaged or "
                            "is not an archive: replace it with a good copy") from None

    @property
    def names(self) -> list[str]:
        """The regular files it holds, by name."""
        return sorted(self._data)

    def read(self, name: str) -> bytes:
        if name not in self._data:
            raise LoadError(f"{self.path}: the archive has no member {name!r} (it holds {', '.join(self.names) or 'nothing'})")
        return self._data[name]

    def text(self, name: str) -> str:
        try:
            return self.read(name).decode("utf-8")
        except UnicodeDecodeError as err:
            raise LoadError(f"{self.path}: member {name!r} is not UTF-8 text ({err.reason} at byte {err.start})") from None

    def state_dict(self, name: str) -> dict[str, torch.Tensor]:
        """A pickled member read as data (``weights_only=True``), checked to hold only tensors."""
        where = f"{self.path}:{name}"
        return _check_tensors(_read_pickled_state_dict(where, self.read(name)), where)


def _member_name(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    return name


def _member_problem(member: Any) -> str | None:
    name = member.name
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return "an absolute path"
    if ".." in parts:
        return "a path leaving the archive's folder ('..')"
    if member.issym() or member.islnk():
        return "a link; reszoo reads only regular files from archives"
    if not (member.isfile() or member.isdir()):
        return "not a regular file or folder"
    return None


def _convert_pickle(path: Path, convert: Callable[[Any], dict[str, torch.Tensor]] | None, fmt: str = "torch",
                    entry: Entry | None = None) -> dict[str, torch.Tensor]:
    """The reszoo-layout state dict of a pickled checkpoint (``fmt="torch"``) or an archive (``"tar"``)."""
    if fmt == "tar":
        if convert is None:
            raise LoadError(f"{path}: a tar archive becomes a state dict only through its entry's converter "
                            "(weights.converter)")
        return _check_tensors(convert(TarArchive(path, entry)), path)
    state = _read_pickled_state_dict(path)
    return _check_tensors(convert(state) if convert else state, path)


def _convert_once(path: Path, converted: Path, convert: Callable[[Any], dict[str, torch.Tensor]] | None,
                  device: str | torch.device, fmt: str = "torch", entry: Entry | None = None) -> dict[str, torch.Tensor]:
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
        return {k: v.to(device) for k, v in _convert_pickle(path, convert, fmt, entry).items()}
    try:
        if converted.is_file():  # another process converted it while this one waited
            try:
                return _read_safetensors(converted, device)
            except LoadError:
                converted.unlink(missing_ok=True)
        state = _convert_pickle(path, convert, fmt, entry)
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
    convert: Callable[[Any], dict[str, torch.Tensor]] | None = None,
    cache_key: str | None = None,
    device: str | torch.device = "cpu",
    entry: Entry | None = None,
) -> dict[str, torch.Tensor]:
    """A reszoo-layout state dict from a weight file; an unreadable or unsafe file is a
    :class:`LoadError` naming it.

    Pickled torch checkpoints are read with ``weights_only=True``, converted, and written once
    as safetensors under the cache (keyed by ``cache_key``, e.g. the file's sha256 and the
    converter), so later loads read safetensors only. A ``"tar"`` archive is handed to the
    converter as a :class:`TarArchive` (with ``entry``), and cached the same way.
    """
    if fmt == "safetensors":
        state = _read_safetensors(path, device)
        return _check_tensors(convert(state), path) if convert else state
    if fmt not in ("torch", "tar"):
        raise LoadError(f"{path}: unknown weight format {fmt!r} (expected 'safetensors', 'torch' or 'tar')")
    if cache_key is None:
        return {k: v.to(device) for k, v in _convert_pickle(path, convert, fmt, entry).items()}
    return _convert_once(path, cache_dir() / "converted" / f"{cache_key}.safetensors", convert, device, fmt, entry)


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
    if w.format in ("torch", "tar"):
        digest = w.sha256 if (revision is None and w.sha256) else file_digest(path)
        key = f"{digest}-{w.converter or 'none'}"
        if w.format == "tar":  # the converter checked the archive against this entry's model: key on it too
            key += f"-{_entry_fingerprint(entry)}"
    return path, load_state_dict(path, fmt=w.format, convert=convert, cache_key=key, device=device, entry=entry)


def _entry_fingerprint(entry: Entry) -> str:
    """A short digest of what an archive converter checks against: architecture, preprocessing, labels."""
    import hashlib
    import json

    facts = [entry.domain, entry.arch, entry.arch_args, entry.preprocess, entry.labels]
    return hashlib.sha256(json.dumps(facts, sort_keys=True, default=str).encode()).hexdigest()[:16]
