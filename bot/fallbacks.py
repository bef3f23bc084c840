"""What the bot says to everything it has no handler for: unknown commands and buttons,
stickers, videos, voice and stray text."""

from __future__ import annotations

from telegram import Update

from bot import replies
from bot.context import Ctx


async def on_unknown_command(update: Update, context: Ctx) -> None:
    """A command the bot does not have."""
    message = update.effective_message
    if message is not None:
        await message.reply_text(replies.UNKNOWN_COMMAND, do_quote=True)


async def on_unknown_button(update: Update, context: Ctx) -> None:
    """Any other button (from an older version of the bot, or forged)."""
    if update.callback_query is not None:
        await update.callback_query.answer(replies.UNKNOWN_BUTTON)


async def on_other(update: Update, context: Ctx) -> None:
    """Stickers, videos, voice, text: a short hint instead of silence."""
    message = update.effective_message
    if message is not None:
        await message.reply_text(replies.HINT, do_quote=True)
