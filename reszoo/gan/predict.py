"""Inference for generators: what ``reszoo predict`` and ``reszoo export`` do with them.

An input is a class label (a name or an index; ``random`` for a random class, or for an
unconditional generator). Each gives one sample, seeded by the input's position (the same
inputs give the same images), written as ``<model>-<position>.png`` into ``out_dir`` (``reszoo
predict --out-dir``, default ``generated/``; from Python a new temporary folder). Rows:
``{input, seed, label, file}`` (``label``: the class generated, drawn for ``random``; None for an
unconditional generator).

Light on import (torch is imported when predicting): the package re-exports :func:`predict`.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..predict import Options, Task, domain_predict

if TYPE_CHECKING:
    import torch

    from ..export import ExportSpec


def _generator(model: Any) -> Any:
    from .models import GeneratorMixin

    if not isinstance(model, GeneratorMixin):
        raise TypeError(f"{type(model).__name__} is not a generator")
    return model


def draw(model: Any, label: Any, seed: int, truncation: float | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(z (1, z_dim), y (1,) or None)`` of one sample, exactly as ``model.sample(1, label,
    truncation, seed)`` draws them: the noise first, then a random class where none is given."""
    import torch

    y = model.class_indices(None if label == "random" else label, 1)
    generator = torch.Generator().manual_seed(seed)
    z = model.sample_noise(1, truncation, generator)
    if model.num_classes and y is None:
        y = torch.randint(model.num_classes, (1,), generator=generator)
    return z, y


def task(model: Any, options: Options) -> Task:
    """How ``model`` predicts: labels and noise drawn in the loader, images generated in batches."""
    import torch

    from ..errors import InputError
    from .grid import save_grid

    gen = _generator(model)
    if options.reference is not None:
        raise InputError("reference= applies to embedding models, not to generators")
    truncation = gen.default_truncation
    out_dir = Path(options.out_dir) if options.out_dir is not None else Path(tempfile.mkdtemp(prefix="reszoo-generated-"))
    stem = getattr(getattr(gen, "entry", None), "name", None) or "sample"
    names = getattr(gen, "labels", None) or ()
    param = next(gen.parameters())

    def read(value: Any, index: int) -> tuple[int, torch.Tensor, torch.Tensor | None]:
        try:
            z, y = draw(gen, value, index, truncation)
        except ValueError as err:  # an unknown or out-of-range label
            raise InputError(str(err)) from err
        return index, z, y

    def run(samples: list[tuple[int, torch.Tensor, torch.Tensor | None]]) -> list[list[dict[str, Any]]]:
        z = torch.cat([s[1] for s in samples]).to(param.device, param.dtype)
        y = torch.cat([s[2] for s in samples]).to(param.device) if gen.num_classes else None
        images = gen.generate(z, y, truncation).add(1).div(2).clamp(0, 1)
        groups = []
        for (index, _, label), image in zip(samples, images, strict=True):
            path = save_grid(image[None], out_dir / f"{stem}-{index}.png", padding=0)
            cls = None if label is None else int(label[0])
            groups.append([{"seed": index, "label": names[cls] if cls is not None and cls < len(names) else cls,
                            "file": str(path)}])
        return groups

    return Task(fields=("input", "seed", "label", "file"), read=read, run=run, kind="label")


def predict(model: Any, inputs: list[Any], top_k: int = 5, **options: Any) -> list[dict[str, Any]]:
    """One sample per label (see :func:`reszoo.predict`, whose options this takes): rows, as a
    list. ``top_k`` does not apply to generators."""
    return domain_predict(task, model, inputs, top_k, **options)


def export_spec(model: Any) -> ExportSpec:
    """The generator's ``forward(z, y)`` (``forward(z)`` when unconditional): images in [-1, 1]
    from noise and class indices, at the model's default truncation. Sampling (random noise and
    classes, seeds) stays in Python: draw ``z`` and ``y`` as ``reszoo.gan.predict.draw`` does."""
    import torch
    from torch import nn

    from ..export import ExportSpec

    gen = _generator(model)
    truncation = gen.default_truncation
    param = next(gen.parameters())

    class Generate(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.generator = gen

        def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
            return self.generator.generate(z, y, truncation)

    def inputs(n: int, seed: int) -> dict[str, torch.Tensor]:
        zs, ys = zip(*(draw(gen, "random", seed + i, truncation) for i in range(n)), strict=True)
        out = {"z": torch.cat(zs).to(param.device, param.dtype)}
        if gen.num_classes:
            out["y"] = torch.cat(ys).to(param.device)
        return out

    example = inputs(2, 0)
    return ExportSpec(module=Generate().eval(), example=example, checks=[inputs(3, 10), inputs(1, 20)],
                      outputs=("images",), dynamic={k: {0: "batch"} for k in example})
