"""Card text: values as a reader writes them (never JSON), small Markdown tables, links.

Shared by :mod:`reszoo.cards` (the card) and :mod:`reszoo.card_twins` (its residual-vs-plain section).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["HUB_URL", "ROOT", "as_words", "facts_section", "file_ref", "fmt_value", "inline", "is_scalar", "nested_table",
           "rel", "scalar", "table"]

ROOT = Path(__file__).resolve().parent.parent  # a checkout: docs/, weights/ (the bundled mirror)
HUB_URL = "https://huggingface.co"


def fmt_value(value: float) -> str:
    return f"{value:.4g}" if abs(value) < 1e4 else f"{value:.0f}"


def scalar(value: Any) -> str:
    """A number or word as a reader writes it: 309,162 parameters, yes/no, 0.9933."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10_000 else str(value)
    if isinstance(value, float):
        return f"{value:,.6g}" if abs(value) >= 10_000 else f"{value:.6g}"
    return "" if value is None else str(value)


def as_words(key: Any) -> str:
    return str(key).replace("_", " ")


def is_scalar(value: Any) -> bool:
    return not isinstance(value, dict | list | tuple)


def inline(value: Any) -> str:
    """Any value as one line of text: lists comma-separated, mappings as "key value" phrases."""
    if isinstance(value, dict):
        return "; ".join(f"{as_words(k)} {inline(v)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return ", ".join(inline(v) for v in value) if value else "none"
    return scalar(value)


def file_ref(value: Mapping[str, Any]) -> str:
    """A ``{file, repo?, revision?}`` reference (a tokenizer) as a sentence."""
    text = f"`{value['file']}`"
    if value.get("repo"):
        text += f" of `{value['repo']}`"
    if value.get("revision"):
        text += f" at `{str(value['revision'])[:12]}`"
    return text


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def table(rows: Iterable[tuple[Any, ...]], header: tuple[str, ...]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def nested_table(key: str, value: Any) -> str | None:
    """A nested fact as a small table: a mapping of mappings (rows x columns), a mapping or a list
    of mappings; None for what reads well on one line."""
    if isinstance(value, dict) and value and all(isinstance(v, dict) for v in value.values()):
        columns = list(dict.fromkeys(k for v in value.values() for k in v))
        rows = [(as_words(k), *(inline(v.get(c, "")) for c in columns)) for k, v in value.items()]
        return table(rows, ("", *(as_words(c) for c in columns)))
    if isinstance(value, dict) and (len(value) > 4 or len(inline(value)) > 90):
        return table([(as_words(k), inline(v)) for k, v in value.items()], ("", ""))
    if isinstance(value, list | tuple) and value and all(isinstance(v, dict) for v in value):
        columns = list(dict.fromkeys(k for v in value for k in v))
        return table([tuple(inline(v.get(c, "")) for c in columns) for v in value], tuple(as_words(c) for c in columns))
    return None


def facts_section(rows: list[tuple[str, str]], nested: Mapping[str, Any]) -> list[str]:
    """The details table, then one small table per nested fact."""
    out = [table(rows, ("", "")), ""]
    for key, value in nested.items():
        out += [f"**{as_words(key).capitalize()}**", "", nested_table(key, value) or inline(value), ""]
    return out


def rel(path: Path, card_dir: Path) -> str:
    return Path(os.path.relpath(path, card_dir)).as_posix()
