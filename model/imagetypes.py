"""What a file is, from its first bytes: the one place that knows magic numbers.

Imports no Pillow, so the bot process (which stores images but never decodes them) stays light.
"""

from __future__ import annotations

from dataclasses import dataclass

# ISO-BMFF brands (bytes 8..12 after "ftyp") of still images: named when no decoder is there.
_HEIF_BRANDS = frozenset({b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"})
_AVIF_BRANDS = frozenset({b"avif", b"avis"})
# How much of the file is looked at.
_HEAD = 512


@dataclass(frozen=True, slots=True)
class FileType:
    """What the bytes look like.

    `extension`: the image store's file extension for the raster formats it keeps ("jpg",
    "png", "webp", "gif", "bmp", "tif"), else "bin". `looks_like`: what to tell people about
    bytes that are not a readable image ("a PDF document", "HEIC", "a text file", ...; "" when
    nothing is recognised).
    """

    extension: str
    looks_like: str


def identify(data: bytes) -> FileType:
    """What `data` is, by its magic number (and, for text, by decoding as UTF-8)."""
    head = data[:_HEAD]
    return FileType(_raster_extension(head), _looks_like(head, data))


def image_extension(data: bytes) -> str:
    """A file extension for image bytes, from their magic number ('bin' when unknown)."""
    return identify(data).extension


def sniff(data: bytes) -> str:
    """Name what non-image bytes look like, for a clearer refusal ('' when unknown)."""
    return identify(data).looks_like


def _raster_extension(head: bytes) -> str:
    if head.startswith(b"\xff\xd8\xff"):
        return "jpg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    if head.startswith(b"BM"):
        return "bmp"
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return "tif"
    return "bin"


def _looks_like(head: bytes, data: bytes) -> str:
    stripped = head.lstrip()
    if head.startswith(b"%PDF"):
        return "a PDF document"
    if head.startswith(b"PK\x03\x04"):
        return "a ZIP archive or an Office document"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in _HEIF_BRANDS:
            return "HEIC"
        if brand in _AVIF_BRANDS:
            return "AVIF"
        if brand == b"qt  ":
            return "a QuickTime video"
        return "a video"
    if head.startswith(b"\x1aE\xdf\xa3"):
        return "a video"
    if head.startswith((b"OggS", b"ID3", b"fLaC")) or head[8:12] == b"WAVE":
        return "an audio file"
    if head.startswith((b"\x1f\x8b", b"7z\xbc\xaf", b"Rar!")):
        return "a compressed archive"
    if stripped.startswith((b"<svg", b"<?xml")) and b"<svg" in data[:4096]:
        return "SVG"
    if stripped.startswith((b"<!DOCTYPE html", b"<html", b"<!doctype html")):
        return "a web page"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return ""
    return "a text file"
