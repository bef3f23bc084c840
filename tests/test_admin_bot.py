"""Admin commands end to end: each as an admin and as anyone else (refused, nothing changed)."""

from __future__ import annotations

import io
import re
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import images
from tests.botharness import RunningBot, start_bot

pytestmark = pytest.mark.timeout(900)

ADMIN = 4242
USER = 5151
ADMIN_COMMANDS = [
    "/stats",
    "/disputes",
    "/review",
    "/labels",
    "/export",
    "/retrain",
    "/models",
    "/use previous",
    "/threshold 10%",
]


@pytest.fixture(scope="module")
def bot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningBot]:
    running = start_bot(tmp_path_factory.mktemp("admin-bot"), {"ADMIN_IDS": str(ADMIN)})
    try:
        yield running
    finally:
        running.stop()


def buttons(message: dict[str, Any]) -> dict[str, str]:
    rows = (message.get("reply_markup") or {}).get("inline_keyboard", [])
    return {b["text"]: b["callback_data"] for row in rows for b in row}


def texts(answer: dict[str, Any]) -> list[str]:
    return [m.get("text") or m.get("caption") or "" for m in answer["replies"]]


def dispute(bot: RunningBot, user: int, data: bytes, label: str) -> None:
    reply = bot.send_photo(data, user_id=user)["replies"][0]
    wrong = buttons(reply)["❌ Wrong"]
    asked = bot.press(reply["message_id"], wrong, user_id=user)["messages"][0]
    bot.press(reply["message_id"], buttons(asked)["✏️ Something else…"], user_id=user)
    bot.send(text=label, user_id=user)


@pytest.mark.parametrize("command", ADMIN_COMMANDS)
def test_non_admins_are_refused(bot: RunningBot, command: str) -> None:
    assert texts(bot.send(text=command, user_id=USER)) == [
        "Sorry, this command is for the bot's admins."
    ]


def test_help_lists_the_admin_commands_for_admins_only(bot: RunningBot) -> None:
    admin_help = texts(bot.send(text="/help", user_id=ADMIN))[0]
    assert "Admin commands:" in admin_help
    for command in ("/stats", "/disputes", "/review", "/export", "/retrain", "/models", "/use"):
        assert command in admin_help
    assert "Admin commands:" not in texts(bot.send(text="/help", user_id=USER))[0]


def test_the_refused_threshold_changed_nothing(bot: RunningBot) -> None:
    bot.send(text="/threshold 10%", user_id=USER)
    assert "The threshold is 50%" in texts(bot.send(text="/threshold", user_id=ADMIN))[0]


def test_admins_get_their_own_command_menu(bot: RunningBot) -> None:
    calls = [c["params"] for c in bot.calls("setMyCommands")]
    scoped = [c for c in calls if '"chat_id":' in str(c.get("scope")) or "chat" in str(c)]
    assert any(str(ADMIN) in str(c.get("scope")) and "stats" in str(c) for c in scoped)
    default = [c for c in calls if "default" in str(c.get("scope"))]
    assert default and "stats" not in str(default[0].get("commands"))


def test_stats_text_and_chart(bot: RunningBot) -> None:
    bot.send_photo(images.coffee_jpeg(), user_id=USER)
    sent = bot.send(text="/stats", user_id=ADMIN)
    # The text comes first, then the chart.
    replies = bot.replies_until(sent, lambda m: bool(m.get("photo")))
    body = "\n".join(texts({"replies": replies}))
    assert "Photos classified — last 24 h:" in body and "Workers ready: " in body
    assert "espresso" in body
    inbox = next(line for line in body.splitlines() if line.startswith("Inbox since start: "))
    assert int(inbox.split()[3]) >= 2 and "pending" in inbox  # the photo and /stats itself
    photos = [m for m in replies if m.get("photo")]
    png = bot.client.get(f"/_sandbox/files/{photos[0]['photo'][-1]['file_id']}").content
    from PIL import Image

    assert Image.open(io.BytesIO(png)).size[0] >= 320


def test_disputes_review_and_export(bot: RunningBot) -> None:
    dispute(bot, USER, images.chelsea_jpeg(), "chelsea the cat")
    shown = bot.send(text="/disputes", user_id=ADMIN)
    # One message per dispute, then "Disputes 1–N of N." with the page buttons.
    listed = bot.replies_until(shown, lambda m: (m.get("text") or "").startswith("Disputes "))
    captions = texts({"replies": listed})
    assert any("corrected: chelsea the cat" in c for c in captions), captions

    asked = bot.send(text="/review", user_id=ADMIN)
    review = bot.replies_until(asked, lambda m: (m.get("caption") or "").startswith("Review ("))
    review = next(m for m in review if (m.get("caption") or "").startswith("Review ("))
    assert "user: wrong, it is “chelsea the cat”" in review["caption"]
    confirm = next(d for t, d in buttons(review).items() if t.startswith("✅ Confirm"))
    refused = bot.press(review["message_id"], confirm, user_id=USER, chat_id=ADMIN, forge=1)
    assert refused.get("answer") is None or "admins" in (refused["answer"] or {}).get("text", "")
    saved = bot.press(review["message_id"], confirm, user_id=ADMIN)
    assert saved["answer"]["text"] == "Saved."

    asked = bot.send(text="/export", user_id=ADMIN)
    exported = bot.replies_until(asked, lambda m: bool(m.get("document")))
    document = next(m for m in exported if m.get("document"))
    archive = bot.client.get(f"/_sandbox/files/{document['document']['file_id']}").content
    names = zipfile.ZipFile(io.BytesIO(archive)).namelist()
    assert "manifest.csv" in names
    assert any(name.startswith("chelsea the cat/") for name in names), names


def test_threshold_is_persisted_across_a_restart(bot: RunningBot) -> None:
    answer = texts(bot.send(text="/threshold 99%", user_id=ADMIN))[0]
    assert "below 99%" in answer
    reply = bot.send_photo(images.coffee_jpeg(), user_id=USER)["replies"][0]
    assert reply["text"].startswith("Not sure: espresso"), reply["text"]
    bot.restart()
    assert "The threshold is 99%" in texts(bot.send(text="/threshold", user_id=ADMIN))[0]
    bot.send(text="/threshold 50%", user_id=ADMIN)


def test_models_lists_the_default_as_active(bot: RunningBot) -> None:
    body = texts(bot.send(text="/models", user_id=ADMIN))[0]
    assert "▶️" in body and "1000 labels" in body
    assert "no previous version" in texts(bot.send(text="/use previous", user_id=ADMIN))[0]


def test_allowed_users_only_one_refusal_a_day(bot: RunningBot) -> None:
    bot.env["ALLOWED_USER_IDS"] = str(USER)
    bot.restart()
    try:
        stranger = 6161
        first = texts(bot.send(text="hello", user_id=stranger, wait=10))
        assert first and "private" in first[0]
        second = bot.send(text="hello again", user_id=stranger, wait=2)
        assert second["replies"] == []
        assert bot.send_photo(images.coffee_jpeg(), user_id=USER)["replies"]
        assert texts(bot.send(text="/models", user_id=ADMIN))
    finally:
        del bot.env["ALLOWED_USER_IDS"]
        bot.restart()


def test_retrain_reports_progress_and_offers_the_new_version(tmp_path: Path) -> None:
    """/retrain fits in a separate process; one message shows progress then the metrics and
    [Use it]; a second /retrain meanwhile is refused; Use it swaps the model."""
    from tests.trainingdata import make_folders

    images_dir = tmp_path / "images"
    make_folders(images_dir, {"coffee": 12, "cat": 12})
    bot = start_bot(
        tmp_path,
        {
            "ADMIN_IDS": str(ADMIN),
            "TRAINING_DATA_DIR": str(images_dir),
            "RETRAIN_ARGS": "--epochs 1 --freeze-epochs 1 --size 160 --bs 8",
        },
    )
    try:
        started = bot.send(text="/retrain", user_id=ADMIN)["replies"][0]
        assert "etraining" in started["text"]  # "Starting the retraining…", or already progress
        again = texts(bot.send(text="/retrain", user_id=ADMIN))[0]
        assert again.startswith("A retraining is already running")
        # The bot keeps answering photos while it trains.
        assert bot.send_photo(images.coffee_jpeg(), user_id=USER)["replies"][0]["text"]

        def ended(messages: list[dict[str, Any]]) -> bool:
            text = next(m for m in messages if m["message_id"] == started["message_id"])["text"]
            return "finished" in text or "failed" in text

        bot.wait_for(ADMIN, ended, timeout=600)
        final = bot.message(ADMIN, started["message_id"])
        assert "Retraining finished" in final["text"], final["text"]
        assert "new: accuracy" in final["text"]
        missing = texts(bot.send(text="/use v99", user_id=ADMIN))[0]
        assert missing.startswith("Can't use 'v99'"), missing

        # [Use it] while photos keep coming: every one of them is answered.
        from concurrent.futures import ThreadPoolExecutor

        use = buttons(final)["Use it"]
        with ThreadPoolExecutor(4) as pool:
            photos = [
                pool.submit(bot.send_photo, images.coffee_jpeg(), user_id=USER + 1 + n)
                for n in range(12)
            ]
            bot.press(final["message_id"], use, user_id=ADMIN)
            # The swap is done when the bot says so (however long the new workers take).
            serving = bot.wait_for(
                ADMIN,
                lambda messages: any(
                    (m.get("text") or "").startswith("Now serving v") for m in messages
                ),
            )
            replies = [f.result()["replies"] for f in photos]
        assert all(r and r[0]["text"] for r in replies), replies
        assert any((m.get("text") or "").startswith("Now serving v") for m in serving)
        reply = bot.send_photo(images.coffee_jpeg(), user_id=USER)["replies"][0]["text"]
        assert reply.split(" ")[0] in ("coffee", "cat", "Not"), reply

        # A tampered version is refused, and the active model keeps serving.
        from model.registry import Registry

        registry = Registry(tmp_path / "data" / "models")
        previous = registry.previous()
        assert previous is not None
        with (registry.version_dir(previous) / previous.file).open("ab") as handle:
            handle.write(b"tampered")
        refused = texts(bot.send(text="/use previous", user_id=ADMIN))[0]
        assert refused.startswith("Can't use 'previous'") and "sha256" in refused, refused
        reply = bot.send_photo(images.coffee_jpeg(), user_id=USER)["replies"][0]["text"]
        assert reply.split(" ")[0] in ("coffee", "cat", "Not"), reply
    finally:
        assert bot.stop() == 0


def children(pid: int) -> set[int]:
    """The live child processes of `pid`."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found.update(int(child) for child in (task / "children").read_text().split())
    return found


def test_sigterm_cancels_a_running_retraining_and_says_so(tmp_path: Path) -> None:
    """A stop does not wait for a whole training run: the trainer is stopped, the bot exits
    0 promptly, and the admin's progress message says the run was cancelled by a shutdown."""
    from tests.trainingdata import make_folders

    images_dir = tmp_path / "images"
    make_folders(images_dir, {"coffee": 12, "cat": 12})
    bot = start_bot(
        tmp_path,
        {
            "ADMIN_IDS": str(ADMIN),
            "TRAINING_DATA_DIR": str(images_dir),
            # Far longer than the test: without the fix, the stop would wait for all of it.
            "RETRAIN_ARGS": "--epochs 500 --freeze-epochs 1 --size 160 --bs 8",
        },
    )
    try:
        started = bot.send(text="/retrain", user_id=ADMIN)["replies"][0]
        (trainer,) = [
            pid
            for pid in children(bot.process.pid)
            if b"\0training\0fit\0" in Path(f"/proc/{pid}/cmdline").read_bytes()
        ]
        # Under way: the trainer has told its plan (torch loaded, the data read, fitting).
        planned = re.compile(r"epoch \d+/\d+")
        bot.wait_for(
            ADMIN,
            lambda messages: any(
                m["message_id"] == started["message_id"] and planned.search(m["text"])
                for m in messages
            ),
            timeout=300,
        )
        assert Path(f"/proc/{trainer}").exists()
        asked = time.monotonic()
        assert bot.stop_process() == 0, bot.log()
        assert time.monotonic() - asked < 45
        assert not Path(f"/proc/{trainer}").exists()  # stopped, and reaped by the bot
        text = bot.message(ADMIN, started["message_id"])["text"]
        assert text.startswith("Retraining cancelled: the bot was shut down"), text
        assert "nothing was registered" in text
    finally:
        bot.stop()
