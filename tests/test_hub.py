"""Loading and publishing through the real huggingface_hub client and a loopback Hub server.

Covers: push then load by name and by hf:// (identical outputs), model_info and listing, clear
errors for a missing repo/revision/file, sha256 tampering, offline mode with zero requests,
mirror folders (`reszoo pull --to`), head replacement and loading without random init.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import pytest
import torch

import reszoo
from helpers import tiny_entry
from reszoo.cli import main as cli
from reszoo.hub import IntegrityError, NotCachedError, WeightsNotFoundError

LABELS = [str(i) for i in range(10)]  # of conftest.tiny_entry


def _digits() -> torch.Tensor:
    return torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))


@pytest.fixture
def pushed(hub, registry, request):
    """A random tiny-mnist model pushed to the loopback Hub; the registry pins that commit."""
    repo = f"test/{request.node.name.replace('_', '-')[:40].strip('-')}"
    registry(tiny_entry("tiny-mnist", repo))
    torch.manual_seed(1)
    model = reszoo.load("tiny-mnist", pretrained=False)
    commit = reszoo.push(model, repo)
    from huggingface_hub import hf_hub_download

    sha = hashlib.sha256(Path(hf_hub_download(repo, "model.safetensors", revision=commit)).read_bytes()).hexdigest()
    registry(tiny_entry("tiny-mnist", repo, revision=commit, sha256=sha))
    with torch.no_grad():
        expected = model(_digits())
    return {"repo": repo, "commit": commit, "sha": sha, "expected": expected, "model": model}


def test_push_then_load_by_name_and_by_uri(pushed):
    assert len(pushed["commit"]) == 40
    for name in ("tiny-mnist", f"hf://{pushed['repo']}", f"hf://{pushed['repo']}@{pushed['commit']}"):
        model = reszoo.load(name)
        assert not model.training and model.labels == tuple(LABELS)
        with torch.no_grad():
            torch.testing.assert_close(model(_digits()), pushed["expected"], rtol=0, atol=0)
    uri_model = reszoo.load(f"hf://{pushed['repo']}")
    assert uri_model.entry.weights.revision == pushed["commit"] and uri_model.entry.weights.sha256 == pushed["sha"]


def test_pushed_repo_info_listing_and_card(pushed):
    from huggingface_hub import HfApi, ModelCard

    api = HfApi()
    info = api.model_info(pushed["repo"])
    assert info.sha == pushed["commit"]
    assert {"model.safetensors", "config.json", "README.md"} <= {s.rfilename for s in info.siblings}
    assert pushed["repo"] in {m.id for m in api.list_models(author="test")}
    config = json.loads(Path(api.hf_hub_download(pushed["repo"], "config.json")).read_text())
    assert config["arch"] == "resnet_mnist" and config["labels"] == LABELS and "weights" not in config
    card = ModelCard.load(pushed["repo"])
    assert card.data.library_name == "reszoo" and card.data.license == "mit"
    assert card.data.eval_results[0].metric_value == 0.5


def test_missing_repo_revision_and_file_are_clear(hub, registry, pushed):
    registry(tiny_entry("no-repo", "test/does-not-exist", revision="a" * 40, sha256="b" * 64),
             tiny_entry("no-rev", pushed["repo"], revision="c" * 40, sha256=pushed["sha"]),
             {**tiny_entry("no-file", pushed["repo"], revision=pushed["commit"], sha256=pushed["sha"]),
              "weights": {"repo": pushed["repo"], "file": "nope.safetensors", "revision": pushed["commit"], "sha256": pushed["sha"]}})
    with pytest.raises(WeightsNotFoundError, match="repo 'test/does-not-exist' not found"):
        reszoo.load("no-repo")
    with pytest.raises(WeightsNotFoundError, match=f"revision 'c{{40}}' not found in Hub repo '{pushed['repo']}'"):
        reszoo.load("no-rev")
    with pytest.raises(WeightsNotFoundError, match="file 'nope.safetensors' not found"):
        reszoo.load("no-file")
    assert cli(["predict", "no-repo", "x.png"]) == 1


def _fresh_hf_cache(tmp_path, monkeypatch) -> None:
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "fresh-hf-cache"))


def test_tampered_file_fails_sha256_and_is_not_reused(hub, pushed, tmp_path, monkeypatch):
    from huggingface_hub import hf_hub_download

    original = Path(hf_hub_download(pushed["repo"], "model.safetensors", revision=pushed["commit"])).read_bytes()
    tampered = bytearray(original)
    tampered[len(tampered) // 2] ^= 0xFF  # one flipped byte, same size: only the sha256 can tell
    hub.tamper(pushed["repo"], "model.safetensors", bytes(tampered))
    _fresh_hf_cache(tmp_path, monkeypatch)  # a machine that has not downloaded it yet
    with pytest.raises(IntegrityError) as err:
        reszoo.load("tiny-mnist")
    msg = str(err.value)
    assert pushed["repo"] + "/model.safetensors" in msg and pushed["sha"] in msg
    assert hashlib.sha256(tampered).hexdigest() in msg and "deleted from the cache" in msg
    hub.reset_count()
    with pytest.raises(IntegrityError):  # downloaded again, not served from the bad cached copy
        reszoo.load("tiny-mnist")
    assert ("GET", f"/{pushed['repo']}/resolve/{pushed['commit']}/model.safetensors") in hub.requests


def test_offline_serves_cache_with_zero_requests(hub, pushed, offline):
    hub.reset_count()
    model = reszoo.load("tiny-mnist")  # cached by the fixture's load
    with torch.no_grad():
        torch.testing.assert_close(model(_digits()), pushed["expected"], rtol=0, atol=0)
    assert hub.request_count == 0


def test_offline_missing_file_says_how_to_fill_a_mirror(hub, registry, offline):
    registry(tiny_entry("never-cached", "test/never-cached", revision="d" * 40, sha256="e" * 64))
    with pytest.raises(NotCachedError, match=r"never-cached/model.safetensors.*reszoo pull.*RESZOO_MIRROR"):
        reszoo.load("never-cached")
    assert hub.request_count == 0 or all("never-cached" not in p for _, p in hub.requests)


def test_pull_to_mirror_then_load_from_it_offline(hub, pushed, tmp_path, monkeypatch, capsys):
    mirror = tmp_path / "mirror"
    assert cli(["pull", "tiny-mnist", "--to", str(mirror)]) == 0
    mirrored = mirror / pushed["repo"] / "model.safetensors"
    assert hashlib.sha256(mirrored.read_bytes()).hexdigest() == pushed["sha"]
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf-home"))  # nothing cached there
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "empty-hf-home" / "hub"))
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    hub.reset_count()
    for kwargs in ({"mirror": mirror}, {}):
        if not kwargs:
            monkeypatch.setenv("RESZOO_MIRROR", str(mirror))
        model = reszoo.load("tiny-mnist", **kwargs)
        with torch.no_grad():
            torch.testing.assert_close(model(_digits()), pushed["expected"], rtol=0, atol=0)
    assert hub.request_count == 0
    mirrored.write_bytes(b"corrupt")
    with pytest.raises(IntegrityError, match="replace .* with a good copy"):
        reszoo.load("tiny-mnist", mirror=mirror)
    assert mirrored.read_bytes() == b"corrupt"  # a user's mirror file is never deleted


def test_verify_rehashes_cached_files(hub, pushed, capsys):
    assert cli(["verify", "tiny-mnist"]) == 0
    out = capsys.readouterr().out
    assert "ok " in out and "0 bad" in out


def test_num_classes_replaces_head_and_logs_dropped_keys(pushed, caplog):
    with caplog.at_level(logging.WARNING, logger="reszoo.api"):
        model = reszoo.load("tiny-mnist", num_classes=3)
    assert "fc.weight" in caplog.text and "fc.bias" in caplog.text
    assert model.fc.out_features == 3 and model.labels is None and model.entry.arch_args["num_classes"] == 3
    assert not any(p.is_meta for p in model.parameters())
    base = pushed["model"].state_dict()
    for key, value in model.state_dict().items():
        if not key.startswith("fc."):
            torch.testing.assert_close(value, base[key], rtol=0, atol=0)


def test_pretrained_load_does_no_random_init(pushed, monkeypatch):
    real_inits = []
    for cls in (torch.nn.Conv2d, torch.nn.Linear, torch.nn.BatchNorm2d):
        original = cls.reset_parameters

        def counting(self, original=original):
            if not self.weight.is_meta:  # on the meta device an init allocates and computes nothing
                real_inits.append(type(self).__name__)
            return original(self)

        monkeypatch.setattr(cls, "reset_parameters", counting)
    reszoo.load("tiny-mnist")
    assert real_inits == []
    reszoo.load("tiny-mnist", num_classes=3)
    assert real_inits == ["Linear"]  # only the new head is initialised


def test_config_naming_unknown_arch_is_refused(hub):
    config = {"domain": "image", "arch": "evil_net", "name": "evil", "task": "image-classification", "license": "mit"}
    hub.add_repo("test/evil", {"config.json": json.dumps(config).encode(), "model.safetensors": b"x" * 100})
    with pytest.raises(reszoo.RegistryError, match="no architecture 'evil_net'"):
        reszoo.load("hf://test/evil")


def test_cli_push_then_predict_from_the_pushed_repo(hub, pushed, tmp_path, capsys):
    assert cli(["push", "tiny-mnist", "test/cli-pushed", "--message", "from the CLI"]) == 0
    commit = capsys.readouterr().out.split()[-1]
    from huggingface_hub import HfApi

    assert HfApi().model_info("test/cli-pushed").sha == commit
    model = reszoo.load(f"hf://test/cli-pushed@{commit}")
    with torch.no_grad():
        torch.testing.assert_close(model(_digits()), pushed["expected"], rtol=0, atol=0)
    from PIL import Image

    Image.fromarray((_digits()[0, 0] * 255).byte().numpy()).save(tmp_path / "d.png")
    assert cli(["predict", f"hf://test/cli-pushed@{commit}", str(tmp_path / "d.png"), "--top-k", "2", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["rank"] for r in rows] == [1, 2] and rows[0]["prob"] >= rows[1]["prob"]


def test_device_and_dtype(pushed):
    model = reszoo.load("tiny-mnist", device="cpu", dtype=torch.float64)
    assert {p.dtype for p in model.parameters()} == {torch.float64}
    assert all(p.device.type == "cpu" for p in model.parameters())
    with torch.no_grad():
        torch.testing.assert_close(model(_digits().double()).float(), pushed["expected"], rtol=1e-5, atol=1e-5)
