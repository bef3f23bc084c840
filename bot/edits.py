"""Editing a message the same way everywhere: "message is not modified" is not an error."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from telegram import CallbackQuery, InlineKeyboardMarkup
from telegram.error import BadRequest


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
