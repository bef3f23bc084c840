"""Handlers for photos and image files: fetch the bytes, classify them, reply."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

from telegram import Message, Update
from telegram.constants import ChatAction
from telegram.error import BadRequest, TelegramError

from bot import keyboards, replies
from bot.context import Ctx
from model.types import (
    ClassifierBusy,
    ClassifierError,
    ClassifierUnavailable,
    ImageRejected,
    Prediction,
)

logger = logging.getLogger(__name__)

TYPING_REFRESH_S = 4.5  # Telegram shows "typing…" for about 5 s per chat action
# Most photos are answered faster than this: showing "typing…" for them would only flash,
# and cost a Bot API call per photo against Telegram's rate limits.
TYPING_DELAY_S = 0.25


async def on_photo(update: Update, context: Ctx) -> None:
    """A photo: classify its largest size."""
    message = update.effective_message
    if message is None or not message.photo:
        return
    largest = max(message.photo, key=lambda size: (size.width * size.height, size.file_size or 0))
    await _classify_file(
        message, context, largest.file_id, largest.file_unique_id, largest.file_size
    )


async def on_document(update: Update, context: Ctx) -> None:
    """A file: classify it when its bytes are an image, whatever its name or MIME type say."""
    message = update.effective_message
    if message is None or message.document is None:
        return
    document = message.document
    await _classify_file(
        message, context, document.file_id, document.file_unique_id, document.file_size
    )


async def on_other(update: Update, context: Ctx) -> None:
    """Stickers, videos, voice, text: a short hint instead of silence."""
    message = update.effective_message
    if message is not None:
        await message.reply_text(replies.HINT, do_quote=True)


async def on_unknown_command(update: Update, context: Ctx) -> None:
    """A command the bot does not have."""
    message = update.effective_message
    if message is not None:
        await message.reply_text(replies.UNKNOWN_COMMAND, do_quote=True)


async def _classify_file(
    message: Message, context: Ctx, file_id: str, file_unique_id: str, file_size: int | None
) -> None:
    metrics = context.services.metrics
    started = time.perf_counter()
    outcome = await _classify_and_reply(message, context, file_id, file_unique_id, file_size)
    metrics.photos.labels(outcome).inc()
    metrics.photo_seconds.observe(time.perf_counter() - started)


async def _classify_and_reply(
    message: Message, context: Ctx, file_id: str, file_unique_id: str, file_size: int | None
) -> str:
    """Fetch, classify and answer one image; returns the outcome for the metrics."""
    settings = context.services.settings
    limit = settings.max_download_bytes
    if file_size is not None and file_size > limit:
        await message.reply_text(replies.too_big_text(file_size, limit), do_quote=True)
        return "too_big"
    async with _typing(message):
        try:
            file = await context.bot.get_file(file_id)
            data = bytes(await file.download_as_bytearray())
        except BadRequest as exc:
            if "too big" in exc.message.lower():
                size = file_size if file_size is not None else limit + 1
                await message.reply_text(replies.too_big_text(size, limit), do_quote=True)
                return "too_big"
            raise
        if len(data) > limit:
            await message.reply_text(replies.too_big_text(len(data), limit), do_quote=True)
            return "too_big"
        try:
            prediction = await context.services.classifier.classify(data)
        except ImageRejected as exc:
            logger.info("image rejected in chat %r: %r", message.chat_id, exc)
            text, outcome = replies.rejection_text(exc), "rejected"
        except ClassifierBusy as exc:
            logger.info("busy: %s", exc)
            text, outcome = replies.BUSY, "busy"
        except ClassifierUnavailable as exc:
            logger.warning("classifier unavailable: %s", exc)
            text, outcome = replies.UNAVAILABLE, "unavailable"
        except ClassifierError as exc:
            logger.warning("classification failed: %s", exc)
            text, outcome = replies.MODEL_FAILED, "failed"
        else:
            await _answer(message, context, prediction, data, file_id, file_unique_id)
            return "answered"
    await message.reply_text(text, do_quote=True)
    return outcome


async def _answer(
    message: Message,
    context: Ctx,
    prediction: Prediction,
    data: bytes,
    file_id: str,
    file_unique_id: str,
) -> None:
    """Reply with the prediction and Right/Wrong buttons, logging it first."""
    settings = context.services.settings
    text = replies.prediction_text(prediction, settings.confidence_threshold)
    user = message.from_user
    if user is None:  # a channel post: nobody to ask for a verdict
        await message.reply_text(text, do_quote=True)
        return
    uncertain = prediction.top.probability < settings.confidence_threshold
    # Written before the reply, so the buttons work even if the bot restarts right after.
    record = await context.services.feedback.record_prediction(
        chat_id=message.chat_id,
        user_id=user.id,
        message_id=message.message_id,
        file_id=file_id,
        file_unique_id=file_unique_id,
        prediction=prediction,
        uncertain=uncertain,
        image=data if uncertain and settings.keep_uncertain_images else None,
    )
    reply = await message.reply_text(
        text, do_quote=True, reply_markup=keyboards.verdict_keyboard(record.id)
    )
    await context.services.feedback.set_reply_message(record.id, reply.message_id)


@contextlib.asynccontextmanager
async def _typing(message: Message) -> AsyncIterator[None]:
    """Show "typing…" in the chat until the block ends."""

    async def keep_typing() -> None:
        await asyncio.sleep(TYPING_DELAY_S)
        while True:
            with contextlib.suppress(TelegramError):
                await message.get_bot().send_chat_action(message.chat_id, ChatAction.TYPING)
            await asyncio.sleep(TYPING_REFRESH_S)

    task = asyncio.create_task(keep_typing())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
