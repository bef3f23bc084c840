"""Right/Wrong buttons, corrections, typed labels and /forget."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

from telegram import CallbackQuery, InlineKeyboardMarkup, Message, Update
from telegram.error import BadRequest, TelegramError

from bot import keyboards, replies
from bot.context import Ctx
from model.feedback import InvalidVerdict, PredictionRecord, VerdictRecord
from model.types import Prediction

logger = logging.getLogger(__name__)


def prediction_text(record: PredictionRecord, threshold: float) -> str:
    """The prediction as it was first shown."""
    prediction = Prediction(record.scores, record.model, 0, 0)
    return replies.prediction_text(prediction, threshold)


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
            base = prediction_text(record, threshold)
            verdict = self.verdicts.get(record.id)
            if verdict is None:
                return base
            return replies.with_footer(base, replies.verdict_footer(verdict.kind, verdict.label))
        lines = []
        for number, record in enumerate(self.records, 1):
            line = f"{number}. {prediction_text(record, threshold)}"
            verdict = self.verdicts.get(record.id)
            if verdict is not None:
                line += f"  {replies.verdict_mark(verdict.kind, verdict.label)}"
            lines.append(line)
        return "\n".join(lines)

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
    log = context.services.feedback
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
    action = keyboards.parse_verdict(query.data)
    if action is None:
        await query.answer(replies.UNKNOWN_BUTTON)
        return
    services = context.services
    log = services.feedback
    threshold = services.tunables.confidence_threshold
    record = await log.get_prediction(action.prediction_id)
    if record is None:
        await query.answer(replies.EXPIRED, show_alert=True)
        await _edit(query, reply_markup=None)
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
        await _edit(query, text=answer.text(threshold), reply_markup=answer.keyboard())
        return

    labels = context.services.classifier.labels_for(record.model)
    if action.action == "x":
        await query.answer()
    elif action.action == "b":
        await query.answer()
        await _edit(query, text=answer.text(threshold), reply_markup=answer.keyboard())
    elif action.action == "w":
        await query.answer()
        await log.clear_pending_label(chat_id=record.chat_id, user_id=record.user_id)
        await _edit(
            query,
            text=answer.asking(record, replies.ASK_LABEL, threshold),
            reply_markup=keyboards.correction_keyboard(record.id, record.scores, bool(labels)),
        )
    elif action.action == "p" and labels:
        await query.answer()
        page = min(action.number, keyboards.pages(labels) - 1)
        prompt = replies.BROWSE_LABELS.format(page=page + 1, pages=keyboards.pages(labels))
        await _edit(
            query,
            text=answer.asking(record, prompt, threshold),
            reply_markup=keyboards.labels_keyboard(record.id, labels, page),
        )
    elif action.action == "t":
        await query.answer()
        await log.set_pending_label(
            chat_id=record.chat_id, user_id=record.user_id, prediction_id=record.id
        )
        await _edit(
            query,
            text=answer.asking(record, replies.TYPE_LABEL, threshold),
            reply_markup=keyboards.typing_keyboard(record.id),
        )
    elif action.action == "r":
        await _decide(query, context, record, "right", record.top.label)
    elif action.action == "u":
        await _decide(query, context, record, "unsure", None)
    elif action.action == "c" and 0 < action.number < len(record.scores):
        await _decide(query, context, record, "wrong", record.scores[action.number].label)
    elif action.action == "l" and labels and 0 <= action.number < len(labels):
        await _decide(query, context, record, "wrong", labels[action.number])
    else:
        await query.answer(replies.UNKNOWN_BUTTON)


async def _decide(
    query: CallbackQuery, context: Ctx, record: PredictionRecord, kind: str, label: str | None
) -> None:
    verdict, recorded = await record_verdict(context, record, kind, label)
    if recorded:
        await query.answer(replies.verdict_footer(verdict.kind, verdict.label)[:200])
    else:  # a simultaneous tap got there first
        await query.answer(replies.ALREADY)
    answer = await load_answer(context, record)
    threshold = context.services.tunables.confidence_threshold
    await _edit(query, text=answer.text(threshold), reply_markup=answer.keyboard())


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
    context: Ctx, record: PredictionRecord, kind: str, label: str | None
) -> tuple[VerdictRecord, bool]:
    """Store the verdict (keeping the image of a dispute): the verdict that stands, and
    whether it is this one."""
    log = context.services.feedback
    image = None
    if kind != "right" and not await log.has_image(record.id):
        image = await _download(context, record.file_id)
    outcome = await log.record_verdict(
        record.id, user_id=record.user_id, kind=kind, label=label, image=image
    )
    if outcome.recorded:
        logger.info("verdict %s on prediction %s", kind, record.id)
        context.services.metrics.verdicts.labels(kind).inc()
    return outcome.verdict, outcome.recorded


async def _download(context: Ctx, file_id: str) -> bytes | None:
    """The photo of a disputed prediction, fetched again by its file id (kept by Telegram)."""
    try:
        file = await context.bot.get_file(file_id)
        return bytes(await file.download_as_bytearray())
    except TelegramError:
        logger.warning("could not fetch the disputed photo again", exc_info=True)
        return None


async def on_text(update: Update, context: Ctx) -> None:
    """Plain text: a typed label when one is awaited, otherwise a hint."""
    message = update.effective_message
    user = update.effective_user
    if message is None or message.text is None:
        return
    log = context.services.feedback
    pending = None
    if user is not None:
        pending = await log.get_pending_label(chat_id=message.chat_id, user_id=user.id)
    record = await log.get_prediction(pending) if pending else None
    if record is None:
        await message.reply_text(replies.HINT, do_quote=True)
        return
    typed = message.text.strip()
    labels = context.services.classifier.labels_for(record.model) or ()
    known = {label.casefold(): label for label in labels}
    label = known.get(" ".join(typed.split()).casefold(), typed)
    try:
        verdict, recorded = await record_verdict(context, record, "wrong", label)
    except InvalidVerdict as exc:
        await message.reply_text(f"{exc} Please type the label again, or /cancel.", do_quote=True)
        return
    if recorded and verdict.label is not None:
        text = replies.stored_label_text(verdict.label, verdict.label in labels)
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
    log = context.services.feedback
    pending = await log.get_pending_label(chat_id=message.chat_id, user_id=user.id)
    if pending is None:
        await message.reply_text(replies.NOTHING_TO_CANCEL)
        return
    await log.clear_pending_label(chat_id=message.chat_id, user_id=user.id)
    await message.reply_text(replies.CANCELLED)
    record = await log.get_prediction(pending)
    if record is not None:
        await refresh(context, record)


async def on_forget(update: Update, context: Ctx) -> None:
    """/forget: say what would be deleted and ask for confirmation."""
    message = update.effective_message
    user = update.effective_user
    if message is None or user is None:
        return
    summary = await context.services.feedback.count_user_items(user.id)
    markup = keyboards.forget_keyboard(user.id) if summary.total else None
    await message.reply_text(replies.forget_prompt(summary.total), reply_markup=markup)


async def on_forget_button(update: Update, context: Ctx) -> None:
    """The /forget confirmation buttons; only the user who asked can press them."""
    query = update.callback_query
    if query is None or query.data is None:
        return
    parsed = keyboards.parse_forget(query.data)
    if parsed is None:
        await query.answer(replies.UNKNOWN_BUTTON)
        return
    user_id, confirmed = parsed
    if query.from_user.id != user_id:
        await query.answer("Only the person who asked can confirm this.", show_alert=True)
        return
    await query.answer()
    if not confirmed:
        await _edit(query, text=replies.FORGET_KEPT, reply_markup=None)
        return
    summary = await context.services.feedback.forget_user(user_id)
    logger.info("forgot user data on request: %d item(s)", summary.total)
    await _edit(
        query,
        text=replies.forgotten_text(summary.predictions, summary.verdicts, summary.images),
        reply_markup=None,
    )


async def on_unknown_button(update: Update, context: Ctx) -> None:
    """Any other button (from an older version of the bot, or forged)."""
    if update.callback_query is not None:
        await update.callback_query.answer(replies.UNKNOWN_BUTTON)


async def _edit(
    query: CallbackQuery,
    *,
    text: str | None = None,
    reply_markup: InlineKeyboardMarkup | None = None,
) -> None:
    """Edit the message under the buttons; "not modified" (a repeated tap) is fine."""
    try:
        if text is None:
            await query.edit_message_reply_markup(reply_markup=reply_markup)
        else:
            await query.edit_message_text(text, reply_markup=reply_markup)
    except BadRequest as exc:
        if "not modified" not in exc.message.lower():
            raise
