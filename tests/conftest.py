"""Test session set-up: an isolated Hugging Face environment talking to a loopback Hub, and the
fixtures and helpers the test files share.

huggingface_hub reads its settings (endpoint, cache, offline, xet) into `huggingface_hub.constants` when it
is imported, so everything below runs at conftest import time, before any test module imports it:
a fresh `HF_HOME`, xet/telemetry/progress bars off, and `HF_ENDPOINT` pointing at a `HubServer` (tests/hub/)
started here for the whole session. No request leaves 127.0.0.1 and no developer token or cache is used.

Fixtures: `hub` (the loopback Hub), `offline`, `registry` (a temporary registry), `upstream` (a checkpoint
published on the loopback Hub and pinned by a temporary registry). Helpers without side effects, which test
modules import, are in helpers.py.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from helpers import FileData, Upstream, publish_upstream, write_registry  # noqa: E402
from hub import HubServer  # noqa: E402  (tests/hub/, beside this file)

if "huggingface_hub" in sys.modules:
    raise RuntimeError(
        "huggingface_hub was imported before tests/conftest.py could point it at the loopback Hub; "
        "a plugin or import in a parent conftest must not import it."
    )

_SESSION_DIR = Path(tempfile.mkdtemp(prefix="reszoo-tests-"))
ROOT = Path(__file__).resolve().parent.parent
# Data sets beside the checkout (``../shared/data``, laid out as scripts/get_data.py writes them);
# $RESZOO_DATA points elsewhere. A clone without them skips the tests that read them, saying why.
DATA = Path(os.environ.get("RESZOO_DATA") or ROOT.parent / "shared" / "data")


def need_data(relative: str) -> Path:
    """``DATA / relative``, or skip the calling test with where it was looked for and how to get it."""
    path = DATA / relative
    if not path.exists():
        name = relative.split("/")[0]
        pytest.skip(f"needs the {name} data set at {path}: `python scripts/get_data.py {name} --to {DATA}` "
                    "fetches it on a connected machine (or set RESZOO_DATA)")
    return path

# Never use the developer's token, caches, mirror or offline/staging settings.
for _var in (
    "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE",
    "HF_ASSETS_CACHE", "HF_XET_CACHE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HUGGINGFACE_CO_STAGING",
    "HF_HUB_ENABLE_HF_TRANSFER", "RESZOO_MIRROR",
):
    os.environ.pop(_var, None)
os.environ |= {
    "HF_HOME": str(_SESSION_DIR / "hf_home"),
    "HF_HUB_DISABLE_XET": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "HF_HUB_DISABLE_UPDATE_CHECK": "1",
    "RESZOO_CACHE": str(_SESSION_DIR / "reszoo_cache"),
}

_HUB = HubServer().start()
os.environ["HF_ENDPOINT"] = _HUB.url


def pytest_unconfigure(config: pytest.Config) -> None:
    _HUB.stop()
    shutil.rmtree(_SESSION_DIR, ignore_errors=True)


@pytest.fixture(scope="session")
def hub() -> HubServer:
    """The running loopback Hub that huggingface_hub (and so reszoo) talks to."""
    return _HUB


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Offline mode for one test: `HF_HUB_OFFLINE=1` in the environment and in huggingface_hub's constant.

    huggingface_hub copied the env var into `constants.HF_HUB_OFFLINE` at import; its HTTP hook checks that
    constant on every request (raising `OfflineModeIsEnabled`), so patching it is what takes effect.
    Request it after any fixture that must fill the cache online.
    """
    import huggingface_hub.constants as hf_constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    yield


@pytest.fixture
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Path]:
    """``registry(*entries)``: a temporary registry.yaml of these raw entries, which reszoo then reads
    (``RESZOO_REGISTRY``) for the rest of the test."""

    def write(*entries: Mapping[str, Any]) -> Path:
        path = write_registry(tmp_path / "registry.yaml", entries)
        monkeypatch.setenv("RESZOO_REGISTRY", str(path))
        return path

    return write


@pytest.fixture
def upstream(hub: HubServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Upstream]:
    """``upstream(entry, files, *, repo=None, weights=None, **fields)``: :func:`publish_upstream` into a
    temporary registry, which reszoo then reads (``RESZOO_REGISTRY``) for the rest of the test; e.g.
    ``upstream("resnet18-imagenet", {"model.safetensors": state_dict}, repo="timm-test/resnet18")``."""

    def publish(entry: str | Mapping[str, Any], files: Mapping[str, FileData], **kwargs: Any) -> Upstream:
        published = publish_upstream(hub, tmp_path / "upstream-registry.yaml", entry, files, **kwargs)
        monkeypatch.setenv("RESZOO_REGISTRY", str(published.registry))
        return published

    return publish


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """One torch thread for a test module, the previous count restored after it: the suite runs
    many small models, and on a shared 2-core machine a second thread only spin-waits (the FSDD
    test split took 100x longer with 2). Modules take it with ``pytestmark = usefixtures(...)``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
