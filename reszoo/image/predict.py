"""Inference for image models: what ``reszoo predict`` and ``reszoo export`` do with them.

Classifiers give rows ``{input, rank, label, prob}``, the top classes of each image; a feature
extractor (``num_classes=0``) gives ``{input, embedding}``, or with a ``reference`` image
``{input, reference, score}`` (cosine similarity). Inputs: image files, folders of them
(searched recursively), PIL images, numpy arrays or tensors (one image each).

Light on import (torch is imported when predicting): the package re-exports :func:`predict`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..predict import Options, Task, classify_rows, describe, domain_predict, embedding_rows

if TYPE_CHECKING:
    from ..export import ExportSpec

CLASSIFIER_FIELDS = ("input", "rank", "label", "prob")
EMBEDDING_FIELDS = ("input", "embedding")
REFERENCE_FIELDS = ("input", "reference", "score")


def _preprocess(model: Any) -> Any:
    preprocess = getattr(model, "preprocess", None)
    if preprocess is None:
        raise ValueError("model has no .preprocess; load it with reszoo.load(name) or set model.preprocess")
    return preprocess


def task(model: Any, options: Options) -> Task:
    """How ``model`` predicts: images read and preprocessed in the loader, classified (or embedded) in batches."""
    import torch

    from ..errors import InputError
    from . import IMAGE_EXTENSIONS
    from .preprocess import ImageInputError

    preprocess = _preprocess(model)
    if getattr(model, "features_only", False):
        raise InputError("this model gives intermediate feature maps (features_only=True): predict needs its classifier "
                         "or pooled features; load it without features_only")
    param = next(model.parameters())
    classifier = getattr(model, "num_classes", 1) != 0

    def read(value: Any, index: int) -> torch.Tensor:
        x = preprocess(value)
        if x.shape[0] != 1:
            raise ImageInputError(f"{describe(value)} holds {x.shape[0]} images; give one image per input")
        return x

    def embed(batch: torch.Tensor) -> torch.Tensor:
        return model(batch.to(device=param.device, dtype=param.dtype)).float()

    if classifier:
        if options.reference is not None:
            raise InputError("reference= applies to embedding models; this image model is a classifier")
        labels = getattr(model, "labels", None)
        run = lambda batch: classify_rows(embed(batch).softmax(-1), labels, options.top_k)  # noqa: E731
        fields = CLASSIFIER_FIELDS
    else:
        reference = None
        if options.reference is not None:
            reference = (describe(options.reference), embed(read(options.reference, 0))[0])
        run = lambda batch: embedding_rows(embed(batch), reference)  # noqa: E731
        fields = REFERENCE_FIELDS if reference is not None else EMBEDDING_FIELDS
    return Task(fields=fields, read=read, collate=torch.cat, run=run, extensions=IMAGE_EXTENSIONS, kind="image")


def predict(model: Any, inputs: list[Any], top_k: int = 5, **options: Any) -> list[dict[str, Any]]:
    """Rows for every input (see :func:`reszoo.predict`, whose options this takes), as a list."""
    return domain_predict(task, model, inputs, top_k, **options)


def export_spec(model: Any) -> ExportSpec:
    """The network as it is (``forward(x)``, logits or pooled features), traced with two
    preprocessed synthetic images; the batch dimension is dynamic."""
    import torch

    from ..export import ExportSpec, synthetic_image

    preprocess = _preprocess(model)
    param = next(model.parameters())

    def images(n: int, seed: int) -> torch.Tensor:
        return torch.cat([preprocess(synthetic_image(seed + i)) for i in range(n)]).to(param.device, param.dtype)

    outputs = ("features",) if getattr(model, "features_only", False) else ("logits",)
    return ExportSpec(module=model, example={"x": images(2, 0)}, checks=[{"x": images(3, 10)}, {"x": images(1, 20)}],
                      outputs=outputs, dynamic={"x": {0: "batch"}})
