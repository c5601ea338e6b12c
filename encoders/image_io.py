"""Turn any image a person can give into an upright RGB PIL image of sane size.

Handles what phones and editors produce: EXIF rotation, RGBA / palette / greyscale / CMYK, 16-bit PNGs,
the first frame of animated GIFs, and 48-megapixel photos (downscaled). Pillow's decompression-bomb
guard stays on, so a tiny file that claims to be gigapixels is refused instead of exhausting memory.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, JpegImagePlugin

from mmdialog.errors import InputError
from mmdialog.settings import LimitSettings

ImageInput = str | Path | bytes | np.ndarray | Image.Image

# Larger photos are shrunk before any model sees them; vision towers work at 224-448 px anyway.
MAX_SIDE = 2048

# Pillow's bomb guard stays on (Image.open refuses more than twice MAX_IMAGE_PIXELS outright); on top, the
# pixels actually decoded are limited to `max_pixels` (the config's limits.max_image_pixels). JPEGs are
# decoded at reduced scale (see draft below), so for them the limit applies to the reduced size: a
# 20,000 x 20,000 photo decodes at 1/8 scale and is fine, a JPEG claiming 100,000 x 100,000 is not.
MAX_PIXELS = LimitSettings.max_image_pixels
_JPEG_MAGIC = b"\xff\xd8\xff"

# Uploads are untrusted: only the common raster formats are decoded. This keeps out EPS (which Pillow hands
# to Ghostscript) and rarely used, little-fuzzed decoders. JPEG also opens phones' multi-picture MPO files;
# AVIF is only there when Pillow was built with it, and Image.open fails on a name it does not know.
Image.init()
FORMATS = tuple(name for name in ("PNG", "JPEG", "WEBP", "AVIF", "GIF", "BMP", "TIFF", "PPM", "TGA", "ICO")
                if name in Image.OPEN)

_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")


def _to_uint8(array: np.ndarray, full_scale: float | None = None) -> np.ndarray:
    """Map numeric pixels to 0..255 by the range they were meant to span (`full_scale` when it is known)."""
    if array.dtype == np.uint8:
        return array
    if array.dtype.kind == "b":
        return array.astype(np.uint8) * 255
    if array.dtype.kind not in "iuf":
        raise InputError(f"an image array must hold numbers, got {array.dtype}")
    values = array.astype(np.float32)
    if not np.isfinite(values).all():
        raise InputError("the image array contains NaN or infinite values")
    peak = float(values.max(initial=0.0))
    if full_scale is None:
        if array.dtype == np.uint16:
            full_scale = 65535.0  # 16-bit data: a dark picture must stay dark, not be stretched
        elif array.dtype.kind == "f" and peak <= 1.0:
            full_scale = 1.0  # float images are conventionally 0..1
        else:  # integers of a wide type (np.array of ints is int64): guess 8, 16 bits or the real peak
            full_scale = 255.0 if peak <= 255 else 65535.0 if peak <= 65535 else peak
    return np.clip(values * (255.0 / full_scale), 0, 255).round().astype(np.uint8)


def _from_array(array: np.ndarray) -> Image.Image:
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.size == 0 or not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (2, 3, 4))):
        raise InputError(f"an image array must be HxW or HxWxC with 1-4 channels, got shape {array.shape}")
    return Image.fromarray(np.ascontiguousarray(_to_uint8(array)))


def _read(source: str | Path | bytes | bytearray | memoryview) -> tuple[bytes, str]:
    """The file's bytes and how to name it in a message."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        what = f"image file '{path.name}'"  # the name only: the server's folders are nobody's business
        if not path.is_file():
            raise InputError(f"{what} does not exist")
        try:
            return path.read_bytes(), what
        except OSError:  # no permission, a vanished network share, ...
            raise InputError(f"{what} cannot be read") from None
    return bytes(source), "the uploaded image"


def _open(source: ImageInput, max_side: int, max_pixels: int) -> Image.Image:
    if isinstance(source, Image.Image):
        return source
    if isinstance(source, np.ndarray):
        return _from_array(source)
    if not isinstance(source, (str, Path, bytes, bytearray, memoryview)):
        raise InputError(f"image of type {type(source).__name__} is not supported")
    data, what = _read(source)
    if not data:
        raise InputError(f"{what} is empty")
    try:
        if data.startswith(_JPEG_MAGIC):
            # Opened by its own plugin, so the size that is checked is the one draft() will decode: JPEG can
            # decode at 1/2, 1/4 or 1/8 scale and a huge photo never needs its full-size pixels in memory.
            # (Image.open would refuse it on the full size before draft could help.)
            image = JpegImagePlugin.jpeg_factory(io.BytesIO(data))
            image.draft(image.mode, (max_side, max_side))
        else:
            image = Image.open(io.BytesIO(data), formats=FORMATS)  # reads the header only
        if image.width * image.height > max_pixels:
            raise Image.DecompressionBombError(f"{image.width}x{image.height}")
        image.load()
    except Image.DecompressionBombError:
        raise InputError(
            f"{what} has too many pixels (over {max_pixels // 1_000_000} megapixels) and is refused as a possible "
            "decompression bomb; resize it and try again"
        ) from None
    except Exception:  # broken or hostile files raise all sorts (OSError, SyntaxError, struct.error, ...)
        raise InputError(
            f"{what} is not an image that can be read (damaged, or not PNG, JPEG, WebP, GIF, BMP or TIFF)"
        ) from None
    return image


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in _SIXTEEN_BIT_MODES or image.mode in ("I", "F"):
        # 16-bit, 32-bit and float greyscale: scale to 8 bits by the range, not by clipping (which turns white).
        full_scale = 65535.0 if image.mode in _SIXTEEN_BIT_MODES else None
        image = Image.fromarray(_to_uint8(np.asarray(image), full_scale))
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        # Transparent areas become white, the way a viewer shows them, rather than black.
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return image.convert("RGB")


def load_image(source: ImageInput, max_side: int = MAX_SIDE, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """An upright RGB image no larger than `max_side`; unreadable input, or more than `max_pixels` to decode,
    raises InputError."""
    image = _open(source, max_side, max_pixels)
    if getattr(image, "is_animated", False):
        image.seek(0)  # the first frame of a GIF / APNG / WebP animation stands for the whole
    with contextlib.suppress(Exception):  # a broken EXIF block must not lose an otherwise fine picture
        image = ImageOps.exif_transpose(image)
    if image.width < 1 or image.height < 1:
        raise InputError("the image has no pixels")
    try:
        image = _to_rgb(image)
    except (ValueError, OSError):  # a mode Pillow cannot convert (e.g. LAB) or pixels that fail to decode
        raise InputError(f"an image in {image.mode} mode cannot be converted to RGB") from None
    if max(image.size) > max_side:
        image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return image
