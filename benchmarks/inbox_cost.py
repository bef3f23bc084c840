"""What the inbox adds to each update: `python -m benchmarks.inbox_cost [FOLDER]`.

Runs what the bot runs per update with the inbox on, through its async front and disk thread:
the update serialised and kept (FULL sync) when getUpdates returns it, then marked done when
handled; against the same loop with the inbox off (`Inbox.disabled()`, what the bot did before).
Batches of 1 (one user at a time: one sync per update) and of 20 (a busy bot: one sync per
batch). FOLDER is where the database goes (default: a temporary folder under the current one,
so on the disk DATA_DIR would be on, not a tmpfs).
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from telegram import Bot, Update

from bot.inbox import Inbox

ROUNDS = 400


def photo_update(update_id: int, bot: Bot) -> Update:
    """A photo message as Telegram sends it (four renditions)."""
    sizes = [
        {
            "file_id": f"AgACAgIAAxkBAAI{update_id}{w}",
            "file_unique_id": f"AQAD{update_id}{w}",
            "width": w,
            "height": w * 3 // 4,
            "file_size": w * w // 4,
        }
        for w in (90, 320, 800, 1280)
    ]
    payload = {
        "update_id": update_id,
        "message": {
            "message_id": update_id,
            "date": 1_764_600_000,
            "chat": {"id": 123456789, "type": "private", "first_name": "Ada"},
            "from": {"id": 123456789, "is_bot": False, "first_name": "Ada", "language_code": "en"},
            "photo": sizes,
        },
    }
    update = Update.de_json(payload, bot)
    assert update is not None
    return update


async def per_update_ms(inbox: Inbox, batch: int, bot: Bot, first_id: int) -> list[float]:
    """Milliseconds per update, one figure per batch."""
    figures: list[float] = []
    next_id = first_id
    for _ in range(ROUNDS // batch):
        updates = [photo_update(next_id + i, bot) for i in range(batch)]
        next_id += batch
        started = time.perf_counter()
        await inbox.receive(updates)
        for update in updates:
            inbox.started(update)
            await inbox.finished(update)
        figures.append((time.perf_counter() - started) * 1000 / batch)
    return figures


async def main(folder: Path) -> None:
    bot = Bot("123:bench")
    off = Inbox.disabled()
    on = await Inbox.open(folder)
    try:
        print(f"inbox cost per update ({ROUNDS} updates per row; database in {folder})")
        print(f"{'':24}{'p50 ms':>9}{'p95 ms':>9}{'mean ms':>9}")
        first_id = 1
        for batch in (1, 20):
            for name, inbox in (("off (before)", off), ("on", on)):
                figures = await per_update_ms(inbox, batch, bot, first_id)
                first_id += ROUNDS
                p95 = statistics.quantiles(figures, n=20)[-1]
                label = f"{name}, batches of {batch}"
                print(
                    f"{label:24}{statistics.median(figures):9.3f}{p95:9.3f}"
                    f"{statistics.fmean(figures):9.3f}"
                )
    finally:
        await on.close()


if __name__ == "__main__":
    if len(sys.argv) > 1:
        asyncio.run(main(Path(sys.argv[1])))
    else:
        with tempfile.TemporaryDirectory(dir=".") as tmp:
            asyncio.run(main(Path(tmp)))
