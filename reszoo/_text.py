"""Text helpers shared by the core and the domains: natural order, and capped listings.

Pure Python and tiny, so any module (``import reszoo`` included) may use them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

__all__ = ["listing", "natural_key"]

_DIGITS = re.compile(r"(\d+)")


def natural_key(name: str) -> list[Any]:
    """Sort key putting ``"net-2"`` before ``"net-10"``: runs of digits compare as numbers. The order
    registry names are listed in, and class names become label ids in."""
    return [int(part) if part.isdigit() else part for part in _DIGITS.split(name)]


def listing(items: Iterable[object], limit: int, sep: str = ", ") -> str:
    """The first ``limit`` items joined by ``sep`` and, where there are more, how many in all:
    ``"a, b, c, … (12 in all)"``. Messages and cards name a few keys, files or labels this way."""
    shown = [str(item) for item in items]
    text = sep.join(shown[:limit])
    return text + (f"{sep}… ({len(shown)} in all)" if len(shown) > limit else "")
