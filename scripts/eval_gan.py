"""Measure ``sngan-mnist`` and its plain twin with reszoo's own ``resnet-mnist`` classifier (or,
with ``--dataset fashion-mnist``, ``sngan-fashion-mnist`` and its twin with ``resnet-fashion-mnist``),
and write the numbers into registry.yaml and sample grids into docs/img/.

    nice -n 10 python scripts/eval_gan.py [--n-per-class 1000]
    nice -n 10 python scripts/eval_gan.py --dataset fashion-mnist

For each generator: 1000 samples per class (seed 0, no truncation) are classified by the
dataset's classifier. Reported, all with the classifier's penultimate features / softmax (NOT the
Inception network, so NOT comparable with published FID/IS):
- Frechet distance to the 10,000 test images ("FD-resnet-mnist" / "FD-resnet-fashion-mnist"),
- the Inception-style score exp(E KL(p(y|x) || p(y))) (10 splits),
- class accuracy: how often the classifier's top class is the class the generator was asked for,
- within-class pixel std: how much samples of one class differ (near 0 for a collapsed generator).
References measured the same way: 10,000 training images vs the test set (real vs real), 10,000
uniform-noise images vs the test set, and the score and within-class std of the test set itself.

Needs ``../shared/data/mnist/mnist.npz`` (MNIST) or Debian's ``dataset-fashion-mnist``
(Fashion-MNIST), and the weights of the classifier and both generators (``weights/reszoo/...``, or
a mirror via RESZOO_MIRROR).
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

from train_sngan_mnist import DATASETS, load_uint8  # noqa: E402

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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", choices=sorted(DATASETS), default="mnist")
    ap.add_argument("--data", type=Path, default=None, help="mnist.npz, or the folder of Fashion-MNIST's idx files")
    ap.add_argument("--n-per-class", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--register", action="store_true",
                    help="write the numbers into registry.yaml and the sample grids into --img-dir (else only the results JSON)")
    ap.add_argument("--registry", type=Path, default=Path(os.environ.get("RESZOO_REGISTRY", ROOT / "registry.yaml")),
                    help="registry read (via $RESZOO_REGISTRY) and written; a copy for scratch runs")
    ap.add_argument("--img-dir", type=Path, default=ROOT / "docs" / "img", help="where the sample grids go")
    ap.add_argument("--out", type=Path, default=None, help="results JSON (default runs/eval_gan[-fashion-mnist].json)")
    args = ap.parse_args(argv)
    ds = DATASETS[args.dataset]
    tag = ds.classifier  # metric names: fd-resnet-mnist, is-resnet-fashion-mnist, ...
    features_note = f"{tag} features/softmax, not the Inception network: not comparable with published FID/IS"
    os.environ["RESZOO_REGISTRY"] = str(args.registry)
    torch.set_num_threads(args.threads)
    start = time.time()
    x_train, _, x_test, d_y_test = load_uint8(args.dataset, args.data)
    to_images = lambda a: torch.from_numpy(a).float().div(255).unsqueeze(1)  # noqa: E731
    test = to_images(x_test)
    y_test = torch.from_numpy(d_y_test.astype(np.int64))
    g = torch.Generator().manual_seed(args.seed)
    train_subset = to_images(x_train[torch.randperm(len(x_train), generator=g)[: len(test)].numpy()])
    noise = torch.rand(len(test), 1, 28, 28, generator=g)

    clf = reszoo.load(ds.classifier)
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
    img_dir = args.img_dir if args.register else ROOT / "runs" / "eval_gan-grids"  # published grids change only with --register
    for name in ds.twins:
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
    out = args.out or ROOT / "runs" / ("eval_gan.json" if args.dataset == "mnist" else f"eval_gan-{args.dataset}.json")
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary), flush=True)
    if not args.register:
        print(f"results in {out}; pass --register to write them into {args.registry}", flush=True)
        return 0

    from registry_io import measured, update_entry

    t = ds.title
    ref_text = (f"real {t} train vs test {refs['fd_real_train_vs_test']:.3f}; uniform noise vs test "
                f"{refs['fd_uniform_noise_vs_test']:.1f}")
    residual_name, plain_name = ds.twins
    res, plain = results[residual_name], results[plain_name]
    side_by_side = (f"residual ({residual_name}) vs plain ({plain_name}), same recipe and budget: "
                    f"FD-{tag} {res['fd']:.3f} vs {plain['fd']:.3f}; IS-{tag} {res['is']:.3f} vs "
                    f"{plain['is']:.3f}; class accuracy {res['class_accuracy']:.4f} vs {plain['class_accuracy']:.4f}; "
                    f"within-class pixel std {res['within_class_pixel_std']:.4f} vs {plain['within_class_pixel_std']:.4f} "
                    f"({t} test set {refs['within_class_pixel_std_test_set']:.4f})")
    for name in ds.twins:
        r = results[name]
        metrics = [
            measured(SCRIPT, t, "test", f"fd-{tag}", r["fd"], dataset_type=ds.dataset_type,
                     name=f"Frechet distance to the test set, {tag} features ({n} samples; lower is better)",
                     note=f"{features_note}; references: {ref_text}"),
            measured(SCRIPT, t, "generated", f"is-{tag}", r["is"], dataset_type=ds.dataset_type,
                     name=f"Inception-style score, {tag} softmax ({n} samples, 10 splits, std {r['is_std']:.3f})",
                     note=f"{features_note}; the {t} test set scores {refs['is_test_set']:.3f}"),
            measured(SCRIPT, t, "generated", "class-accuracy", r["class_accuracy"], dataset_type=ds.dataset_type,
                     name=f"requested class recognised by {tag} ({args.n_per_class} samples per class)"),
        ]
        update_entry(name, args.registry, metrics=metrics, extra={
            f"quality references (FD-{tag})": ref_text,
            "residual vs plain": side_by_side,
            "within-class variety": (f"per-pixel std across samples of one class, averaged over classes: "
                                     f"{r['within_class_pixel_std']:.4f} ({t} test set "
                                     f"{refs['within_class_pixel_std_test_set']:.4f})"),
            "sample grid": f"docs/img/{name}.png (column j: class j; each row its own noise; seed 0)",
        })
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
