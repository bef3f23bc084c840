"""Handlers for photos and image files: fetch the bytes, classify them, reply."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from telegram import Message, PhotoSize, Update
from telegram.constants import ChatAction
from telegram.error import BadRequest, TelegramError

from bot import keyboards, replies
from bot.context import Ctx
from model.feedback import AnsweredPhoto, PredictionRecord
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


class Outcome(enum.StrEnum):
    """What became of one photo, as /metrics counts it."""

    ANSWERED = "answered"
    TOO_BIG = "too_big"
    REJECTED = "rejected"
    BUSY = "busy"
    UNAVAILABLE = "unavailable"
    FAILED = "failed"


@dataclass(frozen=True)
class Classified:
    """What became of one image: a prediction, or the text explaining why not."""

    outcome: Outcome
    prediction: Prediction | None = None
    text: str = ""
    data: bytes = b""


def largest_photo(message: Message) -> PhotoSize:
    """The biggest rendition by pixels (not by position in the list)."""
    return max(message.photo, key=lambda size: (size.width * size.height, size.file_size or 0))


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


async def on_photo(update: Update, context: Ctx) -> None:
    """A photo: classify its largest size; photos of an album are answered together."""
    message = update.effective_message
    if message is None or not message.photo:
        return
    if message.media_group_id is not None:
        context.services.albums.add(message, context, _answer_album)
        return
    largest = largest_photo(message)
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
) -> Outcome:
    """Fetch, classify and answer one image; returns the outcome for the metrics."""
    async with _typing(message):
        result = await _fetch_and_classify(context, file_id, file_size)
    if result.prediction is None:
        await message.reply_text(result.text, do_quote=True)
        return result.outcome
    text = replies.prediction_text(
        result.prediction, context.services.tunables.confidence_threshold
    )
    record = await _record(message, context, result, file_id, file_unique_id)
    if record is None:  # a channel post: nobody to ask for a verdict
        await message.reply_text(text, do_quote=True)
        return result.outcome
    reply = await message.reply_text(
        text, do_quote=True, reply_markup=keyboards.verdict_keyboard(record.id)
    )
    await context.services.predictions.set_reply_message(record.id, reply.message_id)
    return result.outcome


async def _fetch_and_classify(context: Ctx, file_id: str, file_size: int | None) -> Classified:
    try:
        data = await download(
            context.bot, file_id, context.services.settings.max_download_bytes, file_size
        )
    except FileTooBig as exc:
        return Classified(Outcome.TOO_BIG, text=replies.too_big_text(exc.size, exc.limit))
    try:
        prediction = await context.services.classifier.classify(data)
    except ImageRejected as exc:
        logger.info("image rejected: %r", exc)
        return Classified(Outcome.REJECTED, text=replies.rejection_text(exc))
    except ClassifierBusy as exc:
        logger.info("busy: %s", exc)
        return Classified(Outcome.BUSY, text=replies.BUSY)
    except ClassifierUnavailable as exc:
        logger.warning("classifier unavailable: %s", exc)
        return Classified(Outcome.UNAVAILABLE, text=replies.UNAVAILABLE)
    except ClassifierError as exc:
        logger.warning("classification failed: %s", exc)
        return Classified(Outcome.FAILED, text=replies.MODEL_FAILED)
    return Classified(Outcome.ANSWERED, prediction, data=data)


async def _record(
    message: Message, context: Ctx, result: Classified, file_id: str, file_unique_id: str
) -> PredictionRecord | None:
    """Log the prediction before replying, so its buttons survive a restart right after."""
    user = message.from_user
    if user is None or result.prediction is None:
        return None
    settings = context.services.settings
    uncertain = result.prediction.top.probability < context.services.tunables.confidence_threshold
    return await context.services.predictions.record_prediction(
        AnsweredPhoto(
            chat_id=message.chat_id,
            user_id=user.id,
            message_id=message.message_id,
            file_id=file_id,
            file_unique_id=file_unique_id,
            prediction=result.prediction,
            uncertain=uncertain,
            image=result.data if uncertain and settings.keep_uncertain_images else None,
        )
    )


async def _answer_album(messages: list[Message], context: Ctx) -> None:
    """Answer a gathered album and count its outcomes; one reply says if it failed."""
    metrics = context.services.metrics
    started = time.perf_counter()
    try:
        outcomes = await answer_album(messages, context)
    except Exception:
        logger.exception("could not answer an album of %d photo(s)", len(messages))
        await messages[0].reply_text(replies.SOMETHING_WENT_WRONG, do_quote=True)
        return
    elapsed = time.perf_counter() - started
    for outcome in outcomes:
        metrics.photos.labels(outcome).inc()
        metrics.photo_seconds.observe(elapsed)


async def answer_album(messages: list[Message], context: Ctx) -> list[Outcome]:
    """One reply for the whole album: a numbered line and Right/Wrong per photo."""
    first = messages[0]
    threshold = context.services.tunables.confidence_threshold
    async with _typing(first):
        sizes = [largest_photo(m) for m in messages]
        results = await asyncio.gather(
            *(_fetch_and_classify(context, s.file_id, s.file_size) for s in sizes)
        )
    lines: list[str] = []
    failures: list[str] = []
    records: list[tuple[int, PredictionRecord]] = []
    for position, (message, size, result) in enumerate(
        zip(messages, sizes, results, strict=True), 1
    ):
        if result.prediction is None:
            failures.append(f"Photo {position}: {result.text}")
            continue
        record = await _record(message, context, result, size.file_id, size.file_unique_id)
        number = len(lines) + 1
        lines.append(f"{number}. {replies.prediction_text(result.prediction, threshold)}")
        if record is not None:
            records.append((number, record))
    text = "\n".join(lines) if lines else "I couldn't classify any photo of this album."
    if failures:
        text = replies.with_footer(text, "\n".join(failures))
    markup = keyboards.album_keyboard([(n, r.id) for n, r in records]) if records else None
    reply = await first.reply_text(text, do_quote=True, reply_markup=markup)
    for _, record in records:
        await context.services.predictions.set_reply_message(record.id, reply.message_id)
    return [result.outcome for result in results]


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
