"""Regenerate model_cards/<name>.md for every registry entry (and remove cards of gone entries).

    python scripts/make_cards.py          # write
    python scripts/make_cards.py --check  # exit 1 if any card is stale (what the test checks)

The cards link their images where they are in the checkout (weights/, docs/img/), so they show on
GitHub; the copy `reszoo publish` uploads beside the weights links the figures stored there.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from reszoo.cards import expected_cards, write_cards  # noqa: E402

CARDS = ROOT / "model_cards"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="report stale cards instead of writing")
    args = parser.parse_args()
    if args.check:
        want = expected_cards(CARDS)
        stale = [p for p, text in want.items() if not p.is_file() or p.read_text(encoding="utf-8") != text]
        extra = sorted(set(CARDS.glob("*.md")) - set(want))
        for p in stale:
            print(f"stale: {p.relative_to(ROOT)}")
        for p in extra:
            print(f"not in the registry: {p.relative_to(ROOT)}")
        return 1 if stale or extra else 0
    written, removed = write_cards(CARDS)
    print(f"{len(expected_cards(CARDS))} cards, {len(written)} written, {len(removed)} removed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
