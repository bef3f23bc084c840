"""The inbox end to end: updates in flight when the bot is SIGKILLed are answered after it is
started again, once each; through the real bot process and the Bot API stand-in."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from model.feedback import FeedbackStore
from tests import images
from tests.botharness import FAKE_TOKEN, RunningBot, start_bot
from tests.test_web import free_port

pytestmark = pytest.mark.timeout(900)

ADMIN = 7700
PHOTOS = 32


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("inbox-bot")


@pytest.fixture(scope="module")
def bot(workdir: Path) -> Iterator[RunningBot]:
    env = {
        "VERDICT_TEST_HOLD": str(workdir / "hold"),
        "VERDICT_TEST_INBOX_FULL": str(workdir / "inbox-full"),
        "ADMIN_IDS": str(ADMIN),
    }
    running = start_bot(workdir, env, own_group=True)
    try:
        yield running
    finally:
        (workdir / "hold").unlink(missing_ok=True)
        running.stop()


def until(condition: Callable[[], bool], timeout: float = 60) -> None:
    """Wait for `condition` (checked every 50 ms); AssertionError after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "not reached in time"
        time.sleep(0.05)


def webhook_info(bot: RunningBot) -> dict[str, Any]:
    answer = bot.client.post(f"/bot{FAKE_TOKEN}/getWebhookInfo").json()
    return dict(answer["result"])


def bot_replies(bot: RunningBot, chat_id: int) -> list[dict[str, Any]]:
    return [m for m in bot.messages(chat_id) if m["from_bot"]]


def kill_with_photos_in_flight(bot: RunningBot, hold: Path, first_user: int) -> dict[int, int]:
    """32 users each send a photo; once the Bot API holds none of them any more (confirmed,
    or accepted by the webhook) and none is answered, the bot's process group is SIGKILLed and
    the bot started again. Returns user → the photo's message id."""
    hold.touch()
    sent = {
        user: bot.send_photo(images.coffee_jpeg(), user_id=user, wait=0)["message"]["message_id"]
        for user in range(first_user, first_user + PHOTOS)
    }
    until(lambda: bot.pending_updates() == 0)
    assert all(not bot_replies(bot, user) for user in sent)  # all 32 are in flight
    bot.kill_group()
    hold.unlink()
    bot.restart()
    return sent


def assert_each_answered_once(bot: RunningBot, sent: dict[int, int]) -> None:
    for user, message_id in sent.items():
        messages = bot.wait_for(user, lambda ms: any(m["from_bot"] for m in ms), 120)
        (reply,) = [m for m in messages if m["from_bot"]]
        assert reply["reply_to_message"]["message_id"] == message_id
        assert reply["text"].startswith("espresso")
    until(lambda: bot.metric("verdict_inbox_pending") == 0)  # nothing more to come
    assert bot.metric("verdict_inbox_replayed_total") >= PHOTOS
    assert all(len(bot_replies(bot, user)) == 1 for user in sent)  # none twice


def test_photos_in_flight_at_a_kill_are_answered_once_after_restart(
    bot: RunningBot, workdir: Path
) -> None:
    sent = kill_with_photos_in_flight(bot, workdir / "hold", 5000)
    assert_each_answered_once(bot, sent)


def test_a_verdict_tap_in_flight_at_a_kill_is_stored_after_restart(
    bot: RunningBot, workdir: Path
) -> None:
    user = 5100
    reply = bot.send_photo(images.coffee_jpeg(), user_id=user)["replies"][0]
    rows = reply["reply_markup"]["inline_keyboard"]
    right = next(b["callback_data"] for row in rows for b in row if b["text"] == "✅ Right")
    (workdir / "hold").touch()
    bot.press(reply["message_id"], right, user_id=user, wait=0)
    until(lambda: bot.pending_updates() == 0)
    bot.kill_group()
    (workdir / "hold").unlink()
    # Replayed long after the tap: Telegram no longer takes an answer to the query.
    bot.fail(
        "answerCallbackQuery",
        description="Bad Request: query is too old and response timeout expired or query ID "
        "is invalid",
    )
    bot.restart()
    bot.wait_for(user, lambda ms: any("Recorded as right" in m.get("text", "") for m in ms))
    with closing(FeedbackStore.open(workdir / "data", create=False)) as log:
        verdict = log.get_verdict(right.split(":")[1])
    assert verdict is not None and verdict.kind == "right"
    until(lambda: bot.metric("verdict_inbox_pending") == 0)
    assert len(bot_replies(bot, user)) == 1  # edited in place, no "something went wrong"


def test_an_album_straddling_a_kill_is_gathered_again_and_answered_once(
    bot: RunningBot, workdir: Path
) -> None:
    user = 5150
    (workdir / "hold").touch()
    ids = [
        bot.send_photo(p, user_id=user, media_group_id="kill-album", wait=0)["message"][
            "message_id"
        ]
        for p in (images.coffee_jpeg(), images.chelsea_jpeg(), images.coffee_jpeg())
    ]
    until(lambda: bot.pending_updates() == 0)
    bot.kill_group()
    (workdir / "hold").unlink()
    bot.restart()
    messages = bot.wait_for(user, lambda ms: any(m["from_bot"] for m in ms), 120)
    (reply,) = [m for m in messages if m["from_bot"]]
    assert reply["reply_to_message"]["message_id"] == ids[0]
    assert [line.split(".")[0] for line in reply["text"].splitlines()] == ["1", "2", "3"]
    until(lambda: bot.metric("verdict_inbox_pending") == 0)
    assert len(bot_replies(bot, user)) == 1


def test_photos_sent_while_the_bot_was_stopped_are_answered_after_start(
    bot: RunningBot,
) -> None:
    bot.stop_process()
    sent = {
        user: bot.send_photo(images.coffee_jpeg(), user_id=user, wait=0)["message"]["message_id"]
        for user in range(5200, 5203)
    }
    bot.restart()
    for user, message_id in sent.items():
        messages = bot.wait_for(user, lambda ms: any(m["from_bot"] for m in ms), 120)
        (reply,) = [m for m in messages if m["from_bot"]]
        assert reply["reply_to_message"]["message_id"] == message_id


def test_an_inbox_on_a_full_disk_tells_the_admins_and_keeps_answering(
    bot: RunningBot, workdir: Path
) -> None:
    bot.send(text="/start", user_id=ADMIN)
    full = workdir / "inbox-full"
    full.touch()
    try:
        reply = bot.send_photo(images.coffee_jpeg(), user_id=5300)["replies"][0]
        assert reply["text"].startswith("espresso")
        bot.wait_for(ADMIN, lambda ms: any("can't keep incoming updates" in m["text"] for m in ms))
        assert "inbox: cannot keep updates" in bot.log()
        assert bot.metric("verdict_inbox_unkept_total") >= 1
    finally:
        full.unlink()
    assert bot.send_photo(images.coffee_jpeg(), user_id=5301)["replies"][0]["text"]
    bot.wait_for(ADMIN, lambda ms: any("can keep incoming updates" in m["text"] for m in ms))
    told = [m for m in bot_replies(bot, ADMIN) if "incoming updates" in m["text"]]
    assert len(told) == 2  # once when it failed, once when it worked again


def test_webhook_photos_in_flight_at_a_kill_are_answered_once_after_restart(
    tmp_path: Path,
) -> None:
    port = free_port()
    env = {
        "WEBHOOK_URL": f"http://127.0.0.1:{port}/hook/telegram",
        "WEBHOOK_SECRET": "inbox-test-secret",
        "PORT": str(port),
        "VERDICT_TEST_HOLD": str(tmp_path / "hold"),
        "VERDICT_TEST_INBOX_BUG": str(tmp_path / "bug"),
    }
    hooked = start_bot(tmp_path, env, own_group=True)
    try:
        sent = kill_with_photos_in_flight(hooked, tmp_path / "hold", 6000)
        assert_each_answered_once(hooked, sent)
        assert hooked.calls("getUpdates") == []

        # An update the inbox failed to keep (not for a full disk: a bug) is answered 500, so
        # Telegram posts it again; once it is kept, it is answered.
        (tmp_path / "bug").touch()
        hooked.send_photo(images.coffee_jpeg(), user_id=6100, wait=0)
        until(lambda: "500" in (webhook_info(hooked).get("last_error_message") or ""))
        assert not bot_replies(hooked, 6100)
        (tmp_path / "bug").unlink()
        hooked.wait_for(6100, lambda ms: any(m["from_bot"] for m in ms))
        assert len(bot_replies(hooked, 6100)) == 1
    finally:
        (tmp_path / "hold").unlink(missing_ok=True)
        (tmp_path / "bug").unlink(missing_ok=True)
        hooked.stop()
