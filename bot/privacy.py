"""/forget: delete everything the bot keeps about the user who asks, after a confirmation."""

from __future__ import annotations

import asyncio
import logging

from telegram import Update

from bot import keyboards, replies
from bot.callbacks import ForgetButton
from bot.context import Ctx
from bot.edits import edit
from model.feedback.export import delete_export_archives

logger = logging.getLogger(__name__)


async def on_forget(update: Update, context: Ctx) -> None:
    """/forget: say what would be deleted and ask for confirmation."""
    message = update.effective_message
    user = update.effective_user
    if message is None or user is None:
        return
    summary = await context.services.privacy.count_user_items(user.id)
    markup = keyboards.forget_keyboard(user.id) if summary.total else None
    await message.reply_text(replies.forget_prompt(summary.total), reply_markup=markup)


async def on_forget_button(update: Update, context: Ctx) -> None:
    """The /forget confirmation buttons; only the user who asked can press them."""
    query = update.callback_query
    if query is None or query.data is None:
        return
    button = ForgetButton.parse(query.data)
    if button is None:
        await query.answer(replies.UNKNOWN_BUTTON)
        return
    if query.from_user.id != button.user_id:
        await query.answer("Only the person who asked can confirm this.", show_alert=True)
        return
    await query.answer()
    if not button.confirmed:
        await edit(query, text=replies.FORGET_KEPT, reply_markup=None)
        return
    summary = await context.services.privacy.forget_user(button.user_id)
    # Export zips left for admins may hold their photos and labels: all of them go.
    zips = await asyncio.to_thread(delete_export_archives, context.services.settings.data_dir)
    logger.info(
        "forgot user data on request: %d item(s); %d export zip(s) deleted", summary.total, zips
    )
    await edit(
        query,
        text=replies.forgotten_text(summary.predictions, summary.verdicts, summary.images),
        reply_markup=None,
    )
