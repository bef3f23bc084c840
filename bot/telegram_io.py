"""Two Bot API calls made the same way everywhere: downloading a file, editing a message."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from telegram import CallbackQuery, InlineKeyboardMarkup
from telegram.error import BadRequest


class FileTooBig(Exception):
    """The file is over the download limit (ours, or Telegram's 20 MB for bots)."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"{size} bytes, over the limit of {limit}")
        self.size = size
        self.limit = limit


async def download(bot: Any, file_id: str, limit: int, size: int | None = None) -> bytes:
    """The bytes of a Telegram file; `FileTooBig` past `limit` (checked before downloading
    when Telegram told the size); other Bot API failures raise `TelegramError`."""
    if size is not None and size > limit:
        raise FileTooBig(size, limit)
    try:
        file = await bot.get_file(file_id)
        data = bytes(await file.download_as_bytearray())
    except BadRequest as exc:
        if "too big" in exc.message.lower():
            raise FileTooBig(size if size is not None else limit + 1, limit) from None
        raise
    if len(data) > limit:
        raise FileTooBig(len(data), limit)
    return data


@contextlib.contextmanager
def not_modified_ok() -> Iterator[None]:
    """Let "message is not modified" pass (a repeated tap, an unchanged progress line)."""
    try:
        yield
    except BadRequest as exc:
        if "not modified" not in exc.message.lower():
            raise


async def edit(
    query: CallbackQuery,
    *,
    text: str | None = None,
    reply_markup: InlineKeyboardMarkup | None = None,
) -> None:
    """Edit the message under the tapped buttons: its text and keyboard, or the keyboard."""
    with not_modified_ok():
        if text is None:
            await query.edit_message_reply_markup(reply_markup=reply_markup)
        else:
            await query.edit_message_text(text, reply_markup=reply_markup)
