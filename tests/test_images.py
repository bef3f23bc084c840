"""Decoding untrusted bytes: every readable format, orientation, and every kind of bad input."""

from __future__ import annotations

import struct
import time

import pytest
from PIL import Image

from model.images import decode_image, sniff
from model.types import CorruptImage, EmptyFile, NotAnImage, TooManyPixels, UnsupportedImage
from tests import fuzzimages, images


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"])
def test_each_readable_format_decodes_to_rgb(fmt: str) -> None:
    """JPEG, PNG, WebP, GIF, BMP and TIFF all come back as RGB at their own size."""
    data = images.encode(images.coffee().resize((120, 80)), fmt)
    image = decode_image(data)
    assert image.mode == "RGB"
    assert image.size == (120, 80)


def test_exif_orientation_is_applied() -> None:
    """A landscape JPEG tagged 'rotate 90°' decodes as portrait."""
    data = images.with_exif_orientation(images.noise(200, 100), 6)
    assert decode_image(data).size == (100, 200)


def test_animated_gif_gives_its_first_frame() -> None:
    """Only the first frame of an animation is classified."""
    red = Image.new("RGB", (40, 30), (255, 0, 0))
    blue = Image.new("RGB", (40, 30), (0, 0, 255))
    data = images.encode(red, "GIF", save_all=True, append_images=[blue], duration=100)
    image = decode_image(data)
    assert image.getpixel((5, 5))[0] > 200
    assert image.getpixel((5, 5))[2] < 50


def test_transparency_is_flattened_onto_white() -> None:
    """A transparent PNG pixel becomes white, not black."""
    data = images.encode(Image.new("RGBA", (10, 10), (0, 0, 0, 0)), "PNG")
    assert decode_image(data).getpixel((0, 0)) == (255, 255, 255)


def test_sixteen_bit_greyscale_is_scaled_not_clipped() -> None:
    """A mid-grey 16-bit PNG stays mid-grey."""
    data = images.encode(Image.new("I;16", (8, 8), 32768), "PNG")
    red, green, blue = decode_image(data).getpixel((0, 0))
    assert 120 <= red <= 135 and red == green == blue


def test_empty_file() -> None:
    with pytest.raises(EmptyFile):
        decode_image(b"")


def test_pdf_is_named() -> None:
    """A PDF is refused and recognised as one."""
    with pytest.raises(NotAnImage) as caught:
        decode_image(images.minimal_pdf())
    assert caught.value.kind == "a PDF document"


def test_truncated_jpeg_is_corrupt() -> None:
    with pytest.raises(CorruptImage):
        decode_image(images.truncated_jpeg())


def test_garbage_after_a_png_signature_is_corrupt() -> None:
    with pytest.raises((CorruptImage, NotAnImage)):
        decode_image(b"\x89PNG\r\n\x1a\n" + b"\x00" * 100)


def test_decompression_bomb_refused_from_its_header(monkeypatch: pytest.MonkeyPatch) -> None:
    """40000×40000 is refused with its size, without decoding (Pillow's own guard off)."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    with pytest.raises(TooManyPixels) as caught:
        decode_image(images.huge_png(), max_pixels=50_000_000)
    assert (caught.value.width, caught.value.height) == (40_000, 40_000)


def test_pixel_limit_is_configurable() -> None:
    data = images.encode(images.noise(300, 200), "PNG")
    assert decode_image(data, max_pixels=60_000).size == (300, 200)
    with pytest.raises(TooManyPixels):
        decode_image(data, max_pixels=59_999)


@pytest.mark.parametrize("fmt", ["HEIF", "AVIF"])
def test_iphone_heic_and_avif_decode(fmt: str) -> None:
    """The iPhone camera's HEIC (and AVIF) are read, orientation and all."""
    data = images.encode(images.coffee(), fmt)
    assert data[4:8] == b"ftyp"
    image = decode_image(data)
    assert image.size == (600, 400) and image.mode == "RGB"


def test_a_broken_heic_is_corrupt_not_a_crash() -> None:
    data = images.encode(images.coffee(), "HEIF")
    with pytest.raises((CorruptImage, NotAnImage)):
        decode_image(data[: len(data) // 3])


def test_svg_is_named_as_unsupported() -> None:
    data = b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"></svg>'
    with pytest.raises(UnsupportedImage) as caught:
        decode_image(data)
    assert caught.value.kind == "SVG"


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b"PK\x03\x04rest", "a ZIP archive or an Office document"),
        (b"hello, this is text", "a text file"),
        (b"\x00\x00\x00\x20ftypisom", "a video"),
        (bytes(range(256)) * 2, ""),
    ],
)
def test_sniff_names_common_non_images(data: bytes, kind: str) -> None:
    assert sniff(data) == kind


def test_a_tiff_of_sixty_thousand_pages_opens_at_its_first_at_once() -> None:
    """Counting the pages walked every one of them (26 s for 6 MB): the first page is enough."""
    data = fuzzimages._tiff_pages(60_000)
    started = time.monotonic()
    assert decode_image(data).size == (1, 1)
    assert time.monotonic() - started < 2


def test_a_damaged_heic_is_corrupt_not_unsupported() -> None:
    """HEIC is read: a damaged one is a damaged file, not a format we "can't read yet"."""
    data = images.encode(images.coffee(), "HEIF")
    for damaged in (data[:40], data[:20] + bytes(200)):
        with pytest.raises(CorruptImage):
            decode_image(damaged)


@pytest.mark.parametrize(
    "magic", [b"\xff\xd8\xff\xe0", b"\x89PNG\r\n\x1a\n", b"GIF89a", b"MM\x00*"]
)
def test_garbage_behind_an_image_magic_number_is_a_damaged_image(magic: bytes) -> None:
    with pytest.raises(CorruptImage):
        decode_image(magic + bytes(range(256)) * 4)


@pytest.mark.parametrize("error", [struct.error("bad"), IndexError(3), RuntimeError("libheif")])
def test_whatever_a_decoder_raises_is_a_corrupt_image(
    monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    """Decoders raise more than OSError on hostile bytes; none of it escapes decode_image
    (in a worker, it would fail the whole batch)."""

    data = images.coffee_jpeg()

    def broken_open(*args: object, **kwargs: object) -> Image.Image:
        raise error

    monkeypatch.setattr(Image, "open", broken_open)
    with pytest.raises(CorruptImage):
        decode_image(data)
