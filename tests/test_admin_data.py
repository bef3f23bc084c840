"""Data behind the admin commands: stats, disputes, reviews, reviewed exports, settings, chart."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from PIL import Image

from bot.charts import HEIGHT_PX, TOP_LABELS, WIDTH_PX, stats_chart, top_labels
from model.feedback import (
    SCHEMA_VERSION,
    AnsweredPhoto,
    FeedbackStats,
    FeedbackStore,
    ForgetSummary,
    InvalidReview,
    PredictionLog,
    PredictionRecord,
    ReviewLog,
    SqliteFeedbackLog,
    UnknownPrediction,
    database_path,
)
from model.feedback.export import MANIFEST_COLUMNS, MANIFEST_NAME, export_feedback
from model.feedback.schema import MIGRATIONS
from model.types import LabelScore, Prediction
from tests import images
from tests.conftest import START, FakeClock

ROOT = Path(__file__).resolve().parents[1]
DAY = 86_400.0


@pytest.fixture
def store(tmp_path: Path, clock: FakeClock) -> Iterator[FeedbackStore]:
    opened = FeedbackStore.open(tmp_path / "data", clock=clock)
    try:
        yield opened
    finally:
        opened.close()


def png(seed: int) -> bytes:
    """A small PNG, different for each seed."""
    return images.encode(images.noise(16, 12, seed=seed), "PNG")


def predicted(top: str, probability: float = 0.6) -> Prediction:
    return Prediction((LabelScore(top, probability), LabelScore("other", 0.1)), "lite0@3", 64, 48)


_messages = iter(range(1, 1_000_000))


async def record(
    log: PredictionLog,
    top: str = "espresso",
    *,
    user_id: int = 7,
    uncertain: bool = False,
    image: bytes | None = None,
) -> PredictionRecord:
    message_id = next(_messages)
    return await log.record_prediction(
        AnsweredPhoto(
            chat_id=70,
            user_id=user_id,
            message_id=message_id,
            file_id=f"file-{message_id}",
            file_unique_id=f"unique-{message_id}",
            prediction=predicted(top),
            uncertain=uncertain,
            image=image,
        )
    )


def record_sync(
    store: FeedbackStore,
    top: str = "espresso",
    *,
    user_id: int = 7,
    uncertain: bool = False,
    image: bytes | None = None,
) -> PredictionRecord:
    message_id = next(_messages)
    return store.record_prediction(
        AnsweredPhoto(
            chat_id=70,
            user_id=user_id,
            message_id=message_id,
            file_id=f"file-{message_id}",
            file_unique_id=f"unique-{message_id}",
            prediction=predicted(top),
            uncertain=uncertain,
            image=image,
        )
    )


# -- stats ------------------------------------------------------------------------------------


async def test_stats_since_counts_a_handcrafted_log(
    log: SqliteFeedbackLog, clock: FakeClock
) -> None:
    """Answers, uncertain answers, verdicts and implied accuracy are counted from `since` on."""
    odd = 'café "crème" [1]'  # survives the JSON round trip through json_extract
    # Day 0: four answers and their verdicts.
    a = await record(log, "espresso", uncertain=True)
    b = await record(log, "espresso")
    c = await record(log, "latte", uncertain=True, image=png(1))
    d = await record(log, odd)
    clock.now += 10
    await log.record_verdict(a.id, user_id=7, kind="right", label=None)
    await log.record_verdict(b.id, user_id=7, kind="wrong", label="latte")
    await log.record_verdict(c.id, user_id=7, kind="unsure", label=None)
    # Day 2: two more answers, a verdict on one, and a late verdict on day 0's last answer.
    clock.now = START + 2 * DAY
    e = await record(log, "espresso")
    await record(log, "tea", uncertain=True)
    clock.now += 10
    await log.record_verdict(e.id, user_id=8, kind="right", label="espresso")
    await log.record_verdict(d.id, user_id=8, kind="right", label=odd)

    everything = await log.stats_since(START)
    assert everything == FeedbackStats(
        since=START,
        photos=6,
        uncertain=3,
        per_label={"espresso": 3, "latte": 1, odd: 1, "tea": 1},
        verdicts={"right": 3, "wrong": 1, "unsure": 1},
        accuracy_per_label={"espresso": (2, 3), odd: (1, 1)},
    )
    # Largest first, ties by label.
    assert list(everything.per_label) == ["espresso", odd, "latte", "tea"]

    last_day = await log.stats_since(clock.now - DAY)
    assert last_day.photos == 2
    assert last_day.uncertain == 1
    assert last_day.per_label == {"espresso": 1, "tea": 1}
    assert last_day.verdicts == {"right": 2, "wrong": 0, "unsure": 0}
    # The late verdict counts for its label although the photo is older than a day.
    assert last_day.accuracy_per_label == {"espresso": (1, 1), odd: (1, 1)}

    later = await log.stats_since(clock.now + 1)
    assert later == FeedbackStats(
        since=clock.now + 1,
        photos=0,
        uncertain=0,
        per_label={},
        verdicts={"right": 0, "wrong": 0, "unsure": 0},
        accuracy_per_label={},
    )


# -- disputes ---------------------------------------------------------------------------------


async def test_disputes_are_listed_newest_first_in_pages(
    log: SqliteFeedbackLog, clock: FakeClock
) -> None:
    """Only "wrong" and "unsure" verdicts are listed, newest verdict first, with paging."""
    disputed = []
    for n in range(7):
        prediction = await record(log, f"label {n}", image=png(n) if n == 3 else None)
        clock.now += 1
        if n % 3 == 2:
            await log.record_verdict(prediction.id, user_id=7, kind="unsure", label=None)
        else:
            await log.record_verdict(prediction.id, user_id=7, kind="wrong", label=f"fix {n}")
        disputed.append(prediction)
        # Undisputed noise between them: a confirmation and an answer without verdict.
        confirmed = await record(log)
        clock.now += 1
        await log.record_verdict(confirmed.id, user_id=7, kind="right", label=None)
        await record(log, uncertain=True, image=png(100 + n))
    # A verdict given late on an old photo is the newest dispute.
    old = disputed[0]
    disputed = disputed[1:]
    late = await record(log, "late")
    clock.now += 1
    await log.record_verdict(late.id, user_id=7, kind="wrong", label="fix late")
    newest_first = [late, *reversed(disputed), old]
    assert len(newest_first) == 8

    pages = []
    for offset in (0, 3, 6):
        page, total = await log.list_disputes(offset, 3)
        assert total == 8
        pages.extend(page)
    assert [entry.prediction.id for entry in pages] == [p.id for p in newest_first]
    assert [entry.verdict.kind for entry in pages[:4]] == ["wrong", "wrong", "unsure", "wrong"]
    assert pages[0].verdict.label == "fix late"
    assert all(entry.review is None for entry in pages)
    with_image = [entry for entry in pages if entry.image_path is not None]
    assert len(with_image) == 1
    assert with_image[0].prediction.top.label == "label 3"
    assert with_image[0].image_path is not None and with_image[0].image_path.is_file()

    assert await log.list_disputes(8, 3) == ([], 8)
    with pytest.raises(ValueError):
        await log.list_disputes(-1, 3)

    await log.record_review(late.id, admin_id=1, decision="relabel", label="mocha")
    page, _ = await log.list_disputes(0, 1)
    assert page[0].review is not None
    assert (page[0].review.decision, page[0].review.label) == ("relabel", "mocha")


# -- reviews ----------------------------------------------------------------------------------


async def review_label(log: ReviewLog, prediction_id: str) -> str | None:
    review = await log.get_review(prediction_id)
    assert review is not None
    return review.label


async def test_review_queue_order_and_decisions(log: SqliteFeedbackLog, clock: FakeClock) -> None:
    """Disputed and kept-uncertain items come oldest first, each reviewed once, then gone."""
    uncertain = await record(log, "espresso", uncertain=True, image=png(1))
    clock.now += 1
    wrong = await record(log, "espresso")
    clock.now += 1
    uncertain_no_image = await record(log, "tea", uncertain=True)  # nothing to look at
    clock.now += 1
    confirmed = await record(log, "latte")  # to be a plain "right": not for review
    clock.now += 1
    uncertain_right = await record(log, "mocha", uncertain=True, image=png(5))
    clock.now += 1
    unsure = await record(log, "cortado")
    clock.now = START + 100
    await log.record_verdict(wrong.id, user_id=7, kind="wrong", label="latte")
    await log.record_verdict(confirmed.id, user_id=7, kind="right", label=None)
    await log.record_verdict(uncertain_right.id, user_id=7, kind="right", label=None)
    await log.record_verdict(unsure.id, user_id=7, kind="unsure", label=None)

    assert await log.count_for_review() == 4
    item = await log.next_for_review()
    assert item is not None
    assert item.prediction == uncertain
    assert item.verdict is None
    assert item.image_path is not None and item.image_path.read_bytes() == png(1)

    assert await log.record_review(uncertain.id, admin_id=1, decision="confirm", label=None)
    review = await log.get_review(uncertain.id)
    assert review is not None
    assert (review.decision, review.label, review.admin_id) == ("confirm", "espresso", 1)
    assert review.created == START + 100
    # One review per item: the second is refused and the first stands.
    assert not await log.record_review(uncertain.id, admin_id=2, decision="discard")
    assert await log.get_review(uncertain.id) == review
    assert await log.count_for_review() == 3

    item = await log.next_for_review()
    assert item is not None and item.prediction.id == wrong.id
    assert item.verdict is not None and item.verdict.label == "latte"
    assert item.image_path is None
    with pytest.raises(InvalidReview):  # "confirm" keeps the user's label, nothing else
        await log.record_review(wrong.id, admin_id=1, decision="confirm", label="espresso")
    assert await log.record_review(wrong.id, admin_id=1, decision="confirm", label=" latte ")
    assert await review_label(log, wrong.id) == "latte"

    item = await log.next_for_review()
    assert item is not None and item.prediction.id == uncertain_right.id
    assert item.verdict is not None and item.verdict.kind == "right"
    assert await log.record_review(
        uncertain_right.id, admin_id=1, decision="relabel", label="  flat \n white "
    )
    assert await review_label(log, uncertain_right.id) == "flat white"

    item = await log.next_for_review()
    assert item is not None and item.prediction.id == unsure.id
    with pytest.raises(InvalidReview):  # "not sure" leaves nothing to confirm
        await log.record_review(unsure.id, admin_id=1, decision="confirm")
    assert await log.record_review(unsure.id, admin_id=1, decision="discard", label=None)
    assert await review_label(log, unsure.id) is None

    assert await log.next_for_review() is None
    assert await log.count_for_review() == 0

    # Refusals: not up for review, unknown ids, bad decisions and labels.
    for not_queued in (uncertain_no_image, confirmed):
        with pytest.raises(InvalidReview):
            await log.record_review(not_queued.id, admin_id=1, decision="discard")
        assert await log.get_review(not_queued.id) is None
    with pytest.raises(UnknownPrediction):
        await log.record_review("AAAAAAAAAAA", admin_id=1, decision="discard")
    extra = await record(log, uncertain=True, image=png(9))
    bad: list[tuple[str, str | None]] = [
        ("approve", None),
        ("relabel", None),
        ("relabel", "  "),
        ("relabel", "x" * 101),
        ("discard", "latte"),
    ]
    for decision, label in bad:
        with pytest.raises(InvalidReview) as caught:
            await log.record_review(extra.id, admin_id=1, decision=decision, label=label)
        assert isinstance(caught.value, ValueError)
    assert await log.get_review(extra.id) is None
    assert await log.count_for_review() == 1


async def test_concurrent_reviews_record_one(log: SqliteFeedbackLog) -> None:
    """Five admins pressing at once: exactly one review is stored."""
    item = await record(log, uncertain=True, image=png(1))
    results = await asyncio.gather(
        *(
            log.record_review(item.id, admin_id=admin, decision="relabel", label=f"l{admin}")
            for admin in range(5)
        )
    )
    assert sorted(results) == [False] * 4 + [True]
    review = await log.get_review(item.id)
    assert review is not None and review.label == f"l{results.index(True)}"


async def test_forget_removes_reviews_and_keeps_counts(
    tmp_path: Path, log: SqliteFeedbackLog
) -> None:
    """/forget removes reviews of the user's photos and of their verdicts; counts stay right."""
    own = await record(log, user_id=1, uncertain=True, image=png(1))
    theirs = await record(log, user_id=2)  # user 1 disputes user 2's photo
    kept = await record(log, user_id=2, uncertain=True, image=png(2))
    await log.record_verdict(theirs.id, user_id=1, kind="wrong", label="latte")
    for prediction in (own, theirs, kept):
        assert await log.record_review(prediction.id, admin_id=99, decision="confirm")
    assert await log.count_for_review() == 0

    expected = ForgetSummary(predictions=1, verdicts=1, images=1)
    assert await log.count_user_items(1) == expected
    assert await log.forget_user(1) == expected

    assert await log.get_review(own.id) is None
    assert await log.get_review(theirs.id) is None  # it judged user 1's words
    assert await log.get_review(kept.id) is not None
    assert await log.count_for_review() == 0  # user 2's photo is no longer disputed
    page, total = await log.list_disputes(0, 10)
    assert (page, total) == ([], 0)
    with sqlite3.connect(database_path(tmp_path)) as conn:
        assert conn.execute("SELECT prediction_id FROM reviews").fetchall() == [(kept.id,)]
    conn.close()


async def test_prune_keeps_reviewed_training_data(
    log: SqliteFeedbackLog, clock: FakeClock
) -> None:
    """Retention keeps items an admin confirmed or relabelled; discarded ones may go."""
    confirmed = await record(log, uncertain=True, image=png(1))
    relabelled = await record(log, uncertain=True, image=png(2))
    discarded = await record(log, uncertain=True, image=png(3))
    unreviewed = await record(log, uncertain=True, image=png(4))
    await log.record_review(confirmed.id, admin_id=1, decision="confirm")
    await log.record_review(relabelled.id, admin_id=1, decision="relabel", label="latte")
    await log.record_review(discarded.id, admin_id=1, decision="discard")
    clock.now += 31 * DAY
    assert await log.prune(older_than_s=30 * DAY) == 2
    assert await log.get_prediction(discarded.id) is None
    assert await log.get_prediction(unreviewed.id) is None
    for kept in (confirmed, relabelled):
        assert await log.has_image(kept.id)
        assert await log.get_review(kept.id) is not None


# -- exports ----------------------------------------------------------------------------------


def read_manifest(out: Path) -> list[dict[str, str]]:
    with open(out / MANIFEST_NAME, newline="", encoding="utf-8") as file:
        reader = csv.DictReader(file)
        assert tuple(reader.fieldnames or ()) == MANIFEST_COLUMNS
        return list(reader)


def tree(out: Path) -> dict[str, bytes]:
    """Every exported image, by path relative to the export."""
    return {
        path.relative_to(out).as_posix(): path.read_bytes()
        for path in out.rglob("*")
        if path.is_file() and path.name != MANIFEST_NAME
    }


def named(folder: str, data: bytes) -> str:
    return f"{folder}/{hashlib.sha256(data).hexdigest()}.png"


@pytest.fixture
def reviewed_data(tmp_path: Path, store: FeedbackStore, clock: FakeClock) -> dict[str, bytes]:
    """A log where reviews override verdicts; returns the images by item name."""
    pictures = {name: png(seed) for seed, name in enumerate(["relabel", "discard", "wrong", "u1"])}
    pictures["unsure"] = png(10)
    pictures["u_open"] = png(11)

    def tick() -> None:
        clock.now += 60

    relabel = record_sync(store, "espresso")
    tick()
    store.record_verdict(
        relabel.id, user_id=7, kind="wrong", label="latte", image=pictures["relabel"]
    )
    discard = record_sync(store, "espresso")
    tick()
    store.record_verdict(
        discard.id, user_id=7, kind="wrong", label="tea", image=pictures["discard"]
    )
    wrong = record_sync(store, "espresso")
    tick()
    store.record_verdict(wrong.id, user_id=7, kind="wrong", label="latte", image=pictures["wrong"])
    uncertain = record_sync(store, "cappuccino", uncertain=True, image=pictures["u1"])
    open_item = record_sync(store, "cappuccino", uncertain=True, image=pictures["u_open"])
    unsure = record_sync(store, "espresso")
    tick()
    store.record_verdict(unsure.id, user_id=7, kind="unsure", label=None, image=pictures["unsure"])
    right = record_sync(store, "espresso")
    tick()
    store.record_verdict(right.id, user_id=7, kind="right", label=None)
    tick()
    assert store.record_review(relabel.id, admin_id=1, decision="relabel", label="mocha")
    assert store.record_review(discard.id, admin_id=1, decision="discard")
    tick()
    assert store.record_review(uncertain.id, admin_id=1, decision="confirm")
    assert store.record_review(unsure.id, admin_id=1, decision="relabel", label="cortado")
    assert store.get_review(open_item.id) is None
    return pictures


def test_export_applies_reviews(tmp_path: Path, reviewed_data: dict[str, bytes]) -> None:
    """Relabel moves the image, discard leaves it out, confirmed uncertain items join in."""
    out = tmp_path / "export"
    summary = export_feedback(tmp_path / "data", out)
    assert tree(out) == {
        named("mocha", reviewed_data["relabel"]): reviewed_data["relabel"],
        named("latte", reviewed_data["wrong"]): reviewed_data["wrong"],
        named("cappuccino", reviewed_data["u1"]): reviewed_data["u1"],
        named("cortado", reviewed_data["unsure"]): reviewed_data["unsure"],
    }
    assert (summary.images, summary.labels, summary.rows) == (4, 4, 6)
    assert (summary.reviewed, summary.discarded, summary.not_sure, summary.missing) == (4, 1, 0, 0)
    assert "1 discarded" in summary.describe() and "4 reviewed" in summary.describe()
    # Each image written, with the label it trains as: what training takes from the export.
    assert {(f.path.relative_to(out).as_posix(), f.label) for f in summary.files} == {
        (named("mocha", reviewed_data["relabel"]), "mocha"),
        (named("latte", reviewed_data["wrong"]), "latte"),
        (named("cappuccino", reviewed_data["u1"]), "cappuccino"),
        (named("cortado", reviewed_data["unsure"]), "cortado"),
    }
    assert all(f.path.is_file() for f in summary.files)

    rows = read_manifest(out)
    columns = ("predicted", "corrected", "verdict", "review", "image")
    assert [tuple(row[c] for c in columns) for row in rows] == [
        ("espresso", "mocha", "wrong", "relabel", named("mocha", reviewed_data["relabel"])),
        ("espresso", "tea", "wrong", "discard", ""),
        ("espresso", "latte", "wrong", "", named("latte", reviewed_data["wrong"])),
        ("espresso", "cortado", "unsure", "relabel", named("cortado", reviewed_data["unsure"])),
        ("espresso", "", "right", "", ""),
        # No verdict: dated, and ordered, by its review.
        ("cappuccino", "", "", "confirm", named("cappuccino", reviewed_data["u1"])),
    ]
    assert datetime.fromisoformat(rows[-1]["time"]) == datetime.fromtimestamp(START + 420, UTC)
    # The uncertain item nobody reviewed or judged is not exported.
    assert reviewed_data["u_open"] not in tree(out).values()


def test_reviewed_only_export(tmp_path: Path, reviewed_data: dict[str, bytes]) -> None:
    """--reviewed-only exports and lists only the reviewed items (via the CLI)."""
    out = tmp_path / "reviewed"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "training",
            "export-feedback",
            str(out),
            "--data-dir",
            str(tmp_path / "data"),
            "--reviewed-only",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "Exported 3 images in 3 labels" in result.stdout, result.stdout
    assert "4 rows in manifest.csv, 4 reviewed" in result.stdout
    assert set(tree(out)) == {
        named("mocha", reviewed_data["relabel"]),
        named("cappuccino", reviewed_data["u1"]),
        named("cortado", reviewed_data["unsure"]),
    }
    rows = read_manifest(out)
    assert sorted(row["review"] for row in rows) == ["confirm", "discard", "relabel", "relabel"]
    assert all(row["verdict"] != "right" for row in rows)


# -- settings and schema ----------------------------------------------------------------------


async def test_settings_persist_across_reopen(tmp_path: Path, clock: FakeClock) -> None:
    """A setting written at run time is read back, replaced, and still there after a restart."""
    first = await SqliteFeedbackLog.open(tmp_path, clock=clock)
    try:
        assert await first.settings.get_setting("confidence_threshold") is None
        await first.settings.set_setting("confidence_threshold", "0.6")
        await first.settings.set_setting("confidence_threshold", "0.45")
        await first.settings.set_setting("other", "")
        assert await first.settings.get_setting("confidence_threshold") == "0.45"
        for key in ("", "   ", "k" * 101):
            with pytest.raises(ValueError):
                await first.settings.set_setting(key, "1")
    finally:
        await first.close()

    second = await SqliteFeedbackLog.open(tmp_path, clock=clock)
    try:
        assert await second.settings.get_setting("confidence_threshold") == "0.45"
        assert await second.settings.get_setting("other") == ""
        assert await second.settings.get_setting("missing") is None
    finally:
        await second.close()


def test_schema_2_database_is_migrated(tmp_path: Path) -> None:
    """A database from before reviews opens with its data intact and gains reviews + settings."""
    path = database_path(tmp_path)
    path.parent.mkdir(parents=True)
    conn = sqlite3.connect(path, isolation_level=None)
    for step in MIGRATIONS[:2]:
        for statement in step:
            conn.execute(statement)
    conn.execute("PRAGMA user_version = 2")
    conn.execute(
        "INSERT INTO predictions (id, chat_id, user_id, message_id, file_id, file_unique_id,"
        " model, scores, created, uncertain) VALUES"
        " ('old', 1, 2, 3, 'f', 'u', 'm', '[[\"latte\", 0.9]]', 1.0, 0)"
    )
    conn.execute(
        "INSERT INTO verdicts (prediction_id, user_id, kind, label, created)"
        " VALUES ('old', 2, 'wrong', 'mocha', 2.0)"
    )
    conn.close()

    store = FeedbackStore.open(tmp_path)
    try:
        assert store.count_for_review() == 1
        assert store.stats_since(0).per_label == {"latte": 1}
        assert store.record_review("old", admin_id=1, decision="confirm")
        review = store.get_review("old")
        assert review is not None and review.label == "mocha"
        store.settings.set_setting("k", "v")
        assert store.settings.get_setting("k") == "v"
    finally:
        store.close()
    with sqlite3.connect(path) as check:
        assert check.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    check.close()


# -- the chart --------------------------------------------------------------------------------


def decode(png_bytes: bytes) -> Image.Image:
    assert png_bytes.startswith(b"\x89PNG\r\n\x1a\n")
    image = Image.open(io.BytesIO(png_bytes))
    image.load()
    return image


def ink(image: Image.Image) -> int:
    """How many pixels are not (near) white."""
    gray = image.convert("L")
    return sum(count for level, count in enumerate(gray.histogram()) if level < 200)


async def test_stats_chart_renders_in_threads() -> None:
    """The chart is an 800×600 PNG; drawn in several threads at once it comes out the same."""
    day = {f"label {n}": 20 - n for n in range(14)}
    total = {label: 3 * count for label, count in day.items()} | {"only before": 100}
    accuracy = {"label 0": (9, 10), "label 3": (0, 4), "label 13": (1, 1), "label 5": (0, 0)}
    alone = stats_chart(day, total, accuracy, "Verdict — lite0@3")
    image = decode(alone)
    assert image.size == (WIDTH_PX, HEIGHT_PX) == (800, 600)
    assert image.format == "PNG"
    drawn = await asyncio.gather(
        *(
            asyncio.to_thread(stats_chart, day, total, accuracy, "Verdict — lite0@3")
            for _ in range(4)
        )
    )
    assert all(png_bytes == alone for png_bytes in drawn)

    shown = top_labels(day, total)
    assert len(shown) == TOP_LABELS
    assert shown[0] == "only before"  # ranked by the larger of its two counts
    assert "label 13" not in shown

    no_verdicts = decode(stats_chart({"espresso": 1}, {"espresso": 3}, {}, "t"))
    assert no_verdicts.size == (WIDTH_PX, HEIGHT_PX)


def test_stats_chart_empty_state() -> None:
    """With no photos the chart still renders: a title and "no photos yet", little else."""
    empty = decode(stats_chart({}, {}, {}, "Verdict — lite0@3"))
    assert empty.size == (WIDTH_PX, HEIGHT_PX)
    zeros = decode(stats_chart({"espresso": 0}, {}, {"espresso": (0, 0)}, "Verdict — lite0@3"))
    assert zeros.tobytes() == empty.tobytes()
    full = decode(stats_chart({"espresso": 5}, {"espresso": 9}, {"espresso": (1, 2)}, "x"))
    assert 0 < ink(empty) < ink(full) / 3


def test_importing_charts_does_not_import_matplotlib() -> None:
    """The bot pays for matplotlib only when /stats first draws a chart."""
    code = "import sys, bot.charts; assert 'matplotlib' not in sys.modules"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
