"""Nothing a user gave is lost or misreported, end to end through the bot and the sandbox.

A full disk (injected through tests/run_bot.py, and a real small file system where one can be
mounted), a photo of an album that fails, a disputed photo that cannot be fetched again, and
the export zips under retention and /forget.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from model.feedback import FeedbackStore
from tests import images
from tests.botharness import RunningBot, start_bot

pytestmark = pytest.mark.timeout(900)

ADMIN = 4242
NOT_KEEPING = "I can't keep data right now"
KEEPING_AGAIN = "I can keep data again"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The bot's folder; its feedback log on a 4 MiB tmpfs when one can be mounted (root)."""
    folder = tmp_path_factory.mktemp("hardening-bot")
    feedback = folder / "data" / "feedback"
    feedback.mkdir(parents=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(feedback)],
        capture_output=True,
        text=True,
        check=False,
    )
    (folder / "mount.txt").write_text(
        "" if mounted.returncode == 0 else mounted.stderr.strip() or "mount failed"
    )
    try:
        yield folder
    finally:
        if mounted.returncode == 0:
            subprocess.run(["umount", "-l", str(feedback)], check=False)


@pytest.fixture(scope="module")
def bot(workdir: Path) -> Iterator[RunningBot]:
    running = start_bot(
        workdir,
        {
            "ADMIN_IDS": str(ADMIN),
            "WORKERS": "1",
            "VERDICT_TEST_DISK_FULL": str(workdir / "disk-is-full"),
        },
    )
    try:
        running.send(text="/start", user_id=ADMIN)  # the admin's chat exists
        yield running
    finally:
        running.stop()


def buttons(message: dict[str, Any]) -> dict[str, str]:
    rows = (message.get("reply_markup") or {}).get("inline_keyboard", [])
    return {b["text"]: b["callback_data"] for row in rows for b in row}


def photo_reply(bot: RunningBot, user_id: int, data: bytes | None = None) -> dict[str, Any]:
    (reply,) = bot.send_photo(data or images.coffee_jpeg(), user_id=user_id)["replies"]
    return dict(reply)


def texts_with(messages: list[dict[str, Any]], fragment: str) -> list[str]:
    return [
        m.get("text") or ""
        for m in messages
        if m["from_bot"] and fragment in (m.get("text") or "")
    ]


def admin_told(bot: RunningBot, fragment: str, count: int) -> Callable[[list[Any]], bool]:
    return lambda messages: len(texts_with(messages, fragment)) >= count


def store(bot: RunningBot) -> closing[FeedbackStore]:
    return closing(FeedbackStore.open(bot.workdir / "data", create=False))


def test_a_full_disk_keeps_answering_tells_admins_once_and_resumes(bot: RunningBot) -> None:
    before = len(texts_with(bot.messages(ADMIN), NOT_KEEPING))
    earlier = photo_reply(bot, 8100)  # answered and kept before the disk filled up
    flag = bot.workdir / "disk-is-full"
    flag.touch()
    try:
        answers = [photo_reply(bot, 8101 + n) for n in range(3)]
        for answer in answers:
            # The answer, not "something went wrong"; no buttons that could not work.
            assert answer["text"].startswith("espresso — "), answer["text"]
            assert "couldn't keep this answer" in answer["text"]
            assert not buttons(answer)
        right = buttons(earlier)["✅ Right"]
        tapped = bot.press(earlier["message_id"], right, user_id=8100)
        assert (
            tapped["answer"]["text"]
            == "Sorry, I couldn't keep your verdict right now. Please try again later."
        )
        bot.wait_for(ADMIN, admin_told(bot, NOT_KEEPING, before + 1))
    finally:
        flag.unlink()
    tapped = bot.press(earlier["message_id"], right, user_id=8100)
    assert "Recorded as right" in tapped["messages"][0]["text"]
    again = photo_reply(bot, 8104)
    assert set(buttons(again)) == {"✅ Right", "❌ Wrong"}
    assert "couldn't keep" not in again["text"]
    messages = bot.wait_for(ADMIN, admin_told(bot, KEEPING_AGAIN, 1))
    (told,) = texts_with(messages, NOT_KEEPING)[before:]  # once, for three photos
    assert "database or disk is full" in told
    log = bot.log()
    logged = [line for line in log.splitlines() if "cannot keep data" in line]
    assert len(logged) == before + 1 and " ERROR " in logged[-1], logged  # once, too
    assert "keeping data again, after 4 failed write(s)" in log  # 3 answers and a verdict


def test_a_really_full_file_system_then_space_again(bot: RunningBot, workdir: Path) -> None:
    why = (workdir / "mount.txt").read_text()
    if why:
        pytest.skip(f"cannot mount a small tmpfs for the feedback log (needs root): {why}")
    feedback = workdir / "data" / "feedback"
    assert "below 99%" in bot.send(text="/threshold 99%", user_id=ADMIN)["replies"][0]["text"]
    told = len(texts_with(bot.messages(ADMIN), NOT_KEEPING))
    filler = feedback / "filler"
    try:
        with filler.open("wb", buffering=0) as handle:
            try:
                while True:
                    handle.write(b"\0" * 65536)
            except OSError:
                pass
        # Below 99%: its image is to be kept, and there is no room for it.
        full = photo_reply(bot, 8201)
        assert full["text"].startswith("Not sure: espresso") and not buttons(full)
        assert "couldn't keep this answer" in full["text"]
        messages = bot.wait_for(ADMIN, admin_told(bot, NOT_KEEPING, told + 1))
        assert "disk is full" in texts_with(messages, NOT_KEEPING)[-1]
    finally:
        filler.unlink(missing_ok=True)
    kept = photo_reply(bot, 8202)
    assert set(buttons(kept)) == {"✅ Right", "❌ Wrong"}
    with store(bot) as log:
        assert log.has_image(buttons(kept)["✅ Right"].split(":")[1])
    bot.send(text="/threshold 50%", user_id=ADMIN)


def test_one_failed_photo_of_an_album_is_answered_apart(bot: RunningBot) -> None:
    """Getting one photo's file fails: the other two are answered, the failed one is named
    by a reply quoting it, and nothing says "something went wrong"."""
    user = 8301
    bot.fail("getFile")
    photos = [images.coffee_jpeg(), images.chelsea_jpeg(), images.coffee_jpeg()]
    sent = [
        bot.send_photo(p, user_id=user, media_group_id="album-8301", wait=0)["message"]
        for p in photos
    ]
    ids = [m["message_id"] for m in sent]

    def both(messages: list[dict[str, Any]]) -> bool:
        return len([m for m in messages if m["from_bot"]]) >= 2

    replies = [m for m in bot.wait_for(user, both) if m["from_bot"]]
    quoted = {m["reply_to_message"]["message_id"]: m for m in replies}
    album = quoted.pop(ids[0]) if len(quoted) == 2 else None
    if album is None:  # the first photo was the one that failed: both quote it
        album = next(m for m in replies if m["text"][0].isdigit())
        failed = next(m for m in replies if m is not album)
    else:
        ((_, failed),) = quoted.items()
    lines = album["text"].splitlines()
    assert [line.split(".")[0] for line in lines[:2]] == ["1", "2"], album["text"]
    assert "Here are 2 of the 3 photos; the other one has a reply of its own." in album["text"]
    assert set(buttons(album)) == {f"{n} {m}" for n in (1, 2) for m in ("✅", "❌")}
    assert failed["text"] == "I couldn't fetch this photo from Telegram. Please send it again."
    assert failed["reply_to_message"]["message_id"] in ids
    assert not texts_with(replies, "something went wrong")


def test_a_correction_whose_photo_cannot_be_fetched_again_says_so(bot: RunningBot) -> None:
    user = 8401
    reply = photo_reply(bot, user)
    mid = reply["message_id"]
    asked = bot.press(mid, buttons(reply)["❌ Wrong"], user_id=user)["messages"][0]
    pick = next(d for d in buttons(asked).values() if ":c:" in d)
    bot.fail("getFile")  # the photo is fetched again to be kept with the correction
    done = bot.press(mid, pick, user_id=user)
    text = done["messages"][0]["text"]
    assert "❌ Corrected to:" in text and "couldn't fetch the photo again" in text
    assert "helps train" not in text
    assert "won't train" in done["answer"]["text"]
    prediction_id = pick.split(":")[1]
    with store(bot) as log:
        verdict = log.get_verdict(prediction_id)
        assert verdict is not None and verdict.kind == "wrong"  # the correction is kept
        assert not log.has_image(prediction_id)


def wait_until(check: Callable[[], bool], timeout: float = 60) -> None:
    """Until `check()` (a file's state the bot changes after its reply went out)."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_export_zips_fall_under_retention_and_forget(bot: RunningBot) -> None:
    exports = bot.workdir / "data" / "exports"
    exported = bot.send(text="/export", user_id=ADMIN)["replies"]
    assert any(m.get("document") for m in exported), exported
    # Sent: no copy of it stays on the server.
    wait_until(lambda: not list(exports.glob("*.zip")))

    old, fresh = (
        exports / "verdict-feedback-20000101-000000.zip",
        exports / "verdict-feedback-new.zip",
    )
    for path in (old, fresh):
        path.write_bytes(b"PK\x05\x06" + b"\0" * 18)
    days_ago = time.time() - 91 * 86400  # past the 90 days of retention
    os.utime(old, (days_ago, days_ago))
    bot.restart()  # retention runs at start, then every six hours
    wait_until(lambda: "retention: removed 1 export zip(s)" in bot.log())
    assert not old.exists() and fresh.exists()

    user = 8501
    photo_reply(bot, user)
    prompt = bot.send(text="/forget", user_id=user)["replies"][0]
    bot.press(prompt["message_id"], buttons(prompt)["🗑 Yes, delete"], user_id=user)
    assert not fresh.exists()  # it may hold their photos or labels
    assert re.search(r"forgot user data on request: \d+ item\(s\); 1 export zip", bot.log())
