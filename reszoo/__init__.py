"""reszoo: a model zoo of residual networks with a pinned, verified weight registry on the Hub.

    import reszoo
    reszoo.list_models("resnet*")
    model = reszoo.load("resnet-mnist")
    probs = model(model.preprocess("digit.png")).softmax(-1)

Submodules are imported on first use, so ``import reszoo`` stays light (no torchvision,
torchaudio, transformers or gymnasium).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "list_models": "registry",
    "info": "registry",
    "Entry": "registry",
    "load": "api",
    "build": "api",
    "push": "saving",
    "save_pretrained": "saving",
    "card": "cards",
    "finetune": "finetune",
    "predict": "predict",
    "export": "export",
    "ReszooError": "errors",
    "RegistryError": "errors",
    "UnknownModelError": "errors",
    "HubError": "errors",
    "IntegrityError": "errors",
    "NotCachedError": "errors",
    "WeightsNotFoundError": "errors",
    "LoadError": "errors",
    "ConversionError": "errors",
    "InputError": "errors",
}

__all__ = ["__version__", *_EXPORTS]

if TYPE_CHECKING:
    from .api import build, load
    from .saving import push, save_pretrained
    from .cards import card
    from .errors import (ConversionError, HubError, InputError, IntegrityError, LoadError, NotCachedError,
                         RegistryError, ReszooError, UnknownModelError, WeightsNotFoundError)
    from .export import export
    from .finetune import finetune
    from .predict import predict
    from .registry import Entry, info, list_models


_SUBMODULES = {"nn", "hub", "api", "saving", "cards", "cli", "registry", "errors", "domains"}


def __getattr__(name: str) -> Any:
    import importlib

    if name in _SUBMODULES or _is_domain(name):  # `reszoo.image.predict` without an explicit import
        value = importlib.import_module(f".{name}", __name__)
        globals()[name] = value
        return value
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'reszoo' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def _is_domain(name: str) -> bool:
    """A domain whose package is ``reszoo.<name>`` (the zoo's own; others live in their own packages)."""
    if name.startswith("_"):  # dunder probes (copy, pickle, inspect) never trigger discovery
        return False
    from . import domains

    return name in domains.names() and domains.get(name).package == f"{__name__}.{name}"


def __dir__() -> list[str]:
    return sorted(__all__)
