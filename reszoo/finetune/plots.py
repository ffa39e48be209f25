"""What a fine-tuning run shows: a learning curve and a confusion matrix, as PNG files.

Written by the main process into the run folder, named in the saved model's ``entry.extra`` (so
the card embeds them) and carried with the model when it is saved or pushed. matplotlib is
imported here only, drawing on its Agg canvas (no pyplot, no display, the caller's backend left
alone); without matplotlib the run goes on without figures.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["CONFUSION_FILE", "CURVE_FILE", "confusion_matrix", "learning_curve", "write_figures"]

logger = logging.getLogger(__name__)

CURVE_FILE = "learning_curve.png"
CONFUSION_FILE = "confusion_matrix.png"
_DPI = 100


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: Path) -> Path:
    tmp = path.with_name(path.name + ".tmp")
    # No date or version in the file: the same run writes the same bytes.
    fig.savefig(tmp, format="png", metadata={"Software": None})
    tmp.replace(path)
    return path


def learning_curve(history: Sequence[dict[str, Any]], path: Path, *, title: str = "") -> Path:
    """Train and validation loss (left) and accuracy (right) per epoch; a sequence criterion's
    runs show its first validation metric (an error rate) on the right instead."""
    fig = _figure(9, 3.6)
    loss_ax, acc_ax = fig.subplots(1, 2)
    epochs = [r["epoch"] for r in history]
    right = "accuracy" if any("train_accuracy" in r or "val_accuracy" in r for r in history) else next(
        (k[4:] for r in history for k in r if k.startswith("val_") and k not in ("val_loss", "val_n")), "accuracy")
    for ax, key, label in ((loss_ax, "loss", "loss"), (acc_ax, right, right)):
        for split, style in (("train", "o-"), ("val", "s--")):
            points = [(e, r[f"{split}_{key}"]) for e, r in zip(epochs, history, strict=True)
                      if isinstance(r.get(f"{split}_{key}"), int | float) and math.isfinite(r[f"{split}_{key}"])]
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, style, label="train" if split == "train" else "validation")
        best = [r["epoch"] for r in history if r.get("best")]
        if best:
            ax.axvline(best[-1], color="grey", linewidth=0.8, linestyle=":", label=f"best epoch ({best[-1]})")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.set_xticks(epochs if len(epochs) <= 20 else epochs[:: math.ceil(len(epochs) / 20)])
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small")
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def confusion_matrix(matrix: Sequence[Sequence[int]], labels: Sequence[str], path: Path, *, title: str = "") -> Path:
    """Rows: true class, columns: predicted; colour is the share of each true class (recall), and
    counts are written in the cells when there are few classes."""
    import numpy as np

    counts = np.asarray(matrix, dtype=np.int64)
    n = len(labels)
    if counts.shape != (n, n):
        raise ValueError(f"confusion matrix of shape {counts.shape} for {n} labels")
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    side = min(max(4.0, 0.16 * n + 2.5), 22.0)
    fig = _figure(side + 1.0, side)
    ax = fig.subplots()
    image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.02, label="share of the true class")
    font = 8 if n <= 20 else max(3, 8 - n // 20)
    ax.set_xticks(range(n), [str(x) for x in labels], rotation=90, fontsize=font)
    ax.set_yticks(range(n), [str(x) for x in labels], fontsize=font)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= 20:
        for i in range(n):
            for j in range(n):
                if counts[i, j]:
                    ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=font,
                            color="white" if shares[i, j] > 0.5 else "black")
    total = int(counts.sum())
    ax.set_title((title + "\n" if title else "") + f"{int(np.trace(counts))} of {total} correct", fontsize="medium")
    return _save(fig, path)


def write_figures(out: Path, history: Sequence[dict[str, Any]], confusion: tuple[str, Any] | None,
                  classes: Sequence[str], *, model_name: str = "") -> dict[str, Path]:
    """The run's figures in ``out``: ``{extra key: path}`` (empty without matplotlib)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        logger.warning("matplotlib is not installed: no learning-curve or confusion-matrix figures "
                       "(pip install 'reszoo[finetune]')")
        return {}
    written = {}
    if history:
        written["learning_curve"] = learning_curve(history, out / CURVE_FILE, title=f"{model_name}: learning curve".lstrip(": "))
    if confusion is not None:
        split, matrix = confusion
        written["confusion_matrix"] = confusion_matrix(matrix, classes, out / CONFUSION_FILE,
                                                       title=f"{model_name}: {split} confusion matrix".lstrip(": "))
    return written
