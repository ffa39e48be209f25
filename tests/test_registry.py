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


def test_one_registry_lookup(tmp_path, monkeypatch):
    """``reszoo.info`` is the registry lookup (no second name for it); ``reszoo.api.resolve_entry``, which
    also reads hf:// URIs and folders, gives a registry name's entry through it."""
    from reszoo import api, registry

    monkeypatch.setenv("RESZOO_REGISTRY", str(_write_registry(tmp_path, [_with(name="net-1", aliases=["n1"])])))
    assert reszoo.info is registry.info and not hasattr(registry, "get_entry")
    assert api.resolve_entry("n1") is reszoo.info("net-1")
    with pytest.raises(UnknownModelError, match="did you mean 'net-1'"):
        api.resolve_entry("net-2")


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


# --------------------------------------------------------------------------- defaults, plain twins, runtime, figures

_FAMILY = {
    "name": "fam-net",
    "aliases": ["fam"],
    "domain": "rl",
    "task": "reinforcement-learning",
    "arch": "resmlp-discrete",
    "arch_args": {"obs_dim": 4, "n_actions": 2, "width": 8, "depth": 1},
    "weights": {"repo": "org/fam-net", "sha256": "a" * 64},
    "preprocess": {"observation_shape": [4], "observation_dtype": "float32"},
    "runtime": {"env_id": "CartPole-v1"},
    "metrics": [{"dataset": "CartPole-v1", "split": "evaluation", "metric": "mean_reward", "value": 500.0,
                 "source": {"kind": "measured", "script": "scripts/train_rl.py"}}],
    "recipe": "python scripts/train_rl.py fam-net",
    "description": "The residual agent.",
    "limitations": "One seed.",
    "tags": ["rl", "simba"],
    "usage": 'agent = reszoo.load("fam-net")',
    "extra": {"params": 10, "plain_only_later": 1, "residual_result": {"mean": 500.0}},
    "figures": {"learning_curve": "learning_curve.png"},
}
_TRAINED = {"weights": {"file": "model.safetensors", "format": "safetensors", "pin_note": "trained here; not pushed"},
            "license": "apache-2.0", "paper": {"title": "SimBa", "url": "https://arxiv.org/abs/2410.09754"}}


def _registry(tmp_path, entries, defaults=None, **top):
    path = tmp_path / "registry.yaml"
    doc = {**({"defaults": defaults} if defaults is not None else {}), **top, "models": entries}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _family(**changes):
    return {k: v for k, v in {**_FAMILY, "defaults": "trained-here", **changes}.items() if v is not ...}


_PLAIN = {
    "weights": {"file": "plain.safetensors", "sha256": "b" * 64},
    "metrics": [{"dataset": "CartPole-v1", "split": "evaluation", "metric": "mean_reward", "value": 480.0,
                 "source": {"kind": "measured", "script": "scripts/train_rl.py"}}],
    "recipe": "python scripts/train_rl.py fam-net --variant plain",
    "extra": {"residual_result": None, "plain_result": {"mean": 480.0}},
}


def test_plain_twin_expands_into_a_complete_entry(tmp_path):
    reg = load_registry(_registry(tmp_path, [_family(plain=_PLAIN)], {"trained-here": _TRAINED}))
    base, twin = reg["fam-net"], reg["fam-net-plain"]
    assert reg["fam"] is base and "fam-plain" not in reg  # aliases are the entry's own
    # the same model without its skips, linked both ways
    assert twin.arch_args == {**base.arch_args, "residual": False} and "residual" not in base.arch_args
    assert (base.twin, twin.twin) == ("fam-net-plain", "fam-net")
    assert twin.tags == ("rl", "simba", "plain-twin") and base.tags == ("rl", "simba")
    # inherited: what both share (defaults included); the weights key by key
    assert (twin.domain, twin.task, twin.arch, twin.license, twin.paper) == (base.domain, base.task, base.arch, "apache-2.0", base.paper)
    assert twin.preprocess == base.preprocess and twin.runtime == {"env_id": "CartPole-v1"}
    assert (twin.weights.repo, twin.weights.file, twin.weights.sha256, twin.weights.pin_note) == (
        "org/fam-net", "plain.safetensors", "b" * 64, "trained here; not pushed")
    # overridden, and extra layered key by key (null removes an inherited fact)
    assert twin.metrics[0].value == 480.0 and twin.recipe.endswith("--variant plain")
    assert twin.extra == {"params": 10, "plain_only_later": 1, "plain_result": {"mean": 480.0}}
    # not inherited: what describes one model only (description and limitations get a default)
    assert twin.usage is None and twin.figures == {} and twin.aliases == ()
    assert twin.description.startswith("The plain twin of fam-net:") and "ablation baseline" in twin.limitations
    # a standalone config: its plain data reads back as the same entry
    assert parse_entry(twin.to_dict()) == twin and twin.to_dict()["twin"] == "fam-net"


def test_twin_link_is_shown_in_both_cards(tmp_path, monkeypatch):
    monkeypatch.setenv("RESZOO_REGISTRY", str(_registry(tmp_path, [_family(plain=_PLAIN)], {"trained-here": _TRAINED})))
    assert reszoo.list_models() == ["fam-net", "fam-net-plain"]
    assert "| plain twin | `fam-net-plain` (the same network without residual connections) |" in reszoo.card("fam-net").text
    plain_card = reszoo.card("fam-net-plain").text
    assert "| residual twin | `fam-net` (the same network with residual connections) |" in plain_card
    assert "| env id | CartPole-v1 |" in plain_card and "learning_curve.png" not in plain_card  # runtime shown; no figure


@pytest.mark.parametrize(
    ("plain", "field", "needle"),
    [
        ({**_PLAIN, "domain": "image"}, "plain.domain", "keeps its entry's domain, task, arch"),
        ({**_PLAIN, "arch": "resmlp-sac"}, "plain.arch", "declare a separate entry"),
        ({**_PLAIN, "name": "other"}, "plain.name", "is named 'fam-net-plain'"),
        ({**_PLAIN, "plain": {}}, "plain.plain", "not a field a plain twin can set"),
        ({k: v for k, v in _PLAIN.items() if k != "weights"}, "plain.weights", "weights of its own"),
        ({**_PLAIN, "weights": {"sha256": "c" * 64}}, "plain.weights", "would load fam-net's own file"),
        ([1, 2], "plain", "expected a mapping"),
    ],
)
def test_bad_plain_twins_name_entry_and_field(tmp_path, plain, field, needle):
    with pytest.raises(RegistryError) as err:
        load_registry(_registry(tmp_path, [_family(plain=plain)], {"trained-here": _TRAINED}))
    assert f"registry entry 'fam-net', field {field!r}" in str(err.value) and needle in str(err.value)


def test_plain_twin_colliding_with_an_entry_is_refused(tmp_path):
    explicit = _family(name="fam-net-plain", aliases=[], plain=...)
    with pytest.raises(RegistryError, match="'fam-net', field 'plain': declares the plain twin 'fam-net-plain', which is also an entry"):
        load_registry(_registry(tmp_path, [_family(plain=_PLAIN), explicit], {"trained-here": _TRAINED}))
    with pytest.raises(RegistryError, match="'fam-net', field 'plain': declares the plain twin"):  # in either order
        load_registry(_registry(tmp_path, [explicit, _family(plain=_PLAIN)], {"trained-here": _TRAINED}))


def test_plain_twin_errors_say_where_the_twin_was_declared(tmp_path):
    bad = {**_PLAIN, "runtime": {"env_id": ""}}
    with pytest.raises(RegistryError, match=r"'fam-net-plain', field 'runtime.env_id'.*declared by 'fam-net''s 'plain:'"):
        load_registry(_registry(tmp_path, [_family(plain=bad)], {"trained-here": _TRAINED}))


def test_twin_is_never_written_by_hand(tmp_path):
    with pytest.raises(RegistryError, match="field 'twin': set by the registry"):
        load_registry(_registry(tmp_path, [_family(twin="fam-net-plain")], {"trained-here": _TRAINED}))


def test_defaults_are_applied_in_order_and_overridable(tmp_path):
    sets = {
        "trained-here": _TRAINED,
        "family": {"license": "mit", "preprocess": {"observation_shape": [4], "observation_dtype": "float64"},
                   "extra": {"family_fact": "shared", "dropped": 1}},
    }
    entry = _family(defaults=["trained-here", "family"], license=..., preprocess={"observation_dtype": "float32"},
                    extra={"params": 10, "dropped": None})
    own = _family(name="own-license", aliases=[], defaults=["trained-here", "family"], license="bsd-3-clause")
    reg = load_registry(_registry(tmp_path, [entry, own], sets))
    e = reg["fam-net"]
    assert e.license == "mit" and e.paper["title"] == "SimBa"  # the later set wins; both apply
    assert e.weights.file == "model.safetensors" and e.weights.sha256 == "a" * 64  # defaults and the entry's pin, key by key
    assert e.preprocess == {"observation_shape": [4], "observation_dtype": "float32"}  # one key overridden, order kept
    assert list(e.preprocess) == ["observation_shape", "observation_dtype"]
    assert e.extra == {"family_fact": "shared", "params": 10}  # null removes what a set gave
    assert reg["own-license"].license == "bsd-3-clause"


@pytest.mark.parametrize(
    ("defaults", "entry", "needle"),
    [
        ({"trained-here": _TRAINED}, _family(defaults="nope"), "'fam-net', field 'defaults': no defaults set 'nope'"),
        ({"trained-here": _TRAINED}, _family(defaults=[1]), "'fam-net', field 'defaults': expected a defaults set name"),
        ({"trained-here": {**_TRAINED, "metrics": []}}, _family(), "defaults 'trained-here', field 'metrics': belongs to one entry"),
        ({"trained-here": {**_TRAINED, "plain": {}}}, _family(), "defaults 'trained-here', field 'plain': belongs to one entry"),
        ({"trained-here": {**_TRAINED, "colour": 1}}, _family(), "defaults 'trained-here', field 'colour': unknown field"),
        ({"trained-here": {"weights": {"sha256": "a" * 64}}}, _family(), "field 'weights.sha256': a pin names one file"),
        ({"Bad Set": {}}, _family(), "defaults set name 'Bad Set'"),
        ([1], _family(), "'defaults:' must map set names to entry fields"),
    ],
)
def test_bad_defaults_are_one_clear_error(tmp_path, defaults, entry, needle):
    with pytest.raises(RegistryError) as err:
        load_registry(_registry(tmp_path, [entry], defaults))
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_unknown_top_level_key_is_refused(tmp_path):
    path = _registry(tmp_path, [_family(defaults=...)], default={"x": {}})  # a typo of 'defaults:'
    with pytest.raises(RegistryError, match="unknown top-level key 'default'"):
        load_registry(path)


@pytest.mark.parametrize(
    ("changes", "field", "needle"),
    [
        ({"runtime": {"envid": "CartPole-v1"}}, "runtime.envid", "unknown runtime setting (known for domain 'rl': env_id)"),
        ({"runtime": {"env_id": ""}}, "runtime.env_id", "expected an environment id"),
        ({"domain": "gan", "runtime": {"truncation": 1.5}}, "runtime.truncation", "expected a number in (0, 1]"),
        ({"domain": "speech", "runtime": {"verify_threshold": "high"}}, "runtime.verify_threshold", "cosine score"),
        ({"domain": "image", "runtime": {"env_id": "x"}}, "runtime.env_id", "domain 'image' has none"),
        ({"runtime": ["env_id"]}, "runtime", "expected dict"),
        ({"figures": {"curve": "../../etc/passwd.png"}}, "figures.curve", "unsafe file name"),
        ({"figures": {"curve": "/abs/curve.png"}}, "figures.curve", "absolute path"),
        ({"figures": {"curve": "weights.safetensors"}}, "figures.curve", "expected an image file"),
        ({"figures": {"curve": 3}}, "figures.curve", "unsafe file name"),
        ({"figures": {"a/b": "x.png"}}, "figures", "a figure name is"),
        ({"preprocess": {"env_id": "Acrobot-v1"}}, "preprocess.env_id", "disagrees with runtime.env_id"),
    ],
)
def test_runtime_and_figures_errors_name_entry_and_field(changes, field, needle):
    with pytest.raises(RegistryError) as err:
        parse_entry({k: v for k, v in {**_FAMILY, "weights": {**_FAMILY["weights"], **_TRAINED["weights"]},
                                       "license": "mit", **changes}.items()})
    assert f"registry entry 'fam-net', field {field!r}" in str(err.value) and needle in str(err.value)


def test_runtime_settings_in_their_old_places_are_read_as_before():
    """A config.json saved before ``runtime`` existed keeps its behaviour: the settings move over."""
    base = {"name": "old", "task": "t", "arch": "a", "license": "mit"}
    rl = parse_entry({**base, "domain": "rl", "preprocess": {"env_id": "CartPole-v1", "observation_shape": [4]}})
    assert rl.runtime == {"env_id": "CartPole-v1"} and rl.preprocess == {"observation_shape": [4]}
    gan = parse_entry({**base, "domain": "gan", "preprocess": {"truncation": None, "output_range": [0, 1]}})
    assert gan.runtime == {} and gan.preprocess == {"output_range": [0, 1]}  # null: not set
    speech = parse_entry({**base, "domain": "speech", "extra": {"verify_threshold": 0.4, "params": 3}})
    assert speech.runtime == {"verify_threshold": 0.4} and speech.extra == {"params": 3}
    text = parse_entry({**base, "domain": "text", "preprocess": {"max_length": 8, "truncation": 1}})
    assert text.runtime == {} and text.preprocess["truncation"] == 1  # other domains' keys are not touched


def test_domains_read_their_runtime_settings(tmp_path, monkeypatch):
    entries = [
        {**_family(defaults=...), "license": "mit", "weights": None, "runtime": {"env_id": "Acrobot-v1"}},
        {"name": "gen", "domain": "gan", "task": "class-conditional-image-generation", "arch": "sngan_g28",
         "arch_args": {"ch": 4, "z_dim": 8, "num_classes": 0}, "license": "mit", "runtime": {"truncation": 0.7}},
        {"name": "spk", "domain": "speech", "task": "speaker-verification", "arch": "ecapa_tdnn_small",
         "license": "mit", "preprocess": {"kind": "fbank"}, "runtime": {"verify_threshold": 0.6}},
    ]
    monkeypatch.setenv("RESZOO_REGISTRY", str(_registry(tmp_path, entries)))
    assert reszoo.load("fam-net", pretrained=False).env_id == "Acrobot-v1"
    assert reszoo.load("gen", pretrained=False).default_truncation == 0.7
    assert reszoo.load("spk", pretrained=False).verify_threshold == 0.6


def test_project_registry_uses_the_explicit_fields():
    """registry.yaml: plain twins declared by their entries, run-time settings and figures in their
    own fields (none left in preprocess/extra), and every figure present in the bundled mirror."""
    raw = yaml.safe_load((ROOT / "registry.yaml").read_text(encoding="utf-8"))
    written = {item["name"] for item in raw["models"]}
    reg = load_registry(ROOT / "registry.yaml")
    entries = {e.name: e for e in reg.values()}
    twins = [e for e in entries.values() if "plain-twin" in e.tags]
    assert twins and all(e.name not in written and entries[e.twin].twin == e.name for e in twins)
    for e in entries.values():
        assert not any(k in e.preprocess for k in ("env_id", "truncation")), e.name
        assert not any(isinstance(v, str) and v.endswith(".png") and "/" not in v for v in e.extra.values()), e.name
        for file in e.figures.values():
            assert (ROOT / "weights" / e.weights.repo / file).is_file(), (e.name, file)
    for item in raw["models"]:
        assert not any(k in (item.get("preprocess") or {}) for k in ("env_id", "truncation")), item["name"]
        assert "verify_threshold" not in (item.get("extra") or {}), item["name"]


# --------------------------------------------------------------------------- recipes writing the new layout


_WRITTEN = """\
# header comment, kept
defaults:
  trained-here:
    weights: {file: model.safetensors, format: safetensors, pin_note: "trained here; not pushed"}
    license: apache-2.0
models:
# ------------------------------------------------ rl
  - name: fam-net
    defaults: trained-here
    domain: rl
    task: reinforcement-learning
    arch: resmlp-discrete
    arch_args: {obs_dim: 4, n_actions: 2}
    weights: {repo: org/fam-net, sha256: %s, size: 10}
    runtime: {env_id: CartPole-v1}
    extra:
      params: 10
      shared: same for both
    figures: {learning_curve: learning_curve.png}
    plain:
      weights: {file: plain.safetensors, sha256: %s, size: 10}
      figures: {learning_curve: learning_curve.png}
# ------------------------------------------------ next section
  - name: other-net
    domain: image
    task: image-classification
    arch: resnet18
    license: mit
""" % ("a" * 64, "b" * 64)


def _registry_io():
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import registry_io
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    return registry_io


def test_recipes_write_a_plain_twin_into_its_entry_and_only_what_differs(tmp_path):
    rio = _registry_io()
    path = tmp_path / "registry.yaml"
    path.write_text(_WRITTEN)
    metric = {"dataset": "CartPole-v1", "split": "evaluation", "metric": "mean_reward", "value": 480.0,
              "source": {"kind": "measured", "script": "scripts/train_rl.py"}}
    twin = rio.read_entry("fam-net-plain", path)
    assert twin["name"] == "fam-net-plain" and twin["weights"]["file"] == "plain.safetensors"  # read as expanded
    # what train_rl writes for the twin: its full arch_args, extra and runtime; the pins of its file
    rio.update_entry("fam-net-plain", path, arch_args={"obs_dim": 4, "n_actions": 2, "residual": False},
                     metrics=[metric], weights={"sha256": "c" * 64, "size": 10}, runtime={"env_id": "CartPole-v1"},
                     extra={"params": 10, "shared": "same for both", "residual_twin": "fam-net"}, license="apache-2.0")
    doc = yaml.safe_load(path.read_text())
    assert [m["name"] for m in doc["models"]] == ["fam-net", "other-net"]  # no entry of its own
    plain = doc["models"][0]["plain"]
    assert plain["weights"] == {"file": "plain.safetensors", "sha256": "c" * 64, "size": 10}  # pins written out
    assert plain["extra"] == {"residual_twin": "fam-net"} and plain["metrics"] == [metric]  # only what differs
    assert not {"arch_args", "runtime", "license"} & set(plain)  # inherited as given: not repeated
    text = path.read_text()
    for comment in ("# header comment, kept\n", "# ------------------------------------------------ rl\n  - name: fam-net\n",
                    "# ------------------------------------------------ next section\n  - name: other-net\n"):
        assert comment in text  # comments stay where they were
    # the same results again: the file does not change
    rio.update_entry("fam-net-plain", path, metrics=[metric], weights={"sha256": "c" * 64, "size": 10},
                     extra={"params": 10, "shared": "same for both", "residual_twin": "fam-net"})
    assert path.read_text() == text
    twin_before = load_registry(path)["fam-net-plain"]
    # the residual entry retrained: its twin stays exactly what it was
    rio.update_entry("fam-net", path, weights={"sha256": "d" * 64}, extra={"params": 12, "shared": "changed", "new": 1},
                     license="apache-2.0")
    reg = load_registry(path)
    assert reg["fam-net"].extra == {"params": 12, "shared": "changed", "new": 1} and reg["fam-net"].weights.sha256 == "d" * 64
    assert reg["fam-net-plain"] == twin_before
    doc = yaml.safe_load(path.read_text())
    assert "license" not in doc["models"][0]  # equal to its defaults set: not repeated
    assert doc["models"][0]["plain"]["extra"] == {"residual_twin": "fam-net", "params": 10, "shared": "same for both", "new": None}


def test_listing_and_natural_key() -> None:
    """One capped listing for messages and cards ("a, b, … (12 in all)"), one natural order."""
    from reszoo._text import listing, natural_key

    assert listing(["a", "b"], 2) == "a, b"
    assert listing(iter("abcde"), 2) == "a, b, … (5 in all)"
    assert listing([("x: 1"), "y: 2", "z: 3"], 1, sep="; ") == "x: 1; … (3 in all)"
    assert listing([], 3) == ""
    assert sorted(["net-10", "net-2", "net-1", "a"], key=natural_key) == ["a", "net-1", "net-2", "net-10"]


def _numbers(value: object) -> list[float]:
    """Every number in a registry value: numbers, and numbers written in its text."""
    import re

    if isinstance(value, bool):
        return []
    if isinstance(value, int | float):
        return [float(value)]
    if isinstance(value, str):
        return [float(n) for n in re.findall(r"-?\d+(?:\.\d+)?", value.replace(",", ""))]
    if isinstance(value, dict):
        return [n for v in value.values() for n in _numbers(v)]
    if isinstance(value, list | tuple):
        return [n for v in value for n in _numbers(v)]
    return []


def test_readme_results_table_quotes_the_registry() -> None:
    """The README's table of models trained here is typed, so it is checked: every decimal number
    in a row's result columns is one of the registry's numbers for that model or its twin (as a
    value, a percentage of a fraction, in millions, or written in its ``extra``)."""
    import re

    registry = load_registry()
    rows = 0
    for line in (ROOT / "README.md").read_text(encoding="utf-8").splitlines():
        m = re.match(r"\| `([a-z0-9-]+)` \|[^|]*\|([^|]*)\|([^|]*)\|", line)
        if not m or m.group(1) not in registry:
            continue
        rows += 1
        entry = registry[m.group(1)]
        entries = [entry, *([registry[entry.twin]] if entry.twin in registry else [])]
        pool = [n for e in entries for n in [*(x.value for x in e.metrics), *_numbers(e.extra)]]
        for text in re.findall(r"[−-]?\d+\.\d+", m.group(2) + m.group(3)):
            value, places = float(text.replace("−", "-")), len(text.split(".")[1])
            assert any(round(p * k, places) == value for p in pool for k in (1, 100, 1e-6)), (
                f"README.md: {m.group(1)}'s {text} is none of the registry's numbers for it or its twin: stale?")
    assert rows >= 10
