"""Batches of similar lengths, shared by fine-tuning's sampler and the text encoder's ``encode``.

Pure Python and tiny: no torch, so any module may use it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

__all__ = ["by_length"]


def by_length(indices: Iterable[int], lengths: Sequence[int], batch_size: int, *,
              longest_first: bool = False) -> list[list[int]]:
    """``indices`` ordered by ``lengths[i]`` and cut into batches of ``batch_size``, so that each batch
    pads only to its own longest item. The sort is stable (equal lengths keep their order), also
    with ``longest_first``, so the batches are a function of the input order alone."""
    ordered = sorted(indices, key=lengths.__getitem__, reverse=longest_first)
    return [ordered[i:i + batch_size] for i in range(0, len(ordered), batch_size)]
