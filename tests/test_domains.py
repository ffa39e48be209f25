"""The domain contract (reszoo/domains.py, docs/adding-a-model.md): every domain keeps it, the core
reaches domains only through it, and the documented steps work: a new architecture in an existing
domain (one decorated builder and a registry entry), and a new domain (one package and one entry
point, recorded in a distribution's metadata as ``pip install`` writes it).
"""

from __future__ import annotations

import importlib
import json
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import reszoo
from reszoo import domains
from reszoo.cli import main as cli_main
from reszoo.domains import Domain, Registry
from reszoo.errors import RegistryError
from reszoo.nn import residual_blocks

ROOT = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------- every domain, every entry


@pytest.mark.parametrize("name", domains.names())
def test_every_domain_keeps_the_contract(name: str) -> None:
    from reszoo.finetune.adapters import Adapter

    domain = domains.get(name)
    assert isinstance(domain, Domain) and domain.name == name and domain.title
    for part in ("models", "preprocess", "predict"):  # the required files
        assert domain.module(part) is not None
    assert domain.archs and all(callable(b) for b in domain.archs.values())
    assert all(callable(c) for c in domain.converters.values())
    assert callable(domain.module("preprocess").build_preprocess)
    package = importlib.import_module(domain.package)
    assert package.predict is domain.module("predict").predict  # `from reszoo.<domain> import predict`
    for pattern in (domain.lora_targets, domain.lora_exclude):
        if pattern is not None:
            re.compile(pattern)
    if domain.finetune is not None:
        assert issubclass(domain.adapter(), Adapter)
    for command in domain.commands.values():
        module = importlib.import_module(command.module)
        assert callable(module.add_parser) and callable(module.run)


def test_domain_declarations_import_no_torch() -> None:
    # The CLI reads every declaration to list the domains' commands: `reszoo --help` stays fast.
    code = ("import sys; from reszoo import domains; from reszoo.cli import build_parser; build_parser(); "
            "print([n for n in domains.names() if domains.get(n)]); "
            "heavy = sorted(m for m in ('torch', 'torchvision', 'torchaudio', 'numpy', 'PIL') if m in sys.modules); "
            "print(heavy); sys.exit(bool(heavy))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "'image'" in proc.stdout.splitlines()[0]


def test_every_registry_entry_builds_on_meta() -> None:
    for name in reszoo.list_models():
        entry = reszoo.info(name)
        assert entry.arch in domains.get(entry.domain).archs, name
        model = reszoo.build(entry, device="meta")
        if entry.arch_args.get("residual", True) is False:
            assert not any(b.residual for b in residual_blocks(model)), name


def test_the_core_names_no_domain() -> None:
    """The shared-machine hook: no core, fine-tuning or analysis module spells a domain's name."""
    pattern = re.compile(r"[\"'](image|text|speech|rl|gan)[\"']")
    files = [*ROOT.glob("reszoo/*.py"), *ROOT.glob("reszoo/finetune/*.py"), *ROOT.glob("reszoo/analysis/*.py")]
    named = [f"{p.relative_to(ROOT)}:{i}" for p in files for i, line in enumerate(p.read_text().splitlines(), 1)
             if pattern.search(line)]
    assert not named, named


# --------------------------------------------------------------------------- the registries


def test_registry_decorator_names_clashes_and_removal() -> None:
    items: Registry = Registry("architecture")

    @items.register
    def small() -> int:
        return 1

    @items.register("big-one", "big")
    def big() -> int:
        return 2

    assert dict(items) == {"small": small, "big-one": big, "big": big}
    items.register(small)  # the same function again (a reloaded module) replaces itself

    def other() -> int:
        return 3

    with pytest.raises(RegistryError, match=r"architecture 'small' is registered twice: .*small and .*other"):
        items.register("small")(other)
    items.unregister("big")
    assert list(items) == ["small", "big-one"]


def test_unknown_domain_and_arch_are_one_clear_error() -> None:
    with pytest.raises(RegistryError, match=r"unknown domain 'audio'; expected one of \('image',"):
        domains.get("audio")
    with pytest.raises(RegistryError, match="domain 'image' has no architecture 'resnet7'; known: resnet, resnet101"):
        domains.get("image").arch("resnet7")
    with pytest.raises(RegistryError, match="domain 'gan' has no converter 'nope'; known: biggan-pretrained"):
        domains.get("gan").converter("nope")


def test_a_checkout_reads_its_own_domains_from_pyproject() -> None:
    # The editable install here may predate the entry points: the checkout's table is what counts.
    import tomllib

    table = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]["reszoo.domains"]
    assert tuple(table) == domains.names()[:len(table)]
    assert all(domains.get(name).package == ref.split(":")[0] for name, ref in table.items())


# --------------------------------------------------------------------------- (a) a new architecture


_TOY_ARCH = '''
from typing import Any

from reszoo.image.models import ResNet, archs


@archs.register
def resnet_toy(**kwargs: Any) -> ResNet:
    """A two-stage ResNet for 28x28 grayscale input."""
    return ResNet(**{"block": "basic", "layers": (1, 1), "widths": (8, 16), "in_chans": 1, "num_classes": 3,
                     "stem_width": 8, "stem_kernel": 3, "stem_stride": 1, "stem_pool": False, **kwargs})
'''

_TOY_ARCH_ENTRIES = '''
models:
  - name: resnet-toy
    domain: image
    task: image-classification
    arch: resnet_toy
    arch_args: {num_classes: 3}
    preprocess: {size: 28, channels: 1, mean: [0.5], std: [0.25]}
    labels: [a, b, c]
    license: mit
  - name: resnet-toy-plain
    domain: image
    task: image-classification
    arch: resnet_toy
    arch_args: {num_classes: 3, residual: false}
    preprocess: {size: 28, channels: 1, mean: [0.5], std: [0.25]}
    labels: [a, b, c]
    license: mit
'''


def test_a_new_architecture_in_an_existing_domain(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """docs/adding-a-model.md (a): one decorated builder, one registry entry; nothing else to edit."""
    (tmp_path / "toy_arch_module.py").write_text(_TOY_ARCH)
    (tmp_path / "registry.yaml").write_text(_TOY_ARCH_ENTRIES)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("RESZOO_REGISTRY", str(tmp_path / "registry.yaml"))
    importlib.import_module("toy_arch_module")
    image = domains.get("image")
    try:
        assert image.archs["resnet_toy"].__doc__.startswith("A two-stage ResNet")
        torch.manual_seed(0)
        model = reszoo.load("resnet-toy", pretrained=False)
        plain = reszoo.build(reszoo.info("resnet-toy-plain"))
        assert all(b.residual for b in residual_blocks(model)) and not any(b.residual for b in residual_blocks(plain))
        folder = reszoo.save_pretrained(model, tmp_path / "saved")
        Image.fromarray((np.arange(28 * 28) % 256).astype(np.uint8).reshape(28, 28)).save(tmp_path / "x.png")
        capsys.readouterr()
        assert cli_main(["predict", str(folder), str(tmp_path / "x.png"), "--top-k", "2", "--json"]) == 0
        rows = json.loads(capsys.readouterr().out)
        assert [r["rank"] for r in rows] == [1, 2] and {r["label"] for r in rows} <= {"a", "b", "c"}
        assert "architecture `resnet_toy`" in str(reszoo.card("resnet-toy"))
        test_every_registry_entry_builds_on_meta()  # the contract test covers the new entries as they are
    finally:
        image.archs.unregister("resnet_toy")
        sys.modules.pop("toy_arch_module", None)


# --------------------------------------------------------------------------- (b) a new domain

_TOY_PACKAGE = {
    "__init__.py": '''
        """A toy domain: vectors of numbers classified by a residual MLP."""

        from reszoo.domains import ClassFolders, Command, Domain, FinetuneSpec, RuntimeSetting, is_number, lazy_exports

        from .predict import predict

        DOMAIN = Domain(
            name="toy",
            title="toy numbers",
            package=__name__,
            lora_targets=r"blocks\\.\\d+\\.fn\\.0",
            finetune=FinetuneSpec(
                task="tabular-classification",
                data=ClassFolders(frozenset({".txt"}), kind="number"),
                adapter="toyzoo.finetune:ToyAdapter",
                usage='print(model.labels[int(model(model.preprocess("1,2,3,4")).argmax())])',
            ),
            commands={"toy-sum": Command("toyzoo.cli", "add numbers")},
            runtime={"offset": RuntimeSetting("added to every input number",
                                              lambda v: None if is_number(v) else "expected a number")},
        )

        __getattr__, __dir__ = lazy_exports(__name__, {"ToyMLP": "models"})
    ''',
    "models.py": '''
        from typing import Any

        from torch import Tensor, nn

        from reszoo.domains import Registry
        from reszoo.nn import ResidualBlock

        archs = Registry("architecture")


        class ToyBlock(ResidualBlock):
            def __init__(self, width: int, residual: bool = True) -> None:
                super().__init__(residual)
                self.fn = nn.Sequential(nn.Linear(width, width), nn.ReLU())

            def forward(self, x: Tensor) -> Tensor:
                return self.join(self.fn(x), self.shortcut_of(x))


        class ToyMLP(nn.Module):
            head_prefixes = ("head.",)

            def __init__(self, dim: int = 4, width: int = 8, depth: int = 2, num_classes: int = 2, residual: bool = True) -> None:
                super().__init__()
                self.stem = nn.Linear(dim, width)
                self.blocks = nn.Sequential(*(ToyBlock(width, residual) for _ in range(depth)))
                self.head = nn.Linear(width, num_classes)

            def forward(self, x: Tensor) -> Tensor:
                return self.head(self.blocks(self.stem(x)))


        @archs.register
        def toy_mlp(**kwargs: Any) -> ToyMLP:
            return ToyMLP(**kwargs)
    ''',
    "preprocess.py": '''
        from pathlib import Path
        from typing import Any

        import torch

        from reszoo.errors import InputError


        def build_preprocess(entry: Any) -> Any:
            dim = int(entry.arch_args.get("dim", 4))

            def preprocess(item: Any) -> torch.Tensor:
                text = Path(item).read_text() if str(item).endswith(".txt") else str(item)
                values = [float(v) for v in text.replace(",", " ").split()]
                if len(values) != dim:
                    raise InputError(f"{entry.name}: expected {dim} numbers, got {len(values)}")
                return torch.tensor([values])

            return preprocess
    ''',
    "predict.py": '''
        from typing import Any


        def predict(model: Any, inputs: list[str], top_k: int = 5) -> list[dict[str, Any]]:
            import torch

            rows = []
            with torch.no_grad():
                for item in inputs:
                    probs = model(model.preprocess(item)).softmax(-1)[0]
                    top = probs.topk(min(top_k, probs.numel()))
                    rows += [{"input": item, "rank": rank, "label": model.labels[int(i)], "prob": round(float(p), 4)}
                             for rank, (p, i) in enumerate(zip(top.values, top.indices), start=1)]
            return rows
    ''',
    "cli.py": '''
        import argparse


        def add_parser(subparsers: argparse._SubParsersAction) -> None:
            p = subparsers.add_parser("toy-sum", help="add numbers")
            p.add_argument("numbers", nargs="+", type=float)
            p.set_defaults(func=run)


        def run(args: argparse.Namespace) -> int:
            print(sum(args.numbers))
            return 0
    ''',
    "finetune.py": '''
        from collections.abc import Sequence
        from typing import Any

        import torch
        from torch import Tensor, nn

        from reszoo.finetune.adapters import Adapter


        class ToyAdapter(Adapter):
            def encode(self, item: Any) -> Tensor:
                return self.preprocess(item)[0]

            def collate(self, encoded: Sequence[Tensor]) -> dict[str, Tensor]:
                return {"x": torch.stack(list(encoded))}

            def forward(self, model: nn.Module, inputs: dict[str, Tensor]) -> Tensor:
                return model(inputs["x"])
    ''',
}

_TOY_ENTRY = """
models:
  - name: toy-mlp
    domain: toy
    task: tabular-classification
    arch: toy_mlp
    arch_args: {num_classes: 2}
    labels: [low, high]
    license: mit
    runtime: {offset: 0.5}
"""


@pytest.fixture
def toy_domain(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The toy package and its distribution's metadata, as `pip install` of a package whose
    pyproject.toml has the line ``toy = "toyzoo:DOMAIN"`` under [project.entry-points."reszoo.domains"]."""
    site = tmp_path / "site"
    for name, text in _TOY_PACKAGE.items():
        (site / "toyzoo").mkdir(parents=True, exist_ok=True)
        (site / "toyzoo" / name).write_text(textwrap.dedent(text).lstrip())
    dist = site / "toyzoo-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: toyzoo\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[reszoo.domains]\ntoy = toyzoo:DOMAIN\n")
    monkeypatch.syspath_prepend(str(site))
    domains.refresh()
    yield site
    monkeypatch.undo()
    domains.refresh()
    for module in [m for m in sys.modules if m == "toyzoo" or m.startswith("toyzoo.")]:
        del sys.modules[module]


def test_a_new_domain_is_one_package_and_one_entry_point(toy_domain: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """docs/adding-a-model.md (b): the registry, load/save, `reszoo list/predict`, the domain's command,
    cards, LoRA defaults and fine-tuning all follow from the toy package's declaration."""
    from reszoo.lora import resolve_targets

    assert domains.names()[-1] == "toy" and "image" in domains.names()
    toy = domains.get("toy")
    assert toy.title == "toy numbers" and "toyzoo.models" not in sys.modules  # declared without importing its code
    (tmp_path / "registry.yaml").write_text(_TOY_ENTRY)
    monkeypatch.setenv("RESZOO_REGISTRY", str(tmp_path / "registry.yaml"))

    capsys.readouterr()
    assert cli_main(["list", "--domain", "toy", "--json"]) == 0
    assert [e["name"] for e in json.loads(capsys.readouterr().out)] == ["toy-mlp"]
    torch.manual_seed(0)
    model = reszoo.load("toy-mlp", pretrained=False)
    folder = reszoo.save_pretrained(model, tmp_path / "toy-saved")
    assert "A **toy numbers** model" in (folder / "README.md").read_text()
    assert cli_main(["predict", str(folder), "1,2,3,4", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["rank"] for r in rows] == [1, 2] and {r["label"] for r in rows} == {"low", "high"}
    assert cli_main(["toy-sum", "1", "2", "3.5"]) == 0 and capsys.readouterr().out.strip() == "6.5"
    assert resolve_targets(model, "toy")[1] == ["blocks.0.fn.0", "blocks.1.fn.0"]

    data = tmp_path / "data"
    for label, sign in (("high", 1.0), ("low", -1.0)):
        (data / label).mkdir(parents=True)
        for i in range(6):
            (data / label / f"{i}.txt").write_text(",".join(str(sign * (i + k)) for k in range(1, 5)))
    result = reszoo.finetune(str(folder), str(data), epochs=1, batch_size=4, val_split=0.0, out=str(tmp_path / "run"),
                             cpu=True, progress=False)
    assert result.entry.domain == "toy" and result.entry.task == "tabular-classification"  # the domain's FinetuneSpec
    assert 'model.preprocess("1,2,3,4")' in result.entry.usage and result.metrics["num_train"] == 12
    tuned = reszoo.load(str(tmp_path / "run"))
    assert tuned.labels == ("high", "low") and tuned(tuned.preprocess("1,2,3,4")).shape == (1, 2)


def test_runtime_settings_are_the_ones_the_domain_declares(toy_domain: Path) -> None:
    """The registry checks an entry's ``runtime:`` against its domain's ``Domain.runtime`` (no table in the core)."""
    from reszoo.registry import parse_entry

    base = {"name": "toy-mlp", "domain": "toy", "task": "tabular-classification", "arch": "toy_mlp", "license": "mit"}
    assert parse_entry({**base, "runtime": {"offset": 2}}).runtime == {"offset": 2}
    with pytest.raises(RegistryError, match=r"toy-mlp.*runtime\.offset.*expected a number, got 'x'"):
        parse_entry({**base, "runtime": {"offset": "x"}})
    with pytest.raises(RegistryError, match=r"runtime\.env_id.*unknown runtime setting \(known for domain 'toy': offset\)"):
        parse_entry({**base, "runtime": {"env_id": "CartPole-v1"}})
    assert domains.get("rl").runtime.keys() == {"env_id"} and not domains.get("image").runtime


def test_a_domain_without_fine_tuning_says_which_domains_have_it() -> None:
    from reszoo.finetune import DataError

    with pytest.raises(DataError, match=r"the rl domain declares no fine-tuning .* image, text, speech domain"):
        reszoo.finetune("ppo-cartpole-resmlp", [("1,2,3,4", "a"), ("4,3,2,1", "b")])


def test_finetune_reads_its_base_as_load_does(tmp_path: Path) -> None:
    """The base's entry comes from reszoo.api.resolve_entry (load's own URI and config parsing), not a
    second parser: a broken config.json or a malformed hf:// URI is the error load gives."""
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    pairs = [("1,2,3,4", "a"), ("4,3,2,1", "b")]
    with pytest.raises(RegistryError, match=r"config.json: not a reszoo config \(invalid JSON"):
        reszoo.finetune(str(tmp_path / "broken"), pairs)
    with pytest.raises(ValueError, match=r"expected hf://owner/name\[@revision\], got 'hf://owner/name@'"):
        reszoo.finetune("hf://owner/name@", pairs)


# --------------------------------------------------------------------------- discovery failures


def _package_copy(tmp_path: Path) -> Path:
    """reszoo's package alone, as an installed wheel has it (no pyproject.toml beside it)."""
    import shutil

    root = tmp_path / "installed"
    shutil.copytree(ROOT / "reszoo", root / "reszoo", ignore=shutil.ignore_patterns("__pycache__"))
    return root


def _run_cli(args: list[str], *paths: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(p) for p in paths)}
    return subprocess.run([sys.executable, "-m", "reszoo.cli", *args], capture_output=True, text=True, env=env,
                          cwd=paths[0], timeout=120)


def test_an_install_older_than_the_entry_points_is_one_clear_error(tmp_path: Path) -> None:
    # What an install made before the entry points existed records: reszoo's metadata, no [reszoo.domains].
    old = tmp_path / "old-site" / "reszoo-0.0.1.dist-info"
    old.mkdir(parents=True)
    (old / "METADATA").write_text("Metadata-Version: 2.1\nName: reszoo\nVersion: 0.0.1\n")
    proc = _run_cli(["list"], _package_copy(tmp_path), old.parent)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert re.match(r"reszoo: error: no reszoo domains found: the installed reszoo's metadata has no "
                    r"'reszoo.domains' entry points .*re-run `pip install -e \.`", proc.stderr), proc.stderr


def test_a_checkout_without_the_table_is_one_clear_error(tmp_path: Path) -> None:
    root = _package_copy(tmp_path)
    (root / "pyproject.toml").write_text('[project]\nname = "reszoo"\n')
    proc = _run_cli(["list"], root)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert "has no [project.entry-points.'reszoo.domains'] table" in proc.stderr, proc.stderr
