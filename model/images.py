"""Decoding and validating untrusted image bytes with Pillow, before anything else sees them."""

from __future__ import annotations

import io
import warnings

from PIL import Image, ImageOps, UnidentifiedImageError

from model.imagetypes import sniff
from model.types import CorruptImage, EmptyFile, NotAnImage, TooManyPixels, UnsupportedImage

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


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode untrusted bytes into an upright RGB image, or raise an `ImageRejected`."""
    if not data:
        raise EmptyFile()
    try:
        image = Image.open(io.BytesIO(data), formats=READABLE_FORMATS)
    except UnidentifiedImageError:
        kind = sniff(data)
        if kind in ("HEIC", "AVIF", "SVG"):
            raise UnsupportedImage(kind) from None
        raise NotAnImage(kind) from None
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
        try:
            if getattr(image, "n_frames", 1) > 1:
                image.seek(0)  # animated GIF/WebP, multi-page TIFF: the first frame
            with warnings.catch_warnings():
                # Pillow warns on odd-but-readable metadata; the image is what matters.
                warnings.simplefilter("ignore")
                image.load()
                upright = ImageOps.exif_transpose(image)
            return _to_rgb(upright)
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise CorruptImage(str(exc)) from None


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
