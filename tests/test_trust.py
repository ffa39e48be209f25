"""A repo, a mirror and a weight file are data: what reszoo refuses, and how it says so.

Covers: file names from configs/registry/mirrors stay inside their repo (hostile Hub repos,
label files, preprocess references); a saved-model folder reads only its own files; the warm-load
sha256 record cannot be fooled by restoring size and mtime; concurrent conversion of a pickled
checkpoint; one clear LoadError for every kind of bad weight file; empty/over-long names,
malformed config.json, `reszoo pull` into an existing mirror and with --revision, and mirror
entries that are not files.
"""

from __future__ import annotations

import difflib
import hashlib
import io
import json
import logging
import multiprocessing
import os
import pickle
import re
import threading
import time
from functools import partial
from pathlib import Path

import pytest
import torch
from safetensors.torch import save as st_save

import reszoo
from helpers import TINY_PREPROCESS as PREPROCESS
from helpers import tiny_entry
from reszoo import checkpoints
from reszoo import hub as rhub  # `hub` is the loopback Hub fixture
from reszoo.cli import main as cli
from reszoo.errors import (HubError, IntegrityError, LoadError, RegistryError, UnknownModelError,
                           WeightsNotFoundError)
from reszoo.names import filename_problem, repo_id_problem, revision_problem
from reszoo.registry import parse_entry


def _tiny_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """A real resnet_mnist state dict (reszoo's own architecture), small enough to write anywhere."""
    from reszoo.image.models import archs

    torch.manual_seed(seed)
    return {k: v.contiguous() for k, v in archs["resnet_mnist"](num_classes=10).state_dict().items()}


def _config(**changes: object) -> dict:
    """A reszoo config.json of a tiny-mnist model, as a Hub repo or a saved folder holds it."""
    return {"reszoo_version": reszoo.__version__, "name": "tiny", "domain": "image", "task": "image-classification",
            "arch": "resnet_mnist", "arch_args": {"num_classes": 10}, "preprocess": PREPROCESS, "license": "mit",
            "weights_file": "model.safetensors", **changes}


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """A reszoo cache (verification records, converted checkpoints) of this test alone."""
    path = tmp_path / "reszoo-cache"
    monkeypatch.setenv("RESZOO_CACHE", str(path))
    return path


def _upload(repo: str, files: dict[str, bytes]) -> str:
    """Create ``repo`` on the loopback Hub through the real client and commit ``files``."""
    from huggingface_hub import CommitOperationAdd, HfApi

    api = HfApi()
    api.create_repo(repo, exist_ok=True)
    ops = [CommitOperationAdd(path_in_repo=p, path_or_fileobj=data) for p, data in files.items()]
    return api.create_commit(repo, operations=ops, commit_message="test").oid


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("reszoo: error: ") and err.count("\n") == 1, err
    return err


# =========================================================================== 1. names stay inside the repo


@pytest.mark.parametrize("name", ["model.safetensors", "a/b.bin", "onnx/model_q8.onnx", "x" * 255])
def test_plain_relative_names_are_accepted(name):
    assert filename_problem(name) is None


@pytest.mark.parametrize(
    ("name", "needle"),
    [("", "empty"), ("/etc/passwd", "absolute"), ("../x", "'..'"), ("a/../../x", "'..'"), ("./x", "'.'"),
     ("a//b", "empty part"), ("a/", "empty part"), ("a\\b", "backslash"), ("C:x", "absolute"), ("a\0b", "control"),
     ("a\nb", "control"), ("x" * 256, "255 bytes"), ("a/" * 300 + "b", "longer than"), (7, "string")],
)
def test_unsafe_file_names_are_refused(name, needle):
    assert needle in filename_problem(name)
    with pytest.raises(HubError, match="unsafe file name"):
        rhub.fetch_file("test/x", name)


@pytest.mark.parametrize("repo", ["../x", "a/b/c", "owner/..", "/abs", "a/b c", "a--b/c", "a/" + "x" * 97, ""])
def test_bad_repo_ids_are_refused_before_any_path_is_built(repo):
    assert repo_id_problem(repo) is not None
    with pytest.raises(HubError, match="bad repo id"):
        rhub.fetch_file(repo, "model.safetensors")


@pytest.mark.parametrize("revision", ["zzz zzz", "a..b", "-x", "main\n", "x~1", "", "refs/pr/", "v1.lock"])
def test_bad_revisions_are_refused(revision):
    assert revision_problem(revision) is not None
    with pytest.raises(HubError, match="bad revision"):
        rhub.fetch_file("test/x", "model.safetensors", revision=revision)


@pytest.mark.parametrize("revision", ["main", "v1.0", "refs/pr/1", "a" * 40, "release/2024-01"])
def test_good_revisions_pass(revision):
    assert revision_problem(revision) is None


@pytest.fixture
def outside_weights(tmp_path) -> Path:
    """A valid weight file outside any repo: what a hostile config would make reszoo load."""
    path = tmp_path / "outside" / "model.safetensors"
    path.parent.mkdir()
    path.write_bytes(st_save(_tiny_state()))
    return path


def test_hostile_hub_config_cannot_pick_a_local_file(hub, outside_weights, capsys):
    bundled = rhub.bundled_mirror()
    assert bundled is not None
    repos = {
        "test/hostile-abs": str(outside_weights),  # absolute: Path(mirror) / repo / "/abs" is "/abs"
        "test/hostile-rel": os.path.relpath(outside_weights, bundled / "test" / "hostile-rel"),
        "test/hostile-etc": "../../../etc/x",
    }
    for repo, weights_file in repos.items():
        _upload(repo, {"config.json": json.dumps(_config(weights_file=weights_file)).encode()})
        hub.reset_count()
        with pytest.raises(RegistryError, match=r"config\.json: weights_file: unsafe file name") as err:
            reszoo.load(f"hf://{repo}")
        assert "\n" not in str(err.value)
        assert all(p.endswith("/config.json") for _, p in hub.requests), hub.requests  # nothing else was asked for
    assert cli(["predict", "hf://test/hostile-abs", "x.png"]) == 1
    assert "unsafe file name" in _one_error_line(capsys)


def test_hostile_mirror_config_cannot_escape_the_mirror(tmp_path, outside_weights):
    mirror = tmp_path / "mirror"
    repo_dir = mirror / "test" / "hostile-mirror"
    repo_dir.mkdir(parents=True)
    (repo_dir / "config.json").write_text(json.dumps(_config(weights_file=os.path.relpath(outside_weights, repo_dir))))
    with pytest.raises(RegistryError, match="unsafe file name"):
        reszoo.load("hf://test/hostile-mirror", mirror=mirror)


def test_registry_names_are_checked_where_they_are_parsed(tmp_path):
    labels = tmp_path / "stolen.txt"
    labels.write_text("\n".join(str(i) for i in range(10)))
    label_dir = Path(reszoo.__file__).resolve().parent / "labels"
    raw = tiny_entry("tiny", "test/tiny")
    for bad in (os.path.relpath(labels.with_suffix(""), label_dir), str(labels.with_suffix("")), "a/b"):
        with pytest.raises(RegistryError, match="field 'labels'"):
            parse_entry({**raw, "labels": bad})
    with pytest.raises(RegistryError, match="field 'weights.file'.*unsafe file name"):
        parse_entry(tiny_entry("tiny", "test/tiny", file="../../x.safetensors"))
    with pytest.raises(RegistryError, match="field 'preprocess.tokenizer.file'.*absolute"):
        parse_entry({**raw, "preprocess": {"tokenizer": {"file": "/etc/passwd"}}})
    with pytest.raises(RegistryError, match="field 'preprocess.tokenizer.repo'"):
        parse_entry({**raw, "preprocess": {"tokenizer": {"file": "t.json", "repo": "../.."}}})


def test_text_tokenizer_name_goes_through_the_check(tmp_path):
    from reszoo.text.preprocess import TextPreprocess

    for name in ("/etc/passwd", "../../tokenizer.json"):
        with pytest.raises(HubError, match="unsafe file name"):
            TextPreprocess(max_length=8, tokenizer_file=name, repo="test/tok").load(mirror=tmp_path)


# =========================================================================== 2. a folder is local


def _saved_folder(parent: Path) -> Path:
    folder = parent / "test" / "hub-twin"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(_config()))
    (folder / "model.safetensors").write_bytes(st_save(_tiny_state()))
    return folder


def test_saved_folder_without_weights_never_reaches_the_hub(hub, tmp_path):
    folder = _saved_folder(tmp_path)
    assert reszoo.load(str(folder)).fc.out_features == 10
    # A Hub repo named like <parent>/<folder> used to complete the folder, unpinned, from main.
    _upload("test/hub-twin", {"model.safetensors": st_save(_tiny_state(seed=1)), "config.json": b"{}"})
    (folder / "model.safetensors").unlink()
    hub.reset_count()
    with pytest.raises(WeightsNotFoundError, match=r"hub-twin: no file 'model.safetensors'.*never completed from the Hub"):
        reszoo.load(str(folder))
    assert hub.request_count == 0
    with pytest.raises(ValueError, match="no revisions"):
        reszoo.load(str(folder), revision="main")


def test_folder_files_come_from_the_folder_only(tmp_path):
    folder = _saved_folder(tmp_path)
    local = rhub.LocalRepo(folder, "test/hub-twin")
    assert rhub.fetch_file("test/hub-twin", "config.json", mirror=local) == folder / "config.json"
    with pytest.raises(HubError, match="outside the folder"):
        rhub.fetch_file("other/repo", "tokenizer.json", mirror=local)
    with pytest.raises(HubError, match="unsafe file name"):
        rhub.fetch_file("test/hub-twin", "../hub-twin/config.json", mirror=local)


# =========================================================================== 3. the warm-load record


def _tamper_keeping_size_and_mtime(path: Path) -> None:
    st = path.stat()
    while time.time_ns() < st.st_ctime_ns + 20_000_000:  # past the timestamp tick of the last write
        time.sleep(0.005)
    with open(path, "r+b") as f:
        f.seek(st.st_size // 2)
        byte = f.read(1)
        f.seek(st.st_size // 2)
        f.write(bytes([byte[0] ^ 0xFF]))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns


@pytest.fixture
def settled(monkeypatch):
    """Treat files as settled at once (they are written a moment before the test loads them), so the
    first load records its digest as a warm load on a real machine would."""
    monkeypatch.setattr(rhub, "_SETTLED_NS", 0, raising=False)


def test_flipped_byte_with_restored_mtime_is_caught_in_a_mirror(registry, tmp_path, cache, settled):
    data = st_save(_tiny_state())
    mirror = tmp_path / "mirror"
    path = mirror / "test" / "digest-mirror" / "model.safetensors"
    path.parent.mkdir(parents=True)
    path.write_bytes(data)
    registry(tiny_entry("tiny", "test/digest-mirror", revision="a" * 40, sha256=hashlib.sha256(data).hexdigest()))
    reszoo.load("tiny", mirror=mirror)
    assert list((cache / "verified").iterdir())  # the warm path is in use
    _tamper_keeping_size_and_mtime(path)
    with pytest.raises(IntegrityError, match="sha256 mismatch"):
        reszoo.load("tiny", mirror=mirror)


def test_flipped_byte_with_restored_mtime_is_caught_in_the_hf_cache(upstream, cache, settled):
    from huggingface_hub import hf_hub_download

    published = upstream(tiny_entry("tiny", "test/digest-hf"), {"model.safetensors": _tiny_state()})
    reszoo.load("tiny")
    blob = Path(hf_hub_download("test/digest-hf", "model.safetensors", revision=published.commit)).resolve()
    _tamper_keeping_size_and_mtime(blob)
    with pytest.raises(IntegrityError, match="deleted from the cache"):
        reszoo.load("tiny")


def test_only_settled_files_get_a_record(tmp_path, cache):
    fresh = tmp_path / "fresh.bin"
    fresh.write_bytes(b"x" * 100)
    assert rhub.file_digest(fresh) == hashlib.sha256(b"x" * 100).hexdigest()
    assert not (cache / "verified").exists()  # changed a moment ago: may change again unseen in the same tick
    settled_file = next(rhub.bundled_mirror().rglob("*.safetensors"))
    wait_ns = settled_file.stat().st_ctime_ns + rhub._SETTLED_NS - time.time_ns()
    if wait_ns > 0:  # a checkout made seconds ago
        time.sleep(wait_ns / 1e9 + 0.01)
    assert rhub.file_digest(settled_file) == rhub.sha256_of(settled_file)
    assert len(list((cache / "verified").iterdir())) == 1
    assert rhub.file_digest(settled_file) == rhub.sha256_of(settled_file)  # read back from the record


# =========================================================================== 4. concurrent conversion


def _pickled_checkpoint(tmp_path: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    state = {f"layer{i}.weight": torch.randn(16, 16, generator=torch.Generator().manual_seed(i)) for i in range(8)}
    path = tmp_path / "ckpt.pt"
    torch.save(state, path)
    return path, state


def _logged_convert(log: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A converter that leaves a line in ``log`` per call, and takes a moment as a real one does:
    every loader that has not found a converted copy is converting at the same time."""
    with open(log, "a") as f:
        f.write(f"{os.getpid()} {threading.get_ident()}\n")
    time.sleep(0.1)
    return state


def _convert_in_process(path: str, log: str, barrier, queue) -> None:  # runs in a fresh process
    try:
        barrier.wait(timeout=60)
        state = checkpoints.load_state_dict(Path(path), fmt="torch", convert=partial(_logged_convert, log), cache_key="procs")
        queue.put(("ok", {k: hashlib.sha256(v.numpy().tobytes()).hexdigest() for k, v in state.items()}))
    except BaseException as err:  # reported to the test, not lost in a child's stderr
        queue.put(("error", repr(err)))


def _digests(state: dict[str, torch.Tensor]) -> dict[str, str]:
    return {k: hashlib.sha256(v.numpy().tobytes()).hexdigest() for k, v in state.items()}


def test_concurrent_conversion_in_threads(tmp_path, cache):
    path, expected = _pickled_checkpoint(tmp_path)
    log = tmp_path / "conversions.log"
    barrier = threading.Barrier(8)
    results: list[object] = [None] * 8

    def convert(i: int) -> None:
        barrier.wait(timeout=30)
        try:
            results[i] = checkpoints.load_state_dict(path, fmt="torch", convert=partial(_logged_convert, str(log)),
                                              cache_key="threads")
        except BaseException as err:
            results[i] = err

    threads = [threading.Thread(target=convert, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert [repr(r) for r in results if not isinstance(r, dict)] == []
    assert [_digests(r) for r in results] == [_digests(expected)] * 8
    assert len(log.read_text().splitlines()) == 1  # one converted, the others read its file
    assert sorted(p.name for p in (cache / "converted").iterdir() if not p.name.endswith(".lock")) == ["threads.safetensors"]


def test_concurrent_conversion_in_processes(tmp_path, cache):
    path, expected = _pickled_checkpoint(tmp_path)
    log = tmp_path / "conversions.log"
    # Fresh processes (never forked from this one); where there is a fork server, torch is imported
    # once there rather than in each of the four (seconds each).
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["torch", "reszoo.hub", __name__])
    else:
        ctx = multiprocessing.get_context("spawn")
    barrier, queue = ctx.Barrier(4), ctx.Queue()
    procs = [ctx.Process(target=_convert_in_process, args=(str(path), str(log), barrier, queue)) for _ in range(4)]
    for p in procs:
        p.start()
    try:
        results = [queue.get(timeout=120) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=30)
    assert [r for status, r in results if status != "ok"] == []
    assert [state for _, state in results] == [_digests(expected)] * 4
    assert len(log.read_text().splitlines()) == 1


# =========================================================================== 5. bad weight files


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _torch_bytes(obj: object) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _bad_files(marker: Path) -> dict[str, tuple[str, bytes, str]]:
    good_st = st_save(_tiny_state())
    good_pt = _torch_bytes(_tiny_state())
    int64 = {**_tiny_state(), "fc.weight": _tiny_state()["fc.weight"].long()}
    nan, inf = _tiny_state(), _tiny_state()
    nan["fc.bias"][3] = float("nan")
    inf["conv1.weight"].view(-1)[0] = float("inf")
    return {
        "code-in-zip-pickle": ("torch", _torch_bytes({"w": _RunsCode(marker)}), "references posix.system"),
        "code-in-raw-pickle": ("torch", pickle.dumps({"w": _RunsCode(marker)}), "refused to read this pickled checkpoint"),
        "zero-byte": ("safetensors", b"", "not a valid safetensors file"),
        "garbage": ("safetensors", bytes(range(256)) * 8, "not a valid safetensors file"),
        "truncated": ("safetensors", good_st[: len(good_st) // 2], "not a valid safetensors file"),
        "truncated-pickle": ("torch", good_pt[: len(good_pt) // 2], "not a readable torch checkpoint"),
        "zero-byte-pickle": ("torch", b"", "not a readable torch checkpoint"),
        "pickled-list": ("torch", _torch_bytes([1, 2, 3]), "expected a pickled state dict"),
        "training-checkpoint": ("torch", _torch_bytes({"epoch": 3, "model": _tiny_state()}), "entry 'epoch' holds 'int', not a tensor"),
        "int64": ("safetensors", st_save(int64), "fc.weight is int64 in the checkpoint but float32 in the model"),
        "nan": ("safetensors", st_save(nan), "non-finite values (NaN or inf) in fc.bias"),
        "inf": ("safetensors", st_save(inf), "non-finite values (NaN or inf) in conv1.weight"),
    }


BAD_CASES = ["code-in-zip-pickle", "code-in-raw-pickle", "zero-byte", "garbage", "truncated", "truncated-pickle",
             "zero-byte-pickle", "pickled-list", "training-checkpoint", "int64", "nan", "inf"]


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_weight_files_give_one_clear_load_error(case, registry, tmp_path, cache, capsys):
    marker = tmp_path / "code-ran"
    fmt, data, needle = _bad_files(marker)[case]
    mirror = tmp_path / "mirror"
    file = "model.pt" if fmt == "torch" else "model.safetensors"
    path = mirror / "test" / "bad" / file
    path.parent.mkdir(parents=True)
    path.write_bytes(data)
    registry(tiny_entry("bad", "test/bad", file=file, fmt=fmt))
    with pytest.raises(LoadError) as err:
        reszoo.load("bad", mirror=mirror)
    msg = str(err.value)
    assert needle in msg and str(path) in msg and "\n" not in msg and "weights_only" not in msg, msg
    assert cli(["predict", "bad", "x.png", "--mirror", str(mirror)]) == 1
    assert needle in _one_error_line(capsys)
    assert not marker.exists()  # the pickle's code never ran


def test_float64_checkpoint_is_cast_to_the_model_dtype(registry, tmp_path, caplog):
    state = _tiny_state()
    mirror = tmp_path / "mirror"
    for repo, tensors in (("test/f32", state), ("test/f64", {k: v.double() if v.is_floating_point() else v for k, v in state.items()})):
        (mirror / repo).mkdir(parents=True)
        (mirror / repo / "model.safetensors").write_bytes(st_save(tensors))
    registry(tiny_entry("f32", "test/f32"), tiny_entry("f64", "test/f64"))
    with caplog.at_level(logging.INFO, logger="reszoo.api"):
        model = reszoo.load("f64", mirror=mirror)
    assert "float64 -> float32" in caplog.text
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    x = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model(x), reszoo.load("f32", mirror=mirror)(x), rtol=0, atol=0)


# =========================================================================== 6. names, configs, pull, mirrors


def test_empty_name_never_loads_the_current_folder(tmp_path, monkeypatch, capsys):
    _saved_folder(tmp_path)
    monkeypatch.chdir(tmp_path / "test" / "hub-twin")  # a loadable config.json right here
    for name in ("", "   ", "\t"):
        with pytest.raises(UnknownModelError, match="empty model name"):
            reszoo.load(name)
    assert cli(["predict", "", "x.png"]) == 1
    assert "empty model name" in _one_error_line(capsys)


def test_overlong_name_is_an_unknown_model(capsys, monkeypatch):
    for name in ("a" * 300, "./" + "b" * 5000, "a\0b", "./a\0b"):
        with pytest.raises(UnknownModelError, match="characters|NUL"):
            reszoo.load(name)
    seen: list[int] = []  # the lengths fuzzy matching is asked to compare: quadratic in them
    real = difflib.get_close_matches
    monkeypatch.setattr(difflib, "get_close_matches", lambda word, *a, **k: seen.append(len(word)) or real(word, *a, **k))
    with pytest.raises(UnknownModelError, match=r"\(100000 characters\)"):
        reszoo.info("x" * 100_000)  # no fuzzy matching over a huge string
    with pytest.raises(UnknownModelError):
        reszoo.info("resnet-mnsit")
    assert seen == [len("resnet-mnsit")]
    for argv in (["predict", "a" * 300, "x.png"], ["info", "a" * 300]):
        assert cli(argv) == 1
        _one_error_line(capsys)


@pytest.mark.parametrize(("text", "needle"), [("{not json", "invalid JSON"), ("[1, 2]", "expected a JSON object, got a list"),
                                              (b"\xff\xfe{", "not UTF-8")])
def test_malformed_config_names_the_file(text, needle, tmp_path, hub, capsys):
    folder = _saved_folder(tmp_path)
    config = folder / "config.json"
    config.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(RegistryError, match=needle) as err:
        reszoo.load(str(folder))
    assert str(config) in str(err.value)
    repo = f"test/bad-config-{hashlib.sha1(config.read_bytes()).hexdigest()[:8]}"
    _upload(repo, {"config.json": config.read_bytes()})
    with pytest.raises(RegistryError, match=f"config.json: not a reszoo config .*{needle}"):
        reszoo.load(f"hf://{repo}")
    assert cli(["predict", str(folder), "x.png"]) == 1
    assert str(config) in _one_error_line(capsys)


@pytest.fixture
def hub_entry(upstream, request):
    """A registry entry pinned to a commit of a repo on the loopback Hub."""
    repo = f"test/pull-{request.node.name.replace('_', '-')[-30:].strip('-')}"
    data = st_save(_tiny_state())
    published = upstream(tiny_entry("tiny", repo), {"model.safetensors": data})
    return {"repo": repo, "commit": published.commit, "data": data}


def test_pull_into_an_existing_mirror_file(hub_entry, tmp_path, capsys, monkeypatch):
    mirror = tmp_path / "mirror"
    dest = mirror / hub_entry["repo"] / "model.safetensors"
    assert cli(["pull", "tiny", "--to", str(mirror)]) == 0
    assert dest.read_bytes() == hub_entry["data"]
    capsys.readouterr()
    assert cli(["pull", "tiny", "--to", str(mirror)]) == 0
    assert "already there" in capsys.readouterr().out
    dest.write_bytes(b"a user's own file")
    assert cli(["pull", "tiny", "--to", str(mirror)]) == 1
    assert "already exists and differs" in _one_error_line(capsys) and dest.read_bytes() == b"a user's own file"

    import tqdm.auto

    def interrupted(self, n=1):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:  # interrupted half-way: the old file stays whole, no temp file is left
        m.setattr(tqdm.auto.tqdm, "update", interrupted)
        assert cli(["pull", "tiny", "--to", str(mirror), "--force"]) == 130
    assert dest.read_bytes() == b"a user's own file"
    assert sorted(p.name for p in dest.parent.iterdir()) == ["model.safetensors"]
    assert cli(["pull", "tiny", "--to", str(mirror), "--force"]) == 0
    assert dest.read_bytes() == hub_entry["data"]


def test_pull_revision_of_a_bundled_model_is_refused(hub, capsys):
    assert cli(["pull", "resnet-mnist", "--revision", "zzz zzz"]) == 1
    assert "bad revision 'zzz zzz'" in _one_error_line(capsys)
    # only in the bundled mirror, which records no revision: refused, saying why
    assert cli(["pull", "resnet-mnist", "--revision", "v2"]) == 1
    assert "revision 'v2' of reszoo/resnet-mnist/model.safetensors was asked for and the mirror copy" in _one_error_line(capsys)


def test_pull_revision_is_fetched_not_taken_from_a_mirror(hub_entry, tmp_path, monkeypatch, capsys):
    mirror = tmp_path / "mirror"
    (mirror / hub_entry["repo"]).mkdir(parents=True)
    (mirror / hub_entry["repo"] / "model.safetensors").write_bytes(b"another copy")
    monkeypatch.setenv("RESZOO_MIRROR", str(mirror))
    assert cli(["pull", "tiny", "--revision", "main"]) == 0
    pulled = Path(capsys.readouterr().out.split(": ", 1)[1].strip())
    assert pulled.read_bytes() == hub_entry["data"] and mirror not in pulled.parents


def _fifo_or_skip(path: Path) -> None:
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs here")
    os.mkfifo(path)


@pytest.mark.parametrize(("kind", "needle"), [("directory", "is a directory, not a file"),
                                              ("dangling", "is a dangling symlink, not a file"),
                                              ("fifo", "is a FIFO (named pipe), not a file")])
def test_mirror_entry_that_is_not_a_file_is_named(kind, needle, registry, tmp_path, capsys):
    mirror = tmp_path / "mirror"
    path = mirror / "test" / "odd" / "model.safetensors"
    path.parent.mkdir(parents=True)
    if kind == "directory":
        path.mkdir()
    elif kind == "dangling":
        path.symlink_to(tmp_path / "gone")
    else:
        _fifo_or_skip(path)
    registry(tiny_entry("odd", "test/odd"))
    with pytest.raises(HubError, match=re.escape(needle)) as err:
        reszoo.load("odd", mirror=mirror)  # a FIFO is never opened: this would block
    assert str(path) in str(err.value)
    assert cli(["predict", "odd", "x.png", "--mirror", str(mirror)]) == 1
    assert needle in _one_error_line(capsys)


def test_pull_revision_into_a_mirror_is_refused(hub_entry, tmp_path, capsys):
    """A mirror holds pinned files only; an unpinned revision written there would fail every later load."""
    assert cli(["pull", "tiny", "--revision", "main", "--to", str(tmp_path / "mirror")]) == 1
    assert "--revision with --to" in _one_error_line(capsys)
    assert not (tmp_path / "mirror").exists()
