"""Export the feedback log as image folders named by label, plus a manifest of every verdict.

A read view of the feedback log: it opens the database read-only and never writes to it.

The layout is what fastai's `get_image_files` + `parent_label` read: ``OUT/<label>/<sha256>.<ext>``
for every disputed image ("wrong": the corrected label) and every kept image users confirmed
("right": the predicted label), and ``OUT/manifest.csv`` listing all verdicts, "not sure" ones
included. An admin's review overrides the verdict: "confirm" and "relabel" put the image under
the reviewed label (uncertain items without a verdict included), "discard" keeps it out of the
folders; the manifest's `review` column says which. `ExportSummary.files` lists each image
written with the label it trains as (what `training.data` takes). Labels are typed by users: no
manifest cell starts as a spreadsheet formula would (`spreadsheet_safe`), nor does any folder
name. Nothing here imports torch, fastai, Pillow or telegram.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import shutil
import sqlite3
import tempfile
import time
import unicodedata
from collections import Counter
from collections.abc import Container
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from model.feedback.records import (
    FeedbackError,
    LabelledEntry,
    MissingDatabase,
    ReviewDecision,
    VerdictKind,
)
from model.feedback.schema import database_path
from model.feedback.store import FeedbackStore

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.csv"
EXPORTS_FOLDER = "exports"
EXPORT_PREFIX = "verdict-feedback-"
MANIFEST_COLUMNS = (
    "image",
    "predicted",
    "corrected",
    "confidence",
    "model_version",
    "time",
    "verdict",
    "review",
)
MAX_FOLDER_NAME = 120
# Characters no folder name may hold: separators on any system, and what Windows refuses (an
# export is zipped and may be unpacked anywhere).
_UNSAFE_CHARACTERS = frozenset('/\\<>:"|?*')
# A cell starting with one of these is a formula to Excel, LibreOffice and Google Sheets (tab and
# carriage return too, for some of them): an admin opening the manifest must never run one.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_WINDOWS_RESERVED = frozenset(
    ["con", "prn", "aux", "nul"]
    + [f"com{n}" for n in range(1, 10)]
    + [f"lpt{n}" for n in range(1, 10)]
)


def exports_dir(data_dir: Path) -> Path:
    """Where the bot's /export leaves the zips it could not send (``DATA_DIR/exports``)."""
    return data_dir / EXPORTS_FOLDER


def delete_export_archives(data_dir: Path, *, older_than_s: float | None = None) -> int:
    """Delete the export zips under `data_dir` (only those older than `older_than_s`, by their
    modification time, when given); returns how many. They hold users' photos and labels, so
    retention and /forget apply to them as to the log itself."""
    folder = exports_dir(data_dir)
    if not folder.is_dir():
        return 0
    cutoff = None if older_than_s is None else time.time() - older_than_s
    removed = 0
    for path in folder.iterdir():
        if not (path.name.startswith(EXPORT_PREFIX) and path.suffix == ".zip"):
            continue
        try:
            if cutoff is None or path.stat().st_mtime < cutoff:
                path.unlink()
                removed += 1
        except FileNotFoundError:
            continue
    return removed


class ExportError(Exception):
    """The export cannot be made (no database, output folder not empty, ...)."""


@dataclass(frozen=True, slots=True)
class ExportedImage:
    """An image file the export wrote, and the label it trains as (its folder's label)."""

    path: Path
    label: str


@dataclass(frozen=True, slots=True)
class ExportSummary:
    """What an export wrote; `files`: every image written, in the order written."""

    out_dir: Path
    images: int
    labels: int
    not_sure: int
    missing: int
    rows: int
    reviewed: int = 0
    discarded: int = 0
    files: tuple[ExportedImage, ...] = field(default=())

    def describe(self) -> str:
        """One line for people."""
        if not self.reviewed:
            return (
                f"Exported {self.images} images in {self.labels} labels to {self.out_dir} "
                f"({self.not_sure} not sure, {self.missing} missing; "
                f"{self.rows} verdicts in {MANIFEST_NAME})"
            )
        return (
            f"Exported {self.images} images in {self.labels} labels to {self.out_dir} "
            f"({self.not_sure} not sure, {self.missing} missing, {self.discarded} discarded; "
            f"{self.rows} rows in {MANIFEST_NAME}, {self.reviewed} reviewed)"
        )


def folder_names(labels: set[str]) -> dict[str, str]:
    """A safe, distinct folder name for each label.

    A label keeps its own name when that is safe; otherwise (or when two labels would share a
    folder, even only on a case-insensitive file system) a short hash of the label is appended.
    """
    names = {}
    for label in labels:
        name = _sanitize(label)
        reserved = name.casefold() == MANIFEST_NAME or (
            name.split(".")[0].casefold() in _WINDOWS_RESERVED
        )
        names[label] = _with_hash(name, label) if name != label or reserved else name
    # Labels left as they are can still meet: "Latte" and "latte" on a case-insensitive file
    # system, or "a_b-<hash>" typed literally next to "a/b"; both sides then get a hash.
    counts = Counter(name.casefold() for name in names.values())
    for label, name in names.items():
        if counts[name.casefold()] > 1 and name == label:
            names[label] = _with_hash(name, label)
    return names


def _with_hash(name: str, label: str) -> str:
    return f"{name}-{hashlib.sha256(label.encode('utf-8')).hexdigest()[:8]}"


def _sanitize(label: str) -> str:
    text = unicodedata.normalize("NFC", label)
    text = "".join(
        "_" if char in _UNSAFE_CHARACTERS or unicodedata.category(char) == "Cc" else char
        for char in text
    )
    text = " ".join(text.split())
    # No hidden folders ('.', '..', '.git'), no names Windows trims ('a.' or 'a ').
    text = text.lstrip(". ").rstrip(". ")
    if text.startswith(_FORMULA_STARTS):
        # A folder named "=..." or "-..." makes a manifest path a formula, and a shell option.
        text = "_" + text[1:]
    return text[:MAX_FOLDER_NAME] or "_"


def spreadsheet_safe(text: str) -> str:
    """`text` as a spreadsheet shows it, never as a formula it would run: a leading
    `= + - @`, tab or carriage return gets a `'` in front (what spreadsheets themselves do)."""
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


def export_feedback(
    data_dir: Path, out_dir: Path, *, reviewed_only: bool = False
) -> ExportSummary:
    """Write the labelled images and the manifest of the feedback log under `data_dir`.

    With `reviewed_only`, only items an admin reviewed are exported (and listed).
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError(f"{out_dir} exists and is not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        raise ExportError(f"{out_dir} is not empty; choose a new or empty folder")
    path = database_path(data_dir)
    try:
        store = FeedbackStore.open(data_dir, create=False)
        try:
            entries = store.labelled_entries(reviewed_only=reviewed_only)
        finally:
            store.close()
    except MissingDatabase:
        raise ExportError(
            f"no feedback database at {path}; the bot creates it when it starts "
            "(is --data-dir or DATA_DIR right?)"
        ) from None
    except (FeedbackError, sqlite3.Error) as exc:
        raise ExportError(f"cannot read the feedback database at {path}: {exc}") from exc

    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        # Built beside OUT_DIR and renamed into place: a failed export leaves nothing behind.
        staging = Path(
            tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial", dir=out_dir.parent)
        )
        try:
            summary = _write(entries, staging, out_dir)
            if out_dir.exists():
                out_dir.rmdir()  # empty, as checked above; rmdir refuses anything else
            staging.rename(out_dir)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    except OSError as exc:
        raise ExportError(f"could not write the export to {out_dir}: {exc}") from exc
    return summary


def _training_label(entry: LabelledEntry) -> str | None:
    """The label folder the entry's image belongs in; None: it belongs in none."""
    review, verdict = entry.review, entry.verdict
    if review is not None:
        # The admin's word stands over the user's: "discard" has no label.
        return review.label
    if verdict is None or verdict.kind == VerdictKind.UNSURE:
        return None
    if verdict.kind == VerdictKind.WRONG:
        return verdict.label
    # "right" verdicts without a kept image are manifest rows only, not missing ones.
    return verdict.label if entry.image_path is not None else None


def _write(entries: list[LabelledEntry], root: Path, out_dir: Path) -> ExportSummary:
    """Write the export into `root`, which is then renamed to `out_dir`."""
    labels = [_training_label(entry) for entry in entries]
    # Only labels that may get a folder take part in naming, so names do not depend on rows
    # that never reach the folders.
    names = folder_names(
        {
            label
            for entry, label in zip(entries, labels, strict=True)
            if label is not None and entry.image_path is not None
        }
    )
    written: dict[Path, str] = {}  # image file → the label it trains as, in write order
    used_folders: set[str] = set()
    not_sure = missing = reviewed = discarded = 0
    rows = []
    for entry, label in zip(entries, labels, strict=True):
        prediction, verdict, review = entry.prediction, entry.verdict, entry.review
        image = ""
        if review is not None:
            reviewed += 1
            if review.decision == ReviewDecision.DISCARD:
                discarded += 1
        elif verdict is not None and verdict.kind == VerdictKind.UNSURE:
            not_sure += 1
        if label is not None:
            folder = names.get(label)
            target = None if folder is None else _copy(entry, root / folder, written)
            if folder is None or target is None:
                missing += 1
            else:
                written.setdefault(target, label)
                used_folders.add(folder)
                image = target.relative_to(root).as_posix()
        if review is not None and review.decision == ReviewDecision.RELABEL:
            corrected = review.label or ""
        elif verdict is not None and verdict.kind == VerdictKind.WRONG:
            corrected = verdict.label or ""
        else:
            corrected = ""
        # Items reviewed without a verdict (uncertain ones) are dated by their review.
        created = verdict.created if verdict is not None else _review_time(entry)
        rows.append(
            {
                "image": image,
                "predicted": prediction.top.label,
                "corrected": corrected,
                "confidence": f"{prediction.top.probability:.4f}",
                "model_version": prediction.model,
                "time": datetime.fromtimestamp(created, UTC).isoformat(timespec="seconds"),
                "verdict": verdict.kind.value if verdict is not None else "",
                "review": review.decision.value if review is not None else "",
            }
        )
    with open(root / MANIFEST_NAME, "w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=MANIFEST_COLUMNS)
        writer.writeheader()
        writer.writerows(
            {column: spreadsheet_safe(value) for column, value in row.items()} for row in rows
        )
    files = tuple(
        ExportedImage(out_dir / path.relative_to(root), label) for path, label in written.items()
    )
    return ExportSummary(
        out_dir,
        images=len(written),
        labels=len(used_folders),
        not_sure=not_sure,
        missing=missing,
        rows=len(rows),
        reviewed=reviewed,
        discarded=discarded,
        files=files,
    )


def _review_time(entry: LabelledEntry) -> float:
    if entry.review is None:
        raise ValueError(f"prediction {entry.prediction.id!r} has neither verdict nor review")
    return entry.review.created


def _copy(entry: LabelledEntry, folder: Path, written: Container[Path]) -> Path | None:
    """Copy the entry's image into `folder` (unless `written` has it already); its path there.

    None when it is not in the store (or damaged).
    """
    source, sha = entry.image_path, entry.prediction.image_sha256
    if source is None or sha is None:
        logger.warning("No image kept for prediction %r", entry.prediction.id)
        return None
    target = folder / source.name
    if target in written:
        return target
    try:
        data = source.read_bytes()
    except FileNotFoundError:
        logger.warning("Image %r of prediction %r is missing", str(source), entry.prediction.id)
        return None
    # Content-addressed: the name is the hash, so a damaged file shows itself here.
    if hashlib.sha256(data).hexdigest() != sha:
        logger.warning("Image %r does not match its hash; skipped", str(source))
        return None
    folder.mkdir(exist_ok=True)
    with open(target, "xb") as file:
        file.write(data)
    return target
