"""Raw images to model input, from a registry entry's ``preprocess`` mapping.

The ImageNet entries reproduce timm's eval transform exactly (resize the shorter side to
``floor(size / crop_pct)``, center crop ``size``, to float in [0, 1], normalise), since that is
how their reported accuracies were measured. torchvision is imported only when a preprocess is
built, so ``import reszoo.image`` stays light.

``preprocess`` fields:

``size``            output side in pixels (or ``input_size: [C, H, W]`` as timm writes it; square)
``resize``          shorter side before the crop; default ``floor(size / crop_pct)``
``crop_pct``        fraction of the resized image kept by the crop (default 0.875, timm's)
``crop``            ``center`` (the only crop an eval transform needs)
``interpolation``   ``bilinear`` | ``bicubic`` | ``nearest``
``mean``, ``std``   per-channel normalisation
``channels``        1 (grayscale) or 3 (RGB)
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..errors import InputError, RegistryError

__all__ = ["ImagePreprocess", "PreprocessConfigError", "ImageInputError"]

_INTERPOLATIONS = ("bilinear", "bicubic", "nearest")
_KNOWN_FIELDS = {"size", "input_size", "resize", "crop_pct", "crop", "interpolation", "mean", "std", "channels"}


class PreprocessConfigError(RegistryError):
    """An entry's ``preprocess`` mapping is incomplete or malformed."""


class ImageInputError(InputError):
    """An input cannot be turned into an image (not an image file, wrong shape or range)."""


def _config_error(where: str, field: str, problem: str) -> PreprocessConfigError:
    return PreprocessConfigError(f"{where}: preprocess.{field}: {problem}")


class ImagePreprocess:
    """Callable: a path, PIL image, numpy uint8 array or tensor (or a list of them) -> float NCHW batch.

    Tensors are ``CHW``/``NCHW``, ``uint8`` (0..255) or float in [0, 1] (not yet normalised).
    """

    def __init__(self, config: Mapping[str, Any], where: str = "preprocess") -> None:
        unknown = set(config) - _KNOWN_FIELDS
        if unknown:
            raise _config_error(where, sorted(unknown)[0], f"unknown field (known: {', '.join(sorted(_KNOWN_FIELDS))})")
        size = config.get("size")
        if size is None and "input_size" in config:
            size = list(config["input_size"])[-2:]
        if isinstance(size, Sequence) and not isinstance(size, str):
            if len(size) != 2 or size[0] != size[1]:
                raise _config_error(where, "size", f"only square outputs are supported, got {size!r}")
            size = size[0]
        if not isinstance(size, int) or size <= 0:
            raise _config_error(where, "size", f"expected a positive integer, got {size!r}")
        crop_pct = config.get("crop_pct", 0.875)
        if not isinstance(crop_pct, int | float) or not 0 < crop_pct <= 1:
            raise _config_error(where, "crop_pct", f"expected a number in (0, 1], got {crop_pct!r}")
        resize = config.get("resize", math.floor(size / crop_pct))
        if not isinstance(resize, int) or resize < size:
            raise _config_error(where, "resize", f"expected an integer >= size ({size}), got {resize!r}")
        crop = config.get("crop", "center")
        if crop != "center":
            raise _config_error(where, "crop", f"only 'center' is supported, got {crop!r}")
        interpolation = config.get("interpolation", "bilinear")
        if interpolation not in _INTERPOLATIONS:
            raise _config_error(where, "interpolation", f"expected one of {_INTERPOLATIONS}, got {interpolation!r}")
        channels = config.get("channels", 3)
        if channels not in (1, 3):
            raise _config_error(where, "channels", f"expected 1 or 3, got {channels!r}")
        stats = {}
        for key in ("mean", "std"):
            value = config.get(key)
            if value is None:
                raise _config_error(where, key, "missing")
            if not isinstance(value, Sequence) or len(value) != channels or not all(isinstance(v, int | float) for v in value):
                raise _config_error(where, key, f"expected {channels} numbers (one per channel), got {value!r}")
            stats[key] = tuple(float(v) for v in value)
        if any(s <= 0 for s in stats["std"]):
            raise _config_error(where, "std", f"expected positive numbers, got {stats['std']!r}")

        self.size = size
        self.resize = resize
        self.interpolation = interpolation
        self.channels = channels
        self.mean = stats["mean"]
        self.std = stats["std"]
        self._transform = self._build()

    def _build(self) -> Any:
        from torchvision.transforms import InterpolationMode, v2

        mode = InterpolationMode(self.interpolation)
        return v2.Compose([
            v2.Resize(self.resize, interpolation=mode, antialias=True),  # shorter side, as timm's eval
            v2.CenterCrop(self.size),
            v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean=list(self.mean), std=list(self.std)),
        ])

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(size={self.size}, resize={self.resize}, crop='center', "
                f"interpolation='{self.interpolation}', channels={self.channels}, mean={self.mean}, std={self.std})")

    # ----------------------------------------------------------------------- inputs

    def __call__(self, image: Any) -> Tensor:
        if isinstance(image, list | tuple):
            if not image:
                raise ImageInputError("expected at least one image, got an empty list")
            return torch.cat([self(item) for item in image])
        out = self._transform(self._to_image(image))
        out = out.as_subclass(Tensor)
        return out if out.ndim == 4 else out.unsqueeze(0)

    def _to_image(self, image: Any) -> Any:
        """The input as an RGB/L PIL image or a float/uint8 (N)CHW tensor with the right channels."""
        from PIL import Image

        if isinstance(image, str | os.PathLike):
            image = _open_image(Path(image))
        if isinstance(image, Image.Image):
            return image.convert("L" if self.channels == 1 else "RGB")
        if type(image).__module__ == "numpy":
            return self._from_numpy(image)
        if isinstance(image, Tensor):
            return self._check_tensor(image)
        raise TypeError(f"expected an image path, PIL image, numpy uint8 array or tensor, got {type(image).__name__}")

    def _from_numpy(self, array: Any) -> Any:
        from PIL import Image

        if array.dtype != "uint8" or array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 3, 4)):
            raise ImageInputError(f"expected a uint8 array of shape HxW or HxWxC (C in 1, 3, 4), got {array.dtype} {array.shape}; "
                                  "for float data pass a CHW torch tensor in [0, 1]")
        if array.ndim == 3 and array.shape[2] == 1:
            array = array[:, :, 0]
        return Image.fromarray(array).convert("L" if self.channels == 1 else "RGB")

    def _check_tensor(self, x: Tensor) -> Tensor:
        from torchvision.transforms.v2 import functional as F

        if x.ndim not in (3, 4) or x.shape[-3] not in (1, 3):
            raise ImageInputError(f"expected a CHW or NCHW image tensor with 1 or 3 channels, got shape {tuple(x.shape)}")
        if x.dtype == torch.uint8:
            pass
        elif x.is_floating_point():
            lo, hi = float(x.min()), float(x.max())
            if lo < 0.0 or hi > 1.0:
                raise ImageInputError(f"float image tensors must hold values in [0, 1] (not yet normalised); got [{lo:.3g}, {hi:.3g}]")
            x = x.float()
        else:
            raise ImageInputError(f"expected a uint8 or float image tensor, got {x.dtype}")
        if x.shape[-3] == 3 and self.channels == 1:
            x = _luma_uint8(x) if x.dtype == torch.uint8 else F.rgb_to_grayscale(x)
        elif x.shape[-3] == 1 and self.channels == 3:
            x = x.expand(*x.shape[:-3], 3, *x.shape[-2:]).contiguous()
        return x


def _luma_uint8(x: Tensor) -> Tensor:
    """ITU-R 601-2 luma rounded as PIL's ``convert("L")`` does, so tensors and PIL images agree exactly."""
    weights = torch.tensor([299, 587, 114], dtype=torch.int32, device=x.device).view(3, 1, 1)
    return ((x.int() * weights).sum(dim=-3, keepdim=True) + 500).div(1000, rounding_mode="floor").to(torch.uint8)


def _open_image(path: Path) -> Any:
    from PIL import Image, UnidentifiedImageError

    if not path.exists():
        raise FileNotFoundError(f"no such image file: {path}")
    if path.is_dir():
        raise IsADirectoryError(f"expected an image file, got a directory: {path}")
    try:
        with Image.open(path) as img:
            img.load()
            return img
    except UnidentifiedImageError as e:
        raise ImageInputError(f"{path} is not an image file PIL can read") from e
    except OSError as e:  # truncated or corrupt image data
        raise ImageInputError(f"{path}: cannot read image: {e}") from e
