"""The bot under load: 'busy' instead of piling up, and SIGTERM answers what is in flight."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests import images
from tests.botharness import start_bot

pytestmark = pytest.mark.timeout(600)


def test_a_full_queue_answers_busy_and_the_bot_recovers(tmp_path: Path) -> None:
    """One worker, a queue of one: a burst of 16 photos gets some 'busy' replies, none lost."""
    bot = start_bot(tmp_path, {"WORKERS": "1", "MAX_BATCH": "1", "QUEUE_SIZE": "1"})
    try:
        photo = images.coffee_jpeg()
        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(lambda n: bot.send_photo(photo, user_id=500 + n), range(16)))
        texts = [a["replies"][0]["text"] for a in answers if a["replies"]]
        assert len(texts) == 16, answers
        busy = [t for t in texts if "busy" in t]
        labelled = [t for t in texts if t.startswith("espresso — ")]
        assert busy and labelled and len(busy) + len(labelled) == 16, texts
        # Once the burst is over, the next photo is answered normally.
        assert bot.send_photo(photo)["replies"][0]["text"].startswith("espresso — ")
    finally:
        assert bot.stop() == 0


def test_sigterm_answers_photos_in_flight_then_exits_zero(tmp_path: Path) -> None:
    """`docker compose stop` sends SIGTERM: photos already received still get their answer.

    Ten large photos on one worker take a while: the later ones wait long enough for the
    chat to show "typing…".
    """
    bot = start_bot(tmp_path, {"WORKERS": "1"})
    try:
        photo = images.encode(images.coffee().resize((1200, 800)), "JPEG")
        with ThreadPoolExecutor(10) as pool:  # all at once, so that they queue up
            sent = list(
                pool.map(
                    lambda n: bot.send_photo(photo, user_id=600 + n, wait=0)["message"], range(10)
                )
            )
        deadline = time.monotonic() + 60
        while len(bot.calls("getFile")) < 10 and time.monotonic() < deadline:
            time.sleep(0.005)  # every handler is fetching its photo: all ten are in flight
        assert len(bot.calls("getFile")) >= 10
        status = bot.stop_process()
        assert status == 0, bot.log()
        for message in sent:
            chat = message["chat"]["id"]
            replies = [
                m
                for m in bot.messages(chat)
                if m["from_bot"]
                and (m.get("reply_to_message") or {}).get("message_id") == message["message_id"]
            ]
            assert replies and replies[0]["text"].startswith("espresso — "), replies
        typing = [c["params"] for c in bot.calls("sendChatAction")]
        assert typing and all(t.get("action") == "typing" for t in typing)
    finally:
        bot.stop()


def test_flood_limits_are_waited_out_and_no_reply_is_lost(tmp_path: Path) -> None:
    """Every 5th sendMessage answered 429 (retry_after 1 s): 20 photos still get 20 replies."""
    bot = start_bot(tmp_path)
    try:
        flood = bot.client.post(
            "/_sandbox/flood", data={"method": "sendMessage", "every": "5", "retry_after": "1"}
        )
        assert flood.status_code == 200, flood.text
        photo = images.coffee_jpeg()
        with ThreadPoolExecutor(20) as pool:
            answers = list(
                pool.map(lambda n: bot.send_photo(photo, user_id=700 + n, wait=90), range(20))
            )
        texts = [a["replies"][0]["text"] for a in answers if a["replies"]]
        assert len(texts) == 20 and all(t.startswith("espresso") for t in texts), texts
        # 20 replies took at least 24 calls: the refused ones were retried, not dropped.
        assert len(bot.calls("sendMessage")) >= 24
    finally:
        assert bot.stop() == 0
