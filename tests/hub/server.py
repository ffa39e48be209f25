"""A Hugging Face Hub-compatible HTTP server on 127.0.0.1 for tests (stdlib; pyyaml, if present, for cards).

The real `huggingface_hub` 2.4 client (`HF_HUB_DISABLE_XET=1`) talks to it through `HF_ENDPOINT`. It serves
what reszoo and its tests ask of the Hub, and no more: downloads (`resolve`, HEAD and GET, ranges for
resumed downloads), repo info and listings by author, repo creation, card validation, collections (create,
list, read, update; items added, re-noted, removed), and commits, large
files going through the git-LFS basic transfer (batch -> PUT -> verify). Repos hold commits (40-hex ids) of
trees {path: Entry} on the branch `main`; revisions are branch names or full commit ids; contents live once
on disk by sha256. A file is LFS when `.gitattributes` matches it (the Hub's defaults: *.safetensors, *.bin,
*.pt, ...), when it is over 10 MiB, or when its first 512 bytes are binary: the rules of the Hub's preupload.

`add_repo()` commits files directly (an upstream repo, as published elsewhere); `tamper()` serves other bytes
under a file's advertised hash; `fault()` makes matching requests fail the way a real server or network does
(an HTTP 5xx, a body cut off mid-way, headers then silence), for testing how clients cope.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import json
import os
import re
import shutil
import tempfile
import threading
import time
import traceback
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from .cards import as_list, card_metadata, validate_card

LFS_SIZE_THRESHOLD = 10 * 1024 * 1024
_CHUNK = 1024 * 1024
_HUB_LFS_PATTERNS = (
    "*.7z *.arrow *.bin *.bz2 *.ckpt *.ftz *.gz *.h5 *.joblib *.lfs *.mlmodel *.model *.msgpack *.npy *.npz"
    " *.onnx *.ot *.parquet *.pb *.pickle *.pkl *.pt *.pth *.rar *.safetensors saved_model/**/* *.tar.* *.tar"
    " *.tflite *.tgz *.wasm *.xz *.zip *.zst *tfevents*"
).split()
DEFAULT_GITATTRIBUTES = "".join(f"{p} filter=lfs diff=lfs merge=lfs -text\n" for p in _HUB_LFS_PATTERNS).encode()
_REPO_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_API_SUBROUTES = {"revision", "preupload", "commit"}
_STALL_LIMIT_S = 60  # a stalled answer is released by clear_faults()/stop(), at the latest after this


def _now() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"


@dataclass(frozen=True)
class Content:
    """Bytes stored once on disk, addressed by sha256; `git_sha1` is git's blob id of these bytes."""

    sha256: str
    git_sha1: str
    size: int
    path: Path


@dataclass(frozen=True)
class Entry:
    """A file in a commit's tree: its content, and whether git holds it as an LFS pointer."""

    content: Content
    lfs: bool

    @property
    def pointer(self) -> bytes:
        c = self.content
        return f"version https://git-lfs.github.com/spec/v1\noid sha256:{c.sha256}\nsize {c.size}\n".encode()

    @property
    def oid(self) -> str:
        """The git blob id: of the pointer file for LFS files (as on the Hub), else of the content."""
        if not self.lfs:
            return self.content.git_sha1
        return hashlib.sha1(b"blob %d\0" % len(self.pointer) + self.pointer).hexdigest()

    @property
    def etag(self) -> str:
        return self.content.sha256 if self.lfs else self.content.git_sha1


@dataclass
class Commit:
    oid: str
    parent: str | None
    title: str
    message: str
    date: str
    tree: dict[str, Entry]


@dataclass
class Repo:
    repo_id: str
    private: bool
    created: str
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    lfs_oids: set[str] = field(default_factory=set)  # LFS objects uploaded to (or committed in) this repo
    declared_sizes: dict[str, int] = field(default_factory=dict)  # from LFS batch requests
    tampered: dict[tuple[str, str], Path] = field(default_factory=dict)  # (path, sha256) -> bytes served


@dataclass
class Collection:
    """A Hub collection: an owner's titled, ordered list of items (here: repos), each with a note."""

    slug: str  # "<namespace>/<title slug>-<24 hex id>"
    namespace: str
    title: str
    description: str | None
    private: bool
    created: str
    updated: str
    items: list[dict[str, Any]] = field(default_factory=list)  # {"_id", "id", "type", "note"}

    def as_json(self, *, listed: bool = False) -> dict[str, Any]:
        """As `GET /api/collections/{slug}` answers; `listed`: as a listing does (4 items at most; the client
        numbers the collections itself)."""
        items = [{**item, "position": i, "note": {"text": item["note"], "html": item["note"]} if item["note"] else None}
                 for i, item in enumerate(self.items)]
        data = {"slug": self.slug, "title": self.title, "description": self.description, "owner": self.namespace,
                "items": items[:4] if listed else items, "lastUpdated": self.updated, "private": self.private,
                "theme": "default", "upvotes": 0, "isUpvotedByUser": False}
        return data if listed else {**data, "position": 0}


@dataclass
class Fault:
    """How matching requests fail: `kind` is an HTTP status ("500", "503", ...), "cut" (the headers with the
    full Content-Length, half the body, then the connection closed) or "stall" (the headers, then nothing).
    A request matches when its method is `method` (None: any) and its path contains `path`; `remaining` is how
    many more requests fail (None: all)."""

    kind: str
    method: str | None
    path: str
    remaining: int | None
    hits: int = 0

    def __post_init__(self) -> None:
        if self.kind not in ("cut", "stall") and not (self.kind.isdigit() and 500 <= int(self.kind) <= 599):
            raise ValueError(f"fault kind must be an HTTP 5xx status, 'cut' or 'stall', got {self.kind!r}")
        if self.remaining is not None and self.remaining < 1:
            raise ValueError(f"a fault applies to at least one request (times >= 1), got {self.remaining}")

    @property
    def status(self) -> int | None:
        return int(self.kind) if self.kind.isdigit() else None


class HubError(Exception):
    """An error answered the way the Hub does: status, `X-Error-Code`, `X-Error-Message`, JSON `error`."""

    def __init__(self, status: int, message: str, code: str | None = None, commit: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.commit = status, message, code, commit

    def response(self) -> Response:
        headers = {"X-Error-Message": self.message, "X-Error-Code": self.code, "X-Repo-Commit": self.commit}
        return Response.json({"error": self.message}, self.status, {k: v for k, v in headers.items() if v})


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    file: tuple[Path, int, int] | None = None  # (path, offset, length), streamed instead of `body`

    @classmethod
    def json(cls, data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
        body = json.dumps(data).encode()
        return cls(status, body, {"Content-Type": "application/json; charset=utf-8", **(headers or {})})


def _is_lfs(path: str, size: int, sample: bytes, patterns: list[str]) -> bool:
    if size == 0:
        return False  # the Hub commits empty files as regular files
    name = path.rsplit("/", 1)[-1]
    if any(fnmatch.fnmatchcase(path if "/" in p else name, p) for p in patterns):
        return True
    return size > LFS_SIZE_THRESHOLD or b"\0" in sample[:512]


class HubServer:
    """A loopback Hub. `start()` (or `with HubServer() as hub:`), then point `HF_ENDPOINT` at `hub.url`."""

    def __init__(self) -> None:
        self._root = Path(tempfile.mkdtemp(prefix="reszoo-hub-"))
        (self._root / "objects").mkdir()
        self._lock = threading.RLock()
        self._repos: dict[str, Repo] = {}
        self._collections: dict[str, Collection] = {}  # by slug
        self._contents: dict[str, Content] = {}  # sha256 -> stored bytes
        self._requests: list[tuple[str, str]] = []
        self._commit_counter = 0
        self._server: ThreadingHTTPServer | None = None
        self._faults: list[Fault] = []
        self._release = threading.Event()  # set to end stalled answers
        self.url = ""

    def start(self) -> HubServer:
        handler = type("Handler", (_Handler,), {"hub": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, name="hub-server", daemon=True).start()
        return self

    def stop(self) -> None:
        self.clear_faults()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        shutil.rmtree(self._root, ignore_errors=True)

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def request_count(self) -> int:
        with self._lock:
            return len(self._requests)

    @property
    def requests(self) -> list[tuple[str, str]]:
        """(method, path) of every request received since the last `reset_count()`."""
        with self._lock:
            return list(self._requests)

    def reset_count(self) -> None:
        with self._lock:
            self._requests.clear()

    def fault(self, kind: str, *, path: str = "", method: str | None = "GET", times: int | None = None) -> Fault:
        """Make the next `times` requests (None: every request) of `method` whose path contains `path` fail
        as `kind` describes (see `Fault`); e.g. `hub.fault("500", times=1)`, `hub.fault("cut", path="/resolve/")`,
        `hub.fault("503", method="POST", path="/commit/")`. Faults stay until used up or `clear_faults()`."""
        fault = Fault(kind, method.upper() if method else None, path, times)
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        """Remove every fault and release the answers stalled so far."""
        with self._lock:
            self._faults.clear()
            self._release.set()
            self._release = threading.Event()

    def _take_fault(self, method: str, path: str) -> tuple[Fault | None, threading.Event]:
        with self._lock:
            for fault in self._faults:
                if fault.method in (None, method) and fault.path in path:
                    fault.hits += 1
                    if fault.remaining is not None:
                        fault.remaining -= 1
                        if fault.remaining <= 0:
                            self._faults.remove(fault)
                    return fault, self._release
            return None, self._release

    def add_repo(self, repo_id: str, files: Mapping[str, bytes | Path], *, message: str = "Add files") -> str:
        """Commit `files` on top of `main` (creating the repo if needed); returns the new commit id."""
        stored = {path: self._store(data) for path, data in files.items()}
        with self._lock:
            repo = self._repos.get(repo_id) or self._create_repo(repo_id, private=False)
            head = repo.commits[repo.branches["main"]]
            patterns = self._lfs_patterns(head.tree)
            tree = dict(head.tree)
            for path, content in stored.items():
                with content.path.open("rb") as f:
                    sample = f.read(512)
                tree[path] = Entry(content, _is_lfs(path, content.size, sample, patterns))
                if tree[path].lfs:
                    repo.lfs_oids.add(content.sha256)
            return self._commit(repo, "main", tree, message, "").oid

    def tamper(self, repo_id: str, path: str, data: bytes) -> None:
        """Serve `data` for `path` (at every revision holding its current content) while still advertising
        the original sha256/ETag, like a corrupted upload or mirror. Sizes follow `data`: keep its length
        to simulate flipped bits that only a hash check catches."""
        with self._lock:
            repo = self._get_repo(repo_id)
            entry = repo.commits[repo.branches["main"]].tree[path]
            fd, tmp = tempfile.mkstemp(dir=self._root, prefix="tampered-")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            repo.tampered[(path, entry.content.sha256)] = Path(tmp)

    def _store(self, data: bytes | Path) -> Content:
        """Copy bytes or a file into the object store (streamed, hashed on the way)."""
        size = len(data) if isinstance(data, bytes) else Path(data).stat().st_size
        sha256, sha1 = hashlib.sha256(), hashlib.sha1(b"blob %d\0" % size)
        fd, tmp = tempfile.mkstemp(dir=self._root / "objects", prefix="incoming-")
        with os.fdopen(fd, "wb") as out:
            for chunk in _chunks(data):
                sha256.update(chunk)
                sha1.update(chunk)
                out.write(chunk)
        dest = self._root / "objects" / sha256.hexdigest()
        os.replace(tmp, dest)  # same bytes -> same name: replacing is harmless
        content = Content(sha256.hexdigest(), sha1.hexdigest(), size, dest)
        with self._lock:
            return self._contents.setdefault(content.sha256, content)

    def _create_repo(self, repo_id: str, private: bool) -> Repo:
        repo = Repo(repo_id, private, _now())
        self._repos[repo_id] = repo
        gitattributes = Entry(self._store(DEFAULT_GITATTRIBUTES), lfs=False)
        self._commit(repo, "main", {".gitattributes": gitattributes}, "initial commit", "")
        return repo

    def _commit(self, repo: Repo, branch: str, tree: dict[str, Entry], title: str, message: str) -> Commit:
        self._commit_counter += 1
        parent = repo.branches.get(branch)
        listing = "".join(f"{p} {e.oid}\n" for p, e in sorted(tree.items()))
        seed = f"{parent}\n{listing}{title}\n{message}\n{time.time()}\n{self._commit_counter}"
        oid = hashlib.sha1(seed.encode()).hexdigest()
        commit = Commit(oid, parent, title, message, _now(), tree)
        repo.commits[oid] = commit
        repo.branches[branch] = oid
        return commit

    def _lfs_patterns(self, tree: dict[str, Entry]) -> list[str]:
        entry = tree.get(".gitattributes")
        if entry is None:
            return list(_HUB_LFS_PATTERNS)
        lines = entry.content.path.read_text(errors="replace").splitlines()
        return [line.split()[0] for line in lines if "filter=lfs" in line and not line.startswith("#")]

    def _get_repo(self, repo_id: str) -> Repo:
        repo = self._repos.get(repo_id)
        if repo is None:
            raise HubError(404, f"Repository {repo_id} not found", "RepoNotFound")
        return repo

    def _resolve(self, repo: Repo, revision: str) -> Commit:
        oid = repo.branches.get(revision, revision)
        if oid not in repo.commits:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return repo.commits[oid]

    def handle(self, method: str, raw_path: str, headers: Message, body: bytes, upload: Path | None) -> Response:
        url = urlsplit(raw_path)
        parts = [unquote(p) for p in url.path.split("/")[1:] if p != ""]
        query = parse_qs(url.query)
        if parts[:1] == ["api"]:
            return self._api(method, parts[1:], query, headers, body)
        if parts[:1] == ["_lfs"] and len(parts) >= 3:
            return self._lfs_object(method, parts[1], parts[2], parts[3:], body, upload)
        if len(parts) >= 5 and parts[-4:] == ["info", "lfs", "objects", "batch"] and parts[-5].endswith(".git"):
            repo_id = "/".join(parts[:-4])[: -len(".git")]
            return self._lfs_batch(repo_id, json.loads(body or b"{}"))
        for i in (1, 2):
            if len(parts) > i + 2 and parts[i] == "resolve" and method in ("GET", "HEAD"):
                return self._resolve_file(
                    "/".join(parts[:i]), parts[i + 1], "/".join(parts[i + 2 :]), headers.get("Range")
                )
        raise HubError(404, f"Not found: {method} {url.path}")

    def _api(self, method: str, parts: list[str], query: dict[str, list[str]], headers: Message, body: bytes
             ) -> Response:
        def flag(name: str) -> bool:
            return query.get(name, ["false"])[-1].lower() in ("1", "true")

        if parts == ["models"] and method == "GET":
            return Response.json(self._list_models(query))
        if parts == ["repos", "create"] and method == "POST":
            return self._create_repo_api(json.loads(body or b"{}"))
        if parts == ["validate-yaml"] and method == "POST":
            errors, warnings = validate_card(json.loads(body or b"{}").get("content", ""))
            if errors and "text/plain" in headers.get("Accept", ""):
                return Response(400, "\n".join(errors).encode(), {"Content-Type": "text/plain"})
            payload = {"errors": [{"message": e} for e in errors], "warnings": [{"message": w} for w in warnings]}
            return Response.json(payload, 400 if errors else 200)
        if parts[:1] == ["collections"]:
            return self._collections_api(method, parts[1:], query, json.loads(body or b"{}") if method != "GET" else {})
        if parts == ["agent-harnesses"] and method == "GET":  # fetched for the user agent unless telemetry is off
            return Response.json({"standardEnvVars": [], "harnesses": {}})
        if len(parts) < 2 or parts[0] != "models":
            raise HubError(404, f"Unknown API route /api/{'/'.join(parts)}")
        rest = parts[1:]
        split = 2 if len(rest) >= 2 and rest[1] not in _API_SUBROUTES else 1
        repo_id, sub = "/".join(rest[:split]), rest[split:]
        with self._lock:
            repo = self._get_repo(repo_id)
            if method == "GET" and (sub == [] or (len(sub) == 2 and sub[0] == "revision")):
                commit = self._resolve(repo, sub[1] if sub else "main")
                return Response.json(self._info(repo, commit, files_metadata=flag("blobs")))
            if method == "POST" and len(sub) == 2 and sub[0] in ("preupload", "commit"):
                if flag("create_pr"):
                    raise HubError(400, "This test Hub does not support pull requests")
                if sub[0] == "preupload":
                    return Response.json(self._preupload(repo, sub[1], json.loads(body or b"{}")))
                return Response.json(self._commit_api(repo, sub[1], body))
        raise HubError(404, f"Unknown API route /api/{'/'.join(parts)}")

    def collections(self, namespace: str | None = None) -> list[dict[str, Any]]:
        """Every collection (of ``namespace``), as `get_collection` returns it: a test hook."""
        with self._lock:
            return [c.as_json() for c in self._collections.values() if namespace in (None, c.namespace)]

    def _collections_api(self, method: str, parts: list[str], query: dict[str, list[str]], payload: dict[str, Any]
                         ) -> Response:
        """`/api/collections...`: create (POST), list by owner (GET), read, update and delete one (GET, PATCH,
        DELETE `{namespace}/{slug}`), add an item (POST `.../items`), update or remove one (PATCH, DELETE
        `.../items/{item id}`); the payloads and answers of huggingface_hub's collection methods."""
        with self._lock:
            if not parts and method == "POST":
                return self._create_collection(payload)
            if not parts and method == "GET":
                owner = query.get("owner", [None])[-1]
                found = [c.as_json(listed=True) for c in self._collections.values() if owner in (None, c.namespace)]
                return Response.json(found)
            if len(parts) < 2:
                raise HubError(404, f"Unknown API route /api/collections/{'/'.join(parts)}")
            slug, rest = "/".join(parts[:2]), parts[2:]
            collection = self._collections.get(slug)
            if collection is None:
                raise HubError(404, f"Collection {slug} not found")
            if not rest and method == "GET":
                return Response.json(collection.as_json())
            if not rest and method == "PATCH":
                for key in ("title", "description", "private"):
                    if key in payload:
                        setattr(collection, key, payload[key])
                collection.updated = _now()
                return Response.json({"success": True, "data": collection.as_json()})
            if not rest and method == "DELETE":
                del self._collections[slug]
                return Response.json({"success": True})
            if rest == ["items"] and method == "POST":
                return self._add_collection_item(collection, payload)
            if len(rest) == 2 and rest[0] == "items" and method in ("PATCH", "DELETE"):
                index = next((i for i, it in enumerate(collection.items) if it["_id"] == rest[1]), None)
                if index is None:
                    raise HubError(404, f"Item {rest[1]} not found in collection {slug}")
                if method == "DELETE":
                    collection.items.pop(index)
                else:
                    item = collection.items.pop(index)
                    item["note"] = self._checked_note(payload.get("note", item["note"]))
                    position = payload.get("position")
                    collection.items.insert(index if position is None else int(position), item)
                collection.updated = _now()
                return Response.json({"success": True})
        raise HubError(404, f"Unknown API route /api/collections/{'/'.join(parts)}")

    def _create_collection(self, payload: dict[str, Any]) -> Response:
        title, namespace = str(payload.get("title") or ""), str(payload.get("namespace") or "")
        description = payload.get("description")
        if not title.strip() or not _REPO_NAME.match(namespace):
            raise HubError(400, f"A collection needs a title and a valid namespace, got {title!r} / {namespace!r}")
        if description is not None and len(description) > 150:
            raise HubError(400, "The description of a collection is at most 150 characters")
        for existing in self._collections.values():
            if (existing.namespace, existing.title) == (namespace, title):
                return Response.json({"error": "You already have a collection with this title", "slug": existing.slug}, 409)
        words = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-") or "collection"
        oid = hashlib.sha1(f"{namespace}/{title}/{len(self._collections)}".encode()).hexdigest()[:24]
        slug = f"{namespace}/{words}-{oid}"
        self._collections[slug] = Collection(slug, namespace, title, description, bool(payload.get("private")), _now(), _now())
        return Response.json(self._collections[slug].as_json())

    @staticmethod
    def _checked_note(note: Any) -> str | None:
        if note is not None and (not isinstance(note, str) or len(note) > 500):
            raise HubError(400, "A collection item's note is a text of at most 500 characters")
        return note or None

    def _add_collection_item(self, collection: Collection, payload: dict[str, Any]) -> Response:
        item = payload.get("item") or {}
        item_id, kind = str(item.get("id") or ""), item.get("type")
        if kind != "model":
            raise HubError(400, "This test Hub collects model repos only")
        if item_id not in self._repos:
            raise HubError(404, f"Repository {item_id} not found", "RepoNotFound")
        if any(it["id"] == item_id for it in collection.items):
            raise HubError(409, f"{item_id} is already in collection {collection.slug}")
        oid = hashlib.sha1(f"{collection.slug}/{item_id}".encode()).hexdigest()[:24]
        collection.items.append({"_id": oid, "id": item_id, "type": kind, "note": self._checked_note(payload.get("note"))})
        collection.updated = _now()
        return Response.json(collection.as_json())

    def _resolve_file(self, repo_id: str, revision: str, path: str, range_header: str | None) -> Response:
        with self._lock:
            repo = self._get_repo(repo_id)
            commit = self._resolve(repo, revision)
            entry = commit.tree.get(path)
            if entry is None:
                raise HubError(404, f"{path} does not exist on \"{revision}\"", "EntryNotFound", commit.oid)
            data_path = repo.tampered.get((path, entry.content.sha256), entry.content.path)
        size = data_path.stat().st_size
        headers = {
            "X-Repo-Commit": commit.oid,
            "ETag": f'"{entry.etag}"',
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
            "Content-Disposition": f'inline; filename="{path.rsplit("/", 1)[-1]}"',
        }
        if entry.lfs:
            headers |= {"X-Linked-Etag": f'"{entry.content.sha256}"', "X-Linked-Size": str(size)}
        if range_header is None:
            return Response(200, headers=headers, file=(data_path, 0, size))
        # huggingface_hub resumes a download with `bytes=<start>-`; suffix ranges are not needed.
        match = re.fullmatch(r"\s*bytes=(\d+)-(\d*)\s*", range_header)
        if match:
            start, end = int(match[1]), min(int(match[2]) if match[2] else size - 1, size - 1)
        else:
            start, end = size, -1
        if start >= size or start > end:
            return Response(416, headers={**headers, "Content-Range": f"bytes */{size}"})
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        return Response(206, headers=headers, file=(data_path, start, end - start + 1))

    def _info(self, repo: Repo, commit: Commit, *, files_metadata: bool) -> dict[str, Any]:
        readme, config_file = commit.tree.get("README.md"), commit.tree.get("config.json")
        card = card_metadata(readme.content.path.read_text(errors="replace")) if readme else {}
        try:
            config = json.loads(config_file.content.path.read_bytes()) if config_file else None
        except ValueError:
            config = None
        if not isinstance(config, dict):  # a config.json holding a list or a number is served, not parsed
            config = None
        library = card.get("library_name") or (config or {}).get("library_name")
        tags = [str(t) for t in as_list(card.get("tags"))] + ([library] if library else [])
        tags += [f"license:{x}" for x in as_list(card.get("license"))]
        tags += [f"dataset:{x}" for x in as_list(card.get("datasets"))]
        siblings = []
        for path, entry in sorted(commit.tree.items()):
            sibling: dict[str, Any] = {"rfilename": path}
            if files_metadata:
                sibling |= {"size": entry.content.size, "blobId": entry.oid}
                if entry.lfs:
                    sibling["lfs"] = {"sha256": entry.content.sha256, "size": entry.content.size,
                                      "pointerSize": len(entry.pointer)}
            siblings.append(sibling)
        info: dict[str, Any] = {
            "_id": hashlib.sha1(repo.repo_id.encode()).hexdigest()[:24], "id": repo.repo_id, "modelId": repo.repo_id,
            "author": repo.repo_id.split("/")[0] if "/" in repo.repo_id else None, "sha": commit.oid,
            "lastModified": commit.date, "createdAt": repo.created, "private": repo.private, "gated": False,
            "disabled": False, "downloads": 0, "likes": 0, "tags": list(dict.fromkeys(tags)), "siblings": siblings,
            "spaces": [], "usedStorage": sum(e.content.size for e in commit.tree.values()),
        }
        for key, value in (("library_name", library), ("pipeline_tag", card.get("pipeline_tag")),
                           ("cardData", card or None), ("model-index", card.get("model-index")), ("config", config)):
            if value is not None:
                info[key] = value
        return info

    def _list_models(self, query: dict[str, list[str]]) -> list[dict[str, Any]]:
        """`GET /api/models`, filtered by `author` only; terse items, as the Hub lists them by default."""
        author = query.get("author", [None])[-1]
        items = []
        with self._lock:
            for repo in self._repos.values():
                if author and not repo.repo_id.startswith(author + "/"):
                    continue
                info = self._info(repo, repo.commits[repo.branches["main"]], files_metadata=False)
                items.append({k: v for k, v in info.items() if k not in ("siblings", "cardData", "config")})
        return items

    def _create_repo_api(self, payload: dict[str, Any]) -> Response:
        name, org = payload.get("name") or "", payload.get("organization")
        if payload.get("type") not in (None, "model"):
            raise HubError(400, "This test Hub serves model repos only")
        valid = [bool(_REPO_NAME.match(x)) and "--" not in x and ".." not in x for x in filter(None, (name, org))]
        if not name or not all(valid):
            raise HubError(400, f"Invalid repo name {org}/{name}")
        repo_id = f"{org}/{name}" if org else name
        with self._lock:
            if repo_id in self._repos:
                return Response.json({"error": "You already created this model repo", "url": f"{self.url}/{repo_id}"},
                                     409)
            private = payload.get("visibility") == "private" or bool(payload.get("private"))
            self._create_repo(repo_id, private)
        return Response.json({"url": f"{self.url}/{repo_id}", "name": repo_id, "id": repo_id})

    def _branch_head(self, repo: Repo, revision: str) -> Commit:
        commit = self._resolve(repo, revision)
        if revision not in repo.branches:
            raise HubError(400, f"Invalid rev id: {revision} is not a branch")
        return commit

    def _preupload(self, repo: Repo, revision: str, payload: dict[str, Any]) -> dict[str, Any]:
        head = self._branch_head(repo, revision)
        patterns = self._lfs_patterns(head.tree)
        files = []
        for item in payload.get("files", []):
            path, size = item["path"], int(item["size"])
            lfs = _is_lfs(path, size, base64.b64decode(item.get("sample", "")), patterns)
            existing = head.tree.get(path)
            files.append({"path": path, "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False,
                          "oid": existing.etag if existing else None})
        return {"files": files, "commitOid": head.oid}

    def _lfs_batch(self, repo_id: str, payload: dict[str, Any]) -> Response:
        if payload.get("operation") != "upload":
            raise HubError(400, "This test Hub only supports LFS uploads through the batch API")
        objects = []
        with self._lock:
            repo = self._get_repo(repo_id)
            for obj in payload.get("objects", []):
                oid, size = str(obj.get("oid")), obj.get("size")
                if not _SHA256.match(oid) or not isinstance(size, int) or size < 0:
                    objects.append({"oid": oid, "size": size if isinstance(size, int) else -1,
                                    "error": {"code": 422, "message": "oid must be a sha256 and size an int >= 0"}})
                    continue
                item: dict[str, Any] = {"oid": oid, "size": size, "authenticated": True}
                if oid not in repo.lfs_oids:  # already stored objects get no actions: nothing to upload
                    repo.declared_sizes[oid] = size
                    href = f"{self.url}/_lfs/{quote(repo_id, safe='')}/{oid}"
                    item["actions"] = {"upload": {"href": href}, "verify": {"href": f"{href}/verify"}}
                objects.append(item)
        return Response(200, json.dumps({"transfer": "basic", "objects": objects}).encode(),
                        {"Content-Type": "application/vnd.git-lfs+json"})

    def _lfs_object(self, method: str, repo_id: str, oid: str, rest: list[str], body: bytes, upload: Path | None
                    ) -> Response:
        with self._lock:
            repo = self._get_repo(repo_id)
            declared = repo.declared_sizes.get(oid)
        if method == "PUT" and not rest:
            assert upload is not None
            content = self._store(upload)
            if content.sha256 != oid or (declared is not None and content.size != declared):
                raise HubError(400, f"Uploaded content does not match the LFS object: expected sha256 {oid} and size "
                                    f"{declared}, got sha256 {content.sha256} and size {content.size}")
            with self._lock:
                repo.lfs_oids.add(oid)
            return Response(200)
        if method == "POST" and rest == ["verify"]:
            claim = json.loads(body or b"{}")
            with self._lock:
                known = oid in repo.lfs_oids and claim.get("oid") == oid
            if not known or self._contents[oid].size != claim.get("size"):
                raise HubError(404, f"LFS object {oid} was not uploaded (or has another size)")
            return Response.json({"message": "ok"})
        raise HubError(405, f"{method} is not allowed here")

    def _commit_api(self, repo: Repo, revision: str, body: bytes) -> dict[str, Any]:
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "The commit payload must start with a header line")
        header = lines[0]["value"]
        head = self._branch_head(repo, revision)
        if header.get("parentCommit") and not head.oid.startswith(header["parentCommit"]):
            raise HubError(412, f"A commit has happened since {header['parentCommit']}. Please refresh and try again.")
        tree = dict(head.tree)
        patterns = self._lfs_patterns(head.tree)
        for line in lines[1:]:
            key, value = line.get("key"), line.get("value", {})
            path = str(value.get("path", ""))
            if key == "file":
                raw = value["content"]
                data = base64.b64decode(raw) if value.get("encoding") == "base64" else raw.encode()
                if _is_lfs(path, len(data), data[:512], patterns):
                    raise HubError(400, f"Your push was rejected because {path} must be stored with LFS (binary, "
                                        f"larger than 10 MiB or matched by .gitattributes)")
                tree[path] = Entry(self._store(data), False)
            elif key == "lfsFile":
                oid = value.get("oid", "")
                if oid not in repo.lfs_oids:
                    raise HubError(422, f"LFS object {oid} for {path} was never uploaded to {repo.repo_id}")
                tree[path] = Entry(self._contents[oid], True)
            else:
                raise HubError(400, f"Unsupported commit operation {key!r}")
        commit = self._commit(repo, revision, tree, header.get("summary") or "Update", header.get("description") or "")
        return {"commitUrl": f"{self.url}/{repo.repo_id}/commit/{commit.oid}", "commitOid": commit.oid,
                "pullRequestUrl": None, "success": True}


def _chunks(data: bytes | Path) -> Iterator[bytes]:
    if isinstance(data, bytes):
        view = memoryview(data)
        for i in range(0, len(data), _CHUNK):
            yield bytes(view[i : i + _CHUNK])
        return
    with Path(data).open("rb") as f:
        while chunk := f.read(_CHUNK):
            yield chunk


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hub: HubServer

    def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:
        self._serve("GET")

    def do_HEAD(self) -> None:
        self._serve("HEAD")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_PATCH(self) -> None:
        self._serve("PATCH")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def _serve(self, method: str) -> None:
        with self.hub._lock:
            self.hub._requests.append((method, self.path))
        fd, tmp = tempfile.mkstemp(dir=self.hub._root, prefix="request-")
        try:
            with os.fdopen(fd, "w+b") as spool:  # read the whole body first: the connection stays usable
                self._read_body(spool)
                spool.seek(0)
                body = b"" if method == "PUT" else spool.read()
            fault, release = self.hub._take_fault(method, self.path)
            try:
                if fault is not None and fault.status is not None:
                    raise HubError(fault.status, f"Injected fault: HTTP {fault.status}")
                response = self.hub.handle(method, self.path, self.headers, body, Path(tmp))
            except HubError as err:
                response = err.response()
            except Exception:  # a server bug: report it to the client instead of hanging it
                message = traceback.format_exc(limit=4).replace("\n", " | ")
                response = Response.json({"error": message}, 500, {"X-Error-Message": message[-1500:]})
            if fault is not None and fault.kind in ("cut", "stall"):
                self._respond_badly(method, response, fault.kind, release)
            else:
                self._respond(method, response)
        finally:
            os.unlink(tmp)

    def _read_body(self, out: Any) -> None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                out.write(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                pass
            return
        remaining = int(self.headers.get("Content-Length") or 0)
        while remaining > 0:
            chunk = self.rfile.read(min(remaining, _CHUNK))
            if not chunk:
                break
            out.write(chunk)
            remaining -= len(chunk)

    def _respond(self, method: str, response: Response, *, limit: int | None = None) -> None:
        """Send `response`; with `limit`, only its first `limit` body bytes (the headers still promise all)."""
        self.send_response(response.status)
        for key, value in response.headers.items():  # header values must be one latin-1 line
            self.send_header(key, " ".join(value.splitlines()).encode("latin-1", "replace").decode("latin-1"))
        length = response.file[2] if response.file else len(response.body)
        self.send_header("Content-Length", str(length))
        self.end_headers()
        if method == "HEAD":
            return
        try:
            if response.file is None:
                self.wfile.write(response.body[:limit])
                return
            path, offset, remaining = response.file
            remaining = remaining if limit is None else min(remaining, limit)
            with path.open("rb") as f:
                f.seek(offset)
                while remaining > 0 and (chunk := f.read(min(remaining, _CHUNK))):
                    self.wfile.write(chunk)
                    remaining -= len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _respond_badly(self, method: str, response: Response, kind: str, release: threading.Event) -> None:
        """A "cut" answer: the full headers, half the body, then the connection closed; a "stall": the full
        headers, then silence until the fault is cleared."""
        length = response.file[2] if response.file else len(response.body)
        self._respond(method, response, limit=length // 2 if kind == "cut" else 0)
        if kind == "stall":
            release.wait(_STALL_LIMIT_S)
        self.close_connection = True
