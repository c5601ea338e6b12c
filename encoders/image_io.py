"""Turn any image a person can give into an upright RGB PIL image of sane size.

Handles what phones and editors produce: EXIF rotation, RGBA / palette / greyscale / CMYK, 16-bit PNGs,
the first frame of animated GIFs, and 48-megapixel photos (downscaled). Pillow's decompression-bomb
guard stays on, so a tiny file that claims to be gigapixels is refused instead of exhausting memory.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from mmdialog.errors import InputError

ImageInput = str | Path | bytes | np.ndarray | Image.Image

# Larger photos are shrunk before any model sees them; vision towers work at 224-448 px anyway.
MAX_SIDE = 2048


def _open(source: ImageInput) -> Image.Image:
    if isinstance(source, Image.Image):
        return source
    if isinstance(source, np.ndarray):
        array = source
        if array.dtype != np.uint8:
            scale = 255.0 / max(float(array.max()), 1.0) if array.dtype.kind in "iu" else 255.0
            array = np.clip(array.astype(np.float32) * scale, 0, 255).astype(np.uint8)
        try:
            return Image.fromarray(array)
        except Exception:
            raise InputError(f"an image array must be HxW or HxWxC, got shape {source.shape}") from None
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise InputError(f"image file '{path.name}' does not exist")
        data, what = path.read_bytes(), f"image file '{path.name}'"
    elif isinstance(source, (bytes, bytearray)):
        data, what = bytes(source), "the uploaded image"
    else:
        raise InputError(f"image of type {type(source).__name__} is not supported")
    if not data:
        raise InputError(f"{what} is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InputError(f"{what} claims too many pixels to be a real photo (decompression bomb)") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise InputError(f"{what} is not an image that can be read") from None
    return image


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16-bit and float greyscale: scale to 8 bits by the real range, not by clipping.
        array = np.asarray(image, dtype=np.float32)
        peak = float(array.max()) or 1.0
        image = Image.fromarray((array / peak * 255.0).clip(0, 255).astype(np.uint8))
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Transparent areas become white, the way a viewer shows them, rather than black.
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return image.convert("RGB")


def load_image(source: ImageInput, max_side: int = MAX_SIDE) -> Image.Image:
    """An upright RGB image no larger than `max_side`; unreadable input raises InputError."""
    image = _open(source)
    if getattr(image, "is_animated", False):
        image.seek(0)
    with contextlib.suppress(Exception):  # a broken EXIF block must not lose an otherwise fine picture
        image = ImageOps.exif_transpose(image)
    if image.width < 1 or image.height < 1:
        raise InputError("the image has no pixels")
    image = _to_rgb(image)
    if max(image.size) > max_side:
        image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return image
