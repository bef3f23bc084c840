"""Decoding and validating untrusted image bytes with Pillow, before anything else sees them."""

from __future__ import annotations

import io
import warnings

from PIL import Image, ImageOps, UnidentifiedImageError

from model.imagetypes import identify, sniff
from model.types import (
    CorruptImage,
    EmptyFile,
    ImageRejected,
    NotAnImage,
    TooManyPixels,
    UnsupportedImage,
)

__all__ = ["DEFAULT_MAX_PIXELS", "READABLE_FORMATS", "decode_image", "sniff"]

DEFAULT_MAX_PIXELS = 50_000_000

try:
    # HEIC/HEIF, the iPhone camera's default format, through libheif.
    from pillow_heif import register_heif_opener

    register_heif_opener()
except ImportError:  # pragma: no cover - pillow-heif is a dependency; this keeps decoding alive
    pass
Image.init()  # register every plugin, so that the allow-list below can be checked against them
# Formats Pillow may try. An allow-list keeps exotic decoders (EPS runs Ghostscript) out of reach.
# MPO (multi-picture JPEG from some cameras) is its own plugin in older Pillow releases.
READABLE_FORMATS = tuple(
    name
    for name in ("JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP", "TIFF", "HEIF", "AVIF")
    if name in Image.OPEN
)


# The raster formats we read, by the extension `model.imagetypes` gives their magic number.
_FORMAT_NAMES = {
    "jpg": "JPEG",
    "png": "PNG",
    "webp": "WebP",
    "gif": "GIF",
    "bmp": "BMP",
    "tif": "TIFF",
}


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode untrusted bytes into an upright RGB image, or raise an `ImageRejected`.

    Nothing else escapes: whatever a decoder raises on hostile bytes (Pillow and libheif raise
    more than OSError) is a `CorruptImage`.
    """
    if not data:
        raise EmptyFile()
    try:
        return _decode(data, max_pixels)
    except ImageRejected:
        raise
    except Exception as exc:  # e.g. struct.error, IndexError, RuntimeError, MemoryError
        raise CorruptImage(f"{type(exc).__name__}: {exc}"[:200]) from None


def _decode(data: bytes, max_pixels: int) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data), formats=READABLE_FORMATS)
    except UnidentifiedImageError:
        raise _unidentified(data) from None
    except Image.DecompressionBombError:
        raise TooManyPixels(0, 0, max_pixels) from None
    except (OSError, SyntaxError, ValueError) as exc:
        # A recognised header whose fields Pillow refuses (e.g. a cut-off PNG chunk).
        raise CorruptImage(str(exc)) from None
    with image:
        width, height = image.size
        # Checked on the header, before a single pixel is decoded.
        if width * height > max_pixels:
            raise TooManyPixels(width, height, max_pixels)
        if width < 1 or height < 1:
            raise CorruptImage("the image has no pixels")
        # An animation or a multi-page file opens at its first frame, which is what is
        # classified; counting the frames (n_frames) would walk every one of them.
        try:
            with warnings.catch_warnings():
                # Pillow warns on odd-but-readable metadata; the image is what matters.
                warnings.simplefilter("ignore")
                image.load()
                upright = ImageOps.exif_transpose(image)
            return _to_rgb(upright)
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise CorruptImage(str(exc)) from None


def _unidentified(data: bytes) -> ImageRejected:
    """Why no decoder took `data`: a damaged file of a format we read, a format we cannot
    read, or not an image at all."""
    kind = identify(data)
    if kind.extension in _FORMAT_NAMES:  # its magic number is a format we read
        return CorruptImage(f"not a readable {_FORMAT_NAMES[kind.extension]} file")
    if kind.looks_like in ("HEIC", "AVIF"):
        decoder = "HEIF" if kind.looks_like == "HEIC" else "AVIF"
        if decoder in READABLE_FORMATS:  # a decoder is there: the file is damaged
            return CorruptImage(f"not a readable {kind.looks_like} file")
        return UnsupportedImage(kind.looks_like)
    if kind.looks_like == "SVG":
        return UnsupportedImage(kind.looks_like)
    return NotAnImage(kind.looks_like)


def _to_rgb(image: Image.Image) -> Image.Image:
    """Flatten transparency onto white and convert any mode to 8-bit RGB."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit greyscale (PNG/TIFF): scale down to 8 bits rather than clipping to white.
        return image.point(lambda value: value / 256).convert("L").convert("RGB")
    return image.convert("RGB")
