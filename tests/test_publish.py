"""`reszoo publish` against the loopback Hub: repos made in one commit each, the registry pinned to those
commits, every published entry loaded through the Hub (bundled mirror off, empty caches) and a tampered
Hub copy refused, idempotent re-runs, the collections per domain, a dry run that changes nothing, and
the loopback Hub's collection endpoints against huggingface_hub's own client."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

import huggingface_hub.constants as hf_constants
import pytest
import yaml
from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError

import reszoo
from reszoo.cards import card_for_entry, for_hub
from reszoo.cli import main as cli_main
from reszoo.errors import IntegrityError, UnknownModelError
from reszoo.hub import bundled_mirror
from reszoo.publish import collection_title, publish
from reszoo.registry import expand_registry, load_registry
from reszoo.registry_write import update_entry

ROOT = Path(__file__).resolve().parent.parent
ORG = "reszoo"
# One of each way a model lives on the Hub: a residual entry and its plain twin in repos of their own
# (resnet-mnist), an RL agent whose twin shares its repo (plain.safetensors) and figure, a GAN whose
# sample grid is a checkout image, a speech model.
NAMES = ["resnet-mnist", "resnet-mnist-plain", "ppo-cartpole-resmlp", "ppo-cartpole-resmlp-plain", "sngan-mnist",
         "tdnn-fsdd-digits"]


def _copy_registry(folder: Path, *, cards: bool = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "registry.yaml"
    shutil.copyfile(ROOT / "registry.yaml", path)
    if cards:
        (folder / "model_cards").mkdir()
    return path


@dataclasses.dataclass
class Zoo:
    registry: Path
    first: object  # the first run's PublishReport
    registry_after_first: bytes


@pytest.fixture(scope="module")
def zoo(hub, tmp_path_factory) -> Zoo:
    """NAMES published to ORG once for this module, pinning a copy of the registry (with a model_cards/)."""
    path = _copy_registry(tmp_path_factory.mktemp("zoo"), cards=True)
    report = publish(NAMES, org=ORG, registry=path)
    return Zoo(path, report, path.read_bytes())


def _entries(path: Path) -> dict[str, reszoo.registry.Entry]:
    return {e.name: e for e in load_registry(path).values()}


@pytest.fixture
def fresh(tmp_path, monkeypatch):
    """A machine that has only the Hub: no bundled mirror, empty Hugging Face and reszoo caches."""
    monkeypatch.setenv("RESZOO_NO_BUNDLED", "1")
    monkeypatch.setenv("RESZOO_CACHE", str(tmp_path / "reszoo-cache"))
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    return tmp_path


def test_publish_pins_each_entry_to_the_one_commit_that_holds_its_files(zoo, hub):
    entries, api = _entries(zoo.registry), HfApi()
    commits = {plan.repo: plan.commit for plan in zoo.first.repos}
    assert set(commits) == {"reszoo/resnet-mnist", "reszoo/resnet-mnist-plain", "reszoo/ppo-cartpole-resmlp",
                            "reszoo/sngan-mnist", "reszoo/tdnn-fsdd-digits"}
    for name in NAMES:
        w = entries[name].weights
        assert w.revision == commits[w.repo] and w.pin_note is None, name
        info = api.model_info(w.repo, revision=w.revision, files_metadata=True)
        files = {s.rfilename: s for s in info.siblings}
        assert files[w.file].lfs.sha256 == w.sha256
        assert {"config.json", "README.md"} <= set(files)
        for figure in entries[name].figures.values():
            assert figure in files
    # The RL twin shares its entry's repo and commit; a twin in a repo of its own has its own commit.
    assert entries["ppo-cartpole-resmlp-plain"].weights.revision == entries["ppo-cartpole-resmlp"].weights.revision
    assert entries["resnet-mnist-plain"].weights.revision != entries["resnet-mnist"].weights.revision
    # Each repo got one commit on top of its creation: weights, config, card and figures together.
    for plan in zoo.first.repos:
        assert plan.made_commit and set(plan.upload) == set(plan.files)
    # Entries not published keep their pins and notes.
    before = {e["name"]: e for e in expand_registry(yaml.safe_load((ROOT / "registry.yaml").read_text()))}
    assert entries["sngan-mnist-plain"].weights.revision is None and entries["sngan-mnist-plain"].weights.pin_note
    assert entries["resnet50-imagenet"].weights.revision == before["resnet50-imagenet"]["weights"]["revision"]


def test_the_repo_is_loadable_as_published(zoo, hub):
    entries = _entries(zoo.registry)
    w = entries["ppo-cartpole-resmlp"].weights
    api = HfApi()
    config = json.loads(Path(api.hf_hub_download(w.repo, "config.json", revision=w.revision)).read_text())
    assert config["name"] == "ppo-cartpole-resmlp" and config["weights_file"] == "model.safetensors"
    readme = Path(api.hf_hub_download(w.repo, "README.md", revision=w.revision)).read_text()
    hub_entry = for_hub(entries["ppo-cartpole-resmlp"], w.repo)
    assert readme == str(card_for_entry(hub_entry, repo_id=w.repo, registry=load_registry(zoo.registry))) + "\n"
    assert "![learning curve](learning_curve.png)" in readme and w.revision not in readme


def test_every_published_entry_loads_through_the_hub_at_its_pinned_commit(zoo, hub, fresh, monkeypatch):
    monkeypatch.setenv("RESZOO_REGISTRY", str(zoo.registry))
    entries = _entries(zoo.registry)
    hub.reset_count()
    for name in NAMES:
        model = reszoo.load(name)
        w = entries[name].weights
        assert model.entry.weights.revision == w.revision
        assert ("GET", f"/{w.repo}/resolve/{w.revision}/{w.file}") in hub.requests, name


def test_a_tampered_hub_copy_is_refused(zoo, hub, fresh, monkeypatch):
    monkeypatch.setenv("RESZOO_REGISTRY", str(zoo.registry))
    w = _entries(zoo.registry)["tdnn-fsdd-digits"].weights
    original = (bundled_mirror() / "reszoo" / "tdnn-fsdd-digits" / "model.safetensors").read_bytes()
    flipped = bytearray(original)
    flipped[-1] ^= 0xFF  # one flipped bit pattern, same size: only the hash check catches it
    hub.tamper(w.repo, w.file, bytes(flipped))
    try:
        with pytest.raises(IntegrityError, match="sha256 mismatch"):
            reszoo.load("tdnn-fsdd-digits")
    finally:
        hub.tamper(w.repo, w.file, original)  # later tests read the good bytes again


def test_publishing_again_uploads_nothing_and_keeps_the_pins(zoo, hub):
    hub.reset_count()
    report = publish(NAMES, org=ORG, registry=zoo.registry)
    assert not any(method in ("PUT", "POST") and "/commit/" in path or "/_lfs/" in path for method, path in hub.requests)
    assert all(not plan.upload and not plan.made_commit for plan in report.repos)
    assert report.revisions == {} and zoo.registry.read_bytes() == zoo.registry_after_first
    assert all(not c.added and not c.updated for c in report.collections)


def test_changed_facts_are_committed_without_the_weights_and_the_pins_follow(zoo, hub, tmp_path):
    path = tmp_path / "registry.yaml"
    shutil.copyfile(zoo.registry, path)
    update_entry("sngan-mnist", path, limitations="A small network; samples are 28x28 digits only.")
    plan = publish(["sngan-mnist"], org=ORG, registry=path, dry_run=True)
    assert plan.repos[0].upload == ["config.json", "README.md"]
    assert plan.revisions["sngan-mnist"][1] == "(the new commit)"  # the pin moves, though the weights stay
    report = publish(["sngan-mnist"], org=ORG, registry=path)
    (plan,) = report.repos
    assert plan.upload == ["config.json", "README.md"] and plan.made_commit  # the weights are on the Hub already
    before = _entries(zoo.registry)["sngan-mnist"].weights.revision
    assert report.revisions == {"sngan-mnist": (before, plan.commit)}
    assert _entries(path)["sngan-mnist"].weights.revision == plan.commit


def test_the_collections_group_the_published_repos_by_domain(zoo, hub):
    collections = {c["title"]: c for c in hub.collections(ORG)}
    for domain in ("image", "rl", "gan", "speech"):
        assert collection_title(domain) in collections
    image = collections[collection_title("image")]
    notes = {item["id"]: item["note"]["text"] for item in image["items"]}
    assert set(notes) == {"reszoo/resnet-mnist", "reszoo/resnet-mnist-plain"}
    assert "top-1 accuracy 99.46 (MNIST, test)" in notes["reszoo/resnet-mnist"]
    assert "plain twin (no skips) resnet-mnist-plain: 99.52" in notes["reszoo/resnet-mnist"]
    rl = collections[collection_title("rl")]
    (item,) = [i for i in rl["items"] if i["id"] == "reszoo/ppo-cartpole-resmlp"]
    assert "ppo-cartpole-resmlp-plain" in item["note"]["text"]  # one repo, both agents
    # A note edited on the Hub is put back by the next publish; other items are left alone.
    api = HfApi()
    slug = image["slug"]
    api.update_collection_item(slug, image["items"][0]["_id"], note="edited by hand")
    report = publish(NAMES, org=ORG, registry=zoo.registry)
    (plan,) = [c for c in report.collections if c.domain == "image"]
    assert plan.updated == [image["items"][0]["id"]] and plan.slug == slug
    assert api.get_collection(slug).items[0].note == notes[image["items"][0]["id"]]


def test_a_dry_run_plans_every_bundled_entry_and_changes_nothing(hub, tmp_path, capsys):
    path = _copy_registry(tmp_path)
    hub.reset_count()
    assert cli_main(["publish", "--org", "dry-zoo", "--registry", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    bundled = sorted(n for n, e in _entries(path).items()
                     if e.weights and (bundled_mirror() / e.weights.repo / e.weights.file).is_file())
    assert bundled
    for name in bundled:
        assert f"  {name}: weights.revision null -> (the new commit)" in out
        assert f"  {name}: weights.repo reszoo/" in out  # moved to the org asked for
    assert "dry-zoo/ppo-lunarlander-resmlp: new repo; would upload model.safetensors" in out
    assert "plain.safetensors" in out and "learning_curve.png" in out
    assert path.read_bytes() == (ROOT / "registry.yaml").read_bytes()
    assert all(method == "GET" for method, _ in hub.requests)
    assert not hub.collections("dry-zoo")


def test_publishing_to_another_org_moves_the_entry_and_leaves_its_twin(hub, tmp_path):
    path = _copy_registry(tmp_path)
    report = publish(["resnet-mnist"], org="zoo-move", registry=path, collections=False)
    entries = _entries(path)
    w, twin = entries["resnet-mnist"].weights, entries["resnet-mnist-plain"].weights
    assert (w.repo, w.revision, w.pin_note) == ("zoo-move/resnet-mnist", report.repos[0].commit, None)
    assert (twin.repo, twin.revision) == ("reszoo/resnet-mnist-plain", None) and twin.pin_note


def test_weights_that_differ_from_their_pin_are_not_published(hub, tmp_path):
    path = _copy_registry(tmp_path)
    mirror = tmp_path / "mirror"
    bad = mirror / "reszoo" / "sngan-mnist" / "model.safetensors"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"not the pinned weights")
    hub.reset_count()
    with pytest.raises(IntegrityError, match="is not the registry's pin"):
        publish(["sngan-mnist"], org="zoo-bad", registry=path, mirror=mirror)
    assert not any(method == "POST" for method, _ in hub.requests)
    assert path.read_bytes() == (ROOT / "registry.yaml").read_bytes()


def test_an_adapter_is_published_with_peft_files_and_its_base_pins(hub, tmp_path):
    """An adapter entry (base: NAME) ships PEFT's adapter_config.json, and config.json names the base's pins."""
    base = publish_tiny_base(hub)
    adapter = b"adapter bytes stand in for adapter_model.safetensors"
    mirror = tmp_path / "mirror" / "zoo-lora" / "tiny-lora"
    mirror.mkdir(parents=True)
    (mirror / "adapter_model.safetensors").write_bytes(adapter)
    (mirror / "adapter_config.json").write_text('{"peft_type": "LORA", "r": 4}\n')
    entry = {**base, "name": "tiny-lora", "base": "tiny-base", "arch_args": {"num_classes": 10},
             "weights": {"repo": "zoo-lora/tiny-lora", "file": "adapter_model.safetensors", "revision": None,
                         "sha256": hashlib.sha256(adapter).hexdigest(), "pin_note": "trained here"}}
    path = tmp_path / "registry.yaml"
    path.write_text(yaml.safe_dump({"models": [base, entry]}, sort_keys=False))
    report = publish(["tiny-lora"], org="zoo-lora", registry=path, mirror=tmp_path / "mirror", collections=False)
    (plan,) = report.repos
    assert set(plan.upload) == {"adapter_model.safetensors", "adapter_config.json", "config.json", "README.md"}
    api = HfApi()
    config = json.loads(Path(api.hf_hub_download("zoo-lora/tiny-lora", "config.json", revision=plan.commit)).read_text())
    assert config["weights_file"] == "adapter_model.safetensors" and config["base"] == "tiny-base"
    assert config["base_weights"] == {k: base["weights"][k] for k in ("repo", "revision", "sha256")}
    readme = Path(api.hf_hub_download("zoo-lora/tiny-lora", "README.md", revision=plan.commit)).read_text()
    assert "base_model: zoo-lora/tiny-base" in readme and "base_model_relation: adapter" in readme


def publish_tiny_base(hub) -> dict:
    """A pinned 10-class resnet_mnist entry on the loopback Hub (the adapter's base)."""
    from helpers import tiny_entry

    data = b"base weights"
    commit = hub.add_repo("zoo-lora/tiny-base", {"model.safetensors": data})
    return tiny_entry("tiny-base", "zoo-lora/tiny-base", revision=commit, sha256=hashlib.sha256(data).hexdigest())


def test_cli_publish_errors_are_one_line(hub, tmp_path, capsys):
    path = _copy_registry(tmp_path)
    assert cli_main(["publish", "no-such-model", "--org", ORG, "--registry", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("reszoo: error: unknown model 'no-such-model'") and err.count("\n") == 1
    with pytest.raises(UnknownModelError):
        publish(["no-such-model"], org=ORG, registry=path)


# --------------------------------------------------------------------------- the loopback Hub's collections


def test_loopback_hub_collections_answer_huggingface_hub_as_the_hub_does(hub):
    api = HfApi()
    hub.add_repo("coll-test/a", {"x.txt": b"a"})
    hub.add_repo("coll-test/b", {"x.txt": b"b"})
    made = api.create_collection("Test things", namespace="coll-test", description="two repos")
    assert made.slug.startswith("coll-test/test-things-") and made.items == []
    again = api.create_collection("Test things", namespace="coll-test", exists_ok=True)  # 409 -> the same one
    assert again.slug == made.slug
    with pytest.raises(HfHubHTTPError) as err:
        api.create_collection("Test things", namespace="coll-test")
    assert err.value.response.status_code == 409
    api.add_collection_item(made.slug, "coll-test/a", "model", note="first")
    api.add_collection_item(made.slug, "coll-test/b", "model")
    api.add_collection_item(made.slug, "coll-test/a", "model", exists_ok=True)  # 409 -> unchanged
    with pytest.raises(HfHubHTTPError) as err:
        api.add_collection_item(made.slug, "coll-test/missing", "model")
    assert err.value.response.status_code == 404
    with pytest.raises(HfHubHTTPError) as err:
        api.add_collection_item(made.slug, "coll-test/b", "model", note="x" * 501)
    got = api.get_collection(made.slug)
    assert [(i.item_id, i.note, i.position) for i in got.items] == [("coll-test/a", "first", 0), ("coll-test/b", None, 1)]
    api.update_collection_item(made.slug, got.items[1].item_object_id, note="second", position=0)
    api.update_collection_metadata(made.slug, description="two repos, noted")
    got = api.get_collection(made.slug)
    assert [(i.item_id, i.note) for i in got.items] == [("coll-test/b", "second"), ("coll-test/a", "first")]
    assert got.description == "two repos, noted"
    assert [c.slug for c in api.list_collections(owner="coll-test")] == [made.slug]
    api.delete_collection_item(made.slug, got.items[0].item_object_id)
    assert [i.item_id for i in api.get_collection(made.slug).items] == ["coll-test/a"]
    api.delete_collection(made.slug)
    assert list(api.list_collections(owner="coll-test")) == []


def test_without_the_registry_writer_nothing_is_uploaded(hub, tmp_path, monkeypatch):
    """The commits made must be recorded in registry.yaml: without ruamel.yaml, publishing stops first."""
    import sys

    from reszoo.errors import ReszooError

    path = _copy_registry(tmp_path)
    monkeypatch.setitem(sys.modules, "ruamel.yaml", None)  # as if it were not installed
    hub.reset_count()
    with pytest.raises(ReszooError, match=r"needs ruamel\.yaml .*pip install 'reszoo\[publish\]'"):
        publish(["sngan-mnist"], org="zoo-noyaml", registry=path)
    assert hub.requests == []
    assert publish(["sngan-mnist"], org="zoo-noyaml", registry=path, dry_run=True).repos  # a dry run writes nothing


def test_naming_one_entry_of_a_shared_repo_publishes_both(hub, tmp_path):
    """An RL agent and its plain twin share a repo: its card and config.json are the agent's, whichever is named."""
    path = _copy_registry(tmp_path)
    report = publish(["ppo-acrobot-resmlp-plain"], org="zoo-shared", registry=path, collections=False)
    (plan,) = report.repos
    assert plan.entries == ["ppo-acrobot-resmlp", "ppo-acrobot-resmlp-plain"]
    assert {"model.safetensors", "plain.safetensors"} <= set(plan.upload)
    config = json.loads(Path(HfApi().hf_hub_download(plan.repo, "config.json", revision=plan.commit)).read_text())
    assert config["name"] == "ppo-acrobot-resmlp"
    entries = _entries(path)
    assert entries["ppo-acrobot-resmlp"].weights.revision == entries["ppo-acrobot-resmlp-plain"].weights.revision == plan.commit
