"""What every architecture and every registry entry promises, checked on all of them (as timm's test suite
does over ``list_models()``); the domain test files keep what is particular to a domain.

Architectures (``helpers.architectures()``): build on the meta device; the residual form has only active
skips (or, for a plain-only architecture, is refused); the plain twin (``residual=False``) has no active skip
and no projection shortcut: it is the residual network minus its shortcut modules, uses every weight it
keeps, and computes another function with the same weights; a state dict survives safetensors and the
meta-build + ``assign`` load that ``reszoo.load`` does; ``num_classes`` replaces only the head. Entries
(``reszoo.list_models()``): build on meta with their arguments and match their labels and documented
parameter count; the same plain-twin and head rules; state-dict round trip; preprocessing builds offline;
the generated card passes the Hub's validation and describes the entry. And ``import reszoo`` stays light.

Everything runs offline, on the CPU, with narrow layers where a default is large (ImageNet ResNets,
BERT, BigGAN): the depth and layout of every block stay as built by default.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from huggingface_hub import ModelCard
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

import reszoo
from helpers import ROOT, architectures
from hub import validate_card
from reszoo import domains
from reszoo.nn import ResidualBlock, residual_blocks
from reszoo.speech.quartznet import QuartzNet
from reszoo.registry import Entry, info

ARCHS = architectures()
ENTRIES = reszoo.list_models()
ARCH_IDS = [f"{domain}:{arch}" for domain, arch in ARCHS]

# Arguments a builder has no default for (an environment's spaces, a generic ResNet's block list).
REQUIRED_ARGS: dict[tuple[str, str], dict[str, Any]] = {
    ("image", "resnet"): {"block": "basic", "layers": (1, 1), "widths": (8, 16)},
    ("rl", "resmlp-discrete"): {"obs_dim": 4, "n_actions": 2},
    ("rl", "resmlp-sac"): {"obs_dim": 3, "action_dim": 1},
    ("rl", "sb3-mlp-discrete"): {"obs_dim": 4, "n_actions": 2},
}
# Narrower layers for a small real instance, per domain; the number and kind of blocks stay the same.
# (Image ResNets get 8 channels per stage, however many stages they have: see narrow_args.)
NARROW: dict[str, dict[str, Any]] = {
    "text": {"vocab_size": 64, "hidden_size": 16, "num_heads": 2, "intermediate_size": 32, "max_position": 16},
    "speech": {"input_size": 16, "attention_channels": 8, "se_channels": 8, "embed_dim": 8},
    "gan": {"ch": 8},
}
# Architectures the domain's narrowing does not apply to (other knobs), with their own (or none).
NARROW_ARCH: dict[tuple[str, str], dict[str, Any]] = {
    ("speech", "quartznet15x5"): {}, ("speech", "quartznet5x5"): {}, ("speech", "quartznet_small"): {},
}
BIG = 2_000_000  # parameters: an entry's model above this is built with narrow layers for CPU checks
# Where a residual block keeps the modules that only exist to make the addition possible.
SHORTCUT_NAMES = ("downsample", "shortcut", "projection", "res")  # res: NeMo's Jasper/QuartzNet name
HEAVY = ("torchvision", "torchaudio", "transformers", "timm", "gymnasium", "peft", "matplotlib", "tokenizers",
         "sentence_transformers", "speechbrain", "soundfile", "stable_baselines3", "imageio", "PIL", "scipy",
         "pytorch_pretrained_biggan")


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread per module


# --------------------------------------------------------------------------- helpers


def build(domain: str, arch: str, args: dict[str, Any], device: str = "cpu") -> nn.Module:
    with torch.device(device):
        model = domains.get(domain).arch(arch)(**args).eval()
    if device != "meta":
        _settle_spectral_norms(model)
    return model


@torch.no_grad()
def _settle_spectral_norms(model: nn.Module, steps: int = 10) -> None:
    """Power-iterate the singular-vector estimates of spectrally normalised layers. A fresh layer's random
    ``u``, ``v`` give an arbitrary (even negative) sigma in eval mode, as torch's own legacy spectral_norm
    does; loaded models bring theirs from the checkpoint, built ones iterate while training."""
    for module in model.modules():
        if hasattr(module, "weight_u") and hasattr(module, "normalized_weight"):
            module.train()
            for _ in range(steps):
                module.normalized_weight()
            module.eval()


def narrow_args(domain: str, arch: str, args: dict[str, Any]) -> dict[str, Any]:
    """``args`` with the domain's narrow layers on top (their depth and layout unchanged)."""
    out = {**args, **NARROW_ARCH.get((domain, arch), NARROW.get(domain, {}))}
    if domain == "image":  # 64-512 channels per stage on ImageNet; 8 keeps every block and projection
        stages = len(build(domain, arch, args, "meta").stage_names)
        out |= {"widths": (8,) * stages, "stem_width": 8}
    return out


def small_args(domain: str, arch: str) -> dict[str, Any]:
    return narrow_args(domain, arch, REQUIRED_ARGS.get((domain, arch), {}))


def entry_args(entry: Entry) -> dict[str, Any]:
    """The entry's arguments, narrowed when its model is big."""
    model = meta_entry(entry.name, "default")
    if sum(p.numel() for p in model.parameters()) <= BIG:
        return dict(entry.arch_args)
    return narrow_args(entry.domain, entry.arch, dict(entry.arch_args))


# Built models are shared, read-only, by the tests (building is most of their time).


@functools.cache
def meta_model(domain: str, arch: str, residual: bool | None) -> nn.Module:
    """The architecture on the meta device with the arguments it needs (residual=None: the builder's default)."""
    args = REQUIRED_ARGS.get((domain, arch), {}) | ({} if residual is None else {"residual": residual})
    return build(domain, arch, args, "meta")


@functools.cache
def small_model(domain: str, arch: str, residual: bool | None) -> nn.Module:
    """A small real instance (seeded; residual=None: the builder's default)."""
    torch.manual_seed(0)
    args = small_args(domain, arch) | ({} if residual is None else {"residual": residual})
    return build(domain, arch, args)


@functools.cache
def meta_entry(name: str, variant: str) -> nn.Module:
    """Entry ``name`` built on the meta device: as registered ("default"), its plain twin ("plain"), its
    residual form ("residual"), or with a 7-class head ("head7")."""
    entry = info(name)
    if variant in ("plain", "residual"):
        entry = dataclasses.replace(entry, arch_args={**entry.arch_args, "residual": variant == "residual"})
    return reszoo.build(entry, num_classes=7 if variant == "head7" else None, device="meta")


def head_prefixes(model: nn.Module) -> tuple[str, ...]:
    return tuple(getattr(model, "head_prefixes", ()))


def forward(domain: str, model: nn.Module) -> list[Tensor]:
    """``model``'s outputs on a fixed dummy input of its domain (the same input on every call)."""
    from reszoo.gan import GeneratorMixin

    g = torch.Generator().manual_seed(0)
    if domain == "image":
        out = model(torch.rand(2, model.conv1.in_channels, 32, 32, generator=g))
    elif domain == "text":
        out = model(torch.randint(1, model.cfg.vocab_size, (2, 8), generator=g))
    elif isinstance(model, QuartzNet):  # features (batch, n_mels, frames) and each recording's frame count
        out = model(torch.randn(2, model.feat_in, 40, generator=g), torch.tensor([40, 31]))
    elif domain == "speech":
        out = model(torch.randn(2, 40, model.config["input_size"], generator=g))
    elif domain == "rl":
        shape = (2, *model.observation_shape)
        if model.observation_dtype == torch.uint8:
            out = model(torch.randint(0, 256, shape, generator=g, dtype=torch.uint8))
        else:
            out = model(torch.randn(shape, generator=g))
    elif isinstance(model, GeneratorMixin):  # what sample() runs, with gradients
        z = model.sample_noise(2, model.default_truncation, g)
        y = torch.randint(0, model.num_classes, (2,), generator=g) if model.num_classes else None
        out = model.generate(z, y, model.default_truncation)
    else:  # a discriminator: images in [-1, 1] (and their classes)
        x = torch.rand(2, model.blocks[0].conv1.in_channels, 28, 28, generator=g) * 2 - 1
        out = model(x, torch.randint(0, model.num_classes, (2,), generator=g) if model.num_classes else None)
    outs = list(out) if isinstance(out, tuple) else [out]
    assert all(o.isfinite().all() for o in outs)
    return outs


def outputs(domain: str, model: nn.Module) -> list[Tensor]:
    with torch.no_grad():
        return forward(domain, model)


def unused_parameters(model: nn.Module, run: Callable[[nn.Module], list[Tensor]]) -> set[str]:
    """Parameters the outputs of ``run(model)`` do not depend on at all (e.g. a pooler the pooling does not
    use): not in the autograd graph, whatever the values (a zero or saturated gradient still counts as used)."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    loss = sum(o.float().sum() for o in run(model))
    grads = torch.autograd.grad(loss, [p for _, p in named], allow_unused=True)
    return {n for (n, _), grad in zip(named, grads, strict=True) if grad is None}


def meta_reload(domain: str, arch: str, args: dict[str, Any], state: dict[str, Tensor]) -> nn.Module:
    """What ``reszoo.load`` does: build on meta, fill with ``assign=True`` (strict), recompute the
    non-persistent buffers; nothing may be left on the meta device."""
    model = build(domain, arch, args, "meta")
    model.load_state_dict(state, strict=True, assign=True)
    for module in model.modules():
        if hasattr(module, "init_non_persistent_buffers"):
            module.init_non_persistent_buffers()
    left = [n for n, t in (*model.named_parameters(), *model.named_buffers()) if t.is_meta]
    assert not left, f"still on the meta device after loading: {left[:5]} (init_non_persistent_buffers?)"
    return model.eval()


def assert_round_trip(domain: str, arch: str, args: dict[str, Any], model: nn.Module, tmp_path: Path) -> None:
    """``model`` (built with ``args``) through a safetensors file and a meta-device reload: same tensors, same outputs."""
    path = tmp_path / "model.safetensors"
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, path)
    again = meta_reload(domain, arch, args, load_file(path))
    state, loaded = model.state_dict(), again.state_dict()
    assert all(loaded[k].dtype == v.dtype and torch.equal(loaded[k], v) for k, v in state.items())
    # Bit-equal tensors, yet kernels may round differently on the file's (mmap-aligned) memory: ~1 ulp.
    for a, b in zip(outputs(domain, model), outputs(domain, again), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def assert_plain_twin(plain: nn.Module, residual: nn.Module) -> None:
    """No active skip, no projection-shortcut parameters; the residual network's state minus its shortcut
    modules, same shapes."""
    blocks = list(residual_blocks(plain))
    assert not [b for b in blocks if b.residual], "the plain twin has active skips"
    projections = [f"{type(b).__name__}.{name}" for b in blocks for name, child in b.named_children()
                   if name in SHORTCUT_NAMES and any(True for _ in child.parameters())]
    assert not projections, f"the plain twin has projection shortcuts: {projections}"
    plain_state, res_state = plain.state_dict(), residual.state_dict()
    assert set(plain_state) <= set(res_state), sorted(set(plain_state) - set(res_state))[:5]
    blocks_of_residual = set(residual_blocks(residual))
    shortcut_modules = tuple(f"{prefix}.{name}." if prefix else f"{name}." for prefix, block in residual.named_modules()
                             if block in blocks_of_residual for name in SHORTCUT_NAMES)
    extra = [k for k in res_state if k not in plain_state and not k.startswith(shortcut_modules)]
    assert not extra, f"the plain twin lacks more than the shortcut modules: {extra[:5]}"
    assert all(plain_state[k].shape == res_state[k].shape for k in plain_state)


def assert_head_replaced(default: nn.Module, replaced: nn.Module, num_classes: int) -> None:
    """Only keys under ``head_prefixes`` differ, and the head has ``num_classes`` outputs."""
    head = head_prefixes(default)
    a, b = default.state_dict(), replaced.state_dict()
    changed = sorted(k for k in set(a) | set(b) if k not in a or k not in b or a[k].shape != b[k].shape)
    assert all(k.startswith(head) for k in changed), f"num_classes changed more than the head {head}: {changed}"
    weights = {v.shape[0] for k, v in b.items() if k.startswith(head) and k.endswith("weight")}
    blank = 1 if hasattr(replaced, "blank") else 0  # a CTC head: the vocabulary and the blank
    assert weights == {num_classes + blank}, (head, weights)


# --------------------------------------------------------------------------- the checks themselves


class _Projected(ResidualBlock):
    """A block whose shortcut is a projection; ``keep`` keeps it in the plain twin (the mistake)."""

    def __init__(self, residual: bool = True, keep: bool = False, name: str = "shortcut") -> None:
        super().__init__(residual)
        self.branch = nn.Linear(4, 8)
        self.name = name
        self.add_module(name, nn.Linear(4, 8) if residual or keep else None)

    def forward(self, x: Tensor) -> Tensor:
        projection = getattr(self, self.name)
        return self.join(self.branch(x), projection(x) if projection is not None else None)


@pytest.mark.parametrize("name", ["shortcut", "skip_proj"])
def test_the_plain_twin_checks_catch_a_kept_projection(name: str) -> None:
    run = lambda m: [m(torch.ones(2, 4))]  # noqa: E731
    good, kept = _Projected(False, name=name), _Projected(False, keep=True, name=name)
    residual = _Projected(True, name=name)
    assert unused_parameters(good, run) == set() == unused_parameters(residual, run)
    assert unused_parameters(kept, run) == {f"{name}.weight", f"{name}.bias"}  # found under any name
    if name in SHORTCUT_NAMES:
        assert_plain_twin(good, residual)
        with pytest.raises(AssertionError, match="projection shortcuts"):
            assert_plain_twin(kept, residual)
    else:  # a shortcut module under a new name: SHORTCUT_NAMES must learn it
        with pytest.raises(AssertionError, match="lacks more than the shortcut modules"):
            assert_plain_twin(good, residual)
    with pytest.raises(AssertionError, match="active skips"):
        assert_plain_twin(residual, residual)


def test_the_base_class_decides_what_the_plain_twin_drops() -> None:
    """``make_projection`` builds nothing in the plain twin, ``shortcut_of`` computes nothing there, and
    ``init_branch_scale`` starts a branch at 0 only where a skip carries the input: every block asks these."""
    built: list[int] = []

    def build() -> nn.Module:
        built.append(1)
        return nn.Linear(2, 2)

    plain, residual = ResidualBlock(residual=False), ResidualBlock(residual=True)
    assert plain.make_projection(True, build) is None and not built
    assert residual.make_projection(False, build) is None and not built
    assert isinstance(residual.make_projection(True, build), nn.Linear) and built == [1]
    x, seen = torch.ones(1, 2), []
    assert plain.shortcut_of(x, seen.append) is None and not seen
    assert residual.shortcut_of(x) is x
    torch.testing.assert_close(residual.shortcut_of(x, lambda t: 2 * t), 2 * x)
    scale = nn.Parameter(torch.full((3,), 0.5))
    plain.init_branch_scale(scale)
    assert scale.tolist() == [1.0] * 3
    residual.init_branch_scale(scale)
    assert scale.tolist() == [0.0] * 3


# --------------------------------------------------------------------------- every architecture


def test_required_args_are_exactly_the_builders_without_defaults() -> None:
    """REQUIRED_ARGS names every builder that cannot build from defaults alone, and no other."""
    import inspect

    needs = set()
    for domain, arch in ARCHS:
        params = inspect.signature(domains.get(domain).arch(arch)).parameters.values()
        if any(p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) for p in params):
            needs.add((domain, arch))
    assert needs == set(REQUIRED_ARGS)


@pytest.mark.parametrize(("domain", "arch"), ARCHS, ids=ARCH_IDS)
def test_arch_builds_on_meta_with_a_residual_form_or_none(domain: str, arch: str) -> None:
    args = REQUIRED_ARGS.get((domain, arch), {})
    model = meta_model(domain, arch, None)
    assert all(t.is_meta for t in (*model.parameters(), *model.buffers()))
    blocks = list(residual_blocks(model))
    if blocks:
        assert all(b.residual for b in blocks), "the default build has inactive skips"
    else:  # a plain-only architecture (SB3's MLP policy): it says so rather than build a residual form
        with pytest.raises(ValueError):
            build(domain, arch, {**args, "residual": True}, "meta")


@pytest.mark.parametrize(("domain", "arch"), ARCHS, ids=ARCH_IDS)
def test_arch_plain_twin_has_no_skips_and_no_projections(domain: str, arch: str) -> None:
    assert_plain_twin(meta_model(domain, arch, False), meta_model(domain, arch, None))


@pytest.mark.parametrize(("domain", "arch"), ARCHS, ids=ARCH_IDS)
def test_arch_plain_twin_computes_another_function(domain: str, arch: str) -> None:
    """With the residual network's weights, the plain twin's outputs differ: the switch does something."""
    residual = small_model(domain, arch, None)
    if not list(residual_blocks(residual)):
        pytest.skip("a plain-only architecture: no residual form to compare with")
    plain = build(domain, arch, {**small_args(domain, arch), "residual": False})
    state = residual.state_dict()
    plain.load_state_dict({k: state[k] for k in plain.state_dict()}, strict=True)
    differences = [(a - b).abs().max().item() for a, b in zip(outputs(domain, residual), outputs(domain, plain))]
    assert max(differences) > 1e-4, differences


@pytest.mark.parametrize(("domain", "arch"), ARCHS, ids=ARCH_IDS)
def test_arch_plain_twin_keeps_no_unused_weights(domain: str, arch: str) -> None:
    """Whatever the plain twin does not use, the residual network does not use either: a projection
    shortcut kept under any name (whose output the plain join drops) would be unused here only."""
    residual, plain = small_model(domain, arch, None), small_model(domain, arch, False)
    run = functools.partial(forward, domain)
    extra = unused_parameters(plain, run) - unused_parameters(residual, run)
    assert not extra, f"weights the plain twin keeps but never uses: {sorted(extra)[:8]}"


@pytest.mark.parametrize("residual", [None, False], ids=["default", "plain"])
@pytest.mark.parametrize(("domain", "arch"), ARCHS, ids=ARCH_IDS)
def test_arch_state_dict_round_trip(domain: str, arch: str, residual: bool | None, tmp_path: Path) -> None:
    args = small_args(domain, arch) | ({} if residual is None else {"residual": residual})
    assert_round_trip(domain, arch, args, small_model(domain, arch, residual), tmp_path)


@pytest.mark.parametrize(("domain", "arch"), ARCHS, ids=ARCH_IDS)
def test_arch_num_classes_replaces_only_the_head(domain: str, arch: str) -> None:
    default = small_model(domain, arch, None)
    if not head_prefixes(default):
        pytest.skip(f"{type(default).__name__} has no classifier head (head_prefixes is empty)")
    replaced = build(domain, arch, {**small_args(domain, arch), "num_classes": 7})
    assert_head_replaced(default, replaced, 7)
    if hasattr(replaced, "blank"):  # CTC: per-frame log-probabilities over the vocabulary and the blank
        assert outputs(domain, replaced)[0].shape[::2] == (2, 8)
    else:
        assert outputs(domain, replaced)[0].shape == (2, 7)


# --------------------------------------------------------------------------- every registry entry


def test_entries_cover_every_domain() -> None:
    assert {info(name).domain for name in ENTRIES} == set(domains.names())


@pytest.mark.parametrize("name", ENTRIES)
def test_entry_builds_on_meta_and_fits_its_facts(name: str) -> None:
    entry = info(name)
    model = meta_entry(name, "default")
    assert all(t.is_meta for t in (*model.parameters(), *model.buffers()))
    if "params" in entry.extra:
        assert sum(p.numel() for p in model.parameters()) == entry.extra["params"]
    head = head_prefixes(model)
    if entry.num_classes and head:  # one output per label (and a CTC head's blank)
        assert {v.shape[0] for k, v in model.state_dict().items() if k.startswith(head) and k.endswith("weight")} \
            == {entry.num_classes + (1 if hasattr(model, "blank") else 0)}
    blocks = list(residual_blocks(model))
    assert {b.residual for b in blocks} <= {entry.arch_args.get("residual", True)}


@pytest.mark.parametrize("name", ENTRIES)
def test_entry_plain_twin_has_no_skips_and_no_projections(name: str) -> None:
    assert_plain_twin(meta_entry(name, "plain"), meta_entry(name, "residual"))


@pytest.mark.parametrize("name", ENTRIES)
def test_entry_num_classes_replaces_only_the_head(name: str) -> None:
    default = meta_entry(name, "default")
    if not head_prefixes(default):
        pytest.skip(f"{name}: {type(default).__name__} has no classifier head (head_prefixes is empty)")
    assert_head_replaced(default, meta_entry(name, "head7"), 7)


@pytest.mark.parametrize("name", ENTRIES)
def test_entry_state_dict_round_trip(name: str, tmp_path: Path) -> None:
    entry = info(name)
    args = entry_args(entry)
    torch.manual_seed(0)
    assert_round_trip(entry.domain, entry.arch, args, build(entry.domain, entry.arch, args), tmp_path)


@pytest.mark.parametrize("name", ENTRIES)
def test_entry_preprocessing_builds_offline(name: str, hub, offline) -> None:
    entry = info(name)
    hub.reset_count()
    assert callable(domains.get(entry.domain).build_preprocess(entry))
    assert hub.request_count == 0


@pytest.mark.parametrize("name", ENTRIES)
def test_entry_card_passes_hub_validation_and_describes_the_entry(name: str, hub) -> None:
    entry = info(name)
    card = reszoo.card(name)
    assert validate_card(str(card)) == ([], [])
    card.validate()  # the same rules through the client: POST /api/validate-yaml on the loopback Hub
    data = card.data
    assert data.library_name == "reszoo" and data.license == entry.license
    assert "reszoo" in data.tags and entry.domain in data.tags and data.pipeline_tag in (entry.task, None)
    results = data.eval_results or []
    assert [(r.dataset_name, r.dataset_split, r.metric_value) for r in results] == [
        (m.dataset, m.split, m.value) for m in entry.metrics
    ]
    group_source: dict[Any, str | None] = {}  # model-index keeps one source per (task, dataset, split): the group's first
    for r, m in zip(results, entry.metrics):
        url = None if m.source.measured else m.source.url
        assert r.source_url == group_source.setdefault(r.unique_identifier, url)
    parsed = ModelCard(str(card))
    assert parsed.data.eval_results == data.eval_results
    assert parsed.data.to_dict() == data.to_dict()
    for m in entry.metrics:
        assert (f"measured here by `{m.source.script}`" if m.source.measured else f"]({m.source.url})") in card.text
    if entry.weights and entry.weights.sha256:
        assert entry.weights.sha256 in card.text


# --------------------------------------------------------------------------- the package


def test_import_reszoo_and_its_domains_stay_light() -> None:
    """``import reszoo`` loads no torch and no Hub client; a domain package (and its command-line module)
    no heavy library: those are imported by the functions that need them."""
    domain_modules = [domains.get(d).package for d in domains.names()]
    domain_modules += [f"{m}.cli" for m in domain_modules if importlib.util.find_spec(f"{m}.cli") is not None]
    code = f"""
import importlib, json, sys
heavy = {HEAVY + ("torch", "huggingface_hub")!r}
seen = {{}}
for module in ["reszoo", "reszoo.cli", *{domain_modules!r}]:
    importlib.import_module(module)
    seen[module] = [m for m in heavy if m in sys.modules]
print(json.dumps(seen))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    seen = json.loads(done.stdout)
    assert seen.pop("reszoo") == []
    assert {module: [m for m in loaded if m in HEAVY] for module, loaded in seen.items()} == {m: [] for m in seen}
