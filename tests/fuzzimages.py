"""A corpus of hostile and odd image files, made here (nothing is downloaded).

Each case is (name, bytes, expected): `expected` is "prediction" (a readable image: it must
be classified), "too-many-pixels" (a decompression bomb: refused from its header), "corrupt"
(refused as damaged), "empty" (no bytes), "rejected" (any `ImageRejected`), or "any"
(truncated or bit-flipped data: a prediction or any `ImageRejected` is fine, as long as the
answer comes in time and nothing dies).
"""

from __future__ import annotations

import functools
import random
import struct
import zlib
from collections.abc import Iterator

import numpy as np
from PIL import Image

from tests import images

Case = tuple[str, bytes, str]

FORMATS = {"jpeg": "JPEG", "png": "PNG", "webp": "WEBP", "gif": "GIF", "heic": "HEIF"}


def corpus() -> list[Case]:
    """Every case, in a fixed order (seeded randomness)."""
    return [
        *damaged(),
        *bombs(),
        *tiny_and_empty(),
        *modes(),
        *magic_and_noise(),
    ]


def _encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    if fmt == "HEIF":
        import pillow_heif

        pillow_heif.register_heif_opener()
    return images.encode(image, fmt, **params)


@functools.cache
def _photo() -> Image.Image:
    return images.coffee().resize((160, 120))


def damaged() -> Iterator[Case]:
    """Truncated and bit-flipped files of each camera format."""
    photo = _photo()
    for name, fmt in FORMATS.items():
        data = _encode(photo, fmt)
        for fraction in (0.02, 0.3, 0.6, 0.95):
            yield (
                f"{name}-truncated-{fraction:.0%}",
                data[: max(1, int(len(data) * fraction))],
                "any",
            )
        yield f"{name}-header-only", data[:32], "any"
        rng = random.Random(f"{name}-flips")
        for flips in (1, 8, 64, 512):
            for variant in range(2):
                damaged = bytearray(data)
                for _ in range(flips):
                    position = rng.randrange(len(damaged))
                    damaged[position] ^= 1 << rng.randrange(8)
                yield f"{name}-{flips}-bit-flips-{variant}", bytes(damaged), "any"


def bombs() -> Iterator[Case]:
    """Small files that declare (or decode to) far more pixels than allowed."""
    yield "png-40000x40000", images.huge_png(), "too-many-pixels"
    yield "png-100000x1", images.huge_png(100_000, 1), "prediction"
    yield "gif-65535x65535", _gif_with_screen(65535, 65535), "too-many-pixels"
    yield "webp-16384x16384-lossless", _webp_vp8l_size(16384, 16384), "too-many-pixels"
    yield "webp-canvas-16777216x16777216", _webp_vp8x_canvas(1 << 24, 1 << 24), "rejected"
    yield "tiff-100000x100000", _tiff_header_only(100_000, 100_000), "too-many-pixels"
    yield "tiff-2^31x2", _tiff_header_only(2**31, 2), "too-many-pixels"
    yield "gif-3000-frames", _gif_many_frames(3000, 1000, 1000), "prediction"
    yield "jpeg-huge-exif", _jpeg_with_huge_metadata(), "prediction"
    yield "png-huge-text-chunks", _png_with_text_chunks(), "rejected"
    yield "tiff-ifd-loop", _tiff_pages(3, loop=True), "prediction"
    yield "tiff-60000-pages", _tiff_pages(60_000), "prediction"
    yield "png-7000x7000-at-the-limit", images.huge_png(7000, 7000), "prediction"


def tiny_and_empty() -> Iterator[Case]:
    """Zero-size and 1×1 images."""
    yield "png-0x0", _png_raw(0, 0, 8, 0, b""), "corrupt"
    yield "png-0x10", _png_raw(0, 10, 8, 0, b"\x00" * 10), "corrupt"
    yield "gif-0x0", _gif_with_screen(0, 0, frame=(0, 0)), "rejected"
    yield "empty-file", b"", "empty"
    one = Image.new("RGB", (1, 1), (200, 30, 40))
    for name, fmt in (*FORMATS.items(), ("bmp", "BMP"), ("tiff", "TIFF")):
        yield f"{name}-1x1", _encode(one, fmt), "prediction"
    yield "png-1x1-grey", _encode(Image.new("L", (1, 1), 7), "PNG"), "prediction"


def modes() -> Iterator[Case]:
    """CMYK, 16-bit, palette, alpha and other modes a camera or an editor may write."""
    photo = _photo()
    yield "jpeg-cmyk", _encode(photo.convert("CMYK"), "JPEG"), "prediction"
    yield "tiff-cmyk", _encode(photo.convert("CMYK"), "TIFF"), "prediction"
    yield "jpeg-grey", _encode(photo.convert("L"), "JPEG"), "prediction"
    yield "png-16-bit-grey", _encode(Image.new("I;16", (64, 48), 40000), "PNG"), "prediction"
    yield "tiff-16-bit-grey", _encode(Image.new("I;16", (64, 48), 40000), "TIFF"), "prediction"
    rgb16 = np.full((48, 64, 3), 50000, dtype=">u2").tobytes()
    yield "png-16-bit-rgb", _png_raw(64, 48, 16, 2, rgb16, row_bytes=64 * 6), "prediction"
    rgba16 = np.full((48, 64, 4), 30000, dtype=">u2").tobytes()
    yield "png-16-bit-rgba", _png_raw(64, 48, 16, 6, rgba16, row_bytes=64 * 8), "prediction"
    yield "tiff-32-bit-int", _encode(Image.new("I", (64, 48), 1 << 20), "TIFF"), "prediction"
    yield "tiff-float", _encode(Image.new("F", (64, 48), 0.5), "TIFF"), "prediction"
    yield "png-palette", _encode(photo.convert("P"), "PNG"), "prediction"
    transparent = photo.convert("P")
    yield "png-palette-transparent", _encode(transparent, "PNG", transparency=0), "prediction"
    yield "png-rgba", _encode(photo.convert("RGBA"), "PNG"), "prediction"
    yield "png-la", _encode(photo.convert("LA"), "PNG"), "prediction"
    yield "png-1-bit", _encode(photo.convert("1"), "PNG"), "prediction"
    yield "bmp-1-bit", _encode(photo.convert("1"), "BMP"), "prediction"
    yield "webp-rgba", _encode(photo.convert("RGBA"), "WEBP"), "prediction"
    yield "heic-rgba", _encode(photo.convert("RGBA"), "HEIF"), "prediction"
    yield "tiff-lab", _encode(photo.convert("LAB"), "TIFF"), "any"
    yield "tiff-ycbcr", _encode(photo.convert("YCbCr"), "TIFF"), "any"
    frames = [photo, photo.rotate(90), photo.rotate(180)]
    yield (
        "webp-animated",
        _encode(frames[0], "WEBP", save_all=True, append_images=frames[1:]),
        "prediction",
    )
    yield (
        "tiff-multipage",
        _encode(frames[0], "TIFF", save_all=True, append_images=frames[1:]),
        "prediction",
    )
    yield "jpeg-exif-rotated", images.with_exif_orientation(photo, 8), "prediction"
    yield "jpeg-exif-bad-orientation", images.with_exif_orientation(photo, 77), "prediction"


MAGICS = {
    "jpeg": b"\xff\xd8\xff\xe0",
    "png": b"\x89PNG\r\n\x1a\n",
    "gif": b"GIF89a",
    "webp": b"RIFF\x00\x10\x00\x00WEBPVP8 ",
    "bmp": b"BM",
    "tiff-le": b"II*\x00",
    "tiff-be": b"MM\x00*",
    "heic": b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic",
    "avif": b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf",
}


def magic_and_noise() -> Iterator[Case]:
    """Random bytes behind each format's magic number, and plain noise."""
    rng = random.Random("magic")
    for name, magic in MAGICS.items():
        for size in (16, 4096, 200_000):
            yield f"{name}-magic-then-{size}-random", magic + rng.randbytes(size), "any"
    yield "random-bytes", rng.randbytes(100_000), "rejected"


# --------------------------------------------------------------------------- hand-made files


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_raw(
    width: int, height: int, depth: int, colour: int, pixels: bytes, row_bytes: int = 0
) -> bytes:
    """A PNG with the given header fields and `pixels` (rows of `row_bytes`, unfiltered)."""
    rows = b""
    if row_bytes:
        rows = b"".join(
            b"\x00" + pixels[i : i + row_bytes] for i in range(0, len(pixels), row_bytes)
        )
    else:
        rows = pixels
    header = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(rows))
        + _chunk(b"IEND", b"")
    )


def _png_with_text_chunks() -> bytes:
    """A small PNG carrying 200 compressed text chunks of 1 MB of zeros each."""
    data = _encode(Image.new("RGB", (32, 32), (10, 200, 10)), "PNG")
    zeros = zlib.compress(b"\x00" * (1 << 20), 9)
    text = b"".join(_chunk(b"zTXt", b"Comment%d\x00\x00" % n + zeros) for n in range(200))
    return data[:33] + text + data[33:]


def _gif_with_screen(width: int, height: int, frame: tuple[int, int] = (1, 1)) -> bytes:
    """A GIF whose logical screen is `width`×`height`, holding one small frame."""
    data = bytearray(_encode(Image.new("P", frame if all(frame) else (1, 1)), "GIF"))
    data[6:10] = struct.pack("<HH", width, height)
    if not all(frame):
        # The image descriptor (after the colour table) gets the zero size too.
        at = data.index(b",")
        data[at + 5 : at + 9] = struct.pack("<HH", *frame)
    return bytes(data)


def _gif_many_frames(count: int, width: int, height: int) -> bytes:
    """A `width`×`height` GIF of `count` frames, each a different 1×1 dot: small on disk, but
    walking every frame decodes (and composites) each one."""
    header = b"GIF89a" + struct.pack("<HHBBB", width, height, 0xF0, 0, 0)
    palette = bytes([0, 0, 0, 255, 255, 255])
    loop = b"\x21\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00"
    frames = []
    for n in range(count):
        control = b"\x21\xf9\x04\x04\x01\x00\x00\x00"  # 10 ms, keep the previous frame
        x, y = n % width, (n // width) % height
        descriptor = b"," + struct.pack("<HHHHB", x, y, 1, 1, 0)
        pixels = b"\x02\x02\x44\x01\x00"  # LZW, code size 2: one pixel of colour 1
        frames.append(control + descriptor + pixels)
    return header + palette + loop + b"".join(frames) + b";"


def _webp_vp8l_size(width: int, height: int) -> bytes:
    """A lossless WebP whose header claims `width`×`height` (the pixels do not follow)."""
    data = bytearray(_encode(Image.new("RGB", (4, 4)), "WEBP", lossless=True))
    at = data.index(b"VP8L") + 8
    assert data[at] == 0x2F
    bits = int.from_bytes(data[at + 1 : at + 5], "little")
    bits = (bits & ~((1 << 28) - 1)) | (width - 1) | ((height - 1) << 14)
    data[at + 1 : at + 5] = bits.to_bytes(4, "little")
    return bytes(data)


def _webp_vp8x_canvas(width: int, height: int) -> bytes:
    """An extended WebP whose canvas is `width`×`height`, holding a 4×4 image."""
    small = _encode(Image.new("RGB", (4, 4)), "WEBP", lossless=True)
    image = small[12:]  # the VP8L chunk
    vp8x = _riff_chunk(
        b"VP8X", b"\x00\x00\x00\x00" + (width - 1).to_bytes(3, "little")
        + (height - 1).to_bytes(3, "little")
    )  # fmt: skip
    body = b"WEBP" + vp8x + image
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _riff_chunk(kind: bytes, body: bytes) -> bytes:
    padding = b"\x00" if len(body) % 2 else b""
    return kind + struct.pack("<I", len(body)) + body + padding


def _tiff_header_only(width: int, height: int) -> bytes:
    """A little-endian greyscale TIFF declaring `width`×`height`, with one tiny strip."""
    entries = [
        (256, 4, 1, width),  # ImageWidth, LONG
        (257, 4, 1, height),  # ImageLength
        (258, 3, 1, 8),  # BitsPerSample
        (259, 3, 1, 1),  # Compression: none
        (262, 3, 1, 1),  # Photometric: black is zero
        (273, 4, 1, 8 + 2 + 12 * 9 + 4),  # StripOffsets: just after the IFD
        (277, 3, 1, 1),  # SamplesPerPixel
        (278, 4, 1, height),  # RowsPerStrip
        (279, 4, 1, 16),  # StripByteCounts
    ]
    ifd = struct.pack("<H", len(entries))
    for tag, kind, count, value in entries:
        packed = struct.pack("<I", value) if kind == 4 else struct.pack("<HH", value, 0)
        ifd += struct.pack("<HHI", tag, kind, count) + packed
    ifd += b"\x00\x00\x00\x00"
    return b"II*\x00" + struct.pack("<I", 8) + ifd + b"\x00" * 16


def _tiff_pages(count: int, loop: bool = False) -> bytes:
    """A little-endian 1×1 greyscale TIFF of `count` pages (IFDs); with `loop`, the last
    page's next-IFD pointer goes back to the first."""
    entry_count = 8
    ifd_size = 2 + 12 * entry_count + 4
    out = bytearray(b"II*\x00" + struct.pack("<I", 8))
    for page in range(count):
        at = 8 + page * (ifd_size + 2)
        pixel = at + ifd_size
        following = at + ifd_size + 2 if page < count - 1 else (8 if loop else 0)
        entries = [
            (256, 4, 1, 1),
            (257, 4, 1, 1),
            (258, 3, 1, 8),
            (259, 3, 1, 1),
            (262, 3, 1, 1),
            (273, 4, 1, pixel),
            (278, 4, 1, 1),
            (279, 4, 1, 1),
        ]
        out += struct.pack("<H", entry_count)
        for tag, kind, n, value in entries:
            packed = struct.pack("<I", value) if kind == 4 else struct.pack("<HH", value, 0)
            out += struct.pack("<HHI", tag, kind, n) + packed
        out += struct.pack("<I", following) + bytes([page % 256, 0])
    return bytes(out)


def _jpeg_with_huge_metadata() -> bytes:
    """A JPEG with a full 64 KB EXIF block of thousands of tags, then 100 more 64 KB APP
    segments (EXIF, XMP and comments): about 6.5 MB of metadata around a small photo."""
    photo = _photo()
    exif = Image.Exif()
    exif[0x0112] = 1
    exif[0x010E] = "x" * 60_000  # ImageDescription
    data = _encode(photo, "JPEG", exif=exif.tobytes())
    segments = []
    for n in range(100):
        if n % 3 == 0:
            body = b"Exif\x00\x00" + b"II*\x00\x08\x00\x00\x00" + b"\xff" * 65_000
            marker = b"\xff\xe1"
        elif n % 3 == 1:
            body = b"http://ns.adobe.com/xap/1.0/\x00" + b"<x:xmpmeta " * 5_900
            marker = b"\xff\xe1"
        else:
            body = b"c" * 65_000
            marker = b"\xff\xfe"
        segments.append(marker + struct.pack(">H", len(body) + 2) + body)
    return data[:2] + b"".join(segments) + data[2:]
