"""The training set: label folders checked image by image, plus the disputes from the bot.

`collect` reads PATH (one folder per label, as in the fastai course's bear classifier),
optionally adds the images users labelled through the bot (via
`model.feedback.export.export_feedback`, with the label each trains as), decodes
every image exactly as the bot does (`model.images.decode_image`: EXIF orientation, RGB,
transparency on white), skips and lists the unreadable ones, drops exact duplicates, and writes
upright RGB copies shrunk to the size training needs into a working folder. Bad data raises
`DataError` with a message for people. Nothing here imports torch or fastai.

A feedback image whose label has no folder trains as the admins decided (/labels in the bot,
`python -m training labels`): an added label becomes a class of its own (when it has at least
`min_images` photos; else it is named with how many more it needs), a merged one trains as the
label it was merged into; rejected and undecided labels are left out and counted. Some of the
disputed photos are held out from training (the same ones every time: chosen by content hash)
so that the fit can compare the old and the new model on them.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import sqlite3
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

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

if TYPE_CHECKING:
    from model.feedback import LabelDecision

logger = logging.getLogger(__name__)

MIN_IMAGES_PER_LABEL = 3
IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
    | {".heic", ".heif", ".avif"}
)
FEEDBACK_PREFIX = "feedback"
PREPARED_QUALITY = 95
# A quarter of each label's disputed photos is held out from training, once there are this
# many disputed photos in all (fewer make no figure worth reading).
HOLDOUT_SHARE = 0.25
MIN_DISPUTED_FOR_HOLDOUT = 10


class DataError(Exception):
    """The images cannot be trained on as they are; the message says what to fix."""


@dataclass(frozen=True, slots=True)
class Source:
    """An image file to train on: where it is, its label, and how to name it to people."""

    path: Path
    label: str
    name: str  # "coffee/IMG_0001.jpg", or "feedback/coffee/<sha256>.jpg"
    from_feedback: bool = False
    disputed: bool = False  # a user tapped ❌ Wrong (or 🤷 Not sure) on it


@dataclass(frozen=True, slots=True)
class Example:
    """A usable image: its upright, shrunk RGB copy for training, and what it came from."""

    image: Path
    label: str
    name: str
    size: int  # bytes of the original file
    sha256: str  # of the original file
    from_feedback: bool = False
    disputed: bool = False


@dataclass
class FeedbackSummary:
    """What the feedback log contributed."""

    exported: int = 0  # labelled images the export wrote
    added: Counter[str] = field(default_factory=Counter)  # label → images added
    already_there: int = 0  # the same image is already in that label's folder
    conflicts: list[str] = field(default_factory=list)  # in a folder under another label
    unknown_labels: Counter[str] = field(default_factory=Counter)  # no folder, no proposal
    pending: Counter[str] = field(default_factory=Counter)  # new labels awaiting a decision
    rejected: Counter[str] = field(default_factory=Counter)  # new labels the admins rejected
    merged: dict[str, str] = field(default_factory=dict)  # label typed → label it trains as
    new_labels: list[str] = field(default_factory=list)  # added labels trained as classes
    short: dict[str, int] = field(default_factory=dict)  # added labels with too few photos
    min_images: int = MIN_IMAGES_PER_LABEL

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
        if self.new_labels:
            lines.append(
                "  new labels the admins added, trained as classes: "
                + ", ".join(f"{label!r} ({self.added[label]})" for label in self.new_labels)
            )
        if self.merged:
            merged = ", ".join(f"{a!r} → {b!r}" for a, b in sorted(self.merged.items()))
            lines.append(f"  merged by the admins: {merged}")
        for label, n in sorted(self.short.items()):
            lines.append(
                f"  left out: {label!r} has {n} photo{'s' if n != 1 else ''}, it needs "
                f"{self.min_images - n} more to be trained (at least {self.min_images})"
            )
        if self.rejected:
            lines.append(f"  rejected by the admins, not trained: {_counts(self.rejected)}")
        if self.pending:
            lines.append(
                "  not yet accepted (decide in /labels or with `python -m training labels`): "
                + _counts(self.pending)
            )
        if self.unknown_labels:
            lines.append(f"  left out, no folder for their label: {_counts(self.unknown_labels)}")
        return lines

    def labels_json(self) -> dict[str, object]:
        """What became of the new labels, for the version's card (the bot's /retrain reads it)."""
        return {
            "added": {label: self.added[label] for label in self.new_labels},
            "merged": dict(sorted(self.merged.items())),
            "short": dict(sorted(self.short.items())),
            "rejected": dict(self.rejected.most_common()),
            "pending": dict(self.pending.most_common()),
            "min_images": self.min_images,
        }


def _counts(counter: Counter[str]) -> str:
    return ", ".join(f"{label!r} ({n})" for label, n in sorted(counter.items()))


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
    held_out: list[Example] = field(default_factory=list)  # disputed photos not trained on
    holdout_note: str | None = None  # why none were held out, when none were

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
            if self.held_out:
                held = Counter(example.label for example in self.held_out)
                lines.append(
                    f"Held out from training: {len(self.held_out)} disputed photos "
                    f"({', '.join(f'{label} {n}' for label, n in sorted(held.items()))}), to "
                    "compare the old and the new model on"
                )
            elif self.holdout_note:
                lines.append(f"No disputed photos held out: {self.holdout_note}")
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
    """Export the feedback log into `out_dir`; the images to train on, each with its label.

    A label trains as the folder it names (exactly, else by its key: "Latte " joins "latte"),
    else as the admins decided: added (a class of its own), merged (the label merged into);
    rejected and undecided labels are left out and counted. With `reviewed_only`, an image
    whose label has a folder is taken only when an admin reviewed it (/review); one whose new
    label an admin accepted (/labels) is taken as it is: that decision was the review.
    """
    from model.feedback import LabelBook, Outcome, label_key
    from model.feedback.export import ExportError, export_feedback

    try:
        # Everything: `reviewed_only` is applied below, where the label decisions are known.
        exported = export_feedback(data_dir, out_dir)
    except ExportError as exc:
        raise DataError(f"--with-feedback: {exc}") from None
    facts, decisions, proposed = _feedback_facts(data_dir, labels)
    book = LabelBook(labels, decisions)
    summary = FeedbackSummary()
    sources = []
    for image in sorted(exported.files, key=lambda image: image.path):
        resolution = book.resolve(image.label)
        fact = facts.get(image.path.stem, _ImageFacts())
        if resolution.outcome is Outcome.REJECTED:
            summary.rejected[resolution.label] += 1
            continue
        if resolution.outcome is Outcome.PENDING:
            if label_key(resolution.label) in proposed:
                summary.pending[resolution.label] += 1
            else:
                summary.unknown_labels[resolution.label] += 1
            continue
        if reviewed_only and resolution.outcome is Outcome.CLASS and not fact.reviewed:
            continue
        summary.exported += 1
        target = resolution.label
        if resolution.outcome is Outcome.MERGED:
            summary.merged[image.label] = target
        name = f"{FEEDBACK_PREFIX}/{target}/{image.path.name}"
        sources.append(Source(image.path, target, name, True, fact.disputed))
    return sources, summary


@dataclass(frozen=True, slots=True)
class _ImageFacts:
    """What the feedback log says about a kept image (by its sha256)."""

    disputed: bool = False  # a user disputed a prediction on it
    reviewed: bool = False  # an admin confirmed or relabelled it


def _feedback_facts(
    data_dir: Path, labels: Sequence[str]
) -> tuple[dict[str, _ImageFacts], dict[str, LabelDecision], set[str]]:
    """Per image sha256 its facts; the admins' label decisions; the keys of the proposals."""
    from model.feedback import DISPUTED_KINDS, FeedbackError, FeedbackStore, ReviewDecision

    try:
        store = FeedbackStore.open(data_dir, create=False)
        try:
            entries = store.labelled_entries()
            decisions = store.labels.decisions()
            proposals = store.labels.proposals(labels)
        finally:
            store.close()
    except (FeedbackError, sqlite3.Error) as exc:
        raise DataError(f"--with-feedback: cannot read the feedback log: {exc}") from exc
    facts: dict[str, _ImageFacts] = {}
    for entry in entries:
        sha = entry.prediction.image_sha256
        if sha is None:
            continue
        disputed = entry.verdict is not None and entry.verdict.kind in DISPUTED_KINDS
        reviewed = entry.review is not None and entry.review.decision != ReviewDecision.DISCARD
        before = facts.get(sha, _ImageFacts())
        facts[sha] = _ImageFacts(before.disputed or disputed, before.reviewed or reviewed)
    keys = {p.key for p in (*proposals.pending, *proposals.decided)}
    return facts, decisions, keys


def accepted_labels(
    examples: list[Example], classes: Sequence[str], min_images: int, summary: FeedbackSummary
) -> list[Example]:
    """`examples` without those of added labels (no folder) that have too few photos.

    The added labels kept are listed in `summary.new_labels`, the others in `summary.short`.
    """
    folders = set(classes)
    counts = Counter(example.label for example in examples if example.label not in folders)
    short = {label: n for label, n in counts.items() if n < min_images}
    summary.short = dict(sorted(short.items()))
    summary.new_labels = sorted(set(counts) - set(short))
    summary.min_images = min_images
    for label in short:
        del summary.added[label]
    return [example for example in examples if example.label not in short]


def hold_out_disputed(
    examples: list[Example], min_images: int
) -> tuple[list[Example], list[Example], str | None]:
    """Split off `HOLDOUT_SHARE` of each label's disputed photos: (kept, held out, why none).

    The choice goes by content hash, so the same photos are held out at every fit, and a label
    keeps at least `min_images` photos to train on. Nothing is held out when there are fewer
    than `MIN_DISPUTED_FOR_HOLDOUT` disputed photos in all.
    """
    disputed = [i for i, example in enumerate(examples) if example.disputed]
    if len(disputed) < MIN_DISPUTED_FOR_HOLDOUT:
        return (
            examples,
            [],
            f"too few disputed photos to hold some out ({len(disputed)}; at least "
            f"{MIN_DISPUTED_FOR_HOLDOUT} are needed)",
        )
    counts = Counter(example.label for example in examples)
    by_label: dict[str, list[int]] = {}
    for index in disputed:
        by_label.setdefault(examples[index].label, []).append(index)
    held: set[int] = set()
    for label, indices in sorted(by_label.items()):
        take = min(round(len(indices) * HOLDOUT_SHARE), counts[label] - min_images)
        held.update(sorted(indices, key=lambda i: examples[i].sha256)[: max(0, take)])
    if not held:
        return examples, [], "no label has enough disputed photos to hold some out"
    kept = [example for i, example in enumerate(examples) if i not in held]
    return kept, [examples[i] for i in sorted(held)], None


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
    held_out: list[Example] = []
    holdout_note = None
    if summary is not None:
        examples = accepted_labels(examples, labels, min_images, summary)
        labels = sorted({*labels, *summary.new_labels})
        examples, held_out, holdout_note = hold_out_disputed(examples, min_images)
        for example in held_out:  # counted as added, but only held out
            summary.added[example.label] -= 1
        summary.added = +summary.added
    dataset = Dataset(
        root, labels, examples, skipped, duplicates, ignored, summary, held_out, holdout_note
    )
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
        source.disputed,
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
