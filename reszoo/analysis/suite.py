"""All four diagnostics at once, as JSON-ready data and PNG plots (what ``reszoo analyze`` writes)."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .core import _slice, block_infos, branch_ratio, gradient_correlation, gradient_flow
from .lesions import lesion_study

__all__ = ["analyze", "plain_data", "write_json", "write_plots"]


def analyze(
    model: nn.Module,
    inputs: Tensor | Mapping[str, Tensor],
    targets: Tensor,
    *,
    grad_samples: int = 128,
    seed: int = 0,
    batch_size: int = 256,
    loss_fn: Callable[[Any, Any], Tensor] | None = None,
    **lesion: Any,
) -> dict[str, Any]:
    """Block table, gradient flow (on the first ``grad_samples`` inputs; ``loss_fn`` or cross-entropy),
    branch ratio, lesion study and (a float input tensor) gradient correlation of ``model`` on
    ``inputs`` (a tensor, or a dict of batched tensors passed as keyword arguments), moved to its device.
    ``lesion``: further options of :func:`~reszoo.analysis.core.lesion_study` (``metric``,
    ``metric_name``, ``ks``, ``trials``), whose defaults are the suite's."""
    param = next(model.parameters())

    def to(t: Tensor) -> Tensor:
        return t.to(device=param.device, dtype=param.dtype if t.is_floating_point() else t.dtype)

    x = {k: to(v) for k, v in inputs.items()} if isinstance(inputs, Mapping) else to(inputs)
    y = targets.to(param.device)
    float_tensor = isinstance(x, Tensor) and x.is_floating_point()
    # token inputs: nearby inputs are nearby word embeddings, where the model names its embedding
    embedding = None if float_tensor else getattr(model, "get_input_embeddings", lambda: None)()
    torch.manual_seed(seed)  # dropout in the train-mode gradient pass
    results: dict[str, Any] = {
        "blocks": block_infos(model, x),
        "gradient_flow": gradient_flow(model, _slice(x, 0, grad_samples), y[:grad_samples], loss_fn=loss_fn),
        "branch_ratio": branch_ratio(model, x, batch_size=batch_size),
        "lesion": lesion_study(model, x, y, seed=seed, batch_size=batch_size, **lesion),
        "gradient_correlation": (gradient_correlation(model, x, seed=seed, embedding=embedding)
                                 if float_tensor or embedding is not None else None),
    }
    return results


def plain_data(value: Any) -> Any:
    """Dataclasses, tuples and non-finite floats as JSON-safe data (NaN and infinities become None)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return plain_data(dataclasses.asdict(value))
    if isinstance(value, Mapping):
        return {str(k): plain_data(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain_data(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(data: Any, path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(plain_data(data), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return path


def write_plots(results: Mapping[str, Mapping[str, Any]], out: str | os.PathLike[str]) -> list[Path]:
    """One PNG per diagnostic in ``out``, every model of ``{label: analyze(...)}`` on the same axes."""
    from .plots import plot_branch_ratio, plot_gradient_correlation, plot_gradient_flow, plot_lesion

    out = Path(out)
    labelled = {name: r for name, r in results.items()}
    written = [
        plot_gradient_flow({k: r["gradient_flow"] for k, r in labelled.items()}, out / "gradient_flow.png"),
        plot_branch_ratio({k: r["branch_ratio"] for k, r in labelled.items()}, out / "branch_ratio.png"),
        plot_lesion({k: r["lesion"] for k, r in labelled.items()}, out / "lesion.png"),
    ]
    correlations = {k: r["gradient_correlation"] for k, r in labelled.items() if r.get("gradient_correlation") is not None}
    if correlations:
        written.append(plot_gradient_correlation(correlations, out / "gradient_correlation.png"))
    return written
