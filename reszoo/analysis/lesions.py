"""The lesion study (Veit et al. 2016, arXiv:1605.06431): a model's metric with each residual block,
and with ``k`` random blocks, removed at test time. A residual block loses its branch and keeps its
shortcut; a plain block is skipped where its input and output shapes allow. Built on the probes
of :mod:`reszoo.analysis.core`."""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from ..nn import ResidualBlock, join_hook
from .core import (AnalysisError, BlockInfo, Inputs, Metric, _call, _first_arg, _first_tensor, _mode, _slice,
                   block_infos, named_blocks, num_samples)

__all__ = ["LesionStudy", "accuracy", "evaluate", "lesion_study", "lesioned"]


@contextmanager
def lesioned(model: nn.Module, remove: Iterable[str], infos: Sequence[BlockInfo]) -> Iterator[None]:
    """``model`` with the named blocks removed for the body (Veit et al. 2016).

    A residual block returns its shortcut in place of ``F(x) + S(x)`` (what follows the join in
    the block, e.g. a ReLU or a post-LayerNorm, still runs); a plain block whose output has its
    input's shape returns its input. ``infos`` (from :func:`block_infos`) says which applies;
    naming a block that is not removable raises.
    """
    by_name = {info.name: info for info in infos}
    modules = dict(named_blocks(model))
    targets = list(dict.fromkeys(remove))
    for name in targets:
        info = by_name.get(name)
        if info is None or name not in modules:
            raise AnalysisError(f"no residual block named {name!r} in this model")
        if not info.removable:
            raise AnalysisError(f"block {name!r} cannot be removed: a plain block that changes its input's shape "
                                f"({info.in_shape} -> {info.out_shape}) has nothing to fall back on")
    via_shortcut = [modules[n] for n in targets if by_name[n].removal == "shortcut"]
    via_identity = [modules[n] for n in targets if by_name[n].removal == "identity"]

    # Copies, so that an in-place op after the join (ReLU(inplace=True)) cannot write into the
    # block's input, which the shortcut may be.
    def drop_branch(block: ResidualBlock, branch: Tensor, shortcut: Tensor | None) -> Tensor | None:
        return shortcut.clone() if shortcut is not None else None

    def skip(block: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> Any:
        x = _first_arg(args, kwargs)
        return x.clone() if x is not None and isinstance(out, Tensor) and x.shape == out.shape else out

    with ExitStack() as stack:
        stack.enter_context(join_hook(via_shortcut, drop_branch))
        for b in via_identity:
            stack.callback(b.register_forward_hook(skip, with_kwargs=True).remove)
        yield


def accuracy(output: Tensor, targets: Tensor) -> float:
    """Top-1 accuracy in percent of logits ``(N, C)`` against class indices ``(N,)``."""
    correct = int((output.argmax(-1) == targets.to(output.device)).sum())
    return 100.0 * correct / len(targets)  # exact in Python floats, not a float32 mean


@torch.no_grad()
def evaluate(model: nn.Module, inputs: Inputs, targets: Any, metric: Metric = accuracy, *, batch_size: int = 256) -> float:
    """``metric(outputs, targets)`` over all of ``inputs`` (eval mode, batches of ``batch_size``)."""
    outs = []
    with _mode(model, False):
        for start in range(0, num_samples(inputs), batch_size):
            outs.append(_first_tensor(_call(model, _slice(inputs, start, start + batch_size))).float())
    return float(metric(torch.cat(outs), targets))


@dataclass
class LesionStudy:
    """The metric of the intact model (``baseline``), with each single block removed (``single``;
    ``None`` where the block is not removable), and with ``k`` random removable blocks removed
    (``random``: per ``k``, the mean, standard deviation and values over ``trials`` draws)."""

    metric: str
    baseline: float
    blocks: list[str]
    removal: list[str]
    single: list[float | None]
    random: list[dict[str, Any]] = field(default_factory=list)
    samples: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def removable(self) -> int:
        return sum(r != "not removable" for r in self.removal)

    def single_drops(self) -> list[float]:
        """``baseline - metric`` for each removable block."""
        return [self.baseline - v for v in self.single if v is not None]


def lesion_study(
    model: nn.Module,
    inputs: Inputs,
    targets: Any,
    *,
    metric: Metric = accuracy,
    metric_name: str = "accuracy (%)",
    ks: Sequence[int] = (1, 2, 4, 8, 16, 32),
    trials: int = 5,
    seed: int = 0,
    batch_size: int = 256,
    candidates: Sequence[str] | None = None,
) -> LesionStudy:
    """Veit et al. 2016 (arXiv:1605.06431): the metric with each block removed at test time, and
    with ``k`` random blocks removed (``k`` above the number of removable blocks is skipped; all
    removable blocks at once is one draw, not ``trials``). Seeded: same ``seed``, same draws.

    ``candidates`` limits the random draws to these blocks (e.g. those a model and its plain twin
    can both remove, so that their curves remove the same blocks)."""
    infos = block_infos(model, inputs)
    run = lambda remove: _lesioned_metric(model, remove, infos, inputs, targets, metric, batch_size)  # noqa: E731
    baseline = run([])
    single = [run([info.name]) if info.removable else None for info in infos]
    removable = [info.name for info in infos if info.removable and (candidates is None or info.name in candidates)]
    rng = random.Random(seed)
    curve = []
    for k in sorted({k for k in ks if 1 <= k <= len(removable)}):
        draws = 1 if k == len(removable) else trials
        values = [run(rng.sample(removable, k)) for _ in range(draws)]
        mean = sum(values) / len(values)
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
        curve.append({"k": k, "mean": mean, "std": std, "values": values})
    return LesionStudy(metric_name, baseline, [i.name for i in infos], [i.removal for i in infos], single, curve,
                       samples=num_samples(inputs))


def _lesioned_metric(model: nn.Module, remove: Sequence[str], infos: Sequence[BlockInfo], inputs: Inputs,
                     targets: Any, metric: Metric, batch_size: int) -> float:
    with lesioned(model, remove, infos):
        return evaluate(model, inputs, targets, metric, batch_size=batch_size)
