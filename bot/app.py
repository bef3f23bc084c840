"""The composition root: every handler is registered here, and nowhere else."""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any, cast

from telegram import Update
from telegram.ext import (
    AIORateLimiter,
    ApplicationBuilder,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    ExtBot,
    MessageHandler,
    TypeHandler,
    filters,
)
from telegram.request import HTTPXRequest

from bot import (
    access,
    admin,
    commands,
    fallbacks,
    labels,
    photos,
    privacy,
    replies,
    retrain,
    verdicts,
    versions,
)
from bot.callbacks import (
    DisputesPage,
    ForgetButton,
    LabelButton,
    ModelButton,
    ReviewButton,
    VerdictButton,
)
from bot.context import SERVICES_KEY, BotApp, Ctx, Services
from bot.inbox import InboxBot, InboxProcessor

logger = logging.getLogger(__name__)


def build_application(services: Services) -> BotApp:
    """A python-telegram-bot `Application` wired to `services`; not yet started."""
    settings = services.settings
    if settings.telegram_token is None:
        raise ValueError("build_application needs a token (the sandbox provides one)")
    api = settings.telegram_api_url
    # The bot keeps each batch of updates in the inbox before the next getUpdates confirms it.
    bot = InboxBot(
        settings.telegram_token.get(),
        base_url=f"{api}/bot",
        base_file_url=f"{api}/file/bot",
        request=HTTPXRequest(connection_pool_size=256),
        get_updates_request=HTTPXRequest(connection_pool_size=1),
        # Telegram allows about 30 messages a second overall and 20 a minute per group; past
        # that it answers 429 with retry_after. The limiter paces sends and retries those.
        rate_limiter=AIORateLimiter(
            overall_max_rate=settings.max_messages_per_second, max_retries=5
        ),
        inbox=services.inbox,
    )
    services.inbox.tell_admins_with(bot, settings.admin_ids)
    application: BotApp = (
        ApplicationBuilder()
        .bot(cast("ExtBot[Any]", bot))
        .context_types(ContextTypes(context=Ctx))
        # Updates are handled concurrently (one slow photo must not block the chat), each
        # marked done in the inbox when its handling returned.
        .concurrent_updates(InboxProcessor(services.inbox))
        .build()
    )
    application.bot_data[SERVICES_KEY] = services

    # Group -1 runs first: with ALLOWED_USER_IDS set, it stops updates from anyone else.
    application.add_handler(TypeHandler(Update, access.gate), group=-1)

    # Group 0: the first matching handler wins, so specific handlers come before fallbacks.
    # Admin commands are gated at registration (ids, never usernames); the same commands
    # from anyone else reach `on_admin_only` below, which refuses and changes nothing.
    admins = filters.User(user_id=settings.admin_ids)
    for name, handler in (
        ("stats", admin.on_stats),
        ("disputes", admin.on_disputes),
        ("review", admin.on_review),
        ("labels", labels.on_labels),
        ("export", admin.on_export),
        ("threshold", admin.on_threshold),
        ("models", versions.on_models),
        ("use", versions.on_use),
        ("retrain", retrain.on_retrain),
    ):
        application.add_handler(CommandHandler(name, handler, filters=admins))
    application.add_handler(CommandHandler(access.ADMIN_COMMAND_NAMES, access.on_admin_only))
    application.add_handler(CommandHandler("start", commands.on_start))
    application.add_handler(CommandHandler("help", commands.on_help))
    application.add_handler(CommandHandler("forget", privacy.on_forget))
    application.add_handler(CommandHandler("cancel", verdicts.on_cancel))
    application.add_handler(MessageHandler(filters.PHOTO, photos.on_photo))
    application.add_handler(MessageHandler(filters.Document.ALL, photos.on_document))
    application.add_handler(MessageHandler(filters.COMMAND, fallbacks.on_unknown_command))
    # Each button's handler sees only data its callback class parses (bot/callbacks.py).
    application.add_handler(
        CallbackQueryHandler(verdicts.on_verdict_button, pattern=VerdictButton.PATTERN)
    )
    application.add_handler(
        CallbackQueryHandler(privacy.on_forget_button, pattern=ForgetButton.PATTERN)
    )
    for pattern, callback in (
        (DisputesPage.PATTERN, admin.on_disputes_page),
        (ReviewButton.PATTERN, admin.on_review_button),
        (LabelButton.PATTERN, labels.on_label_button),
        (ModelButton.PATTERN, versions.on_model_button),
    ):
        application.add_handler(CallbackQueryHandler(admin_button(callback), pattern=pattern))
    application.add_handler(CallbackQueryHandler(fallbacks.on_unknown_button))
    # Text is a typed label when one is awaited (after "Something else…"), else a hint.
    application.add_handler(
        MessageHandler(filters.TEXT & filters.UpdateType.MESSAGE, verdicts.on_text)
    )
    # Anything else a user sends (stickers, videos, voice, text) gets a hint, not silence;
    # edited messages are left alone so that fixing a typo does not trigger a second answer.
    application.add_handler(
        MessageHandler(filters.UpdateType.MESSAGE & ~filters.StatusUpdate.ALL, fallbacks.on_other)
    )
    application.add_error_handler(on_error)
    return application


def admin_button(
    callback: Callable[[Update, Ctx], Coroutine[Any, Any, None]],
) -> Callable[[Update, Ctx], Coroutine[Any, Any, None]]:
    """Admin buttons check who taps: a forwarded admin message must not act for others."""

    async def checked(update: Update, context: Ctx) -> None:
        query = update.callback_query
        if query is None:
            return
        if query.from_user.id not in context.services.settings.admin_ids:
            await query.answer(replies.ADMINS_ONLY, show_alert=True)
            return
        await callback(update, context)

    return checked


async def on_error(update: object, context: Ctx) -> None:
    """Log the failure with its traceback and tell the user something went wrong."""
    logger.error("error while handling an update", exc_info=context.error)
    if isinstance(update, Update) and update.effective_message is not None:
        try:
            await update.effective_message.reply_text(replies.SOMETHING_WENT_WRONG)
        except Exception:  # the error may be that Telegram is unreachable
            logger.warning("could not tell the user about the error", exc_info=True)
