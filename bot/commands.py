"""/start and /help."""

from __future__ import annotations

from telegram import Update

from bot import replies
from bot.context import Ctx


async def on_start(update: Update, context: Ctx) -> None:
    """Greet the user and explain the bot."""
    message = update.effective_message
    if message is None:
        return
    services = context.services
    user = update.effective_user
    await message.reply_text(
        replies.start_text(
            user.first_name if user else None,
            replies.labels_hint(services.classifier.model_name),
            services.settings.confidence_threshold,
        )
    )


async def on_help(update: Update, context: Ctx) -> None:
    """What the bot does, what it keeps, and how to use it."""
    message = update.effective_message
    if message is None:
        return
    services = context.services
    await message.reply_text(
        replies.help_text(
            replies.labels_hint(services.classifier.model_name),
            services.settings.confidence_threshold,
        )
    )
