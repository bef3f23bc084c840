"""Test images, made here: scikit-image's sample photos and generated files."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import skimage.data
from PIL import Image


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    """`image` saved in `fmt`, as bytes."""
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def coffee() -> Image.Image:
    """scikit-image's cup of espresso."""
    return Image.fromarray(skimage.data.coffee())


def chelsea() -> Image.Image:
    """scikit-image's tabby cat."""
    return Image.fromarray(skimage.data.chelsea())


def coffee_jpeg() -> bytes:
    return encode(coffee(), "JPEG", quality=90)


def chelsea_jpeg() -> bytes:
    return encode(chelsea(), "JPEG", quality=90)


def truncated_jpeg() -> bytes:
    """A JPEG cut off after 40% of its bytes, as an interrupted upload leaves it."""
    data = coffee_jpeg()
    return data[: int(len(data) * 0.4)]


def minimal_pdf() -> bytes:
    """A small but well-formed one-page PDF."""
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 200] >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


def huge_png(width: int = 40_000, height: int = 40_000) -> bytes:
    """A valid 1-bit black PNG of `width`×`height` pixels: a few hundred KB on disk."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    row = b"\x00" * (1 + (width + 7) // 8)
    compressor = zlib.compressobj(9)
    rows_per_step = 1000
    parts = []
    for start in range(0, height, rows_per_step):
        parts.append(compressor.compress(row * min(rows_per_step, height - start)))
    parts.append(compressor.flush())
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", b"".join(parts))
        + chunk(b"IEND", b"")
    )


def with_exif_orientation(image: Image.Image, orientation: int) -> bytes:
    """A JPEG of `image` carrying an EXIF orientation tag (6 = rotate 90° clockwise to view)."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(image, "JPEG", quality=90, exif=exif.tobytes())


def noise(width: int = 64, height: int = 48, seed: int = 0) -> Image.Image:
    """Random RGB pixels."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
