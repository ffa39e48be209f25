"""Regenerate model_cards/<name>.md for every registry entry (and remove cards of gone entries).

    python scripts/make_cards.py          # write
    python scripts/make_cards.py --check  # exit 1 if any card is stale (what the test checks)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from reszoo.cards import card  # noqa: E402
from reszoo.registry import list_models  # noqa: E402

CARDS = ROOT / "model_cards"


def expected_cards() -> dict[Path, str]:
    return {CARDS / f"{name}.md": str(card(name)) + "\n" for name in list_models()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="report stale cards instead of writing")
    args = parser.parse_args()
    want = expected_cards()
    have = set(CARDS.glob("*.md"))
    stale = [p for p, text in want.items() if not p.is_file() or p.read_text(encoding="utf-8") != text]
    extra = sorted(have - set(want))
    if args.check:
        for p in stale:
            print(f"stale: {p.relative_to(ROOT)}")
        for p in extra:
            print(f"not in the registry: {p.relative_to(ROOT)}")
        return 1 if stale or extra else 0
    CARDS.mkdir(exist_ok=True)
    for p in stale:
        p.write_text(want[p], encoding="utf-8")
    for p in extra:
        p.unlink()
    print(f"{len(want)} cards, {len(stale)} written, {len(extra)} removed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
