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

Images with transparency (RGBA, LA, PA, P or L/RGB with a transparent colour) are flattened onto
the model's background before the colour conversion, instead of having their alpha dropped: black
when the entry's ``mean`` is below 0.5 (MNIST, Fashion-MNIST, ImageNet), else white. A one-colour
drawing on a transparent canvas (its shape only in the alpha channel) is drawn in the colour that
stands out on that background: the model's stroke colour for grayscale models (white on black for
MNIST), its own colour for RGB models unless that is the background's (then on the other one).
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from ..errors import InputError, RegistryError

if TYPE_CHECKING:
    from ..registry import Entry

__all__ = ["ImagePreprocess", "PreprocessConfigError", "ImageInputError", "ImageTypeError", "build_preprocess"]

_INTERPOLATIONS = ("bilinear", "bicubic", "nearest")
_KNOWN_FIELDS = {"size", "input_size", "resize", "crop_pct", "crop", "interpolation", "mean", "std", "channels"}


class PreprocessConfigError(RegistryError):
    """An entry's ``preprocess`` mapping is incomplete or malformed."""


class ImageInputError(InputError):
    """An input cannot be turned into an image (not an image file, wrong shape or range)."""


class ImageTypeError(ImageInputError, TypeError):
    """The input is of a type preprocessing does not take (also a ``TypeError``)."""


# A one-colour drawing: over its clearly visible pixels (alpha >= 64, where un-premultiplying
# rounding is small) no channel varies by more than this many levels.
_FLAT_ALPHA, _FLAT_SPREAD = 64, 8


def _config_error(where: str, field: str, problem: str) -> PreprocessConfigError:
    return PreprocessConfigError(f"{where}: preprocess.{field}: {problem}")


def build_preprocess(entry: Entry) -> ImagePreprocess:
    """The entry's ``preprocess`` as a callable: path / PIL image / tensor -> float NCHW batch."""
    return ImagePreprocess(entry.preprocess, where=f"registry entry {entry.name!r}")


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
        # What transparent pixels become: the dark or light background of the training images.
        self.background = 0 if sum(self.mean) / len(self.mean) < 0.5 else 255
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
        image = self._to_image(image)
        if self.resize == self.size and getattr(image, "size", None) == (self.size, self.size):
            return self._at_size(image)
        out = self._transform(image)
        out = out.as_subclass(Tensor)
        return out if out.ndim == 4 else out.unsqueeze(0)

    def _at_size(self, image: Any) -> Tensor:
        """A PIL image already at the output size, where resize and crop are identities: straight to a
        normalised tensor (the same numbers; skips two PIL copies and the transform pipeline's dispatch,
        most of the per-image cost for MNIST-sized inputs)."""
        import numpy as np
        from torchvision.transforms.v2 import functional as F

        pixels = torch.from_numpy(np.array(image))  # HW (L) or HWC (RGB), uint8
        pixels = pixels.unsqueeze(0) if pixels.ndim == 2 else pixels.permute(2, 0, 1).contiguous()
        out = F.normalize(F.to_dtype(pixels, torch.float32, scale=True), list(self.mean), list(self.std))
        return out.unsqueeze(0)

    def _to_image(self, image: Any) -> Any:
        """The input as an RGB/L PIL image or a float/uint8 (N)CHW tensor with the right channels."""
        from PIL import Image

        where = "image"
        if isinstance(image, str | os.PathLike):
            where = str(image)
            image = _open_image(Path(image))
        if isinstance(image, Image.Image):
            return self._from_pil(image, where)
        if type(image).__module__ == "numpy":
            return self._from_numpy(image)
        if isinstance(image, Tensor):
            return self._check_tensor(image)
        raise ImageTypeError(f"expected an image path, PIL image, numpy uint8 array or tensor, got {type(image).__name__}")

    def _from_pil(self, image: Any, where: str) -> Any:
        """Any PIL mode -> ``L`` or ``RGB``, without the silent losses of a bare ``convert``."""
        if 0 in image.size:
            raise ImageInputError(f"{where}: the image is empty ({image.size[0]}x{image.size[1]} pixels)")
        if image.mode.startswith(("I", "F")):
            image = _high_depth_to_8bit(image, where)
        if _has_transparency(image):
            image = _flatten_transparency(image, self.background, self.channels, where)
        return image.convert("L" if self.channels == 1 else "RGB")

    def _from_numpy(self, array: Any) -> Any:
        from PIL import Image

        if array.dtype != "uint8" or array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 3, 4)):
            raise ImageInputError(f"expected a uint8 array of shape HxW or HxWxC (C in 1, 3, 4), got {array.dtype} {array.shape}; "
                                  "for float data pass a CHW torch tensor in [0, 1]")
        if array.ndim == 3 and array.shape[2] == 1:
            array = array[:, :, 0]
        if array.size == 0:
            raise ImageInputError(f"the image array is empty (shape {array.shape})")
        return self._from_pil(Image.fromarray(array), f"<numpy array {array.shape}>")

    def _check_tensor(self, x: Tensor) -> Tensor:
        from torchvision.transforms.v2 import functional as F

        if x.ndim not in (3, 4) or x.shape[-3] not in (1, 3):
            raise ImageInputError(f"expected a CHW or NCHW image tensor with 1 or 3 channels, got shape {tuple(x.shape)}")
        if x.numel() == 0:
            raise ImageInputError(f"the image tensor is empty (shape {tuple(x.shape)})")
        if x.dtype == torch.uint8:
            pass
        elif x.is_floating_point():
            # NaN compares false with every bound, so it must be refused before the range check
            if not bool(torch.isfinite(x).all()):
                raise ImageInputError(f"the image tensor (shape {tuple(x.shape)}) contains NaN or infinite values")
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


def _has_transparency(image: Any) -> bool:
    return image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info


def _flatten_transparency(image: Any, background: int, channels: int, where: str) -> Any:
    """An RGB PIL image: ``image`` composited onto ``background`` (0 or 255), alpha-only drawings
    drawn so that they stand out on it (see the module docstring)."""
    import numpy as np
    from PIL import Image

    rgba = np.asarray(image.convert("RGBA"), dtype=np.int32)  # room for 255 * 255 products
    colour, alpha = rgba[..., :3], rgba[..., 3:]
    if alpha.min() == 255:  # an alpha channel that is opaque everywhere changes nothing
        return Image.fromarray(colour.astype(np.uint8), "RGB")
    if not alpha.any():
        raise ImageInputError(f"{where}: the image is fully transparent (alpha 0 everywhere); there is nothing to see")
    ink = _flat_colour(colour, alpha[..., 0])
    if ink is not None:
        if channels == 1:  # grayscale models see strokes as the opposite of their background
            colour = np.full_like(colour, 255 - background)
        elif abs(_luma(ink) - background) < 128:  # an RGB drawing in the background's own colour
            background = 255 - background
    # Integer "over" compositing, rounded: exact for the extreme alphas 0 and 255.
    flat = (colour * alpha + background * (255 - alpha) + 127) // 255
    return Image.fromarray(flat.astype(np.uint8), "RGB")


def _flat_colour(colour: Any, alpha: Any) -> Any:
    """The one colour of a drawing whose shape is only in its alpha channel, or None."""
    visible = alpha >= _FLAT_ALPHA
    if not visible.any():
        visible = alpha > 0
    pixels = colour[visible]
    if (pixels.max(axis=0) - pixels.min(axis=0)).max() > _FLAT_SPREAD:
        return None
    return pixels.mean(axis=0)


def _luma(rgb: Any) -> float:
    return 0.299 * float(rgb[0]) + 0.587 * float(rgb[1]) + 0.114 * float(rgb[2])


def _high_depth_to_8bit(image: Any, where: str) -> Any:
    """16-bit, 32-bit integer and float images as 8-bit ``L``: PIL's own conversion clips them to
    0..255, which turns a 16-bit image white and NaN black."""
    import numpy as np
    from PIL import Image

    array = np.asarray(image)
    if image.mode.startswith("I;16"):  # full scale 65535: 257 * 255
        return Image.fromarray(((array.astype(np.uint32) + 128) // 257).astype(np.uint8), "L")
    if not np.isfinite(array).all():
        raise ImageInputError(f"{where}: the image ({image.mode} mode) contains NaN or infinite values")
    lo, hi = float(array.min()), float(array.max())
    if lo < 0 or hi > 255:
        raise ImageInputError(f"{where}: {image.mode}-mode image values span [{lo:.4g}, {hi:.4g}], outside the 0..255 "
                              "an 8-bit conversion keeps; scale it to 0..255 (or to a uint8 array) first")
    return image.convert("L")


def _open_image(path: Path) -> Any:
    from PIL import Image, UnidentifiedImageError

    if not path.exists():
        raise FileNotFoundError(f"no such image file: {path}")
    if path.is_dir():
        raise IsADirectoryError(f"expected an image file, got a directory: {path}")
    try:
        with warnings.catch_warnings():  # over the limit is refused below, not warned about
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)
        with img:
            _check_pixel_count(img.size, path)
            img.load()
            return img
    except ImageInputError:
        raise
    except UnidentifiedImageError as e:
        raise ImageInputError(f"{path} is not an image file PIL can read") from e
    except Image.DecompressionBombError as e:  # PIL refuses twice its limit before we see the size
        raise ImageInputError(f"{path}: refused as a possible decompression bomb: {e} "
                              "Shrink the image, or raise PIL.Image.MAX_IMAGE_PIXELS if you trust the file") from e
    except (OSError, SyntaxError, ValueError) as e:  # truncated or corrupt image data (PNG chunk errors are SyntaxError)
        raise ImageInputError(f"{path}: cannot read image: {e}") from e


def _check_pixel_count(size: tuple[int, int], path: Path) -> None:
    """Refuse, before decoding, an image larger than PIL's own limit: a small file claiming a huge
    size would otherwise take gigabytes to decode."""
    from PIL import Image

    limit = Image.MAX_IMAGE_PIXELS
    width, height = size
    if limit is not None and width * height > limit:
        raise ImageInputError(f"{path}: the image is {width}x{height} ({width * height:,} pixels), over the {limit:,}-pixel "
                              "limit (PIL.Image.MAX_IMAGE_PIXELS); refused as a possible decompression bomb. Shrink it, "
                              "or raise that limit if you trust the file")
