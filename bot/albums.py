"""Gathers the photos of an album (one `media_group_id`) so that they are answered together.

Telegram delivers an album as separate updates a few milliseconds apart; the album is handed
to its answer once no new photo of it arrived for `wait_s`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from telegram import Message

    from bot.context import Ctx

AnswerAlbum = Callable[["list[Message]", "Ctx"], Awaitable[None]]


@dataclass
class _Album:
    messages: list[Message]
    last: float


class AlbumCollector:
    """The albums being gathered, per chat; one lives in `Services`."""

    def __init__(self, wait_s: float) -> None:
        self.wait_s = wait_s
        self._albums: dict[tuple[int, str], _Album] = {}

    def add(self, message: Message, context: Ctx, answer: AnswerAlbum) -> None:
        """Add a photo; the first photo of an album schedules `answer(messages, context)`,
        called with the album's photos in message order."""
        assert message.media_group_id is not None
        key = (message.chat_id, message.media_group_id)
        now = asyncio.get_running_loop().time()
        album = self._albums.get(key)
        if album is not None:
            album.messages.append(message)
            album.last = now
            return
        self._albums[key] = _Album([message], now)
        # Through the application, so that a shutdown waits for the answer.
        context.application.create_task(self._answer_when_complete(key, context, answer))

    async def _answer_when_complete(
        self, key: tuple[int, str], context: Ctx, answer: AnswerAlbum
    ) -> None:
        loop = asyncio.get_running_loop()
        while True:
            album = self._albums[key]
            remaining = album.last + self.wait_s - loop.time()
            if remaining <= 0:
                break
            await asyncio.sleep(remaining)
        del self._albums[key]
        await answer(sorted(album.messages, key=lambda m: m.message_id), context)
