"""The residual study's GAN sweep: SNGAN generators and discriminators of growing depth, residual vs plain.

One run trains ``sngan-mnist``'s recipe (``scripts/train_sngan_mnist.py``: class-conditional SNGAN,
hinge loss, one D step per G step, Adam 2e-4 (betas 0, 0.9) decayed linearly to 0, batch 32, ch 16,
a 32-d class embedding, the mode-seeking term at 0.1, G's weights averaged with decay 0.999) on
MNIST with ``stage_blocks`` blocks per stage (G: 2 x n blocks, D: 4 x n; the extra blocks keep their
stage's resolution), residual or plain (``residual=False``, the same networks without additions or
learned shortcuts), for fewer iterations than the published model (see ``GanRecipe.iters``).

The record has the same shape as the other sweeps': loss curves (D and G hinge losses per 100
iterations), final measures of the averaged generator with ``resnet-mnist``'s features and softmax
(class accuracy of 1,000 samples, 100 per class; Frechet distance of 2,000 samples to 2,000 test
images and to 2,000 training images, whose difference is a train-test gap: a generator that copies
its training set is nearer to it than to the test set), ``reszoo.analysis`` gradient flow, branch
ratio and gradient correlation (generator, w.r.t. its noise) at initialisation and at the end, the
lesion study at the end (generator blocks removed, scored by class accuracy; chance 10 %), wall
time, seed. Gradient flow: G's hinge loss ``-D(G(z, y))`` and D's hinge loss on 64 real and 64
generated images, a fixed batch.

    python scripts/residual_study.py gan --depths 1 2 4 --seeds 0 1 --out results/residual-study/gan
"""

from __future__ import annotations

import copy
import dataclasses
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reszoo.analysis import block_infos, branch_ratio, gradient_correlation, gradient_flow, lesion_study
from reszoo.analysis.suite import plain_data


@dataclasses.dataclass(frozen=True)
class GanRecipe:
    """What two comparable runs share (a kept run must have the same)."""

    dataset: str = "mnist"
    # The published sngan-mnist trains 10,000 iterations; 12 runs of up to 4 blocks per stage must fit
    # in about an hour on 2 cores. Its class conditioning takes hold within a few hundred steps.
    iters: int = 2500
    batch: int = 32
    lr: float = 2e-4
    mode_seeking: float = 0.1
    ema_decay: float = 0.999
    ch: int = 16
    class_embed_dim: int = 32
    z_dim: int = 128
    fd_samples: int = 2000
    accuracy_per_class: int = 100
    flow_samples: int = 64
    lesion_ks: tuple[int, ...] = (1, 2, 4, 8)
    lesion_trials: int = 3

    def describe(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {
            "loss": "hinge; one D step per G step; MSGAN mode-seeking term on the generator",
            "optimizer": f"Adam({self.lr}, betas 0.0/0.9) for G and D, linear decay to 0",
            "model": f"SNGAN 28x28 (sngan_g28 / sngan_d28), ch {self.ch}, class embedding {self.class_embed_dim}, "
                     "conditional BN in G, projection D with spectral norm; depth = blocks per stage",
            "measured_on": "the exponential moving average of G's weights (what sngan-mnist publishes)",
            "features": "resnet-mnist (penultimate features, softmax)",
        }


def run_id(depth: int, residual: bool, seed: int) -> str:
    return f"mnist-sngan{depth}-{'residual' if residual else 'plain'}-seed{seed}"


class _OneClass(nn.Module):
    """``G(z, y)`` with one class for every sample: a function of the noise alone (gradient correlation)."""

    def __init__(self, G: nn.Module, label: int) -> None:
        super().__init__()
        self.G, self.label = G, label

    def forward(self, z: Tensor) -> Tensor:
        return self.G(z, torch.full((len(z),), self.label, dtype=torch.long))


def _class_accuracy_metric(classifier: nn.Module) -> Any:
    from reszoo.gan.metrics import class_accuracy, classifier_outputs

    def metric(images: Tensor, labels: Tensor) -> float:  # G's tanh output in [-1, 1]
        _, probs = classifier_outputs(classifier, (images + 1) / 2)
        return 100.0 * class_accuracy(probs, labels)

    return metric


def diagnostics(G: nn.Module, D: nn.Module, probe: dict[str, Tensor], seed: int) -> dict[str, Any]:
    """Gradient flow of G's and D's hinge losses, branch ratios and G's gradient correlation on ``probe``."""
    z, y, real, y_real = probe["z"], probe["y"], probe["real"], probe["y_real"]
    with torch.no_grad():
        G.train()
        fake = G(z, y)  # what D's loss sees this step (batch statistics, as in training)
    x = torch.cat([real, fake])
    labels = torch.cat([y_real, y])
    sign = torch.cat([torch.ones(len(real)), -torch.ones(len(fake))])
    torch.manual_seed(seed)
    return {
        "gradient_flow": gradient_flow(G, {"z": z, "y": y}, None, loss_fn=lambda out, _: -D(out, y).mean()),
        "d_gradient_flow": gradient_flow(D, {"x": x, "y": labels}, sign,
                                         loss_fn=lambda out, s: F.relu(1 - s * out).mean()),
        "branch_ratio": branch_ratio(G, {"z": z, "y": y}),
        "d_branch_ratio": branch_ratio(D, {"x": x, "y": labels}),
        "gradient_correlation": gradient_correlation(_OneClass(G, 0), z, seed=seed),
    }


def train_twin(recipe: GanRecipe, data: dict[str, Tensor], classifier: nn.Module, depth: int, residual: bool,
               seed: int) -> dict[str, Any]:
    """Train one (depth, twin, seed) and measure it; returns the JSON record."""
    from train_sngan_mnist import discriminator_step, ema_update, generator_step

    from reszoo.gan.metrics import classifier_outputs, frechet_distance
    from reszoo.gan.models import sngan_d28, sngan_g28

    start = time.perf_counter()
    torch.manual_seed(seed)
    arch_args = dict(ch=recipe.ch, z_dim=recipe.z_dim, num_classes=10, class_embed_dim=recipe.class_embed_dim,
                     out_channels=1, residual=residual, stage_blocks=depth)
    G = sngan_g28(**arch_args)
    D = sngan_d28(ch=recipe.ch, num_classes=10, in_channels=1, residual=residual, stage_blocks=depth)
    G_ema = copy.deepcopy(G).eval()
    images, labels = data["train"], data["train_labels"]
    gen = torch.Generator().manual_seed(seed)
    n = recipe.flow_samples
    pick = torch.randperm(len(images), generator=gen)[:n]
    probe = {"z": torch.randn(n, recipe.z_dim, generator=gen), "y": torch.arange(n) % 10,
             "real": images[pick], "y_real": labels[pick]}
    at_init = diagnostics(G, D, probe, seed)

    opt_g = torch.optim.Adam(G.parameters(), lr=recipe.lr, betas=(0.0, 0.9))
    opt_d = torch.optim.Adam(D.parameters(), lr=recipe.lr, betas=(0.0, 0.9))
    decay = lambda step: 1.0 - step / recipe.iters  # noqa: E731
    sched = [torch.optim.lr_scheduler.LambdaLR(o, decay) for o in (opt_g, opt_d)]
    perm, cursor = torch.randperm(len(images), generator=gen), 0
    d_curve, g_curve, d_sum, g_sum = [], [], 0.0, 0.0
    t0 = time.perf_counter()
    for step in range(recipe.iters):
        G.train()
        if cursor + recipe.batch > len(perm):
            perm, cursor = torch.randperm(len(images), generator=gen), 0
        idx = perm[cursor:cursor + recipe.batch]
        cursor += recipe.batch
        real, y = images[idx], labels[idx]
        z = torch.randn(recipe.batch, recipe.z_dim, generator=gen)
        loss_d, fake, y_fake = discriminator_step(G, D, opt_d, real, y, z, recipe.mode_seeking)
        loss_g = generator_step(D, opt_g, fake, y_fake, z, recipe.mode_seeking)
        for s in sched:
            s.step()
        ema_update(G_ema, G, step, recipe.ema_decay)
        d_sum, g_sum = d_sum + loss_d.item(), g_sum + loss_g.item()
        if (step + 1) % 100 == 0:
            d_curve.append(d_sum / 100)
            g_curve.append(g_sum / 100)
            d_sum = g_sum = 0.0
    train_seconds = time.perf_counter() - t0

    G_ema.eval()
    metric = _class_accuracy_metric(classifier)
    acc_labels = torch.arange(10).repeat_interleave(recipe.accuracy_per_class)
    acc_z = torch.randn(len(acc_labels), recipe.z_dim, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        acc = metric(G_ema(acc_z, acc_labels), acc_labels)
        fd_labels = torch.arange(recipe.fd_samples) % 10
        fd_z = torch.randn(recipe.fd_samples, recipe.z_dim, generator=torch.Generator().manual_seed(2))
        feats, _ = classifier_outputs(classifier, (G_ema(fd_z, fd_labels) + 1) / 2)
    fd_test, fd_train = frechet_distance(feats, data["test_features"]), frechet_distance(feats, data["train_features"])
    at_end = diagnostics(G_ema, D, probe, seed)
    same_shape = [i.name for i in block_infos(G_ema, {"z": acc_z[:8], "y": acc_labels[:8]}) if i.in_shape == i.out_shape]
    study = lesion_study(G_ema, {"z": acc_z, "y": acc_labels}, acc_labels, metric=metric, metric_name="class accuracy (%)",
                         ks=recipe.lesion_ks, trials=recipe.lesion_trials, seed=seed, candidates=same_shape)
    record = {
        "study": "residual-vs-plain", "domain": "gan", "dataset": recipe.dataset,
        "name": run_id(depth, residual, seed).rsplit("-seed", 1)[0], "arch": "sngan_g28", "arch_args": arch_args,
        "depth": depth, "residual": residual, "seed": seed, "classes": 10,
        "params": sum(p.numel() for p in G.parameters()), "d_params": sum(p.numel() for p in D.parameters()),
        "blocks": len(G.blocks), "d_blocks": len(D.blocks), "recipe": recipe.describe(), "steps": recipe.iters,
        "d_loss_curve": d_curve, "g_loss_curve": g_curve,
        "final": {"class_accuracy": acc, "fd_test": fd_test, "fd_train": fd_train, "fd_gap": fd_test - fd_train,
                  "fd_real_train_vs_test": data["fd_real"], "d_loss": d_curve[-1] if d_curve else None,
                  "g_loss": g_curve[-1] if g_curve else None},
        **{key: {"init": at_init[key], "end": at_end[key]} for key in at_init},
        "lesion": {**plain_data(study), "candidates": same_shape},
        "precision": "float32", "device": f"CPU ({platform.machine()}, {torch.get_num_threads()} threads)",
        "torch": torch.__version__, "python": platform.python_version(),
        "wall_seconds": {"train": train_seconds, "total": time.perf_counter() - start},
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    return plain_data(record)


def load_data(recipe: GanRecipe, classifier: nn.Module) -> dict[str, Any]:
    """Training images in [-1, 1] and labels; resnet-mnist features of fixed test and training subsets."""
    from train_sngan_mnist import load_uint8

    from reszoo.gan.metrics import classifier_outputs, frechet_distance

    x_train, y_train, x_test, _ = load_uint8(recipe.dataset)
    rng = np.random.default_rng(0)
    as01 = lambda a: torch.from_numpy(np.ascontiguousarray(a)).float().div(255).unsqueeze(1)  # noqa: E731
    test_feats, _ = classifier_outputs(classifier, as01(x_test[rng.choice(len(x_test), recipe.fd_samples, replace=False)]))
    train_feats, _ = classifier_outputs(classifier, as01(x_train[rng.choice(len(x_train), recipe.fd_samples, replace=False)]))
    return {"train": as01(x_train) * 2 - 1, "train_labels": torch.from_numpy(y_train.astype(np.int64)),
            "test_features": test_feats, "train_features": train_feats,
            "fd_real": frechet_distance(train_feats, test_feats)}


def run_sweep(recipe: GanRecipe, depths: list[int], seeds: list[int], out: Path) -> list[Path]:
    """Every (depth, twin, seed) not already in ``out/runs`` with the same recipe; the records' paths."""
    import reszoo
    from residual_domains import run_grid

    classifier = reszoo.load("resnet-mnist")
    data = load_data(recipe, classifier)

    def summary(record: dict[str, Any]) -> str:
        f = record["final"]
        return f"class accuracy {f['class_accuracy']:.1f} %, FD test {f['fd_test']:.3f} train {f['fd_train']:.3f}"

    return run_grid(recipe, depths, seeds, out, run_id, lambda d, r, s: train_twin(recipe, data, classifier, d, r, s), summary)
