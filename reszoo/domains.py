"""Domains: how reszoo's core reaches one, without naming any or importing its code up front.

A domain is one package that declares itself with a :class:`Domain` (``DOMAIN`` in its
``__init__``) and one entry point in the ``reszoo.domains`` group, e.g. in ``pyproject.toml``::

    [project.entry-points."reszoo.domains"]
    image = "reszoo.image:DOMAIN"

The core (registry, API, CLI, cards, fine-tuning) finds the set of domains there (:func:`names`,
read from the entry points without importing any domain) and reaches a domain only through its
:class:`Domain` (:func:`get`). Every domain package has the same files (docs/adding-a-model.md):

``__init__.py``
    ``DOMAIN = Domain(...)``, and lazy re-exports of the public names; imports no torch, so the
    CLI can list every domain's commands quickly.
``models.py``
    The architectures, each builder registered with ``@archs.register`` on ``archs = Registry(...)``.
    A builder takes ``residual: bool = True`` (False builds the plain twin) and, where the model
    has a classifier head, ``num_classes``. Model classes name their head in ``head_prefixes``
    (state-dict prefixes replaced when ``num_classes`` changes) and recompute non-persistent
    buffers in ``init_non_persistent_buffers()``: models are built on the meta device and filled
    from the checkpoint with ``assign=True``.
``convert.py`` (optional: no upstream checkpoints, no converters)
    ``converters = Registry(...)``: upstream checkpoint layouts onto reszoo's, each registered with
    ``@converters.register("name")`` (an entry's ``weights.converter`` names one). A converter takes the
    checkpoint's state dict, or for ``format: tar`` weights a :class:`reszoo.checkpoints.TarArchive`
    (which carries the entry, to check the archive's own model description against it).
``preprocess.py``
    ``build_preprocess(entry) -> Callable``: raw input (a path, PIL image, text, waveform,
    observation …) to model input, from ``entry.preprocess``. Settings used at run time that are
    not preprocessing (an RL agent's environment, a GAN's default truncation, a verification
    threshold) are in ``entry.runtime`` (the keys a domain accepts: ``Domain.runtime``). Optional:
    ``prepare(model, entry, *, mirror=None)``, run once a model is loaded (``model.entry``,
    ``model.preprocess``, ``model.labels`` are set) to attach what its methods need (a tokenizer);
    ``aux_files(entry) -> [(repo, revision, file)]``, the files besides the weights that ``prepare``
    reads (``reszoo pull --to`` mirrors them, ``save_pretrained`` copies them).
``predict.py``
    ``task(model, options) -> reszoo.predict.Task``: how the model's inputs are read, batched and
    run, and the fields of its rows (``reszoo.predict`` and ``reszoo predict`` do the rest: folders,
    batches, workers, error rows, output files); ``predict(model, inputs, top_k, **options) ->
    list[dict]``, those rows as a list. A domain with only ``predict`` is run one input at a time.
    Optional: ``export_spec(model) -> reszoo.export.ExportSpec``, what ``reszoo export`` exports.
``cli.py`` (optional)
    ``add_parser(subparsers)`` and ``run(args)`` of the commands ``DOMAIN.commands`` names.
``finetune.py`` (optional)
    The batching adapter ``DOMAIN.finetune`` names (a :class:`reszoo.finetune.adapters.Adapter`).
``analysis.py`` (optional)
    ``analysis_data(model, path, *, limit, seed) -> reszoo.analysis.data.AnalysisData``: the inputs
    ``reszoo analyze`` feeds a model that is not a classifier (an agent, a generator), the intact
    model's outputs as targets, and how to score it (``metric``, ``loss_fn``, the ``module`` analysed).
``training.py`` (optional)
    Training pieces of the domain; its ``CRITERIA`` (name -> factory of a loss ``(logits, target)``)
    are the losses ``reszoo.finetune(criterion=NAME)`` accepts for the domain's models (a
    ``FinetuneSpec.criterion`` names the default). A sequence criterion scores the model's own
    outputs (a tuple) against padded sequence targets and evaluates a split itself: ``counts(outputs,
    target)`` (a tensor of sums), ``summarise(counts)`` (metrics), ``metric_labels``, ``monitor``
    and, to decode, ``set_labels(labels)`` (see reszoo/finetune/loop.py).
"""

from __future__ import annotations

import importlib
import importlib.util
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType, ModuleType
from typing import TYPE_CHECKING, Any, TypeVar, overload

from .errors import RegistryError

if TYPE_CHECKING:
    from .registry import Entry

__all__ = [
    "ENTRY_POINT_GROUP",
    "ClassFolders",
    "Manifest",
    "Command",
    "Domain",
    "FinetuneSpec",
    "Registry",
    "RuntimeSetting",
    "Table",
    "aux_files",
    "get",
    "is_number",
    "lazy_exports",
    "names",
    "refresh",
]

ENTRY_POINT_GROUP = "reszoo.domains"
_PACKAGE_DIR = Path(__file__).resolve().parent
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")  # a domain name is also a CLI choice and a registry value

F = TypeVar("F", bound=Callable[..., Any])


# --------------------------------------------------------------------------- registries of builders


class Registry(Mapping[str, F]):
    """Name -> callable, filled by a decorator where each callable is defined (as timm and
    torchvision register models), so no list is kept by hand::

        archs = Registry("architecture")

        @archs.register                      # registered as "resnet18"
        def resnet18(**kwargs): ...

        @archs.register("resmlp-discrete")   # under other names
        def resmlp_discrete(**kwargs): ...
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind  # how messages name an item: "architecture", "converter"
        self._items: dict[str, F] = {}

    @overload
    def register(self, fn: F, /) -> F: ...

    @overload
    def register(self, *names: str) -> Callable[[F], F]: ...

    def register(self, *args: Any) -> Any:
        """Register a callable under its ``__name__`` (``@register``) or under the names given
        (``@register("a", "b")``); a name taken by another callable is an error."""
        if len(args) == 1 and callable(args[0]):
            return self._add(args[0], (args[0].__name__,))
        if not all(isinstance(a, str) and a for a in args):
            raise TypeError(f"register() takes a callable or {self.kind} names, got {args!r}")

        def decorator(fn: F) -> F:
            return self._add(fn, args or (fn.__name__,))

        return decorator

    def unregister(self, name: str) -> None:
        """Remove ``name`` (a plugin or a test that added an item for a while)."""
        del self._items[name]

    def _add(self, fn: F, names: tuple[str, ...]) -> F:
        for name in names:
            old = self._items.get(name)
            # The same function defined again (a module reloaded) replaces itself; another one is a clash.
            if old is not None and _qualname(old) != _qualname(fn):
                raise RegistryError(f"{self.kind} {name!r} is registered twice: {_qualname(old)} and {_qualname(fn)}")
            self._items[name] = fn
        return fn

    def __getitem__(self, name: str) -> F:
        return self._items[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._items)})"


def _qualname(fn: Any) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


# --------------------------------------------------------------------------- the contract


@dataclass(frozen=True)
class Command:
    """A CLI command of a domain: ``module`` (imported only when the command runs) has
    ``add_parser(subparsers)`` and ``run(args)``; ``help`` is shown in ``reszoo --help``."""

    module: str
    help: str


@dataclass(frozen=True)
class ClassFolders:
    """Fine-tuning data as a folder with one subfolder per class (``root/<class>/**/<file>``),
    torchvision's ``ImageFolder`` layout. ``kind`` names the files in messages ("audio")."""

    extensions: frozenset[str]
    kind: str

    def describe(self) -> str:
        return f"a folder of {self.kind} files, one subfolder per class"


@dataclass(frozen=True)
class Table:
    """Fine-tuning data as a CSV/TSV file with a header line: a column of inputs and one of
    labels (the options ``text_column``/``label_column`` override these defaults)."""

    text_column: str
    label_column: str = "label"

    def describe(self) -> str:
        return f"a CSV/TSV file with a header line (columns {self.label_column!r} and {self.text_column!r})"


@dataclass(frozen=True)
class Manifest:
    """Fine-tuning data as a JSON-lines manifest (NeMo's layout): one object a line naming a
    file (``path_key``, relative to the manifest or absolute) and its transcript (``text_key``);
    other keys (NeMo's ``duration``) are allowed. The targets are sequences of symbols (the
    model's ``labels``), not one class per file. ``kind`` names the files in messages ("audio")."""

    extensions: frozenset[str]
    kind: str
    path_key: str  # e.g. NeMo's "audio_filepath"
    text_key: str

    def describe(self) -> str:
        return f"a JSON-lines manifest of {self.kind} files and their text ({self.path_key!r}, {self.text_key!r})"


def is_number(value: Any) -> bool:
    """A real number (YAML's ints and floats), not a bool."""
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(frozen=True)
class RuntimeSetting:
    """A setting a domain reads at run time (an entry's ``runtime:``): what it means, its check,
    and where files written before ``runtime`` existed kept it (a ``config.json`` on the Hub is
    read with the same meaning)."""

    meaning: str
    problem: Callable[[Any], str | None]  # why a value is not acceptable, or None
    legacy: str | None = None  # "preprocess" or "extra": its old place, moved into runtime on read

    def __post_init__(self) -> None:
        if self.legacy not in (None, "preprocess", "extra"):
            raise RegistryError(f"RuntimeSetting.legacy: expected 'preprocess', 'extra' or None, got {self.legacy!r}")


@dataclass(frozen=True)
class FinetuneSpec:
    """How ``reszoo finetune`` trains a model of this domain (a classifier, or with
    :class:`Manifest` data a sequence model)."""

    task: str  # Hub task of the fine-tuned model, e.g. "image-classification"
    data: ClassFolders | Table | Manifest  # how training data is read
    adapter: str  # "module:Class" of the batching Adapter subclass, imported when a run starts
    usage: str  # Python lines after `model = reszoo.load(...)` in the fine-tuned model's card
    criterion: str | None = None  # the loss by default: a name in the domain's training.CRITERIA (None: cross-entropy)


@dataclass(frozen=True)
class Domain:
    """One domain: what it is called, where its code is (the standard files of ``package``),
    and the settings the core needs from it."""

    name: str  # the registry's ``domain:`` value and the entry point's name
    title: str  # how a model card names it: "An **<title>** model of reszoo"
    package: str  # the package holding models.py, convert.py, preprocess.py, predict.py, ...
    # LoRA (reszoo.lora, `reszoo finetune --lora`): the layers adapted by default, a regex over module
    # names (full match), and layers LoRA must not wrap (ones whose weight the model reads directly).
    lora_targets: str | None = None
    lora_exclude: str | None = None
    finetune: FinetuneSpec | None = None  # None: models of this domain are not fine-tuned
    # Models whose entry's ``task`` is a key here are fine-tuned by that spec instead (a domain
    # with classifiers and recognisers, say).
    finetune_tasks: Mapping[str, FinetuneSpec] = field(default_factory=dict)
    commands: Mapping[str, Command] = field(default_factory=dict)  # extra CLI commands by name
    # The keys an entry's ``runtime:`` may hold, checked when the registry reads it (read by ``prepare``).
    runtime: Mapping[str, RuntimeSetting] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise RegistryError(f"domain name {self.name!r}: expected lowercase letters, digits and '_'")
        object.__setattr__(self, "commands", MappingProxyType(dict(self.commands)))
        object.__setattr__(self, "runtime", MappingProxyType(dict(self.runtime)))
        object.__setattr__(self, "finetune_tasks", MappingProxyType(dict(self.finetune_tasks)))

    # --- the standard files

    def module(self, part: str, *, required: bool = True) -> ModuleType | None:
        """``<package>.<part>`` imported; a missing optional file gives None."""
        qualified = f"{self.package}.{part}"
        if importlib.util.find_spec(qualified) is None:
            if required:
                raise RegistryError(f"domain {self.name!r}: {self.package} has no {part}.py (see docs/adding-a-model.md)")
            return None
        return importlib.import_module(qualified)

    @property
    def archs(self) -> Registry[Callable[..., Any]]:
        """Architecture name -> builder (``models.archs``)."""
        return self.module("models").archs

    @property
    def converters(self) -> Registry[Callable[[dict[str, Any]], dict[str, Any]]]:
        """Converter name -> state-dict converter (``convert.converters``; empty without convert.py)."""
        module = self.module("convert", required=False)
        return module.converters if module is not None else Registry("converter")

    def arch(self, name: str) -> Callable[..., Any]:
        archs = self.archs
        if name not in archs:
            raise RegistryError(f"domain {self.name!r} has no architecture {name!r}; known: {', '.join(sorted(archs))}")
        return archs[name]

    def converter(self, name: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
        converters = self.converters
        if name not in converters:
            raise RegistryError(f"domain {self.name!r} has no converter {name!r}; known: {', '.join(sorted(converters)) or 'none'}")
        return converters[name]

    def build_preprocess(self, entry: Entry) -> Callable[..., Any]:
        return self.module("preprocess").build_preprocess(entry)

    def prepare(self, model: Any, entry: Entry, *, mirror: Any = None) -> None:
        prepare = getattr(self.module("preprocess"), "prepare", None)
        if prepare is not None:
            prepare(model, entry, mirror=mirror)

    def aux_files(self, entry: Entry) -> list[tuple[str, str | None, str]]:
        files = getattr(self.module("preprocess"), "aux_files", None)
        return list(files(entry)) if files is not None else []

    def predict(self, model: Any, inputs: list[Any], top_k: int = 5) -> list[dict[str, Any]]:
        return self.module("predict").predict(model, inputs, top_k=top_k)

    def finetune_spec(self, task: str | None = None) -> FinetuneSpec | None:
        """How models of ``task`` (an entry's ``task``) are fine-tuned: ``finetune_tasks[task]``, else ``finetune``."""
        return self.finetune_tasks.get(task or "", self.finetune)

    def adapter(self, task: str | None = None) -> type:
        """The fine-tuning adapter class of ``task``'s spec (``finetune.adapter``)."""
        spec = self.finetune_spec(task)
        if spec is None:
            raise RegistryError(f"domain {self.name!r} declares no fine-tuning")
        return _load_ref(spec.adapter, f"domain {self.name!r}: finetune.adapter")


def _load_ref(ref: str, where: str) -> Any:
    """The object a ``module:attr`` reference names."""
    module, _, attr = ref.partition(":")
    if not module or not attr:
        raise RegistryError(f"{where}: expected 'module:attribute', got {ref!r}")
    value: Any = importlib.import_module(module)
    for part in attr.split("."):
        value = getattr(value, part, None)
        if value is None:
            raise RegistryError(f"{where}: {module} has no {attr!r}")
    return value


def lazy_exports(package: str, exports: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for a domain's ``__init__``: each public name (a key) is
    imported from its module (the value, relative to ``package``) on first use, so importing
    the package stays light while ``from reszoo.speech import AudioError`` keeps working."""
    import sys

    def __getattr__(name: str) -> Any:
        where = exports.get(name)
        if where is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{where}"), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *exports})

    return __getattr__, __dir__


# --------------------------------------------------------------------------- discovery


@lru_cache(maxsize=1)
def _declared() -> dict[str, str]:
    """Domain name -> ``module:attr`` of its :class:`Domain`: reszoo's own, then other
    distributions' (entry points of the ``reszoo.domains`` group)."""
    from importlib.metadata import entry_points

    own: dict[str, str] = {}
    others: dict[str, tuple[str, str]] = {}  # name -> (ref, distribution)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist.name if ep.dist is not None else "?"
        if dist == "reszoo":
            own.setdefault(ep.name, ep.value)
        elif others.setdefault(ep.name, (ep.value, dist)) != (ep.value, dist):
            raise RegistryError(f"domain {ep.name!r} is declared by both {others[ep.name][1]} and {dist}; uninstall one")
    checkout = _checkout_domains()
    if checkout is not None:  # a source checkout: its pyproject.toml, not what an older install recorded
        own = checkout
        if not own:
            raise RegistryError(f"no reszoo domains found: {_PACKAGE_DIR.parent / 'pyproject.toml'} has no "
                                f"[project.entry-points.{ENTRY_POINT_GROUP!r}] table; restore it (see docs/adding-a-model.md)")
    if not own:
        raise RegistryError(f"no reszoo domains found: the installed reszoo's metadata has no {ENTRY_POINT_GROUP!r} "
                            "entry points (an install older than them?); re-run `pip install -e .` in the checkout, "
                            "or reinstall reszoo")
    found = dict(own)
    for name, (ref, dist) in sorted(others.items()):
        if name in found and found[name] != ref:
            raise RegistryError(f"domain {name!r} is declared by reszoo ({found[name]}) and by {dist} ({ref}); "
                                f"rename the one of {dist}")
        found[name] = ref
    return found


def _checkout_domains() -> dict[str, str] | None:
    """reszoo's own domains from the ``pyproject.toml`` beside the package, where reszoo runs from
    a source checkout (editable install or ``PYTHONPATH``); None for an installed wheel."""
    path = _PACKAGE_DIR.parent / "pyproject.toml"
    if not path.is_file():
        return None
    import tomllib

    try:
        project = tomllib.loads(path.read_text(encoding="utf-8")).get("project", {})
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise RegistryError(f"{path}: cannot be read for the {ENTRY_POINT_GROUP!r} entry points ({err})") from None
    if project.get("name") != "reszoo":
        return None
    table = project.get("entry-points", {}).get(ENTRY_POINT_GROUP, {})
    if not isinstance(table, dict) or not all(isinstance(v, str) for v in table.values()):
        raise RegistryError(f"{path}: [project.entry-points.{ENTRY_POINT_GROUP!r}] must map names to 'module:attr' strings")
    return dict(table)


def names() -> tuple[str, ...]:
    """The names of every installed domain (no domain code is imported)."""
    return tuple(_declared())


@lru_cache(maxsize=None)
def get(name: str) -> Domain:
    """The :class:`Domain` called ``name`` (its package's ``__init__`` is imported: light)."""
    refs = _declared()
    if name not in refs:
        raise RegistryError(f"unknown domain {name!r}; expected one of {tuple(refs)}")
    domain = _load_ref(refs[name], f"domain {name!r} ({ENTRY_POINT_GROUP} entry point {refs[name]})")
    if not isinstance(domain, Domain):
        raise RegistryError(f"domain {name!r}: {refs[name]} is a {type(domain).__name__}, not a reszoo.domains.Domain")
    if domain.name != name:
        raise RegistryError(f"domain {name!r}: {refs[name]} declares the name {domain.name!r}; the entry point and "
                            "Domain.name must agree")
    return domain


def refresh() -> None:
    """Forget what was discovered (a domain package installed or removed in a running process)."""
    _declared.cache_clear()
    get.cache_clear()


# --------------------------------------------------------------------------- files of an entry


def aux_files(entry: Any) -> list[tuple[str, str | None, str]]:
    """``(repo, revision, file)`` of what travels with the weights: what the domain loads besides
    them (e.g. a tokenizer), and the entry's ``figures`` (image files in the weights repo)."""
    files = get(entry.domain).aux_files(entry)
    if entry.weights is not None:
        files += [(entry.weights.repo, entry.weights.revision, f) for f in entry.figures.values()]
        if entry.base:  # a LoRA adapter: peft's config beside the adapter file
            files.append((entry.weights.repo, entry.weights.revision, "adapter_config.json"))
    return files
