"""The feedback log when its disk or database fails: a clear error, then keeping resumes.

A full disk (injected, and a real small file system where one can be mounted), a database
another process holds locked, and a corrupt database, which is set aside for a new one.
"""

from __future__ import annotations

import logging
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from model.feedback import (
    AnsweredPhoto,
    FeedbackStore,
    FeedbackUnavailable,
    PredictionRecord,
    SqliteFeedbackLog,
    Trouble,
    database_path,
)
from model.feedback.health import trouble_of
from model.types import LabelScore, Prediction
from tests import images

PREDICTION = Prediction((LabelScore("espresso", 0.4), LabelScore("cup", 0.3)), "m@1", 4, 3)


async def record(
    log: SqliteFeedbackLog, message_id: int, image: bytes | None = None
) -> PredictionRecord:
    return await log.record_prediction(
        AnsweredPhoto(
            chat_id=70,
            user_id=7,
            message_id=message_id,
            file_id=f"file-{message_id}",
            file_unique_id=f"unique-{message_id}",
            prediction=PREDICTION,
            uncertain=image is not None,
            image=image,
        )
    )


def test_storage_errors_are_told_apart_from_bugs() -> None:
    assert trouble_of(sqlite3.OperationalError("database or disk is full")) is Trouble.FULL
    assert trouble_of(sqlite3.OperationalError("database is locked")) is Trouble.LOCKED
    assert trouble_of(sqlite3.DatabaseError("file is not a database")) is Trouble.CORRUPT
    assert trouble_of(OSError(28, "No space left on device")) is Trouble.FULL
    assert trouble_of(OSError(30, "Read-only file system")) is Trouble.READ_ONLY
    assert trouble_of(sqlite3.OperationalError("no such table: x")) is None
    assert trouble_of(ValueError("database or disk is full")) is None


async def test_a_full_disk_fails_the_write_clearly_and_the_next_write_tries_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = await SqliteFeedbackLog.open(tmp_path)
    try:
        original = FeedbackStore.record_prediction

        def full(self: FeedbackStore, photo: AnsweredPhoto) -> PredictionRecord:
            raise sqlite3.OperationalError("database or disk is full")

        monkeypatch.setattr(FeedbackStore, "record_prediction", full)
        with pytest.raises(FeedbackUnavailable) as failed:
            await record(log, 1)
        assert failed.value.trouble is Trouble.FULL
        assert str(failed.value) == "the disk is full (database or disk is full)"
        # Reads still work meanwhile; nothing of the failed write was kept.
        assert (await log.stats())["predictions"] == 0

        monkeypatch.setattr(FeedbackStore, "record_prediction", original)
        kept = await record(log, 2)
        assert await log.get_prediction(kept.id) == kept
    finally:
        await log.close()


async def test_a_locked_database_fails_fast_while_failing_then_recovers(tmp_path: Path) -> None:
    """Another process holds the write lock: the first write waits the busy timeout, the next
    ones (while it lasts) only briefly; once the lock is gone, writes work at once."""
    log = await SqliteFeedbackLog.open(tmp_path, busy_timeout_s=2.0)
    other = sqlite3.connect(database_path(tmp_path), isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        started = time.monotonic()
        with pytest.raises(FeedbackUnavailable) as failed:
            await record(log, 1)
        assert failed.value.trouble is Trouble.LOCKED
        assert time.monotonic() - started >= 1.9  # it waited for the lock first
        started = time.monotonic()
        with pytest.raises(FeedbackUnavailable):
            await record(log, 2)
        assert time.monotonic() - started < 1.5  # not the whole busy timeout again
        other.execute("COMMIT")
        assert (await record(log, 3)).message_id == 3
        # Keeping again: the next lock is waited for in full again.
        other.execute("BEGIN IMMEDIATE")
        started = time.monotonic()
        with pytest.raises(FeedbackUnavailable):
            await record(log, 4)
        assert time.monotonic() - started >= 1.9
        other.execute("COMMIT")
    finally:
        other.close()
        await log.close()


def corrupt_header(path: Path) -> None:
    with path.open("r+b") as handle:
        handle.write(b"this is no longer SQLite" * 8)


def corrupt_a_page(path: Path) -> None:
    """Garbage over the second page (the first table's root), the header left intact."""
    page_size = int.from_bytes(path.read_bytes()[16:18], "big")
    with path.open("r+b") as handle:
        handle.seek(page_size + 8)
        handle.write(b"\xff\x00\x13" * 300)


@pytest.mark.parametrize("damage", [corrupt_header, corrupt_a_page])
async def test_a_corrupt_database_is_set_aside_and_a_new_one_started(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: object
) -> None:
    image = images.encode(images.noise(20, 20, seed=5), "PNG")
    log = await SqliteFeedbackLog.open(tmp_path)
    await record(log, 1, image)
    await log.close()
    path = database_path(tmp_path)
    assert callable(damage)
    damage(path)

    with caplog.at_level(logging.ERROR, logger="model.feedback.health"):
        log = await SqliteFeedbackLog.open(tmp_path)
    try:
        assert (await log.stats())["predictions"] == 0  # a new, empty database
        assert (await record(log, 2)).message_id == 2
    finally:
        await log.close()
    (aside,) = path.parent.glob("corrupt-*")
    assert (aside / path.name).is_file()
    # Its images went with it, for whoever recovers it: nothing was swept away.
    assert [p.read_bytes() for p in (aside / "images").rglob("*.png")] == [image]
    (line,) = [r.getMessage() for r in caplog.records if "corrupt" in r.getMessage()]
    assert str(aside) in line and ".recover" in line and "/forget" in line


@pytest.fixture
def small_file_system(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs (needs root, or CAP_SYS_ADMIN): a disk that really fills up."""
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(folder: Path) -> Path:
    """Write a file until the file system is full; returns it."""
    filler = folder / "filler"
    with filler.open("wb", buffering=0) as handle:
        try:
            while True:
                handle.write(b"\0" * 4096)
        except OSError:
            pass
    return filler


async def test_a_really_full_file_system_then_space_again(small_file_system: Path) -> None:
    log = await SqliteFeedbackLog.open(small_file_system)
    try:
        image = images.encode(images.noise(120, 120, seed=9), "PNG")  # about 43 kB
        filler = fill(small_file_system)
        with pytest.raises(FeedbackUnavailable) as failed:
            await record(log, 1, image)
        assert failed.value.trouble is Trouble.FULL
        filler.unlink()
        kept = await record(log, 2, image)
        assert await log.has_image(kept.id)
    finally:
        await log.close()
