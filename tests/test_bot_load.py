"""The bot under load: 'busy' instead of piling up, and SIGTERM answers what is in flight."""

from __future__ import annotations

import re
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from sandbox import SandboxThread
from tests import images
from tests.botharness import FAKE_TOKEN, _spawn_bot, bot_env, start_bot

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


def memory_kib(pid: int, field: str) -> int:
    """A memory figure of a process from /proc (VmRSS: now; VmHWM: its peak so far)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for process {pid}")


def test_a_flood_of_large_files_is_refused_before_download_and_memory_stays_bounded(
    tmp_path: Path,
) -> None:
    """40 users send a 2.3 MB image file at once to a bot that holds 2 at a time: each gets an
    answer or "busy", "busy" comes before any download, and the bot's memory grows by a few
    images, not by forty (all downloaded first, as before, that was hundreds of MB)."""
    bot = start_bot(tmp_path, {"WORKERS": "1", "QUEUE_SIZE": "2"})
    try:
        data = images.encode(images.noise(1600, 1200, seed=1), "JPEG", quality=95)
        assert len(data) > 2_000_000
        first = bot.send_document(data, "warm-up.jpg", "image/jpeg", user_id=900)
        assert first["replies"][0]["text"] and "busy" not in first["replies"][0]["text"]
        pid = bot.process.pid
        rss_before = memory_kib(pid, "VmRSS")
        files_before = len(bot.calls("getFile"))

        def send(n: int) -> list[str]:
            answer = bot.send_document(data, f"big-{n}.jpg", "image/jpeg", user_id=901 + n)
            return [reply["text"] for reply in answer["replies"]]

        with ThreadPoolExecutor(40) as pool:
            answers = list(pool.map(send, range(40)))
        assert all(len(texts) == 1 for texts in answers), answers
        texts = [texts[0] for texts in answers]
        busy = [t for t in texts if t.startswith("I'm busy")]
        answered = [t for t in texts if not t.startswith("I'm busy")]
        assert busy and answered, texts
        assert not [t for t in answered if "went wrong" in t], answered
        # Only the photos that got a slot were fetched at all.
        assert len(bot.calls("getFile")) - files_before == len(answered)
        grown_mib = (memory_kib(pid, "VmHWM") - rss_before) / 1024
        assert grown_mib < 48, f"the bot's peak memory grew by {grown_mib:.0f} MiB"
        # Once the flood is over, the next photo is answered normally.
        assert bot.send_photo(images.coffee_jpeg())["replies"][0]["text"].startswith("espresso")
    finally:
        assert bot.stop() == 0


@pytest.mark.parametrize(
    "moment",
    [
        "starting the model workers",  # the fork server is importing torch
        "started; loading the model",  # a worker is exporting and loading the default model
    ],
)
def test_sigterm_while_starting_exits_promptly_with_status_zero(
    tmp_path: Path, moment: str
) -> None:
    """`docker compose stop` right after `up`: the bot stops within 5 s, status 0, without
    waiting for the workers to finish starting."""
    sandbox = SandboxThread(FAKE_TOKEN)
    url = sandbox.start()
    log = tmp_path / "bot.log"
    env = bot_env(tmp_path, {"TELEGRAM_TOKEN": FAKE_TOKEN, "TELEGRAM_API_URL": url})
    process = _spawn_bot(env, tmp_path, log, tmp_path / "modules.json")
    try:
        deadline = time.monotonic() + 240
        while moment not in log.read_text(errors="replace"):
            assert process.poll() is None, log.read_text(errors="replace")
            assert time.monotonic() < deadline, f"no {moment!r} in the log"
            time.sleep(0.01)
        process.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        status = process.wait(timeout=60)
        took = time.monotonic() - sent
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        sandbox.stop()
    text = log.read_text(errors="replace")
    assert status == 0, text
    assert took <= 5, f"exited {took:.1f} s after SIGTERM\n{text}"
    assert "ready in" not in text, "the bot had finished starting: the test proves nothing"
    assert "stopping while starting" in text
    # The workers that had started were killed, not left loading the model.
    workers = [int(pid) for pid in re.findall(r"worker (\d+) started; loading the model", text)]
    assert workers or moment == "starting the model workers"
    deadline = time.monotonic() + 10
    while any(_running(pid) for pid in workers):
        assert time.monotonic() < deadline, f"workers still running: {workers}"
        time.sleep(0.05)


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has ended
    except FileNotFoundError:
        return False
