"""Measure ``sngan-mnist`` and its plain twin with reszoo's own ``resnet-mnist`` classifier, and
write the numbers into registry.yaml and sample grids into docs/img/.

    nice -n 10 python scripts/eval_gan.py [--n-per-class 1000]

For each generator: 1000 samples per class (seed 0, no truncation) are classified by
``resnet-mnist``. Reported, all with resnet-mnist's penultimate features / softmax (NOT the
Inception network, so NOT comparable with published FID/IS):
- Frechet distance to the 10,000 MNIST test images ("FD-resnet-mnist"),
- the Inception-style score exp(E KL(p(y|x) || p(y))) (10 splits),
- class accuracy: how often resnet-mnist's top class is the class the generator was asked for.
References measured the same way: 10,000 MNIST training images vs the test set (real vs real),
10,000 uniform-noise images vs the test set, and the score of the test set itself.

Needs ``../shared/data/mnist/mnist.npz`` and the weights of resnet-mnist, sngan-mnist and
sngan-mnist-plain (``weights/reszoo/...``, or a mirror via RESZOO_MIRROR).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import reszoo  # noqa: E402
from reszoo.gan import save_grid  # noqa: E402
from reszoo.gan.metrics import (  # noqa: E402
    class_accuracy,
    classifier_outputs,
    frechet_distance,
    inception_style_score,
    within_class_pixel_std,
)

SCRIPT = "scripts/eval_gan.py"
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "mnist" / "mnist.npz"
TWINS = ("sngan-mnist", "sngan-mnist-plain")
FEATURES_NOTE = "resnet-mnist features/softmax, not the Inception network: not comparable with published FID/IS"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--n-per-class", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-registry", action="store_true")
    ap.add_argument("--registry", type=Path, default=Path(os.environ.get("RESZOO_REGISTRY", ROOT / "registry.yaml")),
                    help="registry read (via $RESZOO_REGISTRY) and written; a copy for scratch runs")
    ap.add_argument("--img-dir", type=Path, default=ROOT / "docs" / "img", help="where the sample grids go")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "eval_gan.json")
    args = ap.parse_args(argv)
    os.environ["RESZOO_REGISTRY"] = str(args.registry)
    torch.set_num_threads(args.threads)
    if not args.data.is_file():
        raise FileNotFoundError(f"MNIST not found: looked for {args.data} (see /work/shared/data/mnist/README.md)")
    start = time.time()
    with np.load(args.data) as d:
        x_train, x_test, d_y_test = d["x_train"], d["x_test"], d["y_test"]
    to_images = lambda a: torch.from_numpy(a).float().div(255).unsqueeze(1)  # noqa: E731
    test = to_images(x_test)
    y_test = torch.from_numpy(d_y_test.astype(np.int64))
    g = torch.Generator().manual_seed(args.seed)
    train_subset = to_images(x_train[torch.randperm(len(x_train), generator=g)[: len(test)].numpy()])
    noise = torch.rand(len(test), 1, 28, 28, generator=g)

    clf = reszoo.load("resnet-mnist")
    f_test, p_test = classifier_outputs(clf, test)
    f_train, _ = classifier_outputs(clf, train_subset)
    f_noise, _ = classifier_outputs(clf, noise)
    refs = {
        "fd_real_train_vs_test": frechet_distance(f_train, f_test),
        "fd_uniform_noise_vs_test": frechet_distance(f_noise, f_test),
        "is_test_set": inception_style_score(p_test)[0],
        # how much images of one class differ from each other; a generator that ignores its noise gets ~0
        "within_class_pixel_std_test_set": within_class_pixel_std(test, y_test),
    }
    print(f"references: {json.dumps({k: round(v, 4) for k, v in refs.items()})}", flush=True)

    results: dict[str, dict[str, float]] = {}
    img_dir = args.img_dir
    for name in TWINS:
        gen = reszoo.load(name)
        labels = torch.arange(10).repeat_interleave(args.n_per_class)
        images = gen.sample(len(labels), labels=labels, seed=args.seed)
        feats, probs = classifier_outputs(clf, images)
        is_mean, is_std = inception_style_score(probs)
        results[name] = {
            "fd": frechet_distance(feats, f_test),
            "is": is_mean,
            "is_std": is_std,
            "class_accuracy": class_accuracy(probs, labels),
            "within_class_pixel_std": within_class_pixel_std(images, labels),
        }
        grid = gen.sample(100, labels=[i % 10 for i in range(100)], seed=args.seed)
        save_grid(grid, img_dir / f"{name}.png", nrow=10)
        print(f"{name}: {json.dumps({k: round(v, 4) for k, v in results[name].items()})}", flush=True)

    n = 10 * args.n_per_class
    summary = {"references": refs, "results": results, "samples_per_model": n, "seed": args.seed,
               "minutes": round((time.time() - start) / 60, 2)}
    out = args.out
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary), flush=True)
    if args.no_registry:
        return 0

    from registry_io import measured, update_entry

    ref_text = (f"real MNIST train vs test {refs['fd_real_train_vs_test']:.3f}; uniform noise vs test "
                f"{refs['fd_uniform_noise_vs_test']:.1f}")
    res, plain = results["sngan-mnist"], results["sngan-mnist-plain"]
    side_by_side = (f"residual (sngan-mnist) vs plain (sngan-mnist-plain), same recipe and budget: "
                    f"FD-resnet-mnist {res['fd']:.3f} vs {plain['fd']:.3f}; IS-resnet-mnist {res['is']:.3f} vs "
                    f"{plain['is']:.3f}; class accuracy {res['class_accuracy']:.4f} vs {plain['class_accuracy']:.4f}; "
                    f"within-class pixel std {res['within_class_pixel_std']:.4f} vs {plain['within_class_pixel_std']:.4f} "
                    f"(MNIST test set {refs['within_class_pixel_std_test_set']:.4f})")
    for name in TWINS:
        r = results[name]
        metrics = [
            measured(SCRIPT, "MNIST", "test", "fd-resnet-mnist", r["fd"], dataset_type="mnist",
                     name=f"Frechet distance to the test set, resnet-mnist features ({n} samples; lower is better)",
                     note=f"{FEATURES_NOTE}; references: {ref_text}"),
            measured(SCRIPT, "MNIST", "generated", "is-resnet-mnist", r["is"], dataset_type="mnist",
                     name=f"Inception-style score, resnet-mnist softmax ({n} samples, 10 splits, std {r['is_std']:.3f})",
                     note=f"{FEATURES_NOTE}; the MNIST test set scores {refs['is_test_set']:.3f}"),
            measured(SCRIPT, "MNIST", "generated", "class-accuracy", r["class_accuracy"], dataset_type="mnist",
                     name=f"requested class recognised by resnet-mnist ({args.n_per_class} samples per class)"),
        ]
        update_entry(name, args.registry, metrics=metrics, extra={
            "quality references (FD-resnet-mnist)": ref_text,
            "residual vs plain": side_by_side,
            "within-class variety": (f"per-pixel std across samples of one class, averaged over classes: "
                                     f"{r['within_class_pixel_std']:.4f} (MNIST test set "
                                     f"{refs['within_class_pixel_std_test_set']:.4f})"),
            "sample grid": f"docs/img/{name}.png (column j: class j; each row its own noise; seed 0)",
        })
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
