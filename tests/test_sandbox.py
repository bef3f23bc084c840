"""Tests for the sandbox (sandbox/), driving the real python-telegram-bot client over HTTP."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import pathlib
import re
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from PIL import Image
from telegram import (
    Bot,
    BotCommand,
    BotCommandScopeAllPrivateChats,
    BotCommandScopeChat,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    ReplyParameters,
    Update,
)
from telegram.constants import ChatAction
from telegram.error import BadRequest, Conflict, InvalidToken
from telegram.ext import (
    ApplicationBuilder,
    CallbackQueryHandler,
    ContextTypes,
    MessageHandler,
    filters,
)

from sandbox import Sandbox, SandboxThread

TOKEN = "123456:SANDBOX-test_token-XYZ"
USER = 1001

JSON = dict[str, Any]


# --------------------------------------------------------------------------- helpers


def make_jpeg(width: int, height: int, color: tuple[int, int, int] = (200, 60, 30)) -> bytes:
    """A solid-colour JPEG of the given size."""
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, "JPEG")
    return buffer.getvalue()


def keyboard(*data: str) -> InlineKeyboardMarkup:
    """A one-row inline keyboard with one button per callback_data."""
    return InlineKeyboardMarkup([[InlineKeyboardButton(d, callback_data=d) for d in data]])


async def send_user(
    http: aiohttp.ClientSession,
    url: str,
    *,
    files: dict[str, tuple[bytes, str, str]] | None = None,
    query: str = "",
    **fields: Any,
) -> JSON:
    """POST /_sandbox/send as JSON, or as multipart when files are given."""
    endpoint = f"{url}/_sandbox/send{query}"
    if files:
        form = aiohttp.FormData()
        for name, value in fields.items():
            form.add_field(name, str(value))
        for name, (data, filename, content_type) in files.items():
            form.add_field(name, data, filename=filename, content_type=content_type)
        response = await http.post(endpoint, data=form)
    else:
        response = await http.post(endpoint, json=fields)
    body: JSON = await response.json()
    assert response.status == 200, body
    return body


async def get_json(http: aiohttp.ClientSession, url: str) -> JSON:
    """GET a test API URL and return its JSON body."""
    response = await http.get(url)
    body: JSON = await response.json()
    return body


async def raw_call(
    http: aiohttp.ClientSession, url: str, method: str, token: str = TOKEN, **kwargs: Any
) -> tuple[int, JSON]:
    """Call a Bot API method without PTB; return (status, body)."""
    response = await http.post(f"{url}/bot{token}/{method}", **kwargs)
    body: JSON = await response.json()
    return response.status, body


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    box = Sandbox(TOKEN)
    await box.start()
    try:
        yield box
    finally:
        await box.stop()


@pytest.fixture
async def url(sandbox: Sandbox) -> str:
    return sandbox.url


@pytest.fixture
async def bot(url: str) -> AsyncIterator[Bot]:
    async with Bot(TOKEN, base_url=f"{url}/bot", base_file_url=f"{url}/file/bot") as client:
        yield client


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


# --------------------------------------------------------------------------- Bot API basics


async def test_get_me(bot: Bot) -> None:
    me = await bot.get_me()
    assert me.id == 123456
    assert me.is_bot
    assert me.username == "verdict_sandbox_bot"
    assert me.first_name == "Verdict"
    assert me.can_join_groups is True


async def test_wrong_token_and_unknown_method(url: str, http: aiohttp.ClientSession) -> None:
    wrong = Bot("123456:WRONG", base_url=f"{url}/bot", base_file_url=f"{url}/file/bot")
    with pytest.raises(InvalidToken):
        async with wrong:  # initialize() calls getMe
            pass
    status, body = await raw_call(http, url, "getMe", token="123456:WRONG")
    assert (status, body) == (401, {"ok": False, "error_code": 401, "description": "Unauthorized"})
    status, body = await raw_call(http, url, "noSuchMethod")
    assert (status, body) == (404, {"ok": False, "error_code": 404, "description": "Not Found"})
    status, body = await raw_call(http, url, "GETME")  # method names are case-insensitive
    assert status == 200 and body["result"]["username"] == "verdict_sandbox_bot"


async def test_bad_requests_are_400_not_500(
    url: str, bot: Bot, http: aiohttp.ClientSession
) -> None:
    await send_user(http, url, text="hi")
    cases: list[tuple[JSON, str]] = [
        ({"chat_id": "999", "text": "x"}, "Bad Request: chat not found"),
        ({"chat_id": "@nobody", "text": "x"}, "Bad Request: chat not found"),
        ({"chat_id": str(USER), "text": ""}, "Bad Request: message text is empty"),
        ({"chat_id": str(USER), "text": "a" * 4097}, "Bad Request: message is too long"),
        (
            {"chat_id": str(USER), "text": "x", "reply_markup": "{not json"},
            "Bad Request: can't parse reply keyboard markup JSON object",
        ),
    ]
    for data, description in cases:
        status, body = await raw_call(http, url, "sendMessage", data=data)
        assert status == 400, body
        assert body == {"ok": False, "error_code": 400, "description": description}
    status, body = await raw_call(
        http, url, "sendMessage", data=b"{broken", headers={"Content-Type": "application/json"}
    )
    assert status == 400 and body["description"].startswith("Bad Request:")
    status, body = await raw_call(http, url, "getFile", data={"file_id": "nope"})
    assert (
        body["description"] == "Bad Request: wrong file_id or the file is temporarily unavailable"
    )
    # JSON bodies and the query string are accepted too.
    status, body = await raw_call(http, url, "sendMessage", json={"chat_id": USER, "text": "j"})
    assert status == 200 and body["result"]["text"] == "j"
    response = await http.get(f"{url}/bot{TOKEN}/sendMessage?chat_id={USER}&text=q")
    assert (await response.json())["result"]["text"] == "q"
    assert len(await bot.get_updates()) == 1


# --------------------------------------------------------------------------- getUpdates


async def test_get_updates_offset_confirms(
    bot: Bot, url: str, http: aiohttp.ClientSession
) -> None:
    first = await send_user(http, url, text="one")
    second = await send_user(http, url, text="two")
    assert second["update_id"] == first["update_id"] + 1
    updates = await bot.get_updates()
    assert [u.message.text for u in updates if u.message] == ["one", "two"]
    updates = await bot.get_updates(offset=first["update_id"] + 1)
    assert [u.update_id for u in updates] == [second["update_id"]]
    # The first update was confirmed: it is not returned again, even without offset.
    assert [u.update_id for u in await bot.get_updates()] == [second["update_id"]]
    assert await bot.get_updates(offset=second["update_id"] + 1) == ()
    assert await bot.get_updates() == ()
    third = await send_user(http, url, text="three")
    assert [u.update_id for u in await bot.get_updates(limit=5)] == [third["update_id"]]


async def test_get_updates_long_poll_times_out_empty(bot: Bot) -> None:
    started = time.monotonic()
    assert await bot.get_updates(timeout=1) == ()
    assert 0.9 <= time.monotonic() - started < 2.5


async def test_get_updates_long_poll_returns_new_update_promptly(
    bot: Bot, url: str, http: aiohttp.ClientSession
) -> None:
    poll = asyncio.create_task(bot.get_updates(timeout=10))
    await asyncio.sleep(0.3)
    assert not poll.done()
    sent_at = time.monotonic()
    await send_user(http, url, text="wake up")
    updates = await asyncio.wait_for(poll, 3)
    assert time.monotonic() - sent_at < 1.5
    assert [u.message.text for u in updates if u.message] == ["wake up"]


async def test_second_poller_supersedes_first(url: str, http: aiohttp.ClientSession) -> None:
    params = {"timeout": "5"}
    older = asyncio.create_task(raw_call(http, url, "getUpdates", data=params))
    await asyncio.sleep(0.3)
    newer = asyncio.create_task(raw_call(http, url, "getUpdates", data=params))
    status, body = await asyncio.wait_for(older, 2)
    assert (status, body) == (200, {"ok": True, "result": []})
    await send_user(http, url, text="for the newer poller")
    status, body = await asyncio.wait_for(newer, 2)
    assert body["result"][0]["message"]["text"] == "for the newer poller"


async def test_webhook_blocks_get_updates(bot: Bot) -> None:
    assert await bot.set_webhook("https://example.invalid/hook")
    assert (await bot.get_webhook_info()).url == "https://example.invalid/hook"
    with pytest.raises(Conflict):
        await bot.get_updates()
    assert await bot.delete_webhook()
    info = await bot.get_webhook_info()
    assert info.url == "" and info.pending_update_count == 0
    assert await bot.get_updates() == ()


async def test_a_webhook_post_answered_non_2xx_is_delivered_again(
    bot: Bot, url: str, http: aiohttp.ClientSession
) -> None:
    """As Telegram does: an update the webhook refused (500) is posted again until a 2xx."""
    from aiohttp import web

    posted: list[int] = []
    accepted = asyncio.Event()

    async def hook(request: web.Request) -> web.Response:
        posted.append(int((await request.json())["update_id"]))
        if len(posted) == 1:
            return web.Response(status=500)
        accepted.set()
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        assert await bot.set_webhook(f"http://127.0.0.1:{port}/hook")
        sent = await send_user(http, url, text="retry me")
        await asyncio.wait_for(accepted.wait(), 10)
        assert posted == [sent["update_id"]] * 2
        info = await bot.get_webhook_info()
        assert info.pending_update_count == 0 and "500" in (info.last_error_message or "")
    finally:
        await bot.delete_webhook()
        await runner.cleanup()


# --------------------------------------------------------------------------- files


async def test_user_photo_arrives_with_sizes_and_downloads(
    bot: Bot, url: str, http: aiohttp.ClientSession
) -> None:
    sent = await send_user(
        http,
        url,
        files={"photo": (make_jpeg(1600, 1200), "cat.jpg", "image/jpeg")},
        caption="what is this?",
    )
    (update,) = await bot.get_updates()
    message = update.message
    assert message is not None and message.message_id == sent["message"]["message_id"]
    assert message.caption == "what is this?"
    assert [(p.width, p.height) for p in message.photo] == [
        (90, 68),
        (320, 240),
        (800, 600),
        (1280, 960),
    ]
    assert len({p.file_id for p in message.photo}) == 4
    assert len({p.file_unique_id for p in message.photo}) == 4
    largest = message.photo[-1]
    file = await bot.get_file(largest.file_id)
    assert file.file_path is not None and "photos/" in file.file_path
    data = await file.download_as_bytearray()
    assert len(data) == largest.file_size
    image = Image.open(io.BytesIO(bytes(data)))
    assert image.format == "JPEG" and image.size == (1280, 960)
    # A small photo keeps its size as the largest rendition.
    await send_user(http, url, files={"photo": (make_jpeg(200, 100), "s.jpg", "image/jpeg")})
    (small,) = await bot.get_updates(offset=update.update_id + 1)
    assert small.message is not None
    assert [(p.width, p.height) for p in small.message.photo] == [(90, 45), (200, 100)]


async def test_user_non_image_photo_is_rejected(url: str, http: aiohttp.ClientSession) -> None:
    form = aiohttp.FormData()
    form.add_field("photo", b"definitely not a jpeg", filename="x.jpg", content_type="image/jpeg")
    response = await http.post(f"{url}/_sandbox/send", data=form)
    assert response.status == 400
    assert await response.json() == {"ok": False, "description": "not an image"}


async def test_user_document_is_byte_identical(
    bot: Bot, url: str, http: aiohttp.ClientSession
) -> None:
    payload = os.urandom(5000)
    await send_user(http, url, files={"document": (payload, "report.pdf", "application/pdf")})
    (update,) = await bot.get_updates()
    document = update.message.document if update.message else None
    assert document is not None
    assert (document.file_name, document.mime_type, document.file_size) == (
        "report.pdf",
        "application/pdf",
        5000,
    )
    file = await bot.get_file(document.file_id)
    assert file.file_path is not None and file.file_path.endswith(".pdf")
    assert bytes(await file.download_as_bytearray()) == payload
    raw = await http.get(f"{url}/_sandbox/files/{document.file_id}")
    assert await raw.read() == payload and raw.content_type == "application/pdf"
    missing = await http.get(f"{url}/file/bot{TOKEN}/documents/nope.pdf")
    assert missing.status == 404


async def test_document_size_override_is_too_big_to_download(
    bot: Bot, url: str, http: aiohttp.ClientSession
) -> None:
    big = 25 * 1024 * 1024
    await send_user(
        http,
        url,
        files={"document": (b"small really", "huge.bin", "application/octet-stream")},
        file_size=big,
    )
    (update,) = await bot.get_updates()
    document = update.message.document if update.message else None
    assert document is not None and document.file_size == big
    with pytest.raises(BadRequest, match=r"(?i)file is too big"):
        await bot.get_file(document.file_id)


@pytest.mark.parametrize("kind", ["sticker", "video", "voice", "animation"])
async def test_other_media_kinds_parse_in_ptb(
    bot: Bot, url: str, http: aiohttp.ClientSession, kind: str
) -> None:
    sent = await send_user(http, url, kind=kind, chat_type="group", chat_id=-77, caption="c")
    message = Update.de_json({"update_id": 1, "message": sent["message"]}, bot).message
    assert message is not None and getattr(message, kind) is not None
    assert message.chat.type == "group" and message.chat.title == "Sandbox group"
    file = await bot.get_file(getattr(message, kind).file_id)
    assert len(await file.download_as_bytearray()) > 0


async def test_bot_sends_photo_by_upload_and_by_file_id(
    bot: Bot, url: str, http: aiohttp.ClientSession
) -> None:
    await send_user(http, url, text="/start")
    sent = await bot.send_photo(USER, make_jpeg(500, 300), caption="here")
    assert sent.photo[-1].width == 500 and sent.photo[-1].height == 300
    assert sent.caption == "here"
    again = await bot.send_photo(USER, sent.photo[-1].file_id)
    assert [p.file_id for p in again.photo] == [p.file_id for p in sent.photo]
    document = await bot.send_document(USER, b"hello", filename="notes.txt")
    assert document.document is not None and document.document.file_name == "notes.txt"
    file = await bot.get_file(document.document.file_id)
    assert bytes(await file.download_as_bytearray()) == b"hello"
    with pytest.raises(BadRequest, match=r"(?i)IMAGE_PROCESS_FAILED"):
        await bot.send_photo(USER, b"not an image at all")


# --------------------------------------------------------------------------- messages


async def test_reply_and_keyboard_visible_in_chat(
    bot: Bot, url: str, http: aiohttp.ClientSession
) -> None:
    sent = await send_user(http, url, text="/start now")
    assert sent["message"]["entities"] == [{"type": "bot_command", "offset": 0, "length": 6}]
    user_message_id = sent["message"]["message_id"]
    reply = await bot.send_message(
        USER,
        "<b>Hello</b>",
        parse_mode="HTML",
        reply_parameters=ReplyParameters(user_message_id),
        reply_markup=keyboard("yes", "no"),
    )
    assert reply.reply_to_message is not None
    assert reply.reply_to_message.message_id == user_message_id
    body = await get_json(http, f"{url}/_sandbox/chats/{USER}/messages")
    first, second = body["messages"]
    assert (first["from_bot"], second["from_bot"]) == (False, True)
    assert second["reply_to_message"]["message_id"] == user_message_id
    assert "reply_to_message" not in second["reply_to_message"]
    assert [b["callback_data"] for b in second["reply_markup"]["inline_keyboard"][0]] == [
        "yes",
        "no",
    ]
    assert second["parse_mode"] == "HTML" and second["edits"] == 0
    with pytest.raises(BadRequest, match=r"(?i)message to be replied not found"):
        await bot.send_message(USER, "x", reply_parameters=ReplyParameters(999))
    missing = await http.get(f"{url}/_sandbox/chats/4242/messages")
    assert missing.status == 404


async def test_button_press_answer_and_edit(
    bot: Bot, url: str, http: aiohttp.ClientSession
) -> None:
    await send_user(http, url, text="hi")
    offered = await bot.send_message(USER, "Is it a cat?", reply_markup=keyboard("yes", "no"))
    bad = await http.post(
        f"{url}/_sandbox/press", json={"message_id": offered.message_id, "data": "maybe"}
    )
    assert bad.status == 400
    pressed = await (
        await http.post(
            f"{url}/_sandbox/press", json={"message_id": offered.message_id, "data": "no"}
        )
    ).json()
    assert pressed["ok"] and pressed["answer"] is None
    updates = await bot.get_updates()
    query = updates[-1].callback_query
    assert query is not None and query.id == pressed["callback_query_id"]
    assert updates[-1].update_id == pressed["update_id"]
    assert query.data == "no" and query.from_user.id == USER and query.chat_instance
    assert query.message is not None and query.message.message_id == offered.message_id
    assert await query.answer("Thanks!", show_alert=True)
    with pytest.raises(BadRequest, match=r"(?i)query is too old"):
        await query.answer("twice")
    edited = await query.edit_message_text("Noted: not a cat")
    assert not isinstance(edited, bool) and edited.edit_date is not None
    assert edited.reply_markup is None  # omitted reply_markup removes the keyboard
    body = await get_json(http, f"{url}/_sandbox/chats/{USER}/messages")
    assert body["messages"][-1]["text"] == "Noted: not a cat"
    assert body["messages"][-1]["edits"] == 1
    events = (await get_json(http, f"{url}/_sandbox/events?since=0"))["events"]
    answers = [e for e in events if e["type"] == "callback_answer"]
    assert answers[0]["answer"] == {"text": "Thanks!", "show_alert": True}
    assert any(e["type"] == "edit" for e in events)


async def test_edit_to_identical_content_is_not_modified(
    bot: Bot, url: str, http: aiohttp.ClientSession
) -> None:
    await send_user(http, url, text="hi")
    message = await bot.send_message(USER, "same", reply_markup=keyboard("a"))
    with pytest.raises(BadRequest, match=r"(?i)message is not modified"):
        await bot.edit_message_text("same", USER, message.message_id, reply_markup=keyboard("a"))
    with pytest.raises(BadRequest, match=r"(?i)message is not modified"):
        await bot.edit_message_reply_markup(USER, message.message_id, reply_markup=keyboard("a"))
    changed = await bot.edit_message_reply_markup(
        USER, message.message_id, reply_markup=keyboard("b")
    )
    assert not isinstance(changed, bool) and changed.text == "same"
    with pytest.raises(BadRequest, match=r"(?i)message to edit not found"):
        await bot.edit_message_text("x", USER, 999)
    with pytest.raises(BadRequest, match=r"(?i)there is no caption in the message to edit"):
        await bot.edit_message_caption(USER, message.message_id, caption="c")


async def test_callback_data_longer_than_64_bytes_is_rejected(
    bot: Bot, url: str, http: aiohttp.ClientSession
) -> None:
    await send_user(http, url, text="hi")
    with pytest.raises(BadRequest, match=r"(?i)BUTTON_DATA_INVALID"):
        await bot.send_message(USER, "x", reply_markup=keyboard("x" * 65))
    with pytest.raises(BadRequest, match=r"(?i)BUTTON_DATA_INVALID"):
        await bot.send_message(USER, "x", reply_markup=keyboard("é" * 33))  # 66 bytes
    ok = await bot.send_message(USER, "x", reply_markup=keyboard("x" * 64))
    assert ok.reply_markup is not None


async def test_delete_message(bot: Bot, url: str, http: aiohttp.ClientSession) -> None:
    await send_user(http, url, text="hi")
    message = await bot.send_message(USER, "temporary")
    assert await bot.delete_message(USER, message.message_id)
    body = await get_json(http, f"{url}/_sandbox/chats/{USER}/messages")
    assert [m["text"] for m in body["messages"]] == ["hi"]
    with pytest.raises(BadRequest, match=r"(?i)message to delete not found"):
        await bot.delete_message(USER, message.message_id)


async def test_commands_are_kept_per_scope(bot: Bot) -> None:
    await bot.set_my_commands([BotCommand("start", "Start")])
    await bot.set_my_commands([BotCommand("help", "Help")], scope=BotCommandScopeChat(5))
    assert [c.command for c in await bot.get_my_commands()] == ["start"]
    chat_commands = await bot.get_my_commands(scope=BotCommandScopeChat(5))
    assert [c.command for c in chat_commands] == ["help"]
    assert await bot.get_my_commands(scope=BotCommandScopeAllPrivateChats()) == ()
    assert await bot.delete_my_commands(scope=BotCommandScopeChat(5))
    assert await bot.get_my_commands(scope=BotCommandScopeChat(5)) == ()
    assert [c.command for c in await bot.get_my_commands()] == ["start"]
    with pytest.raises(BadRequest, match=r"(?i)BOT_COMMAND_INVALID"):
        await bot.set_my_commands([BotCommand("Bad Command", "x")])
    assert await bot.set_chat_menu_button()


# --------------------------------------------------------------------------- test API


async def test_send_wait_and_press_wait_with_ptb_application(
    url: str, http: aiohttp.ClientSession
) -> None:
    async def on_photo(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.message is not None and update.effective_chat is not None
        await context.bot.send_chat_action(update.effective_chat.id, ChatAction.TYPING)
        largest = update.message.photo[-1]
        await update.message.reply_text(
            f"{largest.width}x{largest.height}", do_quote=True, reply_markup=keyboard("wrong")
        )

    async def on_text(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.message is not None and update.message.text is not None
        await update.message.reply_text(f"echo: {update.message.text}")  # not quoting

    async def on_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        assert query is not None
        await query.answer("Thanks")
        await query.edit_message_text("Noted")

    application = (
        ApplicationBuilder()
        .token(TOKEN)
        .base_url(f"{url}/bot")
        .base_file_url(f"{url}/file/bot")
        .build()
    )
    application.add_handler(MessageHandler(filters.PHOTO, on_photo))
    application.add_handler(MessageHandler(filters.TEXT, on_text))
    application.add_handler(CallbackQueryHandler(on_button))
    async with application:
        await application.start()
        assert application.updater is not None
        await application.updater.start_polling(timeout=2)
        try:
            sent = await send_user(
                http,
                url,
                query="?wait=10",
                files={"photo": (make_jpeg(640, 480), "cat.jpg", "image/jpeg")},
            )
            (reply,) = sent["replies"]
            assert reply["text"] == "640x480" and reply["from_bot"] is True
            assert reply["reply_to_message"]["message_id"] == sent["message"]["message_id"]

            press = await http.post(
                f"{url}/_sandbox/press",
                json={"message_id": reply["message_id"], "data": "wrong", "wait": 10},
            )
            pressed = await press.json()
            assert pressed["answer"] == {"text": "Thanks", "show_alert": False}
            assert [m["text"] for m in pressed["messages"]] == ["Noted"]

            echoed = await send_user(http, url, text="hello", wait=10)
            assert [r["text"] for r in echoed["replies"]] == ["echo: hello"]
            assert "reply_to_message" not in echoed["replies"][0]
        finally:
            await application.updater.stop()
            await application.stop()
    calls = (await get_json(http, f"{url}/_sandbox/calls?method=sendchataction"))["calls"]
    assert [c["params"] for c in calls] == [{"chat_id": USER, "action": "typing"}]
    assert {c["method"] for c in calls} == {"sendChatAction"}


async def test_send_wait_times_out_without_reply(url: str, http: aiohttp.ClientSession) -> None:
    started = time.monotonic()
    sent = await send_user(http, url, text="anyone?", wait=0.5)
    assert sent["replies"] == []
    assert 0.4 <= time.monotonic() - started < 2


async def test_events_long_poll_returns_new_event(
    bot: Bot, url: str, http: aiohttp.ClientSession
) -> None:
    await send_user(http, url, text="hi")
    current = await get_json(http, f"{url}/_sandbox/events?since=0")
    assert [e["type"] for e in current["events"]] == ["message"]
    seq = current["seq"]
    poll = asyncio.create_task(get_json(http, f"{url}/_sandbox/events?since={seq}&timeout=5"))
    await asyncio.sleep(0.3)
    assert not poll.done()
    await bot.send_chat_action(USER, ChatAction.TYPING)
    body = await asyncio.wait_for(poll, 2)
    (event,) = body["events"]
    assert event["type"] == "chat_action" and event["action"] == "typing"
    assert event["chat_id"] == USER and event["seq"] == seq + 1 == body["seq"]
    empty = await get_json(http, f"{url}/_sandbox/events?since={body['seq']}&timeout=0.2")
    assert empty["events"] == []


async def test_group_chat_and_reset(bot: Bot, url: str, http: aiohttp.ClientSession) -> None:
    sent = await send_user(
        http, url, text="hello group", user_id=7, first_name="Ann", chat_id=-100, chat_type="group"
    )
    assert sent["message"]["chat"] == {"id": -100, "type": "group", "title": "Sandbox group"}
    assert sent["message"]["from"]["first_name"] == "Ann"
    mismatch = await http.post(
        f"{url}/_sandbox/send", json={"text": "x", "chat_id": -100, "chat_type": "private"}
    )
    assert mismatch.status == 400
    await bot.send_message(-100, "hi Ann")
    assert await http.post(f"{url}/_sandbox/reset")
    assert (await http.get(f"{url}/_sandbox/chats/-100/messages")).status == 404
    assert (await get_json(http, f"{url}/_sandbox/calls"))["calls"] == []
    assert (await get_json(http, f"{url}/_sandbox/events"))["events"] == []
    after = await send_user(http, url, text="again")
    assert after["update_id"] > sent["update_id"]  # update ids keep increasing
    assert [u.message.text for u in await bot.get_updates() if u.message] == ["again"]


async def test_token_is_never_logged(
    sandbox: Sandbox, url: str, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    # Raw aiohttp requests only: PTB and httpx themselves log URLs that contain the token.
    caplog.set_level(logging.DEBUG)
    await send_user(http, url, files={"document": (b"abc", "a.txt", "text/plain")})
    status, body = await raw_call(http, url, "getUpdates")
    file_id = body["result"][0]["message"]["document"]["file_id"]
    status, body = await raw_call(http, url, "getFile", data={"file_id": file_id})
    quoted = urllib.parse.quote(TOKEN, safe="")
    download = await http.get(f"{url}/file/bot{quoted}/{body['result']['file_path']}")
    assert await download.read() == b"abc"
    await raw_call(http, url, "sendMessage", data={"chat_id": "1", "text": TOKEN})
    await raw_call(http, url, "getMe", token="123456:WRONG")

    async def explode(params: Any) -> Any:
        raise RuntimeError(f"broken while handling {TOKEN}")

    # aiohttp itself logs the raw request line of an over-long request.
    too_long = await http.get(f"{url}/bot{TOKEN}/getMe?padding={'x' * 9000}")
    assert too_long.status == 400

    sandbox._bot_api._methods["getme"] = ("getMe", explode)
    status, body = await raw_call(http, url, "getMe")
    assert status == 500 and body["ok"] is False

    messages = [record.getMessage() for record in caplog.records]
    assert any("<token>" in message for message in messages)  # the 500 was logged, redacted
    assert any(record.name.startswith("sandbox") for record in caplog.records)
    assert any(record.name == "aiohttp.server" for record in caplog.records)
    for message in messages:
        assert TOKEN not in message and quoted not in message
    assert TOKEN not in caplog.text and quoted not in caplog.text  # tracebacks included


def test_sandbox_thread_serves_sync_clients() -> None:
    with SandboxThread(TOKEN) as thread:
        base = thread.url
        with urllib.request.urlopen(f"{base}/bot{TOKEN}/getMe", timeout=5) as response:
            body = json.loads(response.read())
        assert body["ok"] is True and body["result"]["id"] == 123456
        request = urllib.request.Request(
            f"{thread.url}/_sandbox/send",
            data=json.dumps({"text": "from a thread"}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            assert json.loads(response.read())["message"]["text"] == "from a thread"
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{base}/bot{TOKEN}/getMe", timeout=1)


def test_the_sandbox_takes_only_the_token_redaction_from_the_bot() -> None:
    """A separate part of the tree: nothing of the bot's handlers, of telegram or of model/."""
    code = (
        "import sys; import sandbox, sandbox.__main__; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('bot', 'model', 'training', 'telegram', 'torch')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "['bot', 'bot.logs']"


def _ignore_sigint() -> None:
    """What a shell does to a job it starts in the background (``python -m sandbox &``)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.parametrize(
    ("stop_with", "background"),
    [(signal.SIGINT, False), (signal.SIGINT, True), (signal.SIGTERM, False)],
    ids=["ctrl-c", "ctrl-c-background-job", "sigterm"],
)
def test_python_m_sandbox_serves_alone_and_says_how_to_point_a_bot_at_it(
    tmp_path: pathlib.Path, stop_with: signal.Signals, background: bool
) -> None:
    """It stops cleanly on SIGINT, also when started with SIGINT ignored (Python then leaves
    the signal ignored, so only the loop's own handler sees it), and on SIGTERM."""
    process = subprocess.Popen(
        [sys.executable, "-m", "sandbox", "--port", "0", "--token", TOKEN],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_ignore_sigint if background else None,
    )
    try:
        assert process.stdout is not None
        printed = [process.stdout.readline() for _ in range(3)]
        match = re.search(r"chat page: (http://\S+)/$", printed[0])
        assert match, printed
        url = match.group(1)
        assert printed[2].strip() == f"TELEGRAM_API_URL={url} TELEGRAM_TOKEN=<token> python -m bot"
        with urllib.request.urlopen(f"{url}/bot{TOKEN}/getMe", timeout=5) as response:
            assert json.loads(response.read())["result"]["username"] == "verdict_sandbox_bot"
    finally:
        process.send_signal(stop_with)
        try:
            out, err = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()  # it did not stop: fail, leaving no process behind
            process.communicate()
            raise
    assert process.returncode == 0, err
    assert "sandbox: interrupted" in err and "sandbox: stopped" in err
    for text in [*printed, out, err]:
        assert TOKEN not in text and urllib.parse.quote(TOKEN, safe="") not in text


# --------------------------------------------------------------------------- who may play whom

PAGE_ADMIN = 4242
OTHER_ADMIN = 4343


async def post_form(
    http: aiohttp.ClientSession, url: str, headers: dict[str, str] | None = None, **fields: Any
) -> tuple[int, JSON]:
    response = await http.post(
        url, data={k: str(v) for k, v in fields.items()}, headers=headers or {}
    )
    body: JSON = await response.json()
    return response.status, body


async def test_other_sites_pages_cannot_use_the_apis(
    sandbox: Sandbox, url: str, http: aiohttp.ClientSession
) -> None:
    """A page of another site open in the same browser posts to 127.0.0.1: refused, and
    nothing reaches the bot; the sandbox's own page, curl and the bot are served."""
    send = f"{url}/_sandbox/send"
    host = url.removeprefix("http://")
    cross = [
        {"Origin": "https://evil.example"},
        {"Origin": "null"},  # a sandboxed iframe, a file:// page
        {"Origin": f"http://{host}.evil.example"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},  # another port of 127.0.0.1 is another origin
        {"Origin": url, "Sec-Fetch-Site": "cross-site"},
    ]
    for headers in cross:
        status, body = await post_form(http, send, headers, text="as you")
        assert (status, body["ok"]) == (403, False), headers
        assert "cross-origin" in body["description"]
    status, _ = await post_form(
        http, f"{url}/bot{TOKEN}/sendMessage", {"Origin": "https://evil.example"}, chat_id=1001
    )
    assert status == 403
    assert sandbox.state.chats == {}
    assert not [call for call in sandbox.state.calls if call["method"] == "sendMessage"]
    for headers in ({}, {"Origin": url}, {"Sec-Fetch-Site": "same-origin"}):
        status, body = await post_form(http, send, headers, text="hello")
        assert status == 200, (headers, body)
    # The chat page itself may be linked from anywhere.
    page = await http.get(f"{url}/", headers={"Sec-Fetch-Site": "cross-site"})
    assert page.status == 200


async def test_the_test_api_plays_no_admin_but_the_pages_own_from_the_page(
    http: aiohttp.ClientSession,
) -> None:
    """Started by `python -m bot` (not for tests): other admins are never played, the page's
    admin only from the page (same origin); anyone else from anywhere."""
    box = Sandbox(TOKEN, page_admin_id=PAGE_ADMIN, admin_ids={PAGE_ADMIN, OTHER_ADMIN})
    url = await box.start()
    try:
        send, press = f"{url}/_sandbox/send", f"{url}/_sandbox/press"
        page = {"Origin": url, "Sec-Fetch-Site": "same-origin"}
        status, body = await post_form(http, send, page, text="/stats", user_id=OTHER_ADMIN)
        assert status == 403 and "page_admin_id" in body["description"]
        status, body = await post_form(http, send, text="/stats", user_id=PAGE_ADMIN)
        assert status == 403 and "only the chat page" in body["description"]
        assert box.state.chat(PAGE_ADMIN) is None and box.state.chat(OTHER_ADMIN) is None

        status, body = await post_form(http, send, page, text="/stats", user_id=PAGE_ADMIN)
        assert status == 200, body
        status, _ = await post_form(http, send, text="hi", user_id=777)  # curl, as a user
        assert status == 200
        async with Bot(TOKEN, base_url=f"{url}/bot", base_file_url=f"{url}/file/bot") as bot:
            sent = await bot.send_message(PAGE_ADMIN, "admin?", reply_markup=keyboard("go"))
        status, body = await post_form(
            http, press, message_id=sent.message_id, data="go", user_id=PAGE_ADMIN
        )
        assert status == 403, body
        status, body = await post_form(
            http, press, page, message_id=sent.message_id, data="go", user_id=PAGE_ADMIN
        )
        assert status == 200, body
    finally:
        await box.stop()


async def test_a_sandbox_for_tests_plays_any_admin(http: aiohttp.ClientSession) -> None:
    box = Sandbox(TOKEN, page_admin_id=PAGE_ADMIN, admin_ids={OTHER_ADMIN}, for_tests=True)
    url = await box.start()
    try:
        for user in (PAGE_ADMIN, OTHER_ADMIN):
            status, body = await post_form(http, f"{url}/_sandbox/send", text="/s", user_id=user)
            assert status == 200, body
        status, _ = await post_form(
            http, f"{url}/_sandbox/send", {"Origin": "https://evil.example"}, text="x"
        )
        assert status == 403  # tests or not, other sites' pages are refused
    finally:
        await box.stop()
