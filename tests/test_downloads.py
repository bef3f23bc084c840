"""Users' files fetched within bounds (bot/downloads.py); one refusal a day (bot/access.py)."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from telegram import Bot
from telegram.error import BadRequest, NetworkError

from bot.access import Refusals
from bot.downloads import Downloader, FileTooBig, PhotoSlots, reserved_bytes

TOKEN = "123456:DOWNLOADS-test"
LIMIT = 1_000_000
ME = {"id": 123456, "is_bot": True, "first_name": "Verdict", "username": "verdict_bot"}


async def get_me(request: web.Request) -> web.Response:
    return web.json_response({"ok": True, "result": ME})


class FileServer:
    """getFile plus a file URL that streams `size` bytes in chunks, with or without saying
    how many (Content-Length); counts what it managed to send."""

    def __init__(self) -> None:
        self.size = 0
        self.announce = True
        self.announced_size: int | None = None
        self.sent = 0
        self.app = web.Application()
        self.app.add_routes(
            [
                web.post("/bot{token}/getMe", get_me),
                web.post("/bot{token}/getFile", self.get_file),
                web.get("/file/bot{token}/{path}", self.file),
            ]
        )

    async def get_file(self, request: web.Request) -> web.Response:
        result: dict[str, object] = {"file_id": "f", "file_unique_id": "u", "file_path": "x.jpg"}
        if self.announced_size is not None:
            result["file_size"] = self.announced_size
        return web.json_response({"ok": True, "result": result})

    async def file(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        if self.announce:
            response.content_length = self.size
        await response.prepare(request)
        chunk = b"\xff" * 65536
        try:
            while self.sent < self.size:
                part = chunk[: self.size - self.sent]
                await response.write(part)
                self.sent += len(part)
        except (ConnectionError, asyncio.CancelledError):
            pass
        return response


@pytest.fixture
async def served() -> AsyncIterator[tuple[FileServer, Bot]]:
    server = FileServer()
    runner = web.AppRunner(server.app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        async with Bot(TOKEN, base_url=f"{url}/bot", base_file_url=f"{url}/file/bot") as bot:
            yield server, bot
    finally:
        await runner.cleanup()


async def test_a_file_within_the_limit_arrives_whole(served: tuple[FileServer, Bot]) -> None:
    server, bot = served
    server.size = LIMIT
    downloads = Downloader()
    try:
        assert await downloads.fetch(bot, "f", LIMIT) == b"\xff" * LIMIT
    finally:
        await downloads.aclose()


@pytest.mark.parametrize("announce", [True, False])
async def test_a_file_past_the_limit_is_refused_while_it_arrives(
    served: tuple[FileServer, Bot], announce: bool
) -> None:
    """Telegram said no size: 50 MB on the wire, the download stops just past the limit
    (at once when the server announces its length, after the limit otherwise)."""
    server, bot = served
    server.size, server.announce = 50 * LIMIT, announce
    downloads = Downloader()
    try:
        with pytest.raises(FileTooBig) as refused:
            await downloads.fetch(bot, "f", LIMIT)
    finally:
        await downloads.aclose()
    assert refused.value.limit == LIMIT and refused.value.size > LIMIT
    # What crossed is bounded by the limit plus what the sockets buffer, not the file's size.
    assert server.sent < 10 * LIMIT


async def test_sizes_telegram_tells_are_checked_before_downloading(
    served: tuple[FileServer, Bot],
) -> None:
    server, bot = served
    server.size = 10
    downloads = Downloader()
    try:
        with pytest.raises(FileTooBig):
            await downloads.fetch(bot, "f", LIMIT, size=LIMIT + 1)  # the message's size
        server.announced_size = LIMIT + 1  # getFile's
        with pytest.raises(FileTooBig):
            await downloads.fetch(bot, "f", LIMIT)
    finally:
        await downloads.aclose()
    assert server.sent == 0


async def test_download_failures_are_telegram_errors_without_the_token() -> None:
    async def missing(request: web.Request) -> web.Response:
        return web.json_response(
            {"ok": False, "error_code": 400, "description": "nope"}, status=400
        )

    app = web.Application()
    app.add_routes(
        [web.post("/bot{token}/getMe", get_me), web.post("/bot{token}/getFile", missing)]
    )
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    downloads = Downloader()
    try:
        async with Bot(TOKEN, base_url=f"{url}/bot", base_file_url=f"{url}/file/bot") as bot:
            with pytest.raises(BadRequest):
                await downloads.fetch(bot, "f", LIMIT)
            with pytest.raises(NetworkError) as failed:
                await downloads._stream(f"{url}/file/bot{TOKEN}/gone.jpg", LIMIT)
        assert TOKEN not in str(failed.value)
    finally:
        await downloads.aclose()
        await runner.cleanup()


def test_photo_slots_admit_up_to_their_capacity_and_budget() -> None:
    slots = PhotoSlots(3, budget_bytes=100)
    assert slots.take([10]) == 1
    assert slots.take([10] * 5) == 2  # an album gets what is left
    assert slots.take([10]) == 0 and slots.refused == 4
    slots.give_back([10] * 3)
    assert slots.take([60, 30, 20]) == 2  # the third would pass the budget
    assert slots.take([5]) == 1 and (slots.in_use, slots.bytes_in_use) == (3, 95)
    with pytest.raises(ValueError):
        slots.give_back([10] * 4)
    assert reserved_bytes(None, 20) == 20 and reserved_bytes(5, 20) == 5
    assert reserved_bytes(50, 20) == 20  # refused as too big before any byte arrives


def test_refusals_keep_only_todays_strangers() -> None:
    """One refusal a day each, and the ids of earlier days are forgotten: a flood of
    strangers costs one day's ids at most."""
    refusals = Refusals()
    monday, tuesday = dt.date(2026, 6, 1), dt.date(2026, 6, 2)
    assert all(refusals.first_today(user, monday) for user in range(10_000))
    assert not refusals.first_today(5, monday)
    assert len(refusals) == 10_000
    assert refusals.first_today(5, tuesday)  # a new day: told once more
    assert len(refusals) == 1
