"""Admin commands: /stats, /disputes, /review, /export, /threshold (models: bot/models.py)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import tempfile
import time
from pathlib import Path

from telegram import InlineKeyboardMarkup, InputFile, Update
from telegram.error import BadRequest, TelegramError

from bot import keyboards, labels, labeltexts, replies
from bot.callbacks import DisputesPage, ReviewAction, ReviewButton
from bot.config import parse_fraction
from bot.context import Ctx, Services
from model.feedback import ReviewDecision, VerdictKind
from model.poolconfig import PoolStats

logger = logging.getLogger(__name__)

DISPUTES_PER_PAGE = 5
UPLOAD_LIMIT_BYTES = 50 * 1024 * 1024  # what bots may upload


def _percentile_text(value: float) -> str:
    return f"{value:.0f} ms" if value else "–"


def _inbox_line(services: Services) -> str:
    """The inbox since start: what it kept, finished, replayed after a crash, still holds."""
    inbox = services.inbox
    if not inbox.enabled:
        if inbox.failing_since is not None:
            return "Inbox: ⚠️ could not be opened (see the log): a crash loses updates in flight"
        return "Inbox: off (INBOX=false: a crash loses the updates in flight)"
    c = inbox.counts
    line = (
        f"Inbox since start: {c.received} received · {c.done} done · {c.replayed} replayed"
        f" · {c.pending} pending"
    )
    if inbox.failing_since is not None:
        line += f" · ⚠️ not keeping updates ({c.unkept} unkept)"
    return line


def _cluster_lines(pool: PoolStats) -> list[str]:
    """On a Ray Serve cluster: whether it answers, and each replica as Serve reports it."""
    if not pool.replicas and not pool.unavailable:
        return []  # the local worker pool
    lines = [f"⚠️ Inference cluster: {pool.unavailable}"] if pool.unavailable else []
    lines.append(f"Cluster replicas: {len(pool.replicas)}")
    lines += [
        f"• {r.replica[:8]} {r.state} · {r.version or 'no model'}"
        f"{f' on {r.backend}' if r.backend else ''} · holding {r.ongoing}"
        for r in pool.replicas
    ]
    return lines


async def on_stats(update: Update, context: Ctx) -> None:
    """/stats: since start and over the last 24 h, as text plus a PNG chart."""
    message = update.effective_message
    if message is None:
        return
    services = context.services
    log = services.reviews
    now = time.time()
    since_start = await log.stats_since(services.started)
    last_day = await log.stats_since(now - 86400)
    pool = services.classifier.stats()
    lines = [
        f"📊 Model {pool.model} on {pool.backend}",
        f"Workers ready: {pool.workers_ready}/{pool.workers_wanted} · queue: {pool.queue_depth}"
        f" · in flight: {pool.in_flight}",
        "",
        f"Photos classified — last 24 h: {last_day.photos}, since start: {since_start.photos}",
        f"Model latency since start: queue p50 {_percentile_text(pool.queue_ms_p50)}, "
        f"p95 {_percentile_text(pool.queue_ms_p95)}; inference p50 "
        f"{_percentile_text(pool.inference_ms_p50)}, "
        f"p95 {_percentile_text(pool.inference_ms_p95)}",
        f"Busy refusals: {pool.busy_refusals} · expired: {pool.expired} · "
        f"worker restarts: {pool.worker_restarts}",
        *_cluster_lines(pool),
        _inbox_line(services),
        "",
        "Verdicts — last 24 h: " + _verdicts_text(last_day.verdicts),
        "Verdicts — since start: " + _verdicts_text(since_start.verdicts),
        labeltexts.pending_line(await labels.pending_count(context)),
    ]
    top = sorted(last_day.per_label.items(), key=lambda item: -item[1])[:10]
    if top:
        lines += ["", "Answers per label (24 h):"]
        lines += [f"• {label}: {count}" for label, count in top]
    accuracy = {k: v for k, v in last_day.accuracy_per_label.items() if v[1]}
    if accuracy:
        lines += ["", "Accuracy the verdicts imply (24 h):"]
        lines += [
            f"• {label}: {right}/{judged} ({right / judged:.0%})"
            for label, (right, judged) in sorted(accuracy.items(), key=lambda item: -item[1][1])
        ][:10]
    await message.reply_text("\n".join(lines))
    from bot.charts import stats_chart

    png = await asyncio.to_thread(
        stats_chart,
        last_day.per_label,
        since_start.per_label,
        last_day.accuracy_per_label,
        f"Verdict — {pool.model}",
    )
    await message.reply_photo(InputFile(png, filename="stats.png"), caption="Answers per label")


def _verdicts_text(verdicts: dict[str, int]) -> str:
    right, wrong, unsure = (verdicts.get(kind, 0) for kind in VerdictKind)
    judged = right + wrong
    rate = f" → {right / judged:.0%} right" if judged else ""
    return f"{right} right, {wrong} wrong, {unsure} not sure{rate}"


async def on_threshold(update: Update, context: Ctx) -> None:
    """/threshold P: the confidence under which answers list runner-ups; persisted."""
    message = update.effective_message
    if message is None:
        return
    tunables = context.services.tunables
    args = context.args or []
    if not args:
        await message.reply_text(
            f"The threshold is {replies.percent(tunables.confidence_threshold)}. "
            "Change it with /threshold 60% (or 0.6)."
        )
        return
    try:
        value = parse_fraction(args[0].strip())
    except ValueError as exc:
        await message.reply_text(f"The threshold was not changed: {exc}. Try /threshold 60%.")
        return
    await context.services.stored_settings.set_setting("confidence_threshold", repr(value))
    tunables.confidence_threshold = value
    await message.reply_text(
        f"Done: below {replies.percent(value)} confidence, answers list the runner-ups and "
        "photos are kept for review."
    )


async def on_disputes(update: Update, context: Ctx) -> None:
    """/disputes: the latest disputed predictions, each as its photo, paged."""
    message = update.effective_message
    if message is not None:
        await _send_disputes(context, message.chat_id, 0)


async def on_disputes_page(update: Update, context: Ctx) -> None:
    """The Next/Previous buttons under /disputes."""
    query = update.callback_query
    if query is None or query.data is None or query.message is None:
        return
    await query.answer()
    page = DisputesPage.parse(query.data)
    if page is not None:
        await _send_disputes(context, query.message.chat.id, page.offset)


async def _send_disputes(context: Ctx, chat_id: int, offset: int) -> None:
    log = context.services.reviews
    threshold = context.services.tunables.confidence_threshold
    items, total = await log.list_disputes(offset, DISPUTES_PER_PAGE)
    if not total:
        await context.bot.send_message(chat_id, "No disputed predictions yet.")
        return
    for number, item in enumerate(items, offset + 1):
        corrected = item.verdict.label if item.verdict.kind == VerdictKind.WRONG else "not sure"
        caption = (
            f"#{number} · predicted {replies.prediction_text(item.prediction, threshold)}\n"
            f"corrected: {corrected}"
            + (f"\nreview: {item.review.decision}" if item.review else "")
            + f"\n{time.strftime('%Y-%m-%d %H:%M', time.gmtime(item.verdict.created))} UTC"
        )
        await _send_item(context, chat_id, item.prediction.file_id, item.image_path, caption)
    shown = f"{offset + 1}–{min(offset + DISPUTES_PER_PAGE, total)} of {total}"
    await context.bot.send_message(
        chat_id,
        f"Disputes {shown}.",
        reply_markup=keyboards.disputes_keyboard(offset, DISPUTES_PER_PAGE, total),
    )


async def on_review(update: Update, context: Ctx) -> None:
    """/review: the next uncertain or disputed item, with confirm / relabel / discard."""
    message = update.effective_message
    if message is None:
        return
    await _send_next_review(context, message.chat_id)
    pending = await labels.pending_count(context)
    if pending:  # decided in /labels, not item by item
        await message.reply_text(labeltexts.pending_line(pending))


async def _send_next_review(context: Ctx, chat_id: int) -> None:
    log = context.services.reviews
    threshold = context.services.tunables.confidence_threshold
    item = await log.next_for_review()
    if item is None:
        await context.bot.send_message(chat_id, "Nothing left to review. 🎉")
        return
    left = await log.count_for_review()
    prediction = item.prediction
    proposed: str | None
    if item.verdict is None:
        user_says, proposed = "no verdict (uncertain)", prediction.top.label
    elif item.verdict.kind == VerdictKind.WRONG:
        user_says, proposed = f"wrong, it is “{item.verdict.label}”", item.verdict.label
    elif item.verdict.kind == VerdictKind.RIGHT:
        user_says, proposed = "right", prediction.top.label
    else:
        user_says, proposed = "not sure", None
    model_says = replies.prediction_text(prediction, threshold)
    caption = f"Review ({left} left)\nmodel: {model_says}\nuser: {user_says}"
    markup = keyboards.review_keyboard(prediction.id, prediction.scores, proposed)
    await _send_item(context, chat_id, prediction.file_id, item.image_path, caption, markup)


async def _send_item(
    context: Ctx,
    chat_id: int,
    file_id: str,
    image_path: Path | None,
    caption: str,
    markup: InlineKeyboardMarkup | None = None,
) -> None:
    """An item's photo (the kept copy, else Telegram's by file id) with its caption; the
    caption alone when neither can be had."""
    try:
        kept = await asyncio.to_thread(_read_kept, image_path)  # a disk read: off the loop
        photo = kept if kept is not None else file_id
        await context.bot.send_photo(chat_id, photo, caption=caption, reply_markup=markup)
    except (BadRequest, OSError):
        await context.bot.send_message(
            chat_id, caption + "\n(photo no longer available)", reply_markup=markup
        )


def _read_kept(image_path: Path | None) -> bytes | None:
    if image_path is None or not image_path.exists():
        return None
    return image_path.read_bytes()


async def on_review_button(update: Update, context: Ctx) -> None:
    """A decision in /review: stored, then the next item."""
    query = update.callback_query
    if query is None or query.data is None or query.message is None:
        return
    button = ReviewButton.parse(query.data)
    if button is None:
        await query.answer(replies.UNKNOWN_BUTTON)
        return
    log = context.services.reviews
    chat_id = query.message.chat.id
    if button.action is ReviewAction.STOP:
        await query.answer("Stopped.")
        with contextlib.suppress(TelegramError):
            await query.edit_message_reply_markup(reply_markup=None)
        return
    record = await log.get_prediction(button.prediction_id)
    if record is None:
        await query.answer(replies.EXPIRED, show_alert=True)
        return
    label: str | None = None
    decision: ReviewDecision
    if button.action is ReviewAction.CONFIRM:
        decision = ReviewDecision.CONFIRM
    elif button.action is ReviewAction.DISCARD:
        decision = ReviewDecision.DISCARD
    elif button.number < len(record.scores):
        decision, label = ReviewDecision.RELABEL, record.scores[button.number].label
    else:
        await query.answer(replies.UNKNOWN_BUTTON)
        return
    admin = query.from_user.id
    stored = await log.record_review(record.id, admin_id=admin, decision=decision, label=label)
    await query.answer("Saved." if stored else "Already reviewed.")
    with contextlib.suppress(TelegramError):
        await query.edit_message_reply_markup(reply_markup=None)
    await _send_next_review(context, chat_id)


async def on_export(update: Update, context: Ctx) -> None:
    """/export: the reviewed training data as a zip (folder per label + CSV)."""
    message = update.effective_message
    if message is None:
        return
    from model.feedback.export import EXPORT_PREFIX, exports_dir

    settings = context.services.settings
    data_dir = settings.data_dir
    exports = exports_dir(data_dir)
    exports.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    archive = exports / f"{EXPORT_PREFIX}{stamp}.zip"
    try:
        summary = await asyncio.to_thread(_export_zip, data_dir, archive)
    except Exception as exc:
        logger.exception("export failed")
        await message.reply_text(f"The export failed: {exc}")
        return
    size = archive.stat().st_size
    if size > UPLOAD_LIMIT_BYTES:
        # Kept for the admin to fetch: retention and /forget delete it like the log's data.
        await message.reply_text(
            f"{summary}\nThe zip is {size / 1024 / 1024:.0f} MB, over the 50 MB bots may send. "
            f"It is on the server at {archive} for {settings.retention_days:g} days, or until "
            "someone uses /forget."
        )
        return
    try:
        with archive.open("rb") as handle:
            await message.reply_document(
                InputFile(handle, filename=archive.name), caption=summary[:1000]
            )
    finally:
        # Sent (or failed to send: /export makes a new one): no copy of users' photos stays.
        archive.unlink(missing_ok=True)


def _export_zip(data_dir: Path, archive: Path) -> str:
    from model.feedback.export import export_feedback

    with tempfile.TemporaryDirectory(dir=archive.parent) as tmp:
        out = Path(tmp) / "feedback"
        summary = export_feedback(data_dir, out, reviewed_only=True)
        shutil.make_archive(str(archive.with_suffix("")), "zip", root_dir=out)
    return summary.describe()
