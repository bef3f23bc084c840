"""Right/Wrong, corrections and /forget, end to end through the bot and the sandbox."""

from __future__ import annotations

import asyncio
import csv
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup

from model.feedback import FeedbackStore
from tests import images
from tests.botharness import FAKE_TOKEN, RunningBot, start_bot

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def bot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningBot]:
    running = start_bot(tmp_path_factory.mktemp("feedback-bot"))
    try:
        yield running
    finally:
        running.stop()


def store(bot: RunningBot) -> closing[FeedbackStore]:
    """The bot's feedback log, opened beside it (SQLite WAL allows that)."""
    return closing(FeedbackStore.open(bot.workdir / "data", create=False))


def buttons(message: dict[str, Any]) -> dict[str, str]:
    """Button text → callback data."""
    rows = (message.get("reply_markup") or {}).get("inline_keyboard", [])
    return {b["text"]: b["callback_data"] for row in rows for b in row}


def photo_reply(bot: RunningBot, user_id: int, data: bytes | None = None, **fields: Any) -> Any:
    answer = bot.send_photo(data or images.coffee_jpeg(), user_id=user_id, **fields)
    (reply,) = answer["replies"]
    return reply


def edited(answer: dict[str, Any]) -> dict[str, Any]:
    (message,) = answer["messages"]
    return message


def test_every_prediction_has_right_and_wrong(bot: RunningBot) -> None:
    reply = photo_reply(bot, 3001)
    assert set(buttons(reply)) == {"✅ Right", "❌ Wrong"}
    assert all(len(data.encode()) <= 64 for data in buttons(reply).values())


def test_right_is_recorded_once_however_often_it_is_tapped(bot: RunningBot) -> None:
    reply = photo_reply(bot, 3002)
    right = buttons(reply)["✅ Right"]
    first = bot.press(reply["message_id"], right, user_id=3002)
    assert "Recorded as right" in edited(first)["text"]
    assert not buttons(edited(first))
    prediction_id = right.split(":")[1]
    with store(bot) as log:
        verdict = log.get_verdict(prediction_id)
    assert verdict is not None and verdict.kind == "right" and verdict.label == "espresso"
    # The keyboard is gone, but an old client could still send the tap: forged=old data.
    again = bot.press(reply["message_id"], right, user_id=3002, forge=1)
    assert again["answer"]["text"] == "Already recorded."


def test_simultaneous_taps_record_one_verdict(bot: RunningBot) -> None:
    reply = photo_reply(bot, 3003)
    wrong = buttons(reply)["❌ Wrong"]
    asked = edited(bot.press(reply["message_id"], wrong, user_id=3003))
    candidate = next(data for text, data in buttons(asked).items() if ":c:" in data)
    with ThreadPoolExecutor(5) as pool:
        answers = list(
            pool.map(
                lambda _: bot.press(reply["message_id"], candidate, user_id=3003, forge=1),
                range(5),
            )
        )
    texts = [(a["answer"] or {}).get("text", "") for a in answers]
    assert sum(t.startswith("❌ Corrected to") for t in texts) == 1, texts
    assert sum(t == "Already recorded." for t in texts) == 4, texts
    with store(bot) as log:
        verdict = log.get_verdict(wrong.split(":")[1])
    assert verdict is not None and verdict.kind == "wrong"


def test_wrong_then_a_candidate_is_recorded_with_the_image(bot: RunningBot) -> None:
    reply = photo_reply(bot, 3004)
    asked = edited(bot.press(reply["message_id"], buttons(reply)["❌ Wrong"], user_id=3004))
    choices = buttons(asked)
    assert {"✏️ Something else…", "🤷 Not sure", "📚 All labels", "« Back"} <= set(choices)
    candidates = [text for text, data in choices.items() if ":c:" in data]
    assert len(candidates) == 2  # the other two of the top 3
    label = candidates[0].rsplit(" (", 1)[0]
    done = edited(bot.press(reply["message_id"], choices[candidates[0]], user_id=3004))
    assert f"Corrected to: {label}" in done["text"]
    prediction_id = choices[candidates[0]].split(":")[1]
    with store(bot) as log:
        verdict = log.get_verdict(prediction_id)
        assert log.has_image(prediction_id)
    assert verdict is not None and verdict.label == label


def test_wrong_then_something_else_takes_the_typed_label(bot: RunningBot) -> None:
    reply = photo_reply(bot, 3005)
    asked = edited(bot.press(reply["message_id"], buttons(reply)["❌ Wrong"], user_id=3005))
    waiting = edited(
        bot.press(reply["message_id"], buttons(asked)["✏️ Something else…"], user_id=3005)
    )
    assert "Type the right label" in waiting["text"]
    confirmation = bot.send(text="  my  grandmother's   mug ", user_id=3005)["replies"]
    assert any("Stored “my grandmother's mug” (a new label)" in m["text"] for m in confirmation)
    final = bot.message(3005, reply["message_id"])
    assert "Corrected to: my grandmother's mug" in final["text"]
    # The next text is just text again.
    assert "Send me a photo" in bot.send(text="hello", user_id=3005)["replies"][0]["text"]


def test_a_typed_known_label_is_matched_to_the_model_spelling(bot: RunningBot) -> None:
    reply = photo_reply(bot, 3006)
    asked = edited(bot.press(reply["message_id"], buttons(reply)["❌ Wrong"], user_id=3006))
    bot.press(reply["message_id"], buttons(asked)["✏️ Something else…"], user_id=3006)
    confirmation = bot.send(text="COFFEE MUG", user_id=3006)["replies"]
    assert any("Stored “coffee mug” (one of the labels" in m["text"] for m in confirmation)


def test_browsing_all_labels_pages_through_imagenet(bot: RunningBot) -> None:
    reply = photo_reply(bot, 3007)
    mid = reply["message_id"]
    asked = edited(bot.press(mid, buttons(reply)["❌ Wrong"], user_id=3007))
    page1 = edited(bot.press(mid, buttons(asked)["📚 All labels"], user_id=3007))
    assert "page 1 of 100" in page1["text"]
    page2 = edited(bot.press(mid, buttons(page1)["Next ›"], user_id=3007))
    assert "page 2 of 100" in page2["text"]
    label_buttons = {t: d for t, d in buttons(page2).items() if ":l:" in d}
    assert len(label_buttons) == 10
    label, data = sorted(label_buttons.items())[0]
    done = edited(bot.press(mid, data, user_id=3007))
    assert f"Corrected to: {label}" in done["text"]


def test_not_sure_and_back(bot: RunningBot) -> None:
    reply = photo_reply(bot, 3008)
    mid = reply["message_id"]
    asked = edited(bot.press(mid, buttons(reply)["❌ Wrong"], user_id=3008))
    back = edited(bot.press(mid, buttons(asked)["« Back"], user_id=3008))
    assert set(buttons(back)) == {"✅ Right", "❌ Wrong"}
    asked = edited(bot.press(mid, buttons(back)["❌ Wrong"], user_id=3008))
    done = edited(bot.press(mid, buttons(asked)["🤷 Not sure"], user_id=3008))
    assert "not sure" in done["text"]


def test_in_a_group_only_the_sender_can_judge(bot: RunningBot) -> None:
    group = -77001
    reply = photo_reply(bot, 3009, chat_id=group, chat_type="group")
    right = buttons(reply)["✅ Right"]
    other = bot.press(reply["message_id"], right, user_id=3010, chat_id=group)
    assert other["answer"]["text"] == "Only the person who sent the photo can correct this."
    assert buttons(bot.message(group, reply["message_id"]))  # unchanged
    with store(bot) as log:
        assert log.get_verdict(right.split(":")[1]) is None
    sender = bot.press(reply["message_id"], right, user_id=3009, chat_id=group)
    assert "Recorded as right" in edited(sender)["text"]


def test_forged_callback_data_is_refused(bot: RunningBot) -> None:
    """Unknown ids, ids of other messages and garbage all change nothing."""
    reply = photo_reply(bot, 3011)
    mine = buttons(reply)["✅ Right"]
    other_reply = photo_reply(bot, 3011)
    mid = other_reply["message_id"]
    unknown = bot.press(mid, "v:AAAAAAAAAAA:r", user_id=3011, forge=1)
    assert "no longer on record" in unknown["answer"]["text"]
    elsewhere = bot.press(mid, mine, user_id=3011, forge=1)
    assert elsewhere["answer"]["text"] == "This button doesn't belong to this message."
    garbage = bot.press(mid, "v:../../etc:r;drop", user_id=3011, forge=1)
    assert garbage["answer"]["text"] == "This button no longer works."
    with store(bot) as log:
        assert log.get_verdict(mine.split(":")[1]) is None


def test_a_bot_message_with_foreign_buttons_is_refused(bot: RunningBot) -> None:
    """Buttons the bot never made (sent through the Bot API by someone with the token)."""

    async def send() -> int:
        async with Bot(
            FAKE_TOKEN, base_url=f"{bot.url}/bot", base_file_url=f"{bot.url}/file/bot"
        ) as raw:
            markup = InlineKeyboardMarkup([[InlineKeyboardButton("x", callback_data="zzz")]])
            message = await raw.send_message(3012, "foreign", reply_markup=markup)
            return message.message_id

    bot.send(text="/help", user_id=3012)
    mid = asyncio.run(send())
    answer = bot.press(mid, "zzz", user_id=3012)
    assert answer["answer"]["text"] == "This button no longer works."


def test_forget_removes_only_that_users_data(bot: RunningBot) -> None:
    def dispute(user: int, data: bytes) -> str:
        reply = photo_reply(bot, user, data)
        asked = edited(bot.press(reply["message_id"], buttons(reply)["❌ Wrong"], user_id=user))
        pick = next(d for d in buttons(asked).values() if ":c:" in d)
        bot.press(reply["message_id"], pick, user_id=user)
        return pick.split(":")[1]

    mine = dispute(3020, images.encode(images.noise(300, 200, seed=20), "JPEG"))
    theirs = dispute(3021, images.encode(images.noise(300, 200, seed=21), "JPEG"))
    with store(bot) as log:
        assert log.has_image(mine) and log.has_image(theirs)
        files_before = {p for p in log.images_dir.rglob("*") if p.is_file()}
    # Asked in a group, so that someone else can see (and tap) the confirmation.
    group = -77002
    prompt = bot.send(text="/forget", user_id=3020, chat_id=group, chat_type="group")
    prompt = prompt["replies"][0]
    assert "3 items" in prompt["text"]  # one answer, one verdict, one photo
    confirm = buttons(prompt)["🗑 Yes, delete"]
    refused = bot.press(prompt["message_id"], confirm, user_id=3021, chat_id=group)
    assert "Only the person who asked" in refused["answer"]["text"]
    with store(bot) as log:
        assert log.get_prediction(mine) is not None
    done = edited(bot.press(prompt["message_id"], confirm, user_id=3020, chat_id=group))
    assert "deleted 3 items (1 answers, 1 verdicts, 1 photos)" in done["text"]
    with store(bot) as log:
        assert log.get_prediction(mine) is None
        assert log.get_prediction(theirs) is not None and log.has_image(theirs)
        files_after = {p for p in log.images_dir.rglob("*") if p.is_file()}
    assert len(files_before - files_after) == 1
    again = bot.send(text="/forget", user_id=3020)["replies"][0]
    assert "keep nothing about you" in again["text"]


def test_export_writes_the_folder_layout_training_reads(bot: RunningBot, tmp_path: Path) -> None:
    reply = photo_reply(bot, 3030, images.chelsea_jpeg())
    asked = edited(bot.press(reply["message_id"], buttons(reply)["❌ Wrong"], user_id=3030))
    bot.press(reply["message_id"], buttons(asked)["✏️ Something else…"], user_id=3030)
    bot.send(text="Chelsea the cat", user_id=3030)
    out = tmp_path / "export"
    result = subprocess.run(
        [sys.executable, "-m", "training", "export-feedback", str(out)],
        env={"DATA_DIR": str(bot.workdir / "data"), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    chelsea = list((out / "Chelsea the cat").iterdir())
    assert len(chelsea) == 1
    with (out / "manifest.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    row = next(r for r in rows if r["corrected"] == "Chelsea the cat")
    assert row["image"] == f"Chelsea the cat/{chelsea[0].name}"
    # The bundled default, served from its registry version (v1) from the first start on.
    assert row["verdict"] == "wrong" and row["model_version"].startswith("v1-")
    assert any(r["verdict"] == "unsure" and not r["image"] for r in rows)


def test_buttons_work_after_a_restart_and_a_kill_loses_no_verdict(bot: RunningBot) -> None:
    """A tap after a restart is recorded; SIGKILL right after an acknowledged verdict keeps it."""
    reply = photo_reply(bot, 3040)
    bot.restart()
    asked = edited(bot.press(reply["message_id"], buttons(reply)["❌ Wrong"], user_id=3040))
    pick = next(d for d in buttons(asked).values() if ":c:" in d)
    acknowledged = bot.press(reply["message_id"], pick, user_id=3040)
    assert "Corrected to" in (acknowledged["answer"] or {}).get("text", "")
    bot.kill()
    with store(bot) as log:
        verdict = log.get_verdict(pick.split(":")[1])
    assert verdict is not None and verdict.kind == "wrong"
    bot.restart()
    assert photo_reply(bot, 3041)["text"].startswith("espresso")


def wait_for_bot_reply(bot: RunningBot, chat_id: int, reply_to: int) -> dict[str, Any]:
    def quoting(message: dict[str, Any]) -> bool:
        quoted = (message.get("reply_to_message") or {}).get("message_id")
        return bool(message["from_bot"]) and quoted == reply_to

    messages = bot.wait_for(chat_id, lambda messages: any(quoting(m) for m in messages), 60)
    return next(m for m in messages if quoting(m))


def test_an_album_gets_one_reply_with_a_line_and_buttons_per_photo(bot: RunningBot) -> None:
    """Four photos sent as an album: one reply, four numbered lines in order, 4 × ✅/❌."""
    user = 3050
    photos = [images.coffee_jpeg(), images.chelsea_jpeg()] * 2
    ids = [
        bot.send_photo(p, user_id=user, media_group_id="album-1", wait=0)["message"]["message_id"]
        for p in photos
    ]
    reply = wait_for_bot_reply(bot, user, ids[0])
    # All four in this one reply: each photo is answered once, so no other reply can follow.
    lines = reply["text"].splitlines()
    assert [line.split(".")[0] for line in lines] == ["1", "2", "3", "4"]
    assert lines[0].startswith("1. espresso") and lines[2].startswith("3. espresso")
    assert "espresso" not in lines[1] and "espresso" not in lines[3]
    keys = buttons(reply)
    assert {f"{n} ✅" for n in range(1, 5)} | {f"{n} ❌" for n in range(1, 5)} == set(keys)

    asked = edited(bot.press(reply["message_id"], keys["2 ❌"], user_id=user))
    assert "Photo 2: ❌ What is it?" in asked["text"]
    pick = next(d for d in buttons(asked).values() if ":c:" in d)
    done = edited(bot.press(reply["message_id"], pick, user_id=user))
    assert "❌ → " in done["text"].splitlines()[1]
    assert set(buttons(done)) == {f"{n} {m}" for n in (1, 3, 4) for m in ("✅", "❌")}
    right = edited(bot.press(reply["message_id"], buttons(done)["1 ✅"], user_id=user))
    assert right["text"].splitlines()[0].endswith("✅")
    assert len([m for m in bot.messages(user) if m["from_bot"]]) == 1  # one reply all along
