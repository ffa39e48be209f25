"""The loopback Hub against the real huggingface_hub client: downloads, metadata, uploads, errors, offline, cards."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from huggingface_hub import HfApi, ModelCard, get_hf_file_metadata, hf_hub_download, hf_hub_url
from huggingface_hub.errors import (
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from hub import LFS_SIZE_THRESHOLD, HubServer

CARD = """---
license: apache-2.0
library_name: reszoo
tags: [image-classification, resnet]
model-index:
- name: tiny
  results:
  - task: {type: image-classification}
    dataset: {name: MNIST, type: mnist}
    metrics: [{type: accuracy, value: 0.99}]
---
# tiny
"""


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def http(
    method: str, url: str, body: bytes | Iterable[bytes] | None = None, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    """A raw request outside huggingface_hub: (status, parsed JSON body or raw bytes)."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request) as response:
            status, kind, raw = response.status, response.headers.get("Content-Type", ""), response.read()
    except urllib.error.HTTPError as err:
        status, kind, raw = err.code, err.headers.get("Content-Type", ""), err.read()
    return status, json.loads(raw) if "json" in kind else raw


def head(url: str) -> dict[str, str]:
    with urllib.request.urlopen(urllib.request.Request(url, method="HEAD")) as response:
        return {key.lower(): value for key, value in response.headers.items()}


def test_regular_file_download_headers_and_revisions(hub: HubServer) -> None:
    first = hub.add_repo("acme/regular", {"config.json": b'{"depth": 18}'})
    second = hub.add_repo("acme/regular", {"config.json": b'{"depth": 34}', "notes.txt": b"kept"})
    assert len({first, second}) == 2 and all(len(c) == 40 for c in (first, second))

    assert "x-linked-etag" not in head(hf_hub_url("acme/regular", "config.json"))
    meta = get_hf_file_metadata(hf_hub_url("acme/regular", "config.json"))
    assert meta.commit_hash == second
    assert meta.etag == git_blob_sha1(b'{"depth": 34}')
    assert meta.size == len(b'{"depth": 34}')
    assert Path(hf_hub_download("acme/regular", "config.json")).read_bytes() == b'{"depth": 34}'
    # An older commit still serves its own tree.
    assert Path(hf_hub_download("acme/regular", "config.json", revision=first)).read_bytes() == b'{"depth": 18}'
    with pytest.raises(RemoteEntryNotFoundError):
        hf_hub_download("acme/regular", "notes.txt", revision=first)


def test_large_file_is_lfs_and_cached(hub: HubServer, tmp_path: Path) -> None:
    big = os.urandom(LFS_SIZE_THRESHOLD + 1024)  # over the size limit, with a name no LFS pattern matches
    (tmp_path / "blob.dat").write_bytes(big)  # files can be given as paths: the server copies them
    commit = hub.add_repo("acme/large", {"blob.dat": tmp_path / "blob.dat", "small.safetensors": b"\x01\x02"})
    for name, data in (("blob.dat", big), ("small.safetensors", b"\x01\x02")):
        meta = get_hf_file_metadata(hf_hub_url("acme/large", name))
        assert meta.etag == hashlib.sha256(data).hexdigest()  # LFS files: etag is the sha256 (X-Linked-Etag)
        assert meta.size == len(data) and meta.commit_hash == commit
    headers = head(hf_hub_url("acme/large", "blob.dat"))
    assert headers["x-linked-etag"] == f'"{hashlib.sha256(big).hexdigest()}"'
    assert headers["x-linked-size"] == headers["content-length"] == str(len(big))
    assert headers["x-repo-commit"] == commit and not any(key.startswith("x-xet") for key in headers)
    path = hf_hub_download("acme/large", "blob.dat")
    assert Path(path).read_bytes() == big
    assert Path(path).resolve().name == hashlib.sha256(big).hexdigest()  # the cache blob is named by etag

    hub.reset_count()
    assert hf_hub_download("acme/large", "blob.dat") == path
    assert hub.requests == [("HEAD", "/acme/large/resolve/main/blob.dat")]  # metadata only, no content GET
    hub.reset_count()
    assert hf_hub_download("acme/large", "blob.dat", revision=commit) == path
    assert hub.request_count == 0  # pinned commit already in the cache: no request at all


def test_range_requests(hub: HubServer) -> None:
    hub.add_repo("acme/range", {"data.txt": b"0123456789"})
    url = hf_hub_url("acme/range", "data.txt")
    assert http("GET", url, headers={"Range": "bytes=3-5"}) == (206, b"345")
    assert http("GET", url, headers={"Range": "bytes=7-"}) == (206, b"789")  # how a resumed download asks
    assert http("GET", url, headers={"Range": "bytes=10-"})[0] == 416


def test_model_info_and_listing(hub: HubServer) -> None:
    weights = os.urandom(2048)
    files = {"README.md": CARD.encode(), "model.safetensors": weights, "extra/a.json": b"{}"}
    commit = hub.add_repo("acme/listed", files)
    api = HfApi()
    info = api.model_info("acme/listed", files_metadata=True)
    assert info.sha == commit and info.library_name == "reszoo"
    assert info.card_data is not None and info.card_data.license == "apache-2.0"
    assert {"resnet", "license:apache-2.0"} <= set(info.tags or [])
    siblings = {s.rfilename: s for s in info.siblings or []}
    assert set(siblings) == {".gitattributes", "README.md", "model.safetensors", "extra/a.json"}
    lfs = siblings["model.safetensors"].lfs
    assert lfs is not None and lfs.sha256 == hashlib.sha256(weights).hexdigest() and lfs.size == 2048
    assert siblings["README.md"].lfs is None and siblings["README.md"].blob_id == git_blob_sha1(CARD.encode())
    assert api.model_info("acme/listed", revision=commit).sha == commit

    listed = [m for m in api.list_models(author="acme") if m.id == "acme/listed"]
    assert len(listed) == 1 and listed[0].sha == commit and listed[0].siblings is None  # terse, as on the Hub
    assert [m.id for m in api.list_models(author="nobody")] == []
    assert api.repo_exists("acme/listed") and not api.repo_exists("acme/absent")
    assert api.file_exists("acme/listed", "extra/a.json") and not api.file_exists("acme/listed", "nope")


def test_create_repo_upload_folder_and_download_back(hub: HubServer, tmp_path: Path) -> None:
    api = HfApi()
    url = api.create_repo("acme/pushed")
    assert url.repo_id == "acme/pushed"
    with pytest.raises(HfHubHTTPError) as err:
        api.create_repo("acme/pushed")
    assert err.value.response.status_code == 409
    assert api.create_repo("acme/pushed", exist_ok=True).repo_id == "acme/pushed"

    files = {"config.json": b'{"arch": "resnet18"}', "model.safetensors": os.urandom(300_000), "docs/n.txt": b"x"}
    for name, data in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(data)
    hub.reset_count()
    commit = api.upload_folder(repo_id="acme/pushed", folder_path=tmp_path)
    methods = [m for m, _ in hub.requests]
    assert methods.count("PUT") == 1  # only the LFS file goes through the LFS upload
    assert any(p.endswith("/verify") for _, p in hub.requests)
    for name, data in files.items():
        assert Path(hf_hub_download("acme/pushed", name, revision=commit.oid)).read_bytes() == data
    siblings = {s.rfilename: s for s in api.model_info("acme/pushed", files_metadata=True).siblings or []}
    assert siblings["model.safetensors"].lfs is not None and siblings["config.json"].lfs is None

    # Same content again: preupload reports the remote oids, the client skips the (empty) commit.
    assert api.upload_folder(repo_id="acme/pushed", folder_path=tmp_path).oid == commit.oid
    (tmp_path / "docs" / "n.txt").write_bytes(b"changed")
    changed = api.upload_folder(repo_id="acme/pushed", folder_path=tmp_path)
    assert changed.oid != commit.oid and api.model_info("acme/pushed").sha == changed.oid
    assert Path(hf_hub_download("acme/pushed", "docs/n.txt", revision=commit.oid)).read_bytes() == b"x"


def test_corrupted_lfs_upload_is_rejected(hub: HubServer) -> None:
    hub.add_repo("acme/lfs", {"README.md": b"# lfs\n"})
    data = os.urandom(4096)
    oid = hashlib.sha256(data).hexdigest()
    batch = {"operation": "upload", "transfers": ["basic"], "objects": [{"oid": oid, "size": len(data)}]}
    status, answer = http("POST", f"{hub.url}/acme/lfs.git/info/lfs/objects/batch", json.dumps(batch).encode())
    assert status == 200 and answer["transfer"] == "basic"
    actions = answer["objects"][0]["actions"]
    corrupted = bytes([data[0] ^ 1]) + data[1:]
    assert http("PUT", actions["upload"]["href"], corrupted)[0] == 400
    verify = json.dumps({"oid": oid, "size": len(data)}).encode()
    assert http("POST", actions["verify"]["href"], verify)[0] == 404
    commit_lines = [{"key": "header", "value": {"summary": "add"}},
                    {"key": "lfsFile", "value": {"path": "w.bin", "algo": "sha256", "oid": oid, "size": len(data)}}]
    ndjson = b"".join(json.dumps(line).encode() + b"\n" for line in commit_lines)
    commit_url = f"{hub.url}/api/models/acme/lfs/commit/main"
    assert http("POST", commit_url, ndjson, {"Content-Type": "application/x-ndjson"})[0] == 422

    assert http("PUT", actions["upload"]["href"], iter([data[:1000], data[1000:]]))[0] == 200  # chunked body
    assert http("POST", actions["verify"]["href"], verify)[0] == 200
    status, answer = http("POST", f"{hub.url}/acme/lfs.git/info/lfs/objects/batch", json.dumps(batch).encode())
    assert "actions" not in answer["objects"][0]  # already stored: nothing to upload
    status, committed = http("POST", commit_url, ndjson, {"Content-Type": "application/x-ndjson"})
    assert status == 200
    assert Path(hf_hub_download("acme/lfs", "w.bin", revision=committed["commitOid"])).read_bytes() == data
    # A binary file sent as a regular (non-LFS) file is refused, as the Hub does.
    content = base64.b64encode(data).decode()
    regular = {"key": "file", "value": {"path": "x.bin", "encoding": "base64", "content": content}}
    body = b"".join(json.dumps(line).encode() + b"\n" for line in (commit_lines[0], regular))
    assert http("POST", commit_url, body)[0] == 400


def test_tampered_file_keeps_advertised_hash(hub: HubServer) -> None:
    good = os.urandom(1000)
    hub.add_repo("acme/tampered", {"model.safetensors": good})
    bad = bytes(b ^ 0xFF for b in good[:10]) + good[10:]
    hub.tamper("acme/tampered", "model.safetensors", bad)
    meta = get_hf_file_metadata(hf_hub_url("acme/tampered", "model.safetensors"))
    assert meta.etag == hashlib.sha256(good).hexdigest()
    assert Path(hf_hub_download("acme/tampered", "model.safetensors")).read_bytes() == bad


def test_errors_map_to_huggingface_hub_exceptions(hub: HubServer) -> None:
    hub.add_repo("acme/errors", {"config.json": b"{}"})
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("acme/no-such-repo", "config.json")
    with pytest.raises(RepositoryNotFoundError):
        HfApi().model_info("acme/no-such-repo")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download("acme/errors", "config.json", revision="no-such-branch")
    with pytest.raises(RevisionNotFoundError):
        HfApi().model_info("acme/errors", revision="f" * 40)
    with pytest.raises(RemoteEntryNotFoundError):
        hf_hub_download("acme/errors", "missing.json")


@pytest.fixture
def cached_config(hub: HubServer) -> tuple[str, str]:
    """A file downloaded (online) at a pinned commit, before `offline` switches the network off."""
    commit = hub.add_repo("acme/offline", {"config.json": b'{"offline": true}', "other.json": b"{}"})
    return commit, hf_hub_download("acme/offline", "config.json", revision=commit)


def test_offline_serves_cache_with_zero_requests(hub: HubServer, cached_config: tuple[str, str], offline: None) -> None:
    import huggingface_hub.constants

    assert huggingface_hub.constants.is_offline_mode()
    commit, path = cached_config
    hub.reset_count()
    assert hf_hub_download("acme/offline", "config.json", revision=commit) == path
    with pytest.raises(LocalEntryNotFoundError):
        hf_hub_download("acme/offline", "other.json", revision=commit)
    with pytest.raises(LocalEntryNotFoundError):
        hf_hub_download("acme/offline", "config.json")  # `main` was never resolved online
    assert hub.request_count == 0


def test_model_card_validate_and_push(hub: HubServer) -> None:
    ModelCard(CARD).validate()
    with pytest.raises(ValueError, match="license"):
        ModelCard(CARD.replace("apache-2.0", "apache 2")).validate()
    # ModelCard itself refuses to parse this one, so ask the endpoint directly.
    bad_index = json.dumps({"content": CARD.replace("name: MNIST, type: mnist", "name: MNIST"), "repoType": "model"})
    status, answer = http("POST", f"{hub.url}/api/validate-yaml", bad_index.encode())
    assert status == 400 and "dataset.type" in answer["errors"][0]["message"]

    HfApi().create_repo("acme/card")
    card = ModelCard(CARD)
    card.push_to_hub("acme/card")
    assert Path(hf_hub_download("acme/card", "README.md")).read_text() == str(card)
    info = HfApi().model_info("acme/card")
    assert info.card_data is not None and info.card_data.eval_results[0].metric_value == 0.99
