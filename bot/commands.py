"""/start and /help."""

from __future__ import annotations

from telegram import Update

from bot import replies
from bot.access import ADMIN_COMMANDS
from bot.context import Ctx


async def on_start(update: Update, context: Ctx) -> None:
    """Greet the user and explain the bot."""
    message = update.effective_message
    if message is None:
        return
    user = update.effective_user
    await message.reply_text(replies.start_text(user.first_name if user else None, _help(context)))


async def on_help(update: Update, context: Ctx) -> None:
    """What the bot does, what it keeps, and how to use it."""
    message = update.effective_message
    if message is None:
        return
    text = _help(context)
    user = update.effective_user
    if user is not None and user.id in context.services.settings.admin_ids:
        text += "\n\n" + replies.admin_help(ADMIN_COMMANDS)
    await message.reply_text(text)


def _help(context: Ctx) -> str:
    settings = context.services.settings
    return replies.help_text(
        replies.labels_hint(
            context.services.classifier.labels_for(context.services.classifier.model_name)
        ),
        context.services.tunables.confidence_threshold,
        settings.retention_days,
        settings.keep_uncertain_images,
    )
