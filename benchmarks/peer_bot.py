"""The peer: how a typical fastai Telegram bot is written, for comparison.

`learn.predict` is called per photo inside the async handler, in the bot process, with torch
using every core. Run by benchmarks/bench.py against the sandbox; not part of Verdict.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

from telegram import Update
from telegram.ext import Application, ContextTypes, MessageHandler, filters


def main() -> None:
    """Load the learner, then answer photos until killed."""
    warnings.simplefilter("ignore")
    from fastai.learner import load_learner
    from fastai.vision.core import PILImage

    learn = load_learner(Path(sys.argv[1]))
    learn.remove_cb(learn.progress) if hasattr(learn, "progress") else None

    async def on_photo(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        assert message is not None
        file = await context.bot.get_file(message.photo[-1].file_id)
        data = bytes(await file.download_as_bytearray())
        with learn.no_bar():
            label, _, probabilities = learn.predict(PILImage.create(data))
        await message.reply_text(f"{label} — {float(probabilities.max()):.0%}", do_quote=True)

    api = os.environ["TELEGRAM_API_URL"]
    application = (
        Application.builder()
        .token(os.environ["TELEGRAM_TOKEN"])
        .base_url(f"{api}/bot")
        .base_file_url(f"{api}/file/bot")
        .concurrent_updates(True)
        .build()
    )
    application.add_handler(MessageHandler(filters.PHOTO, on_photo))
    application.run_polling()


if __name__ == "__main__":
    main()
