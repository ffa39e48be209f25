"""Checks for the names that choose files: repo ids, file names inside a repo, revisions.

A registry entry, a Hub repo's ``config.json`` or a mirror is data, and data must never pick a
local file outside the repo it describes. Every name that is joined onto a folder (a mirror, a
saved-model folder, the bundled label files) passes one of these checks first. Kept free of heavy
imports: the registry uses them while parsing.
"""

from __future__ import annotations

import re

from .errors import ReszooError, RegistryError

__all__ = [
    "MAX_FILENAME",
    "check_repo_filename",
    "check_repo_id",
    "check_revision",
    "filename_problem",
    "repo_id_problem",
    "revision_problem",
]

MAX_FILENAME = 512  # whole relative name; the Hub allows sub-folders
_MAX_PART_BYTES = 255  # one path component, the usual filesystem limit
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# The Hub's own rule for repo ids (huggingface_hub.utils.validate_repo_id), ASCII only.
_REPO_PART = re.compile(r"^[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,94}[A-Za-z0-9_])?$")
_HEX40 = re.compile(r"^[0-9a-f]{40}$")
# git's ref-name rules (git check-ref-format), the part that matters for a Hub revision.
_BAD_REF = re.compile(r"[\s\x00-\x1f\x7f~^:?*\[\\]|\.\.|@\{|//")


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:60]}… ({len(str(value))} characters)"


def filename_problem(name: object) -> str | None:
    """Why ``name`` is not a plain relative file name inside a repo (``a/b.bin`` is fine), or None."""
    if not isinstance(name, str):
        return f"expected a string, got {type(name).__name__}"
    if not name:
        return "empty name"
    if len(name) > MAX_FILENAME:
        return f"{len(name)} characters is longer than the {MAX_FILENAME} allowed"
    if _CONTROL.search(name):
        return "contains a NUL or control character"
    if "\\" in name:
        return "contains a backslash (use '/' between folders)"
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        return "is an absolute path; a file of a repo is named relative to the repo"
    for part in name.split("/"):
        if part in ("", ".", ".."):
            if not part:
                return "has an empty part ('//' or a trailing '/')"
            return f"has a {part!r} part; a file of a repo stays inside the repo"
        if len(part.encode("utf-8", "surrogatepass")) > _MAX_PART_BYTES:
            return f"has a part longer than {_MAX_PART_BYTES} bytes"
    return None


def repo_id_problem(repo: object) -> str | None:
    """Why ``repo`` is not a Hub repo id ``owner/name`` of safe characters, or None."""
    if not isinstance(repo, str):
        return f"expected a string, got {type(repo).__name__}"
    parts = repo.split("/")
    if len(parts) != 2:
        return "expected 'owner/name'"
    if "--" in repo or ".." in repo or not all(_REPO_PART.match(p) for p in parts):
        return "expected 'owner/name' of letters, digits, '_', '-' and '.' (not '--' or '..', at most 96 each)"
    return None


def revision_problem(revision: object) -> str | None:
    """Why ``revision`` is neither a 40-hex commit nor a branch/tag name, or None."""
    if not isinstance(revision, str):
        return f"expected a string, got {type(revision).__name__}"
    if _HEX40.match(revision):
        return None
    if (not revision or len(revision) > 255 or _BAD_REF.search(revision) or revision.startswith(("-", "/"))
            or revision.endswith(("/", ".", ".lock"))):
        return "expected a 40-hex commit id or a branch/tag name (no spaces, control characters, '..', '~^:?*[\\')"
    return None


def check_repo_filename(name: object, where: str, error: type[ReszooError] = RegistryError) -> str:
    """``name`` if it is a plain relative name inside a repo; else raise ``error`` naming ``where``."""
    if (problem := filename_problem(name)) is not None:
        raise error(f"{where}: unsafe file name {_shown(name)}: {problem}")
    return name  # type: ignore[return-value]  # checked to be a str above


def check_repo_id(repo: object, where: str, error: type[ReszooError] = RegistryError) -> str:
    if (problem := repo_id_problem(repo)) is not None:
        raise error(f"{where}: bad repo id {_shown(repo)}: {problem}")
    return repo  # type: ignore[return-value]


def check_revision(revision: object, where: str, error: type[ReszooError] = RegistryError) -> str:
    if (problem := revision_problem(revision)) is not None:
        raise error(f"{where}: bad revision {_shown(revision)}: {problem}")
    return revision  # type: ignore[return-value]
