"""Handlers for photos and image files: fetch the bytes, classify them, reply."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from telegram import Message, PhotoSize, Update
from telegram.constants import ChatAction
from telegram.error import TelegramError

from bot import keyboards, replies
from bot.context import Ctx
from bot.downloads import FileTooBig, reserved_bytes
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


async def on_photo(update: Update, context: Ctx) -> None:
    """A photo: classify its largest size; photos of an album are answered together."""
    message = update.effective_message
    if message is None or not message.photo:
        return
    if message.media_group_id is not None:
        # Done in the inbox only once the album's reply is sent (`_answer_album`).
        context.services.inbox.hold(update)
        context.services.albums.add(message, context, _answer_album)
        return
    largest = largest_photo(message)
    await _classify_file(message, context, largest.file_id, largest.file_size)


async def on_document(update: Update, context: Ctx) -> None:
    """A file: classify it when its bytes are an image, whatever its name or MIME type say."""
    message = update.effective_message
    if message is None or message.document is None:
        return
    document = message.document
    await _classify_file(message, context, document.file_id, document.file_size)


async def _classify_file(
    message: Message, context: Ctx, file_id: str, file_size: int | None
) -> None:
    metrics = context.services.metrics
    started = time.perf_counter()
    outcome = await _classify_and_reply(message, context, file_id, file_size)
    metrics.photos.labels(outcome).inc()
    metrics.photo_seconds.observe(time.perf_counter() - started)


@dataclass(frozen=True)
class Answered:
    """One image, classified and logged: what to reply, and the record its buttons name
    (None: nobody to ask, or the log could not keep it; `kept` says which)."""

    result: Classified
    record: PredictionRecord | None = None
    kept: bool = True


async def _classify_and_reply(
    message: Message, context: Ctx, file_id: str, file_size: int | None
) -> Outcome:
    """Fetch, classify and answer one image; returns the outcome for the metrics."""
    slots = context.services.photo_slots
    reserved = [reserved_bytes(file_size, context.services.settings.max_download_bytes)]
    if not slots.take(reserved):
        # Before any byte is downloaded: a flood costs a reply each, not their files.
        logger.info(
            "busy: %d of %d photo slots, %d of %d MiB taken",
            slots.in_use,
            slots.capacity,
            slots.bytes_in_use >> 20,
            slots.budget_bytes >> 20,
        )
        await message.reply_text(replies.BUSY, do_quote=True)
        return Outcome.BUSY
    try:
        async with _typing(message):
            answered = await _answer(
                message, context, await _fetch_and_classify(context, file_id, file_size)
            )
    finally:
        slots.give_back(reserved)  # the image itself is no longer held
    result = answered.result
    if result.prediction is None:
        await message.reply_text(result.text, do_quote=True)
        await context.services.inbox.answered(message)
        return result.outcome
    text = replies.prediction_text(
        result.prediction, context.services.tunables.confidence_threshold
    )
    if answered.record is None:
        if not answered.kept:
            text = replies.with_footer(text, replies.NOT_KEPT)
        await message.reply_text(text, do_quote=True)
        await context.services.inbox.answered(message)
        return result.outcome
    reply = await message.reply_text(
        text, do_quote=True, reply_markup=keyboards.verdict_keyboard(answered.record.id)
    )
    # Done in the inbox as soon as the reply is out: a crash from here on answers it once.
    await context.services.inbox.answered(message)
    await _set_reply_message(context, [answered.record], reply.message_id)
    return result.outcome


async def _answer(message: Message, context: Ctx, result: Classified) -> Answered:
    """Log an answered image (the others need nothing more)."""
    if result.prediction is None:
        return Answered(result)
    record, kept = await _record(message, context, result)
    # The bytes are not needed past this point: drop them with the slot.
    return Answered(Classified(result.outcome, result.prediction), record, kept)


async def _fetch_and_classify(context: Ctx, file_id: str, file_size: int | None) -> Classified:
    services = context.services
    try:
        data = await services.downloads.fetch(
            context.bot, file_id, services.settings.max_download_bytes, file_size
        )
    except FileTooBig as exc:
        return Classified(Outcome.TOO_BIG, text=replies.too_big_text(exc.size, exc.limit))
    except TelegramError as exc:
        logger.warning("could not fetch a photo: %s", exc)
        return Classified(Outcome.FAILED, text=replies.FETCH_FAILED)
    try:
        prediction = await services.classifier.classify(data)
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
    message: Message, context: Ctx, result: Classified
) -> tuple[PredictionRecord | None, bool]:
    """Log the prediction before replying, so its buttons survive a restart right after.

    Returns the record (None: a channel post, nobody to ask; or the log failed) and whether
    the log kept it. A log that cannot keep it (disk full, database locked) costs the answer
    its buttons, never the answer.
    """
    user = message.from_user
    if user is None or result.prediction is None:
        return None, True
    services = context.services
    file_id, file_unique_id = _file_ids(message)
    uncertain = result.prediction.top.probability < services.tunables.confidence_threshold
    keep_image = uncertain and services.settings.keep_uncertain_images
    try:
        record = await services.predictions.record_prediction(
            AnsweredPhoto(
                chat_id=message.chat_id,
                user_id=user.id,
                message_id=message.message_id,
                file_id=file_id,
                file_unique_id=file_unique_id,
                prediction=result.prediction,
                uncertain=uncertain,
                image=result.data if keep_image else None,
            )
        )
    except Exception as exc:
        services.keeping.failed(context, "recording an answer", exc)
        return None, False
    services.keeping.kept(context)
    return record, True


def _file_ids(message: Message) -> tuple[str, str]:
    """The file id and unique id of the image a message carries (its largest photo size)."""
    if message.photo:
        largest = largest_photo(message)
        return largest.file_id, largest.file_unique_id
    assert message.document is not None
    return message.document.file_id, message.document.file_unique_id


async def _set_reply_message(
    context: Ctx, records: list[PredictionRecord], reply_message_id: int
) -> None:
    """Link the records to the reply that answers them (the answer is out: never fail it)."""
    services = context.services
    try:
        for record in records:
            await services.predictions.set_reply_message(record.id, reply_message_id)
    except Exception as exc:
        services.keeping.failed(context, "linking an answer to its reply", exc)


async def _answer_album(messages: list[Message], context: Ctx) -> None:
    """Answer a gathered album and count its outcomes; one reply says if it failed."""
    metrics = context.services.metrics
    started = time.perf_counter()
    try:
        outcomes = await answer_album(messages, context)
    except Exception:
        logger.exception("could not answer an album of %d photo(s)", len(messages))
        await messages[0].reply_text(replies.SOMETHING_WENT_WRONG, do_quote=True)
        await context.services.inbox.release(messages)
        return
    await context.services.inbox.release(messages)
    elapsed = time.perf_counter() - started
    for outcome in outcomes:
        metrics.photos.labels(outcome).inc()
        metrics.photo_seconds.observe(elapsed)


async def answer_album(messages: list[Message], context: Ctx) -> list[Outcome]:
    """One reply for the album: a numbered line and Right/Wrong per photo answered.

    A photo that could not be answered (busy, too big, not an image, not fetched, a failure)
    gets its own reply, quoting it, so that it is clear which one; the others are answered all
    the same. Each photo takes a slot like any other; those that find none are "busy".
    """
    first = messages[0]
    services = context.services
    threshold = services.tunables.confidence_threshold
    limit = services.settings.max_download_bytes
    sizes = [reserved_bytes(largest_photo(m).file_size, limit) for m in messages]
    granted = services.photo_slots.take(sizes)
    admitted = messages[:granted]
    try:
        async with _typing(first):
            results = await asyncio.gather(
                *(_fetch_and_classify_message(m, context) for m in admitted),
                return_exceptions=True,
            )
            answered = [
                await _answer(m, context, _failed_if_raised(r))
                for m, r in zip(admitted, results, strict=True)
            ]
    finally:
        services.photo_slots.give_back(sizes[:granted])
    if len(admitted) < len(messages):
        logger.info("busy: %d photo(s) of an album found no slot", len(messages) - granted)
    answered += [Answered(Classified(Outcome.BUSY, text=replies.BUSY))] * (len(messages) - granted)
    lines: list[str] = []
    records: list[tuple[int, PredictionRecord]] = []
    unkept = False
    failed: list[tuple[Message, str]] = []
    for message, item in zip(messages, answered, strict=True):
        if item.result.prediction is None:
            failed.append((message, item.result.text))
            continue
        number = len(lines) + 1
        lines.append(f"{number}. {replies.prediction_text(item.result.prediction, threshold)}")
        if item.record is not None:
            records.append((number, item.record))
        unkept = unkept or not item.kept
    if lines:
        text = "\n".join(lines)
        if failed:
            text = replies.with_footer(text, replies.album_others_text(len(lines), len(messages)))
        if unkept:
            text = replies.with_footer(text, replies.NOT_KEPT)
        markup = keyboards.album_keyboard([(n, r.id) for n, r in records]) if records else None
        reply = await first.reply_text(text, do_quote=True, reply_markup=markup)
        await _set_reply_message(context, [r for _, r in records], reply.message_id)
    for message, reason in failed:
        await message.reply_text(reason, do_quote=True)
    return [item.result.outcome for item in answered]


async def _fetch_and_classify_message(message: Message, context: Ctx) -> Classified:
    size = largest_photo(message)
    return await _fetch_and_classify(context, size.file_id, size.file_size)


def _failed_if_raised(result: Classified | BaseException) -> Classified:
    """One photo's result, an exception turned into its own failure (never the album's)."""
    if isinstance(result, Classified):
        return result
    if not isinstance(result, Exception):
        raise result  # cancelled: the album is being abandoned
    logger.error("one photo of an album failed", exc_info=result)
    return Classified(Outcome.FAILED, text=replies.SOMETHING_WENT_WRONG)


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
