"""Verdicts on an answer: the Right/Wrong buttons, corrections, typed labels, /cancel."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

from telegram import CallbackQuery, InlineKeyboardMarkup, Message, Update
from telegram.error import TelegramError

from bot import keyboards, labeltexts, replies
from bot.callbacks import VerdictAction, VerdictButton
from bot.context import Ctx
from bot.downloads import FileTooBig
from bot.edits import edit
from bot.labels import check_typed
from model.feedback import (
    FeedbackUnavailable,
    InvalidVerdict,
    PredictionRecord,
    VerdictKind,
    VerdictRecord,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Answer:
    """Everything one bot message answers: one photo, or each photo of an album."""

    records: list[PredictionRecord]
    verdicts: dict[str, VerdictRecord]

    @property
    def is_album(self) -> bool:
        return len(self.records) > 1

    def number(self, record: PredictionRecord) -> int:
        return next(i for i, r in enumerate(self.records, 1) if r.id == record.id)

    def text(self, threshold: float) -> str:
        """The message as it stands: predictions, with each recorded verdict."""
        if not self.is_album:
            (record,) = self.records
            base = replies.prediction_text(record, threshold)
            verdict = self.verdicts.get(record.id)
            if verdict is None:
                return base
            return replies.with_footer(base, self.footer(record))
        lines = []
        for number, record in enumerate(self.records, 1):
            line = f"{number}. {replies.prediction_text(record, threshold)}"
            verdict = self.verdicts.get(record.id)
            if verdict is not None:
                line += f"  {replies.verdict_mark(verdict.kind, verdict.label)}"
            lines.append(line)
        return "\n".join(lines)

    def footer(self, record: PredictionRecord) -> str:
        """What is on record for one of its predictions (which must have a verdict)."""
        verdict = self.verdicts[record.id]
        return replies.verdict_footer(
            verdict.kind, verdict.label, image_kept=record.image_sha256 is not None
        )

    def record(self, prediction_id: str) -> PredictionRecord:
        """One of its predictions, as the log has it now."""
        return next(r for r in self.records if r.id == prediction_id)

    def keyboard(self) -> InlineKeyboardMarkup | None:
        """Right/Wrong for every prediction still without a verdict."""
        open_records = [r for r in self.records if r.id not in self.verdicts]
        if not open_records:
            return None
        if not self.is_album:
            return keyboards.verdict_keyboard(open_records[0].id)
        return keyboards.album_keyboard([(self.number(r), r.id) for r in open_records])

    def asking(self, record: PredictionRecord, prompt: str, threshold: float) -> str:
        """The message while asking about one of its predictions."""
        if self.is_album:
            prompt = f"Photo {self.number(record)}: {prompt}"
        return replies.with_footer(self.text(threshold), prompt)


async def load_answer(context: Ctx, record: PredictionRecord) -> Answer:
    """The predictions the message of `record` answers, with their verdicts."""
    log = context.services.verdicts
    records = [record]
    if record.reply_message_id is not None:
        records = await log.predictions_for_reply(record.chat_id, record.reply_message_id)
        if not any(r.id == record.id for r in records):
            records = [record]
    verdicts = {}
    for r in records:
        verdict = await log.get_verdict(r.id)
        if verdict is not None:
            verdicts[r.id] = verdict
    return Answer(records, verdicts)


async def on_verdict_button(update: Update, context: Ctx) -> None:
    """Every tap on a button under a prediction."""
    query = update.callback_query
    if query is None or query.data is None:
        return
    action = VerdictButton.parse(query.data)
    if action is None:
        await query.answer(replies.UNKNOWN_BUTTON)
        return
    services = context.services
    log = services.verdicts
    threshold = services.tunables.confidence_threshold
    record = await log.get_prediction(action.prediction_id)
    if record is None:
        await query.answer(replies.EXPIRED, show_alert=True)
        await edit(query, reply_markup=None)
        return
    message = query.message
    if (
        not isinstance(message, Message)
        or message.chat_id != record.chat_id
        or (record.reply_message_id is not None and message.message_id != record.reply_message_id)
    ):
        await query.answer(replies.NOT_THIS_MESSAGE, show_alert=True)
        return
    if query.from_user.id != record.user_id:
        await query.answer(replies.ONLY_SENDER, show_alert=True)
        return
    answer = await load_answer(context, record)
    if record.id in answer.verdicts:
        # A second tap, an old message, or a tap after a restart: show what stands.
        await query.answer(replies.ALREADY)
        await edit(query, text=answer.text(threshold), reply_markup=answer.keyboard())
        return

    labels = context.services.classifier.labels_for(record.model)
    if action.action is VerdictAction.NOOP:
        await query.answer()
    elif action.action is VerdictAction.BACK:
        await query.answer()
        await edit(query, text=answer.text(threshold), reply_markup=answer.keyboard())
    elif action.action is VerdictAction.WRONG:
        await query.answer()
        await log.clear_pending_label(chat_id=record.chat_id, user_id=record.user_id)
        await edit(
            query,
            text=answer.asking(record, replies.ASK_LABEL, threshold),
            reply_markup=keyboards.correction_keyboard(record.id, record.scores, bool(labels)),
        )
    elif action.action is VerdictAction.PAGE and labels:
        await query.answer()
        page = min(action.number, keyboards.pages(labels) - 1)
        prompt = replies.BROWSE_LABELS.format(page=page + 1, pages=keyboards.pages(labels))
        await edit(
            query,
            text=answer.asking(record, prompt, threshold),
            reply_markup=keyboards.labels_keyboard(record.id, labels, page),
        )
    elif action.action is VerdictAction.TYPE:
        await query.answer()
        await log.set_pending_label(
            chat_id=record.chat_id, user_id=record.user_id, prediction_id=record.id
        )
        await edit(
            query,
            text=answer.asking(record, replies.TYPE_LABEL, threshold),
            reply_markup=keyboards.typing_keyboard(record.id),
        )
    elif action.action is VerdictAction.RIGHT:
        await _decide(query, context, record, VerdictKind.RIGHT, record.top.label)
    elif action.action is VerdictAction.UNSURE:
        await _decide(query, context, record, VerdictKind.UNSURE, None)
    elif action.action is VerdictAction.CANDIDATE and 0 < action.number < len(record.scores):
        await _decide(
            query, context, record, VerdictKind.WRONG, record.scores[action.number].label
        )
    elif action.action is VerdictAction.LABEL and labels and 0 <= action.number < len(labels):
        await _decide(query, context, record, VerdictKind.WRONG, labels[action.number])
    else:
        await query.answer(replies.UNKNOWN_BUTTON)


async def _decide(
    query: CallbackQuery,
    context: Ctx,
    record: PredictionRecord,
    kind: VerdictKind,
    label: str | None,
) -> None:
    try:
        _, recorded = await record_verdict(context, record, kind, label)
    except FeedbackUnavailable:  # logged, and admins told, by then
        await query.answer(replies.NOT_KEPT_VERDICT, show_alert=True)
        return
    answer = await load_answer(context, record)
    if recorded:
        # Read back: whether the photo is kept with it decides what the verdict is worth.
        await query.answer(answer.footer(answer.record(record.id))[:200])
    else:  # a simultaneous tap got there first
        await query.answer(replies.ALREADY)
    threshold = context.services.tunables.confidence_threshold
    await edit(query, text=answer.text(threshold), reply_markup=answer.keyboard())


async def refresh(context: Ctx, record: PredictionRecord) -> None:
    """Re-render the bot message that answers `record` (after a typed label or /cancel)."""
    if record.reply_message_id is None:
        return
    answer = await load_answer(context, record)
    threshold = context.services.tunables.confidence_threshold
    with contextlib.suppress(TelegramError):
        await context.bot.edit_message_text(
            answer.text(threshold),
            chat_id=record.chat_id,
            message_id=record.reply_message_id,
            reply_markup=answer.keyboard(),
        )


async def record_verdict(
    context: Ctx, record: PredictionRecord, kind: VerdictKind, label: str | None
) -> tuple[VerdictRecord, bool]:
    """Store the verdict (keeping the image of a dispute): the verdict that stands, and
    whether it is this one."""
    services = context.services
    log = services.verdicts
    image = None
    if kind != VerdictKind.RIGHT and not await log.has_image(record.id):
        # Without the photo the verdict is kept all the same; its reply says what it is worth.
        image = await _download(context, record.file_id)
    try:
        outcome = await log.record_verdict(
            record.id, user_id=record.user_id, kind=kind, label=label, image=image
        )
    except FeedbackUnavailable as exc:
        services.keeping.failed(context, "recording a verdict", exc)
        raise
    services.keeping.kept(context)
    if outcome.recorded:
        logger.info("verdict %s on prediction %s", kind, record.id)
        context.services.metrics.verdicts.labels(kind).inc()
    return outcome.verdict, outcome.recorded


async def _download(context: Ctx, file_id: str) -> bytes | None:
    """The photo of a disputed prediction, fetched again by its file id (kept by Telegram)."""
    downloads = context.services.downloads
    try:
        async with downloads.refetching:  # a few at a time: taps can come in floods too
            return await downloads.fetch(
                context.bot, file_id, context.services.settings.max_download_bytes
            )
    except (TelegramError, FileTooBig):
        logger.warning("could not fetch the disputed photo again", exc_info=True)
        return None


async def on_text(update: Update, context: Ctx) -> None:
    """Plain text: a typed label when one is awaited, otherwise a hint."""
    message = update.effective_message
    user = update.effective_user
    if message is None or message.text is None:
        return
    log = context.services.verdicts
    pending = None
    if user is not None:
        pending = await log.get_pending_label(chat_id=message.chat_id, user_id=user.id)
    record = await log.get_prediction(pending) if pending else None
    if record is None:
        await message.reply_text(replies.HINT, do_quote=True)
        return
    labels = context.services.classifier.labels_for(record.model) or ()
    typed = await check_typed(context, message.text, labels)
    if isinstance(typed, str):  # refused: nothing stored, still waiting for the label
        await message.reply_text(typed, do_quote=True)
        return
    try:
        verdict, recorded = await record_verdict(context, record, VerdictKind.WRONG, typed.label)
    except InvalidVerdict as exc:
        await message.reply_text(f"{exc} Please type the label again, or /cancel.", do_quote=True)
        return
    if recorded and verdict.label is not None:
        text = labeltexts.stored(verdict.label, message.text, typed.known, typed.added)
    else:
        text = replies.ALREADY
    await message.reply_text(text, do_quote=True)
    await refresh(context, record)


async def on_cancel(update: Update, context: Ctx) -> None:
    """/cancel: stop waiting for a typed label."""
    message = update.effective_message
    user = update.effective_user
    if message is None or user is None:
        return
    log = context.services.verdicts
    pending = await log.get_pending_label(chat_id=message.chat_id, user_id=user.id)
    if pending is None:
        await message.reply_text(replies.NOTHING_TO_CANCEL)
        return
    await log.clear_pending_label(chat_id=message.chat_id, user_id=user.id)
    await message.reply_text(replies.CANCELLED)
    record = await log.get_prediction(pending)
    if record is not None:
        await refresh(context, record)
