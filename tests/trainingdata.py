"""Small labelled photo folders for training tests, made from scikit-image's sample photos.

Each image is a random crop of one sample photo, maybe flipped, slightly rotated, with its
brightness, contrast and colour jittered, resized and saved as a JPEG: phone-photo-like
variety from a handful of real photos, the same on every run (seeded).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import skimage.data
from PIL import Image, ImageEnhance, ImageOps

PHOTOS: dict[str, Callable[[], np.ndarray]] = {
    "coffee": skimage.data.coffee,
    "cat": skimage.data.chelsea,
    "rocket": skimage.data.rocket,
    "astronaut": skimage.data.astronaut,
}


def variant(photo: Image.Image, rng: np.random.Generator) -> Image.Image:
    """One augmented, phone-photo-sized view of `photo`."""
    width, height = photo.size
    scale = rng.uniform(0.45, 0.9)
    aspect = rng.uniform(0.8, 1.25)
    crop_w = min(width, int(width * scale * aspect**0.5))
    crop_h = min(height, int(height * scale / aspect**0.5))
    left = int(rng.integers(0, width - crop_w + 1))
    top = int(rng.integers(0, height - crop_h + 1))
    image = photo.crop((left, top, left + crop_w, top + crop_h))
    if rng.random() < 0.5:
        image = ImageOps.mirror(image)
    image = image.rotate(float(rng.uniform(-8, 8)), resample=Image.Resampling.BILINEAR)
    for enhancer in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        image = enhancer(image).enhance(float(rng.uniform(0.75, 1.25)))
    long_side = int(rng.integers(280, 520))
    factor = long_side / max(image.size)
    return image.resize(
        (max(1, round(image.width * factor)), max(1, round(image.height * factor))),
        Image.Resampling.BILINEAR,
    )


def make_folders(
    root: Path, per_label: Mapping[str, int], seed: int = 0, quality: int = 88
) -> dict[str, list[Path]]:
    """Write `per_label[label]` JPEG variants of each label's photo under `root/label/`."""
    rng = np.random.default_rng(seed)
    written: dict[str, list[Path]] = {}
    for label, count in per_label.items():
        photo = Image.fromarray(PHOTOS[label]()).convert("RGB")
        folder = root / label
        folder.mkdir(parents=True, exist_ok=True)
        written[label] = []
        for index in range(count):
            path = folder / f"IMG_{index:04d}.jpg"
            variant(photo, rng).save(path, "JPEG", quality=quality)
            written[label].append(path)
    return written


def variant_bytes(label: str, seed: int) -> bytes:
    """One more JPEG variant of a label's photo, as bytes (for feedback images)."""
    import io

    rng = np.random.default_rng(seed)
    image = variant(Image.fromarray(PHOTOS[label]()).convert("RGB"), rng)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()
