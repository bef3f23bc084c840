"""Who may use the bot: admins (ADMIN_IDS) and, when ALLOWED_USER_IDS is set, only those."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from typing import TYPE_CHECKING, Any

from telegram import BotCommand, BotCommandScopeChat, BotCommandScopeDefault, Update
from telegram.error import TelegramError
from telegram.ext import ApplicationHandlerStop

from bot import replies

if TYPE_CHECKING:
    from bot.context import BotApp, Ctx

logger = logging.getLogger(__name__)

USER_COMMANDS = [
    BotCommand("help", "What I do and what I keep"),
    BotCommand("forget", "Delete everything I keep about you"),
    BotCommand("cancel", "Stop typing a label"),
]
ADMIN_COMMANDS = [
    BotCommand("stats", "Photos, latency, verdicts; with a chart"),
    BotCommand("disputes", "The latest disputed predictions"),
    BotCommand("review", "Review uncertain and disputed photos"),
    BotCommand("labels", "New labels users typed: add, merge or reject them"),
    BotCommand("export", "The reviewed training data as a zip"),
    BotCommand("retrain", "Train a new model version (/retrain cancel stops it)"),
    BotCommand("models", "Model versions and their metrics"),
    BotCommand("use", "Switch model: /use VERSION or /use previous"),
    BotCommand("threshold", "Confidence below which answers list runner-ups"),
]
ADMIN_COMMAND_NAMES = [command.command for command in ADMIN_COMMANDS]


class Refusals:
    """Who was told today that the bot is not for them: one refusal a day each.

    Only today's ids are kept, so the set never outgrows one day's strangers.
    """

    def __init__(self) -> None:
        self._day = dt.date.min
        self._told: set[int] = set()

    def first_today(self, user_id: int, today: dt.date) -> bool:
        """True the first time `user_id` is refused on `today` (and remembers it)."""
        if today != self._day:
            self._day, self._told = today, set()
        if user_id in self._told:
            return False
        self._told.add(user_id)
        return True

    def __len__(self) -> int:
        """How many ids are remembered (today's only)."""
        return len(self._told)


async def set_command_menus(application: BotApp, admin_ids: frozenset[int]) -> None:
    """Users see their commands; each admin sees the admin commands too (their chat only)."""
    bot = application.bot
    await bot.set_my_commands(USER_COMMANDS, scope=BotCommandScopeDefault())
    for admin_id in sorted(admin_ids):
        try:
            await bot.set_my_commands(
                USER_COMMANDS + ADMIN_COMMANDS, scope=BotCommandScopeChat(admin_id)
            )
        except TelegramError as exc:
            # Telegram refuses a chat the admin never opened with the bot ("chat not found").
            logger.warning(
                "admin %d gets the admin menu after writing to the bot: %s", admin_id, exc
            )


async def tell_admins(bot: Any, admin_ids: frozenset[int], text: str) -> None:
    """Send `text` to every admin; one who never opened the bot's chat cannot be written to
    (Telegram refuses), and the log has it all anyway."""
    for admin_id in sorted(admin_ids):
        with contextlib.suppress(TelegramError):
            await bot.send_message(admin_id, text)


async def on_admin_only(update: Update, context: Ctx) -> None:
    """An admin command from someone who is not an admin: refused, nothing changes."""
    message = update.effective_message
    if message is not None:
        await message.reply_text(replies.ADMINS_ONLY, do_quote=True)


async def gate(update: Update, context: Ctx) -> None:
    """With ALLOWED_USER_IDS set, stop updates from anyone else (one refusal a day each)."""
    settings = context.services.settings
    if settings.allowed_user_ids is None:
        return
    user = update.effective_user
    if user is None or user.id in settings.allowed_user_ids or user.id in settings.admin_ids:
        return
    if context.services.refusals.first_today(user.id, dt.date.today()):
        with contextlib.suppress(TelegramError):
            if update.callback_query is not None:
                await update.callback_query.answer(replies.NOT_ALLOWED, show_alert=True)
            elif update.effective_message is not None:
                await update.effective_message.reply_text(replies.NOT_ALLOWED)
    elif update.callback_query is not None:
        with contextlib.suppress(TelegramError):
            await update.callback_query.answer()
    raise ApplicationHandlerStop
