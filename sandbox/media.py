"""Media helpers for the sandbox: Telegram-like photo re-encoding, dummy media, MIME guessing."""

from __future__ import annotations

import functools
import io
import mimetypes
import re
from dataclasses import dataclass

from PIL import Image, ImageOps

#: Longest-side targets Telegram uses for the PhotoSizes of a photo, small to large.
PHOTO_SIDES: tuple[int, ...] = (90, 320, 800, 1280)
JPEG_QUALITY = 87
DEFAULT_MIME = "application/octet-stream"

_SAFE_SUFFIX = re.compile(r"\.[A-Za-z0-9]{1,8}")


class NotAnImageError(ValueError):
    """Raised when bytes cannot be decoded as an image."""


@dataclass(frozen=True)
class EncodedPhoto:
    """One JPEG rendition of a photo."""

    data: bytes
    width: int
    height: int


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode to RGB, flattening transparency onto white."""
    if img.mode == "RGB":
        return img
    has_alpha = img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info
    if has_alpha:
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return img.convert("RGB")


def _decode(data: bytes) -> Image.Image:
    """Decode image bytes into an upright RGB image, or raise NotAnImageError."""
    try:
        with Image.open(io.BytesIO(data)) as opened:
            opened.load()
            upright = ImageOps.exif_transpose(opened)
            rgb = _to_rgb(upright)  # exif_transpose returned a copy: safe after close
            rgb.load()
            return rgb
    except Exception as exc:  # PIL raises a zoo of exception types on bad input
        raise NotAnImageError(f"cannot decode image: {type(exc).__name__}") from exc


def _encode_jpeg(img: Image.Image) -> EncodedPhoto:
    """Encode an RGB image as JPEG at Telegram-like quality."""
    buffer = io.BytesIO()
    img.save(buffer, "JPEG", quality=JPEG_QUALITY)
    return EncodedPhoto(buffer.getvalue(), img.width, img.height)


def _scaled(img: Image.Image, side: int) -> Image.Image:
    """Return img scaled so that its longest side equals side (never upscaled)."""
    longest = max(img.size)
    if side >= longest:
        return img
    scale = side / longest
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    return img.resize(size, Image.Resampling.LANCZOS)


def make_photo_sizes(data: bytes) -> list[EncodedPhoto]:
    """Re-encode an image as Telegram does: JPEG renditions sorted small to large."""
    img = _decode(data)
    longest = max(img.size)
    cap = min(longest, PHOTO_SIDES[-1])
    sides = [side for side in PHOTO_SIDES if side < longest]
    if cap not in sides:
        sides.append(cap)
    base = _scaled(img, cap)
    return [_encode_jpeg(_scaled(base, side)) for side in sorted(sides)]


def image_dimensions(data: bytes) -> tuple[int, int] | None:
    """Return (width, height) of image bytes, or None when they are not an image."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.size
    except Exception:
        return None


def guess_mime(file_name: str | None) -> str:
    """Guess a MIME type from a file name, defaulting to application/octet-stream."""
    if not file_name:
        return DEFAULT_MIME
    guessed, _ = mimetypes.guess_type(file_name, strict=False)
    return guessed or DEFAULT_MIME


def safe_extension(file_name: str | None, mime_type: str | None) -> str:
    """Pick a URL-safe file extension (with dot) from a file name or MIME type."""
    if file_name:
        dot = file_name.rfind(".")
        if dot > 0:
            suffix = file_name[dot:]
            if _SAFE_SUFFIX.fullmatch(suffix):
                return suffix.lower()
    if mime_type:
        guessed = mimetypes.guess_extension(mime_type, strict=False)
        if guessed and _SAFE_SUFFIX.fullmatch(guessed):
            return guessed
    return ""


@functools.cache
def dummy_sticker() -> bytes:
    """A small transparent 512x512 WEBP standing in for a sticker."""
    img = Image.new("RGBA", (512, 512), (0, 0, 0, 0))
    buffer = io.BytesIO()
    img.save(buffer, "WEBP")
    return buffer.getvalue()


#: A minimal ISO-BMFF "ftyp" box: enough to look like an MP4 to a MIME sniffer.
DUMMY_MP4 = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom"
#: An Ogg page header followed by padding, standing in for a voice note.
DUMMY_OGG = b"OggS\x00\x02" + b"\x00" * 26
