"""The image domain: ResNets for classification (ImageNet, CIFAR-style, MNIST).

The domain contract of :mod:`reszoo.domains`: ``models.py`` (the ResNets), ``convert.py``
(torchvision/timm checkpoints), ``preprocess.py`` (timm's eval transform), ``predict.py`` (top
classes), ``finetune.py`` (image batches). Light on import: nothing but this declaration is
imported until a name below is used (torchvision and PIL only when an image is read).
"""

from __future__ import annotations

from ..domains import ClassFolders, Domain, FinetuneSpec, lazy_exports
from .predict import predict

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})

DOMAIN = Domain(
    name="image",
    title="image",
    package=__name__,
    # the stem and every convolution of the residual blocks, projection shortcuts included
    lora_targets=r"conv1|layer\d+\.\d+\.(conv\d+|downsample\.0)",
    finetune=FinetuneSpec(
        task="image-classification",
        data=ClassFolders(IMAGE_EXTENSIONS, kind="image"),
        adapter="reszoo.image.finetune:ImageAdapter",
        usage='probs = model(model.preprocess("image.png")).softmax(-1)\nprint(model.labels[int(probs.argmax())])',
    ),
)

_EXPORTS = {
    "ResNet": "models",
    "from_torchvision": "convert",
    "ImageInputError": "preprocess",
    "ImagePreprocess": "preprocess",
    "PreprocessConfigError": "preprocess",
    "build_preprocess": "preprocess",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = ["DOMAIN", "IMAGE_EXTENSIONS", "predict", *_EXPORTS]
