"""PNG plots of :mod:`reszoo.analysis` results (matplotlib, imported here only).

Each helper takes one result or a mapping ``{label: result}`` (e.g. ``{"residual": ..., "plain":
...}``) drawn on the same axes, writes ``path`` and returns it. No pyplot: a bare ``Figure`` has no
global state and needs no display.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from .core import BranchRatio, GradientCorrelation, GradientFlow
from .lesions import LesionStudy

__all__ = ["plot_branch_ratio", "plot_gradient_correlation", "plot_gradient_flow", "plot_lesion"]

R = TypeVar("R")


def _series(results: R | Mapping[str, R]) -> dict[str, R]:
    return dict(results) if isinstance(results, Mapping) else {"": results}


def _figure(ncols: int, title: str | None) -> tuple[Any, list[Any]]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.2 * ncols, 3.8), layout="constrained")
    axes = [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]
    if title:
        fig.suptitle(title)
    return fig, axes


def _save(fig: Any, path: str | os.PathLike[str], axes: list[Any]) -> Path:
    from matplotlib.ticker import MaxNLocator

    for ax in axes:
        if ax.get_xscale() == "linear":
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if ax.get_legend_handles_labels()[1]:
            ax.legend(fontsize=8)
        ax.grid(True, alpha=0.3)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def plot_gradient_flow(results: GradientFlow | Mapping[str, GradientFlow], path: str | os.PathLike[str],
                       title: str | None = "Gradient flow") -> Path:
    """Gradient norm w.r.t. each block's input (left) and parameters (right), log scale, by block."""
    fig, (left, right) = _figure(2, title)
    for label, r in _series(results).items():
        idx = range(len(r.blocks))
        left.plot(idx, r.input_grad_norm, marker=".", label=label or None)
        right.plot(idx, r.param_grad_norm, marker=".", label=label or None)
    left.set(yscale="log", xlabel="block (input side first)", ylabel="‖∂L/∂x‖ at block input")
    right.set(yscale="log", xlabel="block (input side first)", ylabel="‖∂L/∂θ‖ of block parameters")
    return _save(fig, path, [left, right])


def plot_branch_ratio(results: BranchRatio | Mapping[str, BranchRatio], path: str | os.PathLike[str],
                      title: str | None = "Branch / input norm") -> Path:
    """``‖F(x)‖ / ‖x‖`` by block (log scale): far below 1, the block is close to the identity."""
    fig, (ax,) = _figure(1, title)
    for label, r in _series(results).items():
        ax.plot(range(len(r.blocks)), r.ratio, marker=".", label=label or None)
    ax.axhline(1.0, color="grey", lw=0.8, ls=":")
    ax.set(yscale="log", xlabel="block (input side first)", ylabel="‖F(x)‖ / ‖x‖")
    return _save(fig, path, [ax])


def plot_lesion(results: LesionStudy | Mapping[str, LesionStudy], path: str | os.PathLike[str],
                title: str | None = "Lesion study") -> Path:
    """Left: the metric with each single block removed (crosses at the bottom mark blocks that
    cannot be removed), the intact model dashed. Right: the metric against the number of random
    blocks removed (mean and standard deviation over draws), k = 0 being the intact model."""
    fig, (left, right) = _figure(2, title)
    metric = ""
    for label, r in _series(results).items():
        metric = r.metric
        (line,) = left.plot([i for i, v in enumerate(r.single) if v is not None], [v for v in r.single if v is not None],
                            marker="o", ms=3, ls="-", label=label or None)
        left.axhline(r.baseline, color=line.get_color(), ls="--", lw=0.8)
        blocked = [i for i, v in enumerate(r.single) if v is None]
        if blocked:  # at the foot of the axes (axes coordinates), not at a metric value of 0
            left.plot(blocked, [0.03] * len(blocked), "x", color=line.get_color(), transform=left.get_xaxis_transform(),
                      label=f"{label + ': ' if label else ''}not removable")
        ks = [0] + [p["k"] for p in r.random]
        means = [r.baseline] + [p["mean"] for p in r.random]
        stds = [0.0] + [p["std"] for p in r.random]
        right.errorbar(ks, means, yerr=stds, marker="o", ms=3, capsize=2, label=label or None)
    left.set(xlabel="block removed (input side first)", ylabel=metric)
    right.set(xlabel="random blocks removed (k)", ylabel=metric)
    return _save(fig, path, [left, right])


def plot_gradient_correlation(results: GradientCorrelation | Mapping[str, GradientCorrelation],
                              path: str | os.PathLike[str], title: str | None = "Gradient correlation along a line") -> Path:
    """Correlation of input gradients against the distance between the inputs (log x)."""
    fig, (ax,) = _figure(1, title)
    for label, r in _series(results).items():
        ax.plot([lag * r.step for lag in r.lags], r.correlation, marker="o", ms=3, label=label or None)
    ax.axhline(0.0, color="grey", lw=0.8, ls=":")
    ax.set(xscale="log", xlabel="distance between inputs (× ‖x‖)", ylabel="gradient correlation", ylim=(-0.1, 1.05))
    return _save(fig, path, [ax])
