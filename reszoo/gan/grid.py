"""Image grids: samples in [0, 1] written as one PNG (``reszoo generate``, ``reszoo predict``)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from torch import Tensor

__all__ = ["save_grid", "write_grid"]


def save_grid(images: Tensor, path: str | Path, *, nrow: int | None = None, padding: int = 2) -> Path:
    """Write images in [0, 1] (N, C, H, W) as one PNG grid, ``nrow`` per row (default: ~square)."""
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected images of shape (N, 1|3, H, W), got {tuple(images.shape)}")
    return write_grid([images], images.shape[0], path, nrow=nrow, padding=padding)


def write_grid(chunks: Iterable[Tensor], n: int, path: str | Path, *, nrow: int | None = None, padding: int = 2) -> Path:
    """Write ``n`` images, arriving as chunks (N_i, C, H, W) in [0, 1], as one PNG grid (the layout
    of :func:`save_grid`), holding only the 8-bit grid and one chunk in memory at a time."""
    import math

    import numpy as np
    from PIL import Image

    if n < 1:
        raise ValueError(f"a grid needs at least one image, got n={n}")
    if isinstance(nrow, bool) or (nrow is not None and (not isinstance(nrow, int) or nrow < 1)):
        raise ValueError(f"nrow must be a positive integer, got {nrow!r}")
    nrow = nrow or math.ceil(math.sqrt(n))
    rows = math.ceil(n / nrow)
    grid: Any = None
    done = 0
    for chunk in chunks:
        if chunk.ndim != 4 or chunk.shape[1] not in (1, 3):
            raise ValueError(f"expected images of shape (N, 1|3, H, W), got {tuple(chunk.shape)}")
        _, c, h, w = chunk.shape
        if grid is None:  # white background and padding, as the images' 1.0
            grid = np.full((rows * (h + padding) + padding, nrow * (w + padding) + padding, c), 255, dtype=np.uint8)
        pixels = (chunk.detach().float().cpu().clamp(0, 1).permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
        for img in pixels:
            if done == n:
                raise ValueError(f"got more than the n={n} images announced")
            r, col = divmod(done, nrow)
            top, left = padding + r * (h + padding), padding + col * (w + padding)
            grid[top:top + h, left:left + w] = img
            done += 1
    if done != n:
        raise ValueError(f"got {done} images, expected n={n}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid[:, :, 0] if grid.shape[2] == 1 else grid).save(path)
    return path

