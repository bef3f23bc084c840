"""The feedback log: predictions, verdicts, kept images, pending labels, /forget, pruning."""

from __future__ import annotations

import asyncio
import gc
import os
import sqlite3
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from model.feedback import (
    SCHEMA_VERSION,
    AnsweredPhoto,
    FeedbackLogClosed,
    FeedbackStore,
    ForgetSummary,
    InvalidVerdict,
    PredictionLog,
    PredictionRecord,
    SqliteFeedbackLog,
    UnknownPrediction,
    VerdictKind,
    VerdictRecord,
    database_path,
    image_extension,
)
from model.types import LabelScore, Prediction
from tests import images
from tests.conftest import START, FakeClock

ROOT = Path(__file__).resolve().parents[1]


def png(seed: int) -> bytes:
    """A small PNG, different for each seed."""
    return images.encode(images.noise(16, 12, seed=seed), "PNG")


def stored_files(data_dir: Path) -> list[Path]:
    """Every file in the image store."""
    return sorted(p for p in (data_dir / "feedback" / "images").rglob("*") if p.is_file())


PREDICTION = Prediction(
    scores=(
        LabelScore("espresso", 0.62),
        LabelScore("cup", 0.25),
        LabelScore("eggnog", 0.0312345678901),
    ),
    model="efficientnet-lite0@1",
    width=400,
    height=300,
)


async def record(
    log: PredictionLog,
    *,
    user_id: int = 7,
    chat_id: int = 70,
    message_id: int = 1,
    uncertain: bool = False,
    image: bytes | None = None,
) -> PredictionRecord:
    return await log.record_prediction(
        AnsweredPhoto(
            chat_id=chat_id,
            user_id=user_id,
            message_id=message_id,
            file_id=f"file-{message_id}",
            file_unique_id=f"unique-{message_id}",
            prediction=PREDICTION,
            uncertain=uncertain,
            image=image,
        )
    )


async def test_prediction_round_trip(log: SqliteFeedbackLog) -> None:
    """A recorded prediction reads back whole; its id fits in Telegram's callback data."""
    recorded = await record(log, message_id=5, uncertain=True)
    assert recorded.scores == PREDICTION.scores
    assert recorded.top == LabelScore("espresso", 0.62)
    assert recorded.created == START
    assert 10 <= len(recorded.id) <= 12
    assert recorded.id.replace("-", "").replace("_", "").isalnum()
    assert len(f"v:{recorded.id}:w".encode()) <= 64
    assert await log.get_prediction(recorded.id) == recorded

    await log.set_reply_message(recorded.id, 99)
    again = await log.get_prediction(recorded.id)
    assert again is not None
    assert again.reply_message_id == 99
    assert again.uncertain
    assert again.file_id == "file-5"
    assert again.file_unique_id == "unique-5"
    assert again.image_sha256 is None
    other = await record(log)
    assert other.id != recorded.id


async def test_unknown_ids(log: SqliteFeedbackLog) -> None:
    """Forged or unknown ids read as None and are refused for writes with a KeyError."""
    assert await log.get_prediction("AAAAAAAAAAA") is None
    assert await log.get_prediction("'; DROP TABLE predictions; --") is None
    assert await log.get_verdict("AAAAAAAAAAA") is None
    assert not await log.has_image("AAAAAAAAAAA")
    with pytest.raises(UnknownPrediction) as caught:
        await log.record_verdict("AAAAAAAAAAA", user_id=1, kind="right", label=None)
    assert isinstance(caught.value, KeyError)
    with pytest.raises(UnknownPrediction):
        await log.set_pending_label(chat_id=1, user_id=1, prediction_id="AAAAAAAAAAA")
    await log.set_reply_message("AAAAAAAAAAA", 5)  # a forgotten prediction: nothing to do


async def test_verdict_recorded_once(log: SqliteFeedbackLog, clock: FakeClock) -> None:
    """The first verdict stands: a later one is not recorded and returns the first."""
    prediction = await record(log)
    clock.now += 5
    first = await log.record_verdict(prediction.id, user_id=7, kind="right", label=None)
    assert first.recorded
    assert first.verdict == VerdictRecord(prediction.id, 7, "right", "espresso", START + 5)

    clock.now += 5
    second = await log.record_verdict(prediction.id, user_id=8, kind="wrong", label="latte")
    assert not second.recorded
    assert second.verdict == first.verdict
    assert await log.get_verdict(prediction.id) == first.verdict


async def test_verdict_kinds_are_enums_stored_as_plain_strings(
    tmp_path: Path, log: SqliteFeedbackLog
) -> None:
    """`VerdictKind` members and their plain values are both accepted; SQLite holds the value."""
    by_enum = await record(log, message_id=1)
    by_string = await record(log, message_id=2)
    await log.record_verdict(by_enum.id, user_id=7, kind=VerdictKind.WRONG, label="latte")
    await log.record_verdict(by_string.id, user_id=7, kind="unsure", label=None)
    first, second = await log.get_verdict(by_enum.id), await log.get_verdict(by_string.id)
    assert first is not None and first.kind is VerdictKind.WRONG and first.kind == "wrong"
    assert second is not None and second.kind is VerdictKind.UNSURE
    with sqlite3.connect(database_path(tmp_path)) as conn:
        stored = conn.execute("SELECT kind, typeof(kind) FROM verdicts ORDER BY kind").fetchall()
    conn.close()
    assert stored == [("unsure", "text"), ("wrong", "text")]


async def test_concurrent_verdicts_record_one(tmp_path: Path, log: SqliteFeedbackLog) -> None:
    """Ten verdicts at once on one prediction: exactly one is recorded, all see it."""
    prediction = await record(log)
    outcomes = await asyncio.gather(
        *(
            log.record_verdict(
                prediction.id,
                user_id=user,
                kind="wrong" if user % 2 else "unsure",
                label=f"label {user}" if user % 2 else None,
                image=png(user),
            )
            for user in range(10)
        )
    )
    assert sum(outcome.recorded for outcome in outcomes) == 1
    winner = next(outcome.verdict for outcome in outcomes if outcome.recorded)
    assert all(outcome.verdict == winner for outcome in outcomes)
    assert await log.get_verdict(prediction.id) == winner
    stats = await log.stats()
    assert stats["verdicts"] == 1
    assert stats["images"] == 1
    assert len(stored_files(tmp_path)) == 1


async def test_bad_verdicts_refused(log: SqliteFeedbackLog) -> None:
    """'wrong' needs a sensible label, kinds are checked, and nothing is stored for a refusal."""
    prediction = await record(log)
    bad: list[tuple[str, str | None]] = [
        ("wrong", None),
        ("wrong", "   \n "),
        ("wrong", "x" * 101),
        ("wrong", "bad\x00label"),
        ("maybe", None),
        ("unsure", "latte"),
        ("right", "latte"),
    ]
    for kind, label in bad:
        with pytest.raises(InvalidVerdict) as caught:
            await log.record_verdict(prediction.id, user_id=7, kind=kind, label=label)
        assert isinstance(caught.value, ValueError)
    assert await log.get_verdict(prediction.id) is None

    outcome = await log.record_verdict(
        prediction.id, user_id=7, kind="wrong", label="  flat \n white  " + "y" * 80
    )
    assert outcome.verdict.label == "flat white " + "y" * 80


async def test_disputed_images_are_content_addressed(
    tmp_path: Path, log: SqliteFeedbackLog
) -> None:
    """The same bytes disputed twice are stored once, under their hash, with the right type."""
    jpeg = images.coffee_jpeg()
    first = await record(log, message_id=1)
    second = await record(log, message_id=2, user_id=8)
    assert not await log.has_image(first.id)
    await log.record_verdict(first.id, user_id=7, kind="wrong", label="latte", image=jpeg)
    await log.record_verdict(second.id, user_id=8, kind="wrong", label="mocha", image=jpeg)

    files = stored_files(tmp_path)
    assert len(files) == 1
    stored = await log.get_prediction(first.id)
    assert stored is not None and stored.image_sha256 is not None
    sha = stored.image_sha256
    assert files[0] == tmp_path / "feedback" / "images" / sha[:2] / f"{sha}.jpg"
    assert files[0].read_bytes() == jpeg
    assert await log.has_image(first.id)
    assert await log.has_image(second.id)
    assert (await log.stats())["images"] == 1

    # An image kept with an uncertain prediction is stored the same way (PNG this time).
    uncertain = await record(log, message_id=3, uncertain=True, image=png(1))
    assert uncertain.image_sha256 is not None
    assert (tmp_path / "feedback" / "images" / uncertain.image_sha256[:2]).is_dir()
    assert len(stored_files(tmp_path)) == 2
    assert not any(path.name.endswith(".tmp") for path in stored_files(tmp_path))


def test_image_extension_from_magic_bytes() -> None:
    """The stored file's extension comes from the bytes, never from the user."""
    assert image_extension(images.coffee_jpeg()) == "jpg"
    assert image_extension(png(0)) == "png"
    assert image_extension(images.encode(images.noise(), "WEBP")) == "webp"
    assert image_extension(images.encode(images.noise(), "GIF")) == "gif"
    assert image_extension(images.encode(images.noise(), "BMP")) == "bmp"
    assert image_extension(images.encode(images.noise(), "TIFF")) == "tif"
    assert image_extension(images.minimal_pdf()) == "bin"
    assert image_extension(b"") == "bin"


async def test_pending_labels(log: SqliteFeedbackLog, clock: FakeClock) -> None:
    """One pending label per user and chat: set, replaced, cleared, expired, done by a verdict."""
    first = await record(log, message_id=1)
    second = await record(log, message_id=2)
    assert await log.get_pending_label(chat_id=70, user_id=7) is None

    await log.set_pending_label(chat_id=70, user_id=7, prediction_id=first.id)
    assert await log.get_pending_label(chat_id=70, user_id=7) == first.id
    assert await log.get_pending_label(chat_id=71, user_id=7) is None
    assert await log.get_pending_label(chat_id=70, user_id=8) is None

    await log.set_pending_label(chat_id=70, user_id=7, prediction_id=second.id)
    assert await log.get_pending_label(chat_id=70, user_id=7) == second.id
    await log.clear_pending_label(chat_id=70, user_id=7)
    assert await log.get_pending_label(chat_id=70, user_id=7) is None

    await log.set_pending_label(chat_id=70, user_id=7, prediction_id=first.id)
    clock.now += 3599
    assert await log.get_pending_label(chat_id=70, user_id=7) == first.id
    clock.now += 2
    assert await log.get_pending_label(chat_id=70, user_id=7) is None
    assert (await log.stats())["pending_labels"] == 0

    await log.set_pending_label(chat_id=70, user_id=7, prediction_id=second.id)
    await log.record_verdict(second.id, user_id=7, kind="wrong", label="latte")
    assert await log.get_pending_label(chat_id=70, user_id=7) is None


async def test_forget_user(tmp_path: Path, log: SqliteFeedbackLog) -> None:
    """/forget removes the user's rows and the images only they used, and counts them first."""
    shared, own, others = png(1), png(2), png(3)
    mine = await record(log, user_id=1, message_id=1, uncertain=True, image=shared)
    mine_too = await record(log, user_id=1, message_id=2)
    theirs = await record(log, user_id=2, message_id=3, uncertain=True, image=shared)
    theirs_too = await record(log, user_id=2, message_id=4)
    await log.record_verdict(mine_too.id, user_id=1, kind="wrong", label="latte", image=own)
    await log.record_verdict(mine.id, user_id=2, kind="right", label=None)  # on user 1's photo
    await log.record_verdict(theirs.id, user_id=1, kind="wrong", label="mocha")  # by user 1
    await log.record_verdict(theirs_too.id, user_id=2, kind="wrong", label="tea", image=others)
    await log.set_pending_label(chat_id=70, user_id=1, prediction_id=theirs_too.id)
    await log.set_pending_label(chat_id=70, user_id=2, prediction_id=mine.id)
    assert len(stored_files(tmp_path)) == 3

    expected = ForgetSummary(predictions=2, verdicts=3, images=1)
    assert await log.count_user_items(1) == expected
    assert expected.total == 6
    assert await log.forget_user(1) == expected

    assert await log.get_prediction(mine.id) is None
    assert await log.get_prediction(mine_too.id) is None
    assert await log.get_verdict(mine.id) is None
    assert await log.get_verdict(theirs.id) is None
    assert await log.get_prediction(theirs.id) is not None
    assert await log.get_verdict(theirs_too.id) is not None
    assert await log.get_pending_label(chat_id=70, user_id=1) is None
    assert await log.get_pending_label(chat_id=70, user_id=2) is None
    assert {path.read_bytes() for path in stored_files(tmp_path)} == {shared, others}
    assert await log.has_image(theirs.id)
    assert await log.count_user_items(1) == ForgetSummary(0, 0, 0)
    assert await log.forget_user(1) == ForgetSummary(0, 0, 0)

    stats = await log.stats()
    assert stats["predictions"] == 2
    assert stats["images"] == 2


async def test_prune_keeps_disputes(
    tmp_path: Path, log: SqliteFeedbackLog, clock: FakeClock
) -> None:
    """Retention removes old undisputed predictions and their images; disputes stay."""
    day = 86_400.0
    unanswered = await record(log, message_id=1, uncertain=True, image=png(1))
    confirmed = await record(log, message_id=2, uncertain=True, image=png(2))
    disputed = await record(log, message_id=3, uncertain=True, image=png(3))
    unsure = await record(log, message_id=4, uncertain=True, image=png(4))
    await log.record_verdict(confirmed.id, user_id=7, kind="right", label="espresso")
    await log.record_verdict(disputed.id, user_id=7, kind="wrong", label="latte")
    await log.record_verdict(unsure.id, user_id=7, kind="unsure", label=None)
    clock.now += 31 * day
    recent = await record(log, message_id=5, uncertain=True, image=png(5))

    assert await log.prune(older_than_s=30 * day) == 2
    assert await log.get_prediction(unanswered.id) is None
    assert await log.get_prediction(confirmed.id) is None
    assert await log.get_verdict(confirmed.id) is None
    for kept in (disputed, unsure, recent):
        assert await log.has_image(kept.id)
    assert {path.read_bytes() for path in stored_files(tmp_path)} == {png(3), png(4), png(5)}
    assert await log.prune(older_than_s=30 * day) == 0
    with pytest.raises(ValueError):
        await log.prune(older_than_s=-1)


async def test_survives_reopen(tmp_path: Path, clock: FakeClock) -> None:
    """A new log on the same folder sees everything the closed one wrote."""
    first = await SqliteFeedbackLog.open(tmp_path, clock=clock)
    prediction = await record(first, uncertain=True, image=png(1))
    verdict = await first.record_verdict(prediction.id, user_id=7, kind="wrong", label="latte")
    other = await record(first, message_id=2)
    await first.set_pending_label(chat_id=70, user_id=7, prediction_id=other.id)
    before = await first.stats()
    await first.close()
    with pytest.raises(FeedbackLogClosed):
        await first.stats()
    await first.close()  # closing twice is harmless

    second = await SqliteFeedbackLog.open(tmp_path, clock=clock)
    try:
        assert await second.get_prediction(prediction.id) == prediction
        assert await second.get_verdict(prediction.id) == verdict.verdict
        assert await second.get_pending_label(chat_id=70, user_id=7) == other.id
        assert await second.has_image(prediction.id)
        assert await second.stats() == before
    finally:
        await second.close()

    with sqlite3.connect(database_path(tmp_path)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from model.feedback import AnsweredPhoto, SqliteFeedbackLog
    from model.types import LabelScore, Prediction

    async def main():
        log = await SqliteFeedbackLog.open(Path(sys.argv[1]))
        prediction = Prediction((LabelScore("espresso", 0.9),), "m", 1, 1)
        record = await log.record_prediction(AnsweredPhoto(
            chat_id=1, user_id=2, message_id=3, file_id="f", file_unique_id="u",
            prediction=prediction, uncertain=False, image=None,
        ))
        await log.record_verdict(
            record.id, user_id=2, kind="wrong", label="latte", image=bytes.fromhex(sys.argv[2])
        )
        print(record.id, flush=True)  # acknowledged: from here on it must survive
        await asyncio.sleep(60)

    asyncio.run(main())
    """
)


async def test_verdict_survives_sigkill(tmp_path: Path) -> None:
    """A verdict acknowledged by a process that is then SIGKILLed is there on reopening."""
    image = png(9)
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CHILD,
        str(tmp_path),
        image.hex(),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert child.stdout is not None
        line = await asyncio.wait_for(child.stdout.readline(), timeout=30)
    finally:
        child.kill()
        await child.wait()
    assert child.returncode == -9
    prediction_id = line.decode().strip()

    log = await SqliteFeedbackLog.open(tmp_path)
    try:
        verdict = await log.get_verdict(prediction_id)
        assert verdict is not None
        assert (verdict.kind, verdict.label, verdict.user_id) == ("wrong", "latte", 2)
        assert await log.has_image(prediction_id)
        assert [path.read_bytes() for path in stored_files(tmp_path)] == [image]
    finally:
        await log.close()


async def test_writes_do_not_block_the_event_loop(tmp_path: Path) -> None:
    """While 200 slow writes run, the event loop keeps ticking: the disk work is on a thread."""
    threads: set[int] = set()

    def slow_clock() -> float:
        # Called once per write on the log's thread; the sleep stands in for a slow disk.
        threads.add(threading.get_ident())
        time.sleep(0.003)
        return time.time()

    log = await SqliteFeedbackLog.open(tmp_path, clock=slow_clock)
    gaps: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        last = time.monotonic()
        while not done.is_set():
            await asyncio.sleep(0.005)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    # A full collection of what earlier tests left in this process would pause the loop for
    # reasons that have nothing to do with the log: collect first, and not while measuring.
    gc.collect()
    gc.disable()
    ticking = asyncio.create_task(ticker())
    try:
        await asyncio.sleep(0.02)
        started = time.monotonic()
        await asyncio.gather(
            *(
                record(log, message_id=n, uncertain=True, image=b"\x89PNG\r\n\x1a\n%d" % n)
                for n in range(200)
            )
        )
        elapsed = time.monotonic() - started
    finally:
        gc.enable()
        done.set()
        await ticking
        await log.close()

    assert elapsed > 0.6  # the batch really was slow...
    assert max(gaps) < 0.2  # ...and the loop never waited for it
    assert len(gaps) > 10
    assert threading.get_ident() not in threads


def test_orphaned_files_are_swept_at_open(tmp_path: Path) -> None:
    """Files a crash left unlinked are removed at the next open once old; others are kept."""
    store = FeedbackStore.open(tmp_path)
    prediction = store.record_prediction(
        AnsweredPhoto(
            chat_id=1,
            user_id=1,
            message_id=1,
            file_id="f",
            file_unique_id="u",
            prediction=PREDICTION,
            uncertain=True,
            image=png(1),
        )
    )
    store.close()
    folder = tmp_path / "feedback" / "images" / "ab"
    folder.mkdir()
    old_orphan = folder / ("ab" + "0" * 62 + ".jpg")
    fresh_orphan = folder / ("ab" + "1" * 62 + ".png")
    old_temp = folder / ".tmp1234.tmp"
    unrelated = folder / "notes.txt"
    for path in (old_orphan, fresh_orphan, old_temp, unrelated):
        path.write_bytes(b"x")
    two_hours_ago = time.time() - 7200
    for path in (old_orphan, old_temp, unrelated):
        os.utime(path, (two_hours_ago, two_hours_ago))
    linked = stored_files(tmp_path)
    assert len(linked) == 5

    store = FeedbackStore.open(tmp_path)
    try:
        assert store.has_image(prediction.id)
        assert not old_orphan.exists()
        assert not old_temp.exists()
        assert fresh_orphan.exists()
        assert unrelated.exists()
    finally:
        store.close()
