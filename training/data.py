"""The training set: label folders checked image by image, plus the disputes from the bot.

`collect` reads PATH (one folder per label, as in the fastai course's bear classifier),
optionally adds the images users labelled through the bot (via
`model.feedback.export.export_feedback`, with the label each trains as), decodes
every image exactly as the bot does (`model.images.decode_image`: EXIF orientation, RGB,
transparency on white), skips and lists the unreadable ones, drops exact duplicates, and writes
upright RGB copies shrunk to the size training needs into a working folder. Bad data raises
`DataError` with a message for people. Nothing here imports torch or fastai.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from model.images import DEFAULT_MAX_PIXELS, decode_image
from model.types import (
    CorruptImage,
    EmptyFile,
    ImageRejected,
    NotAnImage,
    TooManyPixels,
    UnsupportedImage,
)

logger = logging.getLogger(__name__)

MIN_IMAGES_PER_LABEL = 3
IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
    | {".heic", ".heif", ".avif"}
)
FEEDBACK_PREFIX = "feedback"
PREPARED_QUALITY = 95


class DataError(Exception):
    """The images cannot be trained on as they are; the message says what to fix."""


@dataclass(frozen=True, slots=True)
class Source:
    """An image file to train on: where it is, its label, and how to name it to people."""

    path: Path
    label: str
    name: str  # "coffee/IMG_0001.jpg", or "feedback/coffee/<sha256>.jpg"
    from_feedback: bool = False


@dataclass(frozen=True, slots=True)
class Example:
    """A usable image: its upright, shrunk RGB copy for training, and what it came from."""

    image: Path
    label: str
    name: str
    size: int  # bytes of the original file
    sha256: str  # of the original file
    from_feedback: bool = False


@dataclass
class FeedbackSummary:
    """What the feedback log contributed."""

    exported: int = 0  # labelled images the export wrote
    added: Counter[str] = field(default_factory=Counter)  # label → images added
    already_there: int = 0  # the same image is already in that label's folder
    conflicts: list[str] = field(default_factory=list)  # in a folder under another label
    unknown_labels: Counter[str] = field(default_factory=Counter)  # no folder for the label

    @property
    def total(self) -> int:
        """Images added to the training set."""
        return sum(self.added.values())

    def describe(self) -> list[str]:
        """Lines for people."""
        added = ", ".join(f"{label} {n}" for label, n in sorted(self.added.items()))
        lines = [
            f"Feedback: added {self.total} image{'s' if self.total != 1 else ''} from the bot's "
            f"feedback log{f' ({added})' if added else ''}; {self.exported} labelled in all."
        ]
        if self.already_there:
            lines.append(f"  {self.already_there} already in their label's folder")
        if self.conflicts:
            lines.append(
                f"  {len(self.conflicts)} left out: the same image is in a folder under another "
                f"label (the folder wins): {', '.join(self.conflicts[:10])}"
            )
        if self.unknown_labels:
            unknown = ", ".join(
                f"{label!r} ({n})" for label, n in sorted(self.unknown_labels.items())
            )
            lines.append(f"  left out, no folder for their label: {unknown}")
        return lines


@dataclass
class Dataset:
    """Usable examples (ordered by label, then name) and what was left out."""

    root: Path
    labels: list[str]
    examples: list[Example]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (name, reason)
    duplicates: list[tuple[str, str]] = field(default_factory=list)  # (name, same as name)
    ignored: list[str] = field(default_factory=list)  # files that are not images by name
    feedback: FeedbackSummary | None = None

    def counts(self) -> Counter[str]:
        """Images per label."""
        return Counter(example.label for example in self.examples)

    @property
    def feedback_images(self) -> int:
        """How many examples came from the feedback log."""
        return sum(1 for example in self.examples if example.from_feedback)

    def fingerprint(self) -> str:
        """sha256 of the sorted list of the images used (name and size, one per line)."""
        digest = hashlib.sha256()
        for name, size in sorted((example.name, example.size) for example in self.examples):
            digest.update(f"{name}\t{size}\n".encode())
        return digest.hexdigest()

    def split(self, valid_pct: float, seed: int) -> list[int]:
        """Indices of the validation examples: `valid_pct` of each label, chosen by `seed`.

        Stratified, so that each label is validated on even in a small dataset (at least one
        image per label, and always at least one left to train on).
        """
        rng = random.Random(seed)
        by_label: dict[str, list[int]] = {}
        for index, example in enumerate(self.examples):
            by_label.setdefault(example.label, []).append(index)
        valid = []
        for label in sorted(by_label):
            indices = by_label[label]
            count = min(len(indices) - 1, max(1, round(len(indices) * valid_pct)))
            valid.extend(rng.sample(indices, count))
        return sorted(valid)

    def describe(self) -> list[str]:
        """Lines for people: what is in it, and what was left out and why."""
        counts = self.counts()
        per_label = ", ".join(f"{label} {counts[label]}" for label in self.labels)
        lines = [
            f"Dataset {self.root}: {len(self.labels)} labels, {len(self.examples)} images "
            f"({per_label})"
        ]
        if self.skipped:
            lines.append(f"Skipped {len(self.skipped)} unreadable image(s):")
            lines.extend(f"  {name}: {reason}" for name, reason in self.skipped)
        if self.duplicates:
            lines.append(f"Left out {len(self.duplicates)} exact duplicate(s):")
            lines.extend(f"  {name} (same as {first})" for name, first in self.duplicates[:20])
            if len(self.duplicates) > 20:
                lines.append(f"  … and {len(self.duplicates) - 20} more")
        if self.ignored:
            shown = ", ".join(self.ignored[:5]) + (" …" if len(self.ignored) > 5 else "")
            lines.append(f"Ignored {len(self.ignored)} file(s) that are not images: {shown}")
        if self.feedback is not None:
            lines.extend(self.feedback.describe())
        return lines


def scan(root: Path) -> tuple[dict[str, list[Source]], list[str]]:
    """The label folders of `root` and the image files in each (searched recursively).

    Returns the sources per label and the names of files ignored as not images.
    """
    if not root.exists():
        raise DataError(f"{root} does not exist")
    if not root.is_dir():
        raise DataError(f"{root} is not a folder; give a folder with one sub-folder per label")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    loose = sorted(
        p.name for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )
    if not folders:
        detail = (
            f" ({len(loose)} image{' lies' if len(loose) == 1 else 's lie'} directly in it: "
            "move them into label folders)"
            if loose
            else ""
        )
        raise DataError(
            f"{root} has no label folders{detail}; put each label's images in its own folder, "
            f"e.g. {root / 'grizzly'}/*.jpg and {root / 'teddy'}/*.jpg"
        )
    sources: dict[str, list[Source]] = {}
    ignored = [f"{name} (not in a label folder)" for name in loose]
    for folder in folders:
        label = folder.name
        found = []
        for path in sorted(_files(folder)):
            name = path.relative_to(root).as_posix()
            if path.suffix.lower() in IMAGE_SUFFIXES:
                found.append(Source(path, label, name))
            else:
                ignored.append(name)
        sources[label] = found
    return sources, ignored


def _files(folder: Path) -> Iterable[Path]:
    for directory, subdirectories, files in os.walk(folder):
        subdirectories[:] = [d for d in subdirectories if not d.startswith(".")]
        for name in files:
            if not name.startswith("."):
                yield Path(directory) / name


def check_counts(
    counts: Mapping[str, int], root: Path, min_images: int = MIN_IMAGES_PER_LABEL, note: str = ""
) -> None:
    """Refuse fewer than 2 labels, or a label with fewer than `min_images` images."""
    if len(counts) < 2:
        found = f"only {', '.join(repr(label) for label in counts)}" if counts else "none"
        raise DataError(
            f"{root} has {len(counts)} label folder(s) ({found}); a classifier needs at least "
            f"2 labels, one folder of images each{note}"
        )
    short = {label: n for label, n in counts.items() if n < min_images}
    if short:
        listed = ", ".join(f"{label!r} has {n}" for label, n in sorted(short.items()))
        raise DataError(f"too few images: {listed}; each label needs at least {min_images}{note}")


def feedback_sources(
    data_dir: Path,
    labels: Sequence[str],
    out_dir: Path,
    reviewed_only: bool = False,
) -> tuple[list[Source], FeedbackSummary]:
    """Export the feedback log into `out_dir`; the images whose label has a folder here.

    Each exported image comes with the label it trains as (`ExportSummary.files`). Labels
    match exactly, else ignoring case ("Latte" joins the folder "latte"). Images whose label
    has no folder are left out and counted: a new label needs a folder of its own.
    """
    from model.feedback.export import ExportError, export_feedback

    try:
        exported = export_feedback(data_dir, out_dir, reviewed_only=reviewed_only)
    except ExportError as exc:
        raise DataError(f"--with-feedback: {exc}") from None
    by_name = {label: label for label in labels}
    by_casefold = {label.casefold(): label for label in labels}
    summary = FeedbackSummary()
    sources = []
    for image in sorted(exported.files, key=lambda image: image.path):
        summary.exported += 1
        target = by_name.get(image.label) or by_casefold.get(image.label.casefold())
        if target is None:
            summary.unknown_labels[image.label] += 1
            continue
        name = f"{FEEDBACK_PREFIX}/{target}/{image.path.name}"
        sources.append(Source(image.path, target, name, True))
    return sources, summary


def collect(
    root: Path,
    work_dir: Path,
    *,
    presize: int,
    data_dir: Path | None = None,
    with_feedback: bool = False,
    reviewed_only: bool = False,
    min_images: int = MIN_IMAGES_PER_LABEL,
    threads: int = 1,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    progress: Callable[[str], None] | None = None,
) -> Dataset:
    """Everything `fit` trains on, checked and prepared under `work_dir`; see the module doc."""
    root = Path(root)
    by_label, ignored = scan(root)
    # Counted on file names first: a wrong layout fails at once, before anything is decoded.
    check_counts({label: len(found) for label, found in by_label.items()}, root, min_images)
    labels = sorted(by_label)
    sources = [source for label in labels for source in by_label[label]]
    summary = None
    if with_feedback:
        if data_dir is None:
            raise DataError("--with-feedback needs the bot's data folder (--data-dir)")
        feedback, summary = feedback_sources(
            data_dir,
            labels,
            Path(tempfile.mkdtemp(dir=work_dir, prefix="feedback-")),
            reviewed_only,
        )
        sources.extend(feedback)
    if progress is not None:
        progress(f"Checking {len(sources)} images…")
    prepared_dir = work_dir / "images"
    decoded = _decode_all(sources, prepared_dir, presize, max_pixels, threads)

    examples: list[Example] = []
    skipped: list[tuple[str, str]] = []
    duplicates: list[tuple[str, str]] = []
    first_by_hash: dict[str, Example] = {}
    for source, outcome in zip(sources, decoded, strict=True):
        if isinstance(outcome, str):
            skipped.append((source.name, outcome))
            continue
        first = first_by_hash.get(outcome.sha256)
        if first is not None:
            if not source.from_feedback:
                duplicates.append((source.name, first.name))
            elif summary is not None and first.label == source.label:
                summary.already_there += 1
            elif summary is not None:
                summary.conflicts.append(f"{source.name} (in {first.name})")
            outcome.image.unlink(missing_ok=True)
            continue
        first_by_hash[outcome.sha256] = outcome
        examples.append(outcome)
        if summary is not None and source.from_feedback:
            summary.added[source.label] += 1
    dataset = Dataset(root, labels, examples, skipped, duplicates, ignored, summary)
    counts = dataset.counts()
    note = ""
    if skipped:
        note = (
            f" (after skipping {len(skipped)} unreadable image(s): "
            + ", ".join(f"{name}: {reason}" for name, reason in skipped[:10])
            + (" …" if len(skipped) > 10 else "")
            + ")"
        )
    check_counts({label: counts.get(label, 0) for label in labels}, root, min_images, note)
    return dataset


def _decode_all(
    sources: Sequence[Source], out_dir: Path, presize: int, max_pixels: int, threads: int
) -> list[Example | str]:
    """Each source decoded and saved shrunk under `out_dir`, or why it could not be read."""
    out_dir.mkdir(parents=True, exist_ok=True)
    folders: dict[str, Path] = {}
    for label in sorted({source.label for source in sources}):
        # Folder names stay the label's own (fastai's parent_label reads them back).
        folders[label] = out_dir / label
        folders[label].mkdir(exist_ok=True)

    def one(item: tuple[int, Source]) -> Example | str:
        index, source = item
        return _prepare_one(
            source, folders[source.label] / f"{index:06d}.jpg", presize, max_pixels
        )

    # Pillow decodes with the GIL released: threads use the cores for the big phone JPEGs.
    with ThreadPoolExecutor(max(1, threads)) as pool:
        return list(pool.map(one, enumerate(sources)))


def _prepare_one(source: Source, target: Path, presize: int, max_pixels: int) -> Example | str:
    try:
        data = source.path.read_bytes()
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    try:
        image = decode_image(data, max_pixels)
    except ImageRejected as exc:
        return _reason(exc)
    # Shrink so the shorter side is `presize`: training crops and augments from there, and
    # the bot's learner resizes its input the same way (Resize(presize), then the crop).
    scale = presize / min(image.size)
    if scale < 1:
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.BILINEAR)
    image.save(target, "JPEG", quality=PREPARED_QUALITY)
    return Example(
        target,
        source.label,
        source.name,
        len(data),
        hashlib.sha256(data).hexdigest(),
        source.from_feedback,
    )


def _reason(exc: ImageRejected) -> str:
    """Why an image was refused, in words."""
    if isinstance(exc, EmptyFile):
        return "the file is empty"
    if isinstance(exc, NotAnImage):
        kind = exc.args[0] if exc.args else ""
        return f"not an image{f' (looks like {kind})' if kind else ''}"
    if isinstance(exc, UnsupportedImage):
        return f"{exc.args[0]} cannot be decoded on this machine"
    if isinstance(exc, CorruptImage):
        detail = exc.args[0] if exc.args else ""
        return f"damaged or cut off{f' ({detail})' if detail else ''}"
    if isinstance(exc, TooManyPixels):
        width, height, limit = exc.args
        return f"too many pixels ({width}×{height}, the limit is {limit:,})"
    return f"unreadable ({type(exc).__name__})"
