"""The residual-vs-plain part of a card: a model's twin in the registry and the section comparing them.

A registry model with a plain twin (``<name>-plain``, the same network with ``residual=False``,
trained with the same recipe and budget) shows both models' numbers side by side, the seeds
beyond the published pair, and what ``extra`` says about the comparison.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .card_text import HUB_URL, ROOT, as_words, fmt_value, inline, is_scalar, rel, scalar, table
from .registry import Entry, Metric

__all__ = ["PAIR_KEY", "PAIR_KEYS", "STUDY_DOC", "is_plain", "is_registry_model", "param_count", "residual_vs_plain",
           "same_metric", "twin_link", "twin_pair"]

STUDY_DOC = "docs/residual-study.md"
# ``extra`` facts that compare a model with its twin: the "Residual vs plain" section shows them.
PAIR_KEYS = ("plain_twin", "residual_twin", "other_seeds", "over_seeds")
PAIR_KEY = re.compile(r"residual[ _-]*vs[ _-]*plain", re.IGNORECASE)


def is_registry_model(entry: Entry, reg: Mapping[str, Entry]) -> bool:
    """Whether ``entry`` is the registry's own model of that name (``reszoo info NAME`` describes
    it), and not a model derived from one (fine-tuned, a replaced head) that kept or took a name."""
    own = reg.get(entry.name)
    if own is None:
        return False
    return (own.arch, own.arch_args, own.labels, own.metrics) == (entry.arch, entry.arch_args, entry.labels, entry.metrics)


def is_plain(entry: Entry) -> bool:
    return entry.arch_args.get("residual", True) is False


def twin_pair(entry: Entry, reg: Mapping[str, Entry]) -> tuple[Entry, Entry] | None:
    """(residual, plain) of a model with a twin in the registry; None otherwise."""
    if not entry.twin or not is_registry_model(entry, reg) or entry.twin not in reg:
        return None
    twin = reg[entry.twin]
    return (twin, entry) if is_plain(entry) else (entry, twin)


def same_metric(metric: Metric, other: Entry) -> Metric | None:
    """``other``'s value of the metric ``metric`` measures (same data, split and metric)."""
    for keys in ((lambda m: (m.dataset, m.split, m.metric, m.name)), (lambda m: (m.dataset, m.split, m.metric))):
        found = [m for m in other.metrics if keys(m) == keys(metric)]
        if len(found) == 1:
            return found[0]
    return None


def param_count(entry: Entry) -> Any:
    return entry.extra.get("params", entry.extra.get("parameters"))


def twin_link(twin: Entry, entry: Entry, card_dir: Path | None) -> str:
    """A link to the twin's card: beside this one in the checkout, its repo on the Hub."""
    if card_dir is not None:
        return f"[{twin.name}]({twin.name}.md)"
    if twin.weights and entry.weights and twin.weights.repo != entry.weights.repo:
        return f"[{twin.name}]({HUB_URL}/{twin.weights.repo})"
    return f"`{twin.name}`" + (f" (`{twin.weights.file}` in this repo)" if twin.weights else "")


def pair_rows(residual: Entry, plain: Entry) -> list[tuple[str, str, str]]:
    """Both models' numbers at the same budget: each metric, then the facts ``extra`` compares."""
    rows = []
    labels = [m.name or m.metric for m in residual.metrics]
    for m in residual.metrics:
        other = same_metric(m, plain)
        if other is not None:  # the data is named where the metric's name alone is ambiguous
            label = (m.name or m.metric) + (f" · {m.dataset} {m.split}" if labels.count(m.name or m.metric) > 1 else "")
            rows.append((label, fmt_value(m.value), fmt_value(other.value)))
    r_params, p_params = param_count(residual), param_count(plain)
    if r_params is not None and p_params is not None:
        rows.append(("parameters", scalar(r_params), scalar(p_params)))
    shown = [(m.value, other.value) for m in residual.metrics if (other := same_metric(m, plain)) is not None]
    for key in dict.fromkeys([*residual.extra, *plain.extra]):
        value = residual.extra.get(key, plain.extra.get(key))
        if isinstance(value, dict) and {"residual", "plain"} <= set(value) and key not in PAIR_KEYS:
            label = PAIR_KEY.sub("", as_words(key)).strip(" _-") or "result"
            r, p = value["residual"], value["plain"]
            pairs = [(f"{label} ({as_words(k)})", r[k], p.get(k, "")) for k in r] if isinstance(r, dict) and isinstance(p, dict) \
                else [(label, r, p)]
            rows += [(text, inline(a), inline(b)) for text, a, b in pairs if not _repeats(a, b, shown)]
        elif key == "train_seconds" and is_scalar(residual.extra.get(key)) and is_scalar(plain.extra.get(key)):
            rows.append(("train seconds", scalar(residual.extra.get(key)), scalar(plain.extra.get(key))))
    return rows


def _repeats(a: Any, b: Any, shown: list[tuple[float, float]]) -> bool:
    """Whether ``(a, b)`` are numbers a metric row shows already (as they are, or a fraction of its percent)."""
    if not all(isinstance(x, int | float) and not isinstance(x, bool) for x in (a, b)):
        return False
    close = lambda x, y: abs(x - y) <= 1e-3 * max(abs(y), 1e-9)  # noqa: E731
    return any((close(a, r) and close(b, p)) or (close(100 * a, r) and close(100 * b, p)) for r, p in shown)


def _seed_lines(residual: Entry, plain: Entry) -> list[str]:
    """Training seeds beyond the published pair (``extra.over_seeds``, else ``extra.other_seeds``)."""
    over = residual.extra.get("over_seeds") or plain.extra.get("over_seeds")
    others = residual.extra.get("other_seeds") or plain.extra.get("other_seeds")
    others = others if isinstance(others, dict) else {}
    if isinstance(over, dict) and isinstance(over.get("seeds"), list):
        per = {k[: -len("_per_seed")]: v for k, v in over.items() if k.endswith("_per_seed") and isinstance(v, list)}
        columns = [c for c in ("residual", "plain") if c in per] or list(per)

        def cell(seed: Any, i: int, column: str) -> str:
            spread = others.get(f"seed {seed}")  # "mean +- std" where other_seeds has it
            if isinstance(spread, dict) and column in spread:
                return inline(spread[column])
            return inline(per[column][i]) if i < len(per[column]) else ""

        rows = [(f"seed {s}", *(cell(s, i, c) for c in columns)) for i, s in enumerate(over["seeds"])]
        means = [over.get(f"{c}_mean_over_seeds") for c in columns]
        if any(m is not None for m in means):
            rows.append(("**mean over seeds**", *(f"**{inline(m)}**" if m is not None else "" for m in means)))
        note = f" ({over['note']})" if over.get("note") else ""
        return [f"Over {len(over['seeds'])} training seeds{note}:", "", table(rows, ("", *columns)), ""]
    if others:
        columns = list(dict.fromkeys(k for v in others.values() if isinstance(v, dict) for k in v))
        rows = [(as_words(s), *(inline(v.get(c, "")) if isinstance(v, dict) else inline(v) for c in columns))
                for s, v in others.items()]
        return ["Other training seeds (same budget and hyper-parameters):", "", table(rows, ("", *columns)), ""]
    return []


def _pair_notes(residual: Entry, plain: Entry) -> list[str]:
    """What ``extra`` says about the comparison in words (a note, a summary sentence)."""
    notes = []
    for entry in (residual, plain):
        for key, value in entry.extra.items():
            if key in ("plain_twin", "residual_twin") and isinstance(value, dict) and value.get("note"):
                notes.append(str(value["note"]))
            elif PAIR_KEY.search(str(key)) and isinstance(value, str):
                notes.append(value)
    return list(dict.fromkeys(notes))


def residual_vs_plain(entry: Entry, pair: tuple[Entry, Entry], card_dir: Path | None) -> list[str]:
    residual, plain = pair
    out = ["## Residual vs plain", "",
           f"`{residual.name}` and its plain twin `{plain.name}` are the same network with and without its "
           "residual (skip) connections, trained with the same recipe and budget.", ""]
    rows = pair_rows(residual, plain)
    if rows:
        out += [table(rows, ("", f"residual: {residual.name}", f"plain: {plain.name}")), ""]
    out += _seed_lines(residual, plain)
    out += [f"{note[0].upper()}{note[1:]}" + ("" if note.endswith(".") else ".") for note in _pair_notes(residual, plain)]
    out += [""] if out[-1] != "" else []
    other = plain if entry is residual else residual
    study = (f"[{STUDY_DOC}]({rel(ROOT / STUDY_DOC, card_dir)})" if card_dir is not None
             else f"`{STUDY_DOC}` in reszoo's source tree")
    out += [f"The twin's card: {twin_link(other, entry, card_dir)}. What the zoo's pairs show together: {study}.", ""]
    return out
