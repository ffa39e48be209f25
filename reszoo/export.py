"""Export a model to ONNX, TorchScript or a ``torch.export`` program, checked against the eager model.

    reszoo export resnet-mnist --format onnx --out resnet-mnist.onnx
    reszoo.export("minilm-l6-sentence", "torchscript", "minilm.pt")   # -> ExportReport

What is exported is each domain's network, as its ``predict.export_spec(model)`` says
(:class:`ExportSpec`): the module, named example inputs (real-ish: synthetic images and
recordings through the model's own preprocessing, tokenized texts of unequal lengths, so that the
batch is padded), the dimensions that stay dynamic (the batch; a text's length; a recording's
frames) and the output names. Preprocessing (image transform, tokenizer, fbank), sampling and
environment loops stay in Python. After writing the file, it is loaded back (onnxruntime for
ONNX, ``torch.jit.load``, ``torch.export.load``) and run on the example and on other batches
(other sizes and lengths); its largest difference from the eager model must be within the
tolerance, or the file is removed and the export fails. A model a format cannot express is one
error line naming the model, the format and the exporter's reason.

The command is imported only when it runs (``reszoo export``); torch, onnx and onnxruntime only
when exporting (``pip install onnx onnxscript onnxruntime`` for ONNX).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import InputError, ReszooError

if TYPE_CHECKING:
    import torch
    from PIL import Image
    from torch import nn

__all__ = ["FORMATS", "ExportError", "ExportReport", "ExportSpec", "export", "synthetic_image", "synthetic_waveform"]

FORMATS = {"onnx": ".onnx", "torchscript": ".pt", "exported-program": ".pt2"}
_SUFFIXES = {".onnx": "onnx", ".pt": "torchscript", ".ts": "torchscript", ".pt2": "exported-program"}
# Largest difference from the eager model accepted, relative to the outputs' scale (max |output|, at least 1):
# float32 kernels of another runtime reorder sums, which moves the last few bits, never more.
RELATIVE_TOLERANCE = 1e-4


class ExportError(ReszooError):
    """A model cannot be exported to a format, or the exported file does not compute what the model does."""


@dataclass
class ExportSpec:
    """What a domain exports of a model: ``module`` called with the ``example`` tensors (by name,
    in the order of its ``forward``'s parameters), checked on ``checks`` too (other batch sizes and
    lengths); ``dynamic`` names the axes left free (input name -> {axis: dimension name}, their
    ranges inferred by ``torch.export``); ``outputs`` names what ``forward`` returns."""

    module: nn.Module
    example: dict[str, torch.Tensor]
    checks: list[dict[str, torch.Tensor]]
    outputs: tuple[str, ...]
    dynamic: dict[str, dict[int, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class ExportReport:
    """An exported file and how close it is to the eager model."""

    path: Path
    format: str
    max_error: float | None  # None: not checked
    tolerance: float | None
    batches: int  # input batches it was checked on

    def __str__(self) -> str:
        size = self.path.stat().st_size / 2**20 if self.path.exists() else 0.0
        text = f"exported to {self.path} ({self.format}, {size:.1f} MiB)"
        if self.max_error is None:
            return text + "; not checked"
        return (f"{text}; checked against the eager model on {self.batches} input batches: "
                f"max abs error {self.max_error:.2e} (tolerance {self.tolerance:.2e})")


# --------------------------------------------------------------------------- real-ish example inputs


def synthetic_image(seed: int, size: int = 96) -> Image.Image:
    """An RGB image with the statistics of a photo more than of noise: a smooth gradient, a few
    soft-edged blobs and strokes of colour, light grain. Deterministic in ``seed``."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    base = rng.uniform(0, 1, 3)[:, None, None] * (1 - yy) + rng.uniform(0, 1, 3)[:, None, None] * xx
    for _ in range(4):
        cy, cx, r = rng.uniform(0.1, 0.9), rng.uniform(0.1, 0.9), rng.uniform(0.08, 0.3)
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
        base = base * (1 - blob) + rng.uniform(0, 1, 3)[:, None, None] * blob
    y0 = rng.uniform(0.2, 0.8)
    stroke = np.exp(-((yy - y0 - 0.3 * np.sin(6 * xx)) ** 2) / 0.002)
    base = np.clip(base * (1 - stroke) + stroke + rng.normal(0, 0.02, base.shape), 0, 1)
    return Image.fromarray((base.transpose(1, 2, 0) * 255).round().astype(np.uint8), "RGB")


def synthetic_waveform(seconds: float, sample_rate: int, seed: int) -> torch.Tensor:
    """A voiced, speech-like signal: harmonics of a gliding pitch (100-220 Hz) under a syllable-rate
    envelope, with a little noise. Deterministic in ``seed``."""
    import math

    import torch

    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * sample_rate)) / sample_rate
    f0 = 100 + 120 * torch.rand(1, generator=gen) + 30 * torch.sin(2 * math.pi * 1.5 * t)
    phase = 2 * math.pi * torch.cumsum(f0, 0) / sample_rate
    wave = sum(torch.sin(k * phase) / k for k in range(1, 12))
    envelope = 0.5 * (1 - torch.cos(2 * math.pi * 3.0 * t)).clamp(min=0.05)
    return (0.3 * wave * envelope + 0.01 * torch.randn(t.shape, generator=gen)).float()


# --------------------------------------------------------------------------- exporting


def _dynamic_shapes(spec: ExportSpec) -> tuple[Any, ...]:
    """``torch.export`` dynamic shapes, one per input in order: the free axes ``Dim.DYNAMIC``, so
    that export infers their ranges (a reflect-padded convolution needs a few frames; equal axes of
    several inputs are unified) and fails rather than fix one to the example's size."""
    from torch.export import Dim

    return tuple({axis: Dim.DYNAMIC for axis in spec.dynamic[name]} if spec.dynamic.get(name) else None
                 for name in spec.example)


def _torchscript(spec: ExportSpec, out: Path) -> None:
    import torch

    traced = torch.jit.trace(spec.module, tuple(spec.example.values()), check_trace=False, strict=False)
    torch.jit.save(traced, str(out))


def _exported_program(spec: ExportSpec, out: Path) -> None:
    import torch

    program = torch.export.export(spec.module, tuple(spec.example.values()), dynamic_shapes=_dynamic_shapes(spec))
    with open(out, "wb") as f:  # a file object: torch.export.save would want the name to end in .pt2
        torch.export.save(program, f)


def _onnx(spec: ExportSpec, out: Path) -> None:
    import io

    import torch

    for module in ("onnx", "onnxscript", "onnxruntime"):
        try:
            __import__(module)
        except ImportError:
            raise ExportError(f"ONNX export needs {module}: pip install onnx onnxscript onnxruntime") from None
    size = sum(p.numel() * p.element_size() for p in spec.module.parameters())
    quiet = io.StringIO()
    with contextlib.redirect_stdout(quiet):  # the exporter reports each of its steps on stdout
        torch.onnx.export(spec.module, tuple(spec.example.values()), str(out), input_names=list(spec.example),
                          output_names=list(spec.outputs), dynamic_shapes=_dynamic_shapes(spec), dynamo=True,
                          external_data=size > 1.5 * 2**30, verbose=False)


_EXPORTERS = {"onnx": _onnx, "torchscript": _torchscript, "exported-program": _exported_program}


# --------------------------------------------------------------------------- checking


def _flat(result: Any) -> list[torch.Tensor]:
    import torch

    if isinstance(result, torch.Tensor):
        return [result]
    if isinstance(result, list | tuple):
        return [t for item in result for t in _flat(item)]
    if type(result).__module__ == "numpy":
        return [torch.from_numpy(result)]
    raise ExportError(f"the exported model returned a {type(result).__name__}, expected tensors")


def _runner(fmt: str, out: Path) -> Any:
    """A function running the exported file on named inputs."""
    import torch

    if fmt == "torchscript":
        loaded = torch.jit.load(str(out))
        return lambda inputs: loaded(*inputs.values())
    if fmt == "exported-program":
        with open(out, "rb") as f:
            program = torch.export.load(f).module()
        return lambda inputs: program(*inputs.values())
    import onnxruntime

    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]

    def run(inputs: dict[str, torch.Tensor]) -> list[Any]:
        missing = [n for n in names if n not in inputs]
        if missing:
            raise ExportError(f"the ONNX file asks for inputs {missing} that the model does not take")
        return session.run(None, {n: inputs[n].detach().cpu().numpy() for n in names})

    return run


def _check(spec: ExportSpec, fmt: str, out: Path) -> tuple[float, float, int]:
    """The exported file against the eager model on every input batch: ``(max error, tolerance, batches)``."""
    import torch

    run = _runner(fmt, out)
    worst, scale = 0.0, 1.0
    batches = [spec.example, *spec.checks]
    for inputs in batches:
        with torch.no_grad():
            expected = _flat(spec.module(*inputs.values()))
            got = _flat(run(inputs))
        if len(got) != len(expected):
            raise ExportError(f"the exported model returns {len(got)} outputs, the model {len(expected)}")
        for e, g in zip(expected, got, strict=True):
            e, g = e.detach().float().cpu(), g.detach().float().cpu()
            if e.shape != g.shape:
                raise ExportError(f"the exported model returns shape {tuple(g.shape)} where the model gives "
                                  f"{tuple(e.shape)} (inputs {_shapes(inputs)})")
            worst = max(worst, _max_difference(e, g))
            scale = max(scale, float(e.abs().nan_to_num(0.0, 0.0, 0.0).max()) if e.numel() else 0.0)
    return worst, RELATIVE_TOLERANCE * scale, len(batches)


def _max_difference(expected: torch.Tensor, got: torch.Tensor) -> float:
    """The largest absolute difference; NaN where the other has a number counts as infinite (a plain
    max would skip it), NaN in both as equal."""
    import torch

    if not expected.numel():
        return 0.0
    same = (expected == got) | (expected.isnan() & got.isnan())  # equal infinities too
    diff = (expected - got).abs().nan_to_num(nan=float("inf"))
    return float(torch.where(same, torch.zeros_like(diff), diff).max())


def _shapes(inputs: dict[str, torch.Tensor]) -> str:
    return ", ".join(f"{k} {tuple(v.shape)}" for k, v in inputs.items())


# --------------------------------------------------------------------------- the API


def _format_of(fmt: str | None, out: Path) -> str:
    if fmt is None:
        fmt = _SUFFIXES.get(out.suffix.lower())
        if fmt is None:
            raise InputError(f"cannot tell the format from {out.name!r}: pass one of {', '.join(FORMATS)} "
                             f"(or an --out ending in {', '.join(_SUFFIXES)})")
    if fmt not in FORMATS:
        raise InputError(f"unknown export format {fmt!r}; expected one of {', '.join(FORMATS)}")
    return fmt


def _spec_of(model: Any) -> ExportSpec:
    from . import domains
    from .predict import _domain_of

    domain = domains.get(_domain_of(model))
    factory = getattr(domain.module("predict"), "export_spec", None)
    if factory is None:
        raise ExportError(f"domain {domain.name!r} does not export models (its predict.py has no export_spec)")
    return factory(model)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporters' progress logs and tracer warnings off: the result is checked and reported instead."""
    import logging
    import warnings

    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._export", "torch.fx", "onnxscript")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _first_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    return f"{type(err).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def export(model: Any, format: str | None, out: str | os.PathLike[str], *, check: bool = True,  # noqa: A002
           device: Any = None, mirror: Any = None) -> ExportReport:
    """Export ``model`` (loaded, or a name for :func:`reszoo.load`) to ``out`` as ``format``
    (``onnx``, ``torchscript``, ``exported-program``; None: from ``out``'s suffix), then check the
    file against the eager model (``check=False`` skips that). Returns the report; a model the
    format cannot express, or a file that does not compute what the model does, is an
    :class:`ExportError` (and no file is left)."""
    import torch

    out = Path(out)
    fmt = _format_of(format, out)
    if isinstance(model, str | os.PathLike):
        from .api import load

        model = load(os.fspath(model), device=device, mirror=mirror)
    name = getattr(getattr(model, "entry", None), "name", None) or type(model).__name__
    try:
        spec = _spec_of(model)
    except TypeError as err:  # a model of the domain that is not what its export takes (a GAN's discriminator)
        raise ExportError(f"{name} cannot be exported: {err}") from err
    spec.module.eval()
    if out.is_dir():
        raise InputError(f"--out {out} is a folder; give a file name such as {name}{FORMATS[fmt]}")
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with torch.no_grad(), _quiet():
            _EXPORTERS[fmt](spec, out)
    except ReszooError:
        raise
    except Exception as err:  # the exporter's own error: which model, which format, and why, on one line
        out.unlink(missing_ok=True)
        raise ExportError(f"{name} cannot be exported to {fmt}: {_first_line(err)}") from err
    if not check:
        return ExportReport(out, fmt, None, None, 0)
    try:
        with _quiet():
            worst, tolerance, batches = _check(spec, fmt, out)
    except Exception as err:
        out.unlink(missing_ok=True)
        if isinstance(err, ReszooError):
            raise ExportError(f"{name} exported to {fmt} fails its check: {err}") from err
        raise ExportError(f"{name} exported to {fmt} cannot be run back: {_first_line(err)}") from err
    if not worst <= tolerance:
        out.unlink(missing_ok=True)
        raise ExportError(f"{name} exported to {fmt} differs from the eager model by {worst:.3g} (tolerance "
                          f"{tolerance:.3g}); the file was removed")
    return ExportReport(out, fmt, worst, tolerance, batches)


# --------------------------------------------------------------------------- `reszoo export`


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("export", help="export a model to ONNX, TorchScript or torch.export, checked against it",
                              description="Export a model's network and check the file against the eager model.")
    p.add_argument("name", help="registry name, hf://owner/repo[@rev] or a saved-model folder")
    p.add_argument("--format", choices=list(FORMATS), default=None,
                   help="default: from --out's suffix (.onnx, .pt, .pt2)")
    p.add_argument("--out", required=True, help="the file to write")
    p.add_argument("--no-check", dest="check", action="store_false", help="do not run the file back against the model")
    p.add_argument("--device", default=None)
    p.add_argument("--mirror", default=None, help="mirror folder (default $RESZOO_MIRROR)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    report = export(args.name, args.format, args.out, check=args.check, device=args.device, mirror=args.mirror)
    print(f"{args.name}: {report}")
    return 0


class _CallableModule(types.ModuleType):
    """``reszoo.export`` is both this module and the function (as ``reszoo.finetune``): importing
    the module binds it to ``reszoo.export``; calling it calls :func:`export`."""

    def __call__(self, model: Any, format: str | None, out: str | os.PathLike[str], **options: Any) -> ExportReport:  # noqa: A002
        return export(model, format, out, **options)


sys.modules[__name__].__class__ = _CallableModule
