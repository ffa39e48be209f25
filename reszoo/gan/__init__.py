"""GANs: SNGAN-style residual generators/discriminators (28x28, 32x32) and BigGAN-deep 128.

Generators loaded with ``reszoo.load`` have ``sample(n, labels=None, truncation=None,
seed=None)`` -> images in [0, 1], shape (n, C, H, W).

The domain contract of :mod:`reszoo.domains`: ``models.py`` (SNGAN; ``biggan.py`` for BigGAN),
``convert.py`` (pytorch-pretrained-BigGAN checkpoints), ``preprocess.py`` (class labels),
``predict.py`` (one sample per label), ``cli.py`` (``reszoo generate``); ``grid.py`` (PNG grids),
``losses.py`` and ``metrics.py`` (training and evaluation) besides. Light on import.
"""

from __future__ import annotations

from ..domains import Command, Domain, RuntimeSetting, is_number, lazy_exports
from .predict import predict

DOMAIN = Domain(
    name="gan",
    title="generative (GAN)",
    package=__name__,
    commands={"generate": Command("reszoo.gan.cli", "sample a generator and write an image grid")},
    runtime={"truncation": RuntimeSetting(
        "the sampler's default truncation (`model.sample(truncation=None)`); absent: plain z ~ N(0, 1)",
        lambda v: None if is_number(v) and 0 < v <= 1 else "expected a number in (0, 1]",
        legacy="preprocess")},
)

_EXPORTS = {
    "BigGANDeep": "biggan",
    "GeneratorMixin": "models",
    "SNGANDiscriminator": "models",
    "SNGANGenerator": "models",
    "build_preprocess": "preprocess",
    "prepare": "preprocess",
    "save_grid": "grid",
    "write_grid": "grid",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = ["DOMAIN", "predict", *_EXPORTS]
