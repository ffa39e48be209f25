"""A failing network or Hub, against the real huggingface_hub client: 5xx answers, downloads cut off,
stalled or silent servers, an unreachable endpoint, failed pushes.

Each failure is retried at most once (only when a retry can help), takes at most about
RESZOO_HUB_TIMEOUT seconds per wait, leaves no partial file in the cache, and reaches the user as
one line naming the endpoint, the status and what to do. Everything stays on 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.client import IncompleteRead
from pathlib import Path

import pytest

import reszoo
from helpers import tiny_entry
from hub import HubServer
from reszoo.cli import main as cli
from reszoo.errors import HubError, NotCachedError
from reszoo.hub import fetch_file

FILE = "model.safetensors"
SIZE = 64 * 1024


@pytest.fixture
def hub(hub: HubServer) -> Iterator[HubServer]:
    """The session's loopback Hub, its faults cleared after the test."""
    hub.clear_faults()
    yield hub
    hub.clear_faults()


@pytest.fixture
def repo(hub: HubServer, request: pytest.FixtureRequest) -> dict:
    """A repo of this test holding FILE (random bytes), and the commit and sha256 to pin."""
    name = "test/net-" + re.sub(r"[^A-Za-z0-9]+", "-", request.node.name)[:60].strip("-")
    data = random.Random(name).randbytes(SIZE)
    commit = hub.add_repo(name, {FILE: data})
    return {"id": name, "commit": commit, "sha": hashlib.sha256(data).hexdigest(), "data": data}


@pytest.fixture
def short_timeout(monkeypatch: pytest.MonkeyPatch) -> float:
    monkeypatch.setenv("RESZOO_HUB_TIMEOUT", "1")
    return 1.0


def _point_hf_at(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    """Make huggingface_hub use another endpoint (it copies HF_ENDPOINT into these at import)."""
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "ENDPOINT", url)
    monkeypatch.setattr(c, "HUGGINGFACE_CO_URL_TEMPLATE", url + "/{repo_id}/resolve/{revision}/{filename}")


def _closed_port_url() -> str:
    """An endpoint on 127.0.0.1 where nothing listens: connecting is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def silent_url() -> Iterator[str]:
    """An endpoint that accepts connections (the kernel completes the handshake) and never answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)  # never accept()ed: requests are received by the kernel and never read
        yield f"http://127.0.0.1:{s.getsockname()[1]}"


def _nothing_partial(repo_id: str) -> None:
    """No download leftovers of `repo_id` in the HF cache, and no snapshot file."""
    import huggingface_hub.constants as c

    folder = Path(c.HF_HUB_CACHE) / ("models--" + repo_id.replace("/", "--"))
    assert not list(folder.rglob("*.incomplete"))
    assert not list(folder.glob(f"snapshots/*/{FILE}"))
    assert not [p for p in folder.glob("blobs/*") if p.is_file()]


def _fetch(repo: dict, **kwargs) -> Path:
    return fetch_file(repo["id"], FILE, revision=repo["commit"], sha256=repo["sha"], **kwargs)


def _downloads(hub: HubServer, repo: dict) -> int:
    return sum(1 for method, path in hub.requests if method == "GET" and f"/{repo['id']}/resolve/" in path)


def _one_line(err: BaseException) -> str:
    message = str(err)
    assert "\n" not in message and "Traceback" not in message
    return message


# --------------------------------------------------------------------------- the fault switch itself


def test_hub_server_faults_match_method_path_and_count(hub, repo):
    url = f"{hub.url}/{repo['id']}/resolve/main/{FILE}"

    def status(method: str) -> int:
        try:
            with urllib.request.urlopen(urllib.request.Request(url, method=method)) as r:
                r.read()
                return r.status
        except urllib.error.HTTPError as err:
            return err.code

    fault = hub.fault("503", path=f"/{repo['id']}/", times=2)
    assert [status("HEAD"), status("GET"), status("GET"), status("GET")] == [200, 503, 503, 200]
    assert fault.hits == 2
    hub.fault("cut", path="/elsewhere/")
    assert status("GET") == 200  # another path: untouched
    hub.fault("cut", times=1)
    with pytest.raises(IncompleteRead) as cut:
        urllib.request.urlopen(url).read()
    assert len(cut.value.partial) == SIZE // 2
    with pytest.raises(ValueError, match="fault kind"):
        hub.fault("404")


# --------------------------------------------------------------------------- downloads


@pytest.mark.parametrize("kind", ["500", "cut"])
def test_one_transient_failure_is_retried_once(hub, repo, kind):
    hub.fault(kind, path=f"/{repo['id']}/resolve/", times=1)
    hub.reset_count()
    path = _fetch(repo)
    assert path.read_bytes() == repo["data"]
    assert _downloads(hub, repo) == 2


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_persistent_500_is_one_line_naming_the_status(hub, repo, method):
    hub.fault("500", path=f"/{repo['id']}/resolve/", method=method)
    hub.reset_count()
    start = time.monotonic()
    with pytest.raises(HubError) as err:
        _fetch(repo)
    assert time.monotonic() - start < 4
    message = _one_line(err.value)
    assert f"the Hub at {hub.url} answered HTTP 500 for {repo['id']}/{FILE}" in message
    assert "tried twice" in message and "could not be reached" not in message and "RESZOO_MIRROR" in message
    assert sum(1 for m, p in hub.requests if m == method and "/resolve/" in p) == 2  # one retry, no more
    _nothing_partial(repo["id"])


def test_download_cut_off_is_one_line_leaves_nothing_and_a_retry_works(hub, repo):
    hub.fault("cut", path=f"/{repo['id']}/resolve/", times=2)
    with pytest.raises(HubError) as err:
        _fetch(repo)
    message = _one_line(err.value)
    assert f"download of {repo['id']}/{FILE}@{repo['commit']} from the Hub at {hub.url} was cut off" in message
    assert f"after {SIZE // 2} of {SIZE} bytes" in message and "tried twice" in message
    _nothing_partial(repo["id"])
    path = _fetch(repo)  # the server works again: a fresh, verified download
    assert hashlib.sha256(path.read_bytes()).hexdigest() == repo["sha"]


def test_stall_after_headers_fails_within_the_timeout(hub, repo, short_timeout):
    hub.fault("stall", path=f"/{repo['id']}/resolve/")
    start = time.monotonic()
    with pytest.raises(HubError) as err:
        _fetch(repo)
    elapsed = time.monotonic() - start
    assert short_timeout <= elapsed < short_timeout + 1.5  # one wait, not retried
    message = _one_line(err.value)
    assert f"the Hub at {hub.url} did not answer within 1 s for {repo['id']}/{FILE}" in message
    assert "RESZOO_HUB_TIMEOUT" in message
    _nothing_partial(repo["id"])


def test_silent_server_fails_within_the_timeout(silent_url, short_timeout, monkeypatch):
    _point_hf_at(monkeypatch, silent_url)
    start = time.monotonic()
    with pytest.raises(HubError) as err:
        fetch_file("test/silent", FILE)
    assert time.monotonic() - start < short_timeout + 1.5
    assert f"the Hub at {silent_url} did not answer within 1 s for test/silent/{FILE}" in _one_line(err.value)


def test_unreachable_hub_fails_fast_and_says_what_to_do(monkeypatch):
    url = _closed_port_url()
    _point_hf_at(monkeypatch, url)
    start = time.monotonic()
    with pytest.raises(NotCachedError) as err:
        fetch_file("test/unreachable", FILE, revision="a" * 40)
    assert time.monotonic() - start < 2
    message = _one_line(err.value)
    assert message.startswith(f"test/unreachable/{FILE}@{'a' * 40} is not cached and the Hub at {url} could not "
                              "be reached (connection refused)")
    assert all(hint in message for hint in ("reszoo pull", "--to DIR", "RESZOO_MIRROR=DIR", "HF_HUB_OFFLINE=1"))


@pytest.mark.parametrize("pinned", [True, False])
def test_unreachable_hub_still_serves_the_cached_copy_fast(hub, repo, monkeypatch, pinned):
    revision = repo["commit"] if pinned else None
    cached = fetch_file(repo["id"], FILE, revision=revision)
    _point_hf_at(monkeypatch, _closed_port_url())
    start = time.monotonic()
    assert fetch_file(repo["id"], FILE, revision=revision, sha256=repo["sha"]) == cached
    assert time.monotonic() - start < 1


def test_hub_timeout_setting_is_checked(monkeypatch, repo):
    monkeypatch.setenv("RESZOO_HUB_TIMEOUT", "soon")
    with pytest.raises(HubError, match="RESZOO_HUB_TIMEOUT must be a number of seconds > 0, got 'soon'"):
        _fetch(repo)


# --------------------------------------------------------------------------- the command line


@pytest.fixture
def registry(registry, repo) -> Path:
    """A registry whose one entry, `net-model`, pins `repo`'s FILE."""
    return registry(tiny_entry("net-model", repo["id"], file=FILE, revision=repo["commit"], sha256=repo["sha"]))


@pytest.mark.parametrize(("kind", "needle"), [
    ("500", "answered HTTP 500 for"), ("cut", "was cut off after"), ("stall", "did not answer within 1 s"),
])
def test_cli_pull_failure_is_one_line_with_status_1(hub, repo, registry, short_timeout, capsys, kind, needle):
    hub.fault(kind, path=f"/{repo['id']}/resolve/")
    assert cli(["pull", "net-model"]) == 1
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and captured.err.startswith("reszoo: error: ") and needle in captured.err
    assert captured.out == ""


@pytest.mark.parametrize("where", ["unreachable", "500"])
def test_console_script_failure_is_one_stderr_line(hub, repo, registry, tmp_path, where):
    """As a user runs it: a fresh process (huggingface_hub's own logging included), a fresh cache."""
    endpoint = _closed_port_url() if where == "unreachable" else hub.url
    if where == "500":
        hub.fault("500", path=f"/{repo['id']}/resolve/")
    env = {**os.environ, "HF_ENDPOINT": endpoint, "HF_HOME": str(tmp_path / "hf"), "PYTHONPATH": os.pathsep.join(
        filter(None, [str(Path(reszoo.__file__).parents[1]), os.environ.get("PYTHONPATH")]))}
    out = subprocess.run([sys.executable, "-m", "reszoo.cli", "pull", "net-model"], env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 1
    assert out.stderr.count("\n") == 1 and out.stderr.startswith("reszoo: error: "), out.stderr
    expected = "could not be reached (connection refused)" if where == "unreachable" else "answered HTTP 500 for"
    assert f"the Hub at {endpoint}" in out.stderr and expected in out.stderr


# --------------------------------------------------------------------------- pushing


@pytest.fixture
def model(registry):
    return reszoo.load("net-model", pretrained=False)


def test_push_with_a_failing_commit_is_one_line(hub, model, tmp_path, capsys):
    hub.fault("500", method="POST", path="/commit/")
    with pytest.raises(HubError) as err:
        reszoo.push(model, "test/net-push-500")
    assert _one_line(err.value) == (f"push to test/net-push-500 failed: the Hub at {hub.url} answered HTTP 500 on "
                                    "commit (Injected fault: HTTP 500); retry later")
    folder = reszoo.save_pretrained(model, tmp_path / "test" / "net-push-cli")
    assert cli(["push", str(folder), "test/net-push-500"]) == 1
    err_text = capsys.readouterr().err
    assert err_text.count("\n") == 1 and "answered HTTP 500 on commit" in err_text


def test_push_without_network_is_one_line(model, monkeypatch):
    url = _closed_port_url()
    _point_hf_at(monkeypatch, url)
    start = time.monotonic()
    with pytest.raises(HubError) as err:
        reszoo.push(model, "test/net-push-offline")
    assert time.monotonic() - start < 2
    assert _one_line(err.value).startswith(
        f"push to test/net-push-offline failed: the Hub at {url} could not be reached (connection refused)")


def test_push_still_works(hub, model):
    commit = reszoo.push(model, "test/net-push-ok")
    assert len(commit) == 40 and ("POST", "/api/models/test/net-push-ok/commit/main") in hub.requests
