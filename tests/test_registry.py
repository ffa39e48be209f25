"""The registry: validation with errors that name entry and field, lookup, listing, lazy import."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

import reszoo
from reszoo.registry import RegistryError, UnknownModelError, load_registry, parse_entry

ROOT = Path(__file__).resolve().parent.parent

GOOD = {
    "name": "demo-net",
    "aliases": ["demo"],
    "domain": "image",
    "task": "image-classification",
    "arch": "resnet18",
    "arch_args": {"num_classes": 2},
    "weights": {"repo": "org/demo", "file": "model.safetensors", "revision": "a" * 40, "sha256": "b" * 64},
    "labels": ["cat", "dog"],
    "license": "mit",
    "metrics": [{"dataset": "d", "split": "test", "metric": "accuracy", "value": 0.9,
                 "source": {"kind": "measured", "script": "scripts/x.py"}}],
}


def _with(**changes):
    raw = {**GOOD, **changes}
    return {k: v for k, v in raw.items() if v is not ...}


def _weights(**changes):
    return _with(weights={k: v for k, v in {**GOOD["weights"], **changes}.items() if v is not ...})


@pytest.mark.parametrize(
    ("raw", "field", "needle"),
    [
        (_with(domain="audio"), "domain", "expected one of"),
        (_with(task=...), "task", "missing"),
        (_with(license=...), "license", "missing"),
        (_with(name="Bad Name"), "name", "lowercase"),
        (_with(colour="red"), "colour", "unknown field"),
        (_weights(revision="main"), "weights.revision", "40-hex"),
        (_weights(sha256="xyz"), "weights.sha256", "64 lowercase hex"),
        (_weights(revision=None), "weights.revision", "pin_note"),
        (_weights(format="onnx"), "weights.format", "expected one of"),
        (_weights(repo="noslash"), "weights.repo", "owner/name"),
        (_with(labels=["a", "b", "c"]), "labels", "num_classes"),
        (_with(metrics=[{"dataset": "d", "split": "t", "metric": "m", "value": "high",
                         "source": {"kind": "measured", "script": "s.py"}}]), "metrics[0].value", "number"),
        (_with(metrics=[{"dataset": "d", "split": "t", "metric": "m", "value": 1,
                         "source": {"kind": "measured"}}]), "metrics[0].source.script", "names the script"),
        (_with(metrics=[{"dataset": "d", "split": "t", "metric": "m", "value": 1,
                         "source": {"kind": "reported"}}]), "metrics[0].source.url", "links"),
    ],
)
def test_bad_entries_name_entry_and_field(raw, field, needle):
    with pytest.raises(RegistryError) as err:
        parse_entry(raw)
    msg = str(err.value)
    assert f"field {field!r}" in msg and needle in msg
    if raw.get("name") == "demo-net":
        assert "'demo-net'" in msg


def test_good_entry_is_typed():
    e = parse_entry(GOOD)
    assert e.weights.revision == "a" * 40 and e.labels == ("cat", "dog") and e.num_classes == 2
    assert e.metrics[0].source.measured and e.metrics[0].value == 0.9
    assert parse_entry(e.to_dict()) == e  # plain-data round trip


def test_unknown_pin_with_note_is_accepted():
    e = parse_entry(_weights(revision=None, pin_note="not published with a commit"))
    assert e.weights.revision is None and "not published" in e.weights.pin_note


def _write_registry(tmp_path, entries):
    path = tmp_path / "registry.yaml"
    path.write_text(yaml.safe_dump({"models": entries}))
    return path


def test_registry_file_errors_and_duplicates(tmp_path, monkeypatch):
    path = _write_registry(tmp_path, [GOOD, _with(name="other", aliases=["demo"])])
    with pytest.raises(RegistryError, match="'demo' is already used by 'demo-net'"):
        load_registry(path)
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: {a: 1}\n")
    with pytest.raises(RegistryError, match="top-level 'models:' list"):
        load_registry(bad)


def test_lookup_listing_and_close_names(tmp_path, monkeypatch):
    entries = [_with(name=n, aliases=[]) for n in ("net-10", "net-2", "net-1", "other-1")]
    entries[0]["domain"] = "text"
    monkeypatch.setenv("RESZOO_REGISTRY", str(_write_registry(tmp_path, entries)))
    assert reszoo.list_models() == ["net-1", "net-2", "net-10", "other-1"]  # natural order
    assert reszoo.list_models("net-*", domain="image") == ["net-1", "net-2"]
    assert reszoo.list_models(task="nothing") == []
    assert reszoo.info("net-2").name == "net-2"
    with pytest.raises(UnknownModelError, match="did you mean 'net-1'"):
        reszoo.info("net-01")
    with pytest.raises(ValueError, match="unknown domain"):
        reszoo.list_models(domain="audio")


def test_project_registry_is_valid_and_pins_are_well_formed():
    reg = load_registry(ROOT / "registry.yaml")
    for entry in {e.name: e for e in reg.values()}.values():
        w = entry.weights
        assert w is not None, entry.name
        assert w.revision or w.pin_note, entry.name
        for metric in entry.metrics:
            if metric.source.measured:
                assert (ROOT / metric.source.script.split()[0]).is_file(), (entry.name, metric.source.script)


def test_import_is_light():
    code = textwrap.dedent(
        """
        import sys, reszoo
        reszoo.list_models(); reszoo.info
        heavy = [m for m in ("torchvision", "torchaudio", "transformers", "timm", "gymnasium", "speechbrain")
                 if m in sys.modules]
        print(",".join(heavy))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == ""


# --------------------------------------------------------------------------- hostile registry files

_BOMB = "\n".join(
    ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    + [f"{n}: &{n} [{', '.join(['*' + p] * 9)}]" for p, n in zip("abcdefgh", "bcdefghi")]
    + ["models: *i"]
)


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (_BOMB, "aliases expand to more than"),
        ("models:\n- !!python/object/apply:os.system ['echo pwned > PWNED']\n", "could not determine a constructor"),
        ("models:\n- !!python/name:os.system\n", "could not determine a constructor"),
        (bytes(range(256)) * 4, "not a UTF-8 text file"),
        ("models: []\n\x00\n", "NUL bytes"),
        ("models: [\n", "not a plain-data YAML file (line"),
        ("models: &a [*a]\n", "expected a mapping"),
    ],
    ids=["alias-bomb", "python-object", "python-name", "binary", "nul", "truncated", "recursive-alias"],
)
def test_hostile_registry_file_is_one_clear_error(tmp_path, monkeypatch, content, needle):
    path = tmp_path / "registry.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RegistryError) as info:
        load_registry(path)
    message = str(info.value)
    assert needle in message and "\n" not in message
    assert not (tmp_path / "PWNED").exists()  # no tag ever builds a Python object


def test_alias_bomb_is_refused_quickly_through_the_cli(tmp_path):
    path = tmp_path / "registry.yaml"
    path.write_text(_BOMB)
    proc = subprocess.run([sys.executable, "-m", "reszoo.cli", "list"], capture_output=True, text=True, timeout=60,
                          env={**__import__("os").environ, "RESZOO_REGISTRY": str(path)})
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [f"reszoo: error: {path}: YAML aliases expand to more than 1,000,000 nodes; refused (an alias bomb?)"]


def test_small_anchors_still_work(tmp_path):
    path = tmp_path / "registry.yaml"
    path.write_text(textwrap.dedent("""\
        x-license: &lic mit
        models:
          - {name: a-net, domain: image, task: t, arch: resnet18, license: *lic}
          - {name: b-net, domain: image, task: t, arch: resnet18, license: *lic}
        """))
    assert [e.license for e in load_registry(path).values()] == ["mit", "mit"]


def test_missing_registry_file_names_it(tmp_path):
    with pytest.raises(RegistryError, match="cannot be read"):
        load_registry(tmp_path / "nope.yaml")
