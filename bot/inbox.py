"""The inbox: every update is kept on disk before Telegram hears it arrived, until handled.

python-telegram-bot confirms a batch of updates to Telegram (the next `getUpdates` offset) as
soon as it has fetched it, and a webhook answers 200 as soon as the update is queued: a crash
then loses what was in flight. So:

- `InboxBot.get_updates` writes the batch (one transaction) before returning it: the Updater
  sends the next offset only after that. In webhook mode `bot/web.py` writes before the 200.
- `InboxProcessor` awaits each update's handling and then marks it done; a photo of an album
  is held (`hold`) until the album's reply went out (`release`).
- At start, `replay` puts the updates not done into the update queue, in order, before
  polling starts (a copy Telegram sends again is recognised by its id and skipped).
- A disk that cannot keep updates (full, read-only, locked) costs the guarantee, never the
  answer: the update is handled all the same, the failure logged and the admins told once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from telegram import Bot, Message, Update
from telegram.error import BadRequest
from telegram.ext import BaseUpdateProcessor, ExtBot

from bot import replies
from bot.access import tell_admins
from bot.inboxstore import BUSY_TIMEOUT_S, MAX_ATTEMPTS, InboxStore, Pending
from model.feedback.health import FeedbackUnavailable, WriteGuard
from model.feedback.thread import DiskThread

logger = logging.getLogger(__name__)

#: Done updates are kept this long (a copy Telegram sends again within it is recognised).
KEEP_DONE_S = 600.0
PRUNE_EVERY_S = 60.0


@dataclass
class InboxCounts:
    """What /metrics and /stats show of the inbox."""

    received: int = 0  # new updates kept
    done: int = 0  # marked done
    replayed: int = 0  # put back into the queue at start
    duplicates: int = 0  # sent again by Telegram while in the inbox: skipped
    unkept: int = 0  # handled without being kept (the disk failed)
    pending: int = 0  # kept, not done


class Inbox:
    """The async front of the inbox, on its own disk thread; `Inbox.disabled()` keeps nothing."""

    def __init__(self, store: InboxStore | None, thread: DiskThread | None) -> None:
        self._store = store
        self._thread = thread
        self.counts = InboxCounts()
        self._duplicates: set[int] = set()  # ids to skip once (the copy in the queue)
        self._held: dict[tuple[int, int], int] = {}  # (chat, message) → update id
        self._holding: set[int] = set()
        self._running: dict[tuple[int, int], int] = {}  # (chat, message) → update being handled
        self._done_early: set[int] = set()  # marked done by `answered`, before they returned
        self.failing_since: float | None = None
        self._admins: tuple[ExtBot[Any], frozenset[int]] | None = None
        self._telling: set[asyncio.Task[None]] = set()
        self._unavailable: str | None = None  # why the inbox could not be opened

    @property
    def enabled(self) -> bool:
        """Whether updates are kept at all (INBOX=false: no)."""
        return self._store is not None

    @classmethod
    def disabled(cls) -> Inbox:
        """An inbox that keeps nothing (updates are handled as python-telegram-bot does)."""
        return cls(None, None)

    @classmethod
    async def open(cls, data_dir: Path) -> Inbox:
        """The inbox under `data_dir`, opened on its own thread."""
        thread = DiskThread("inbox")
        try:
            store = await thread.run(InboxStore.open, data_dir)
        except BaseException:
            thread.abandon()
            raise
        conn = store.conn

        def set_busy(seconds: float) -> None:
            conn.execute(f"PRAGMA busy_timeout = {round(seconds * 1000):d}")

        thread.guard(WriteGuard(set_busy, lambda: conn.total_changes, BUSY_TIMEOUT_S))
        inbox = cls(store, thread)
        try:
            inbox.counts.pending = await thread.run(store.pending_count)
        except BaseException:
            await thread.close(store.close)
            raise
        return inbox

    @classmethod
    def unavailable(cls, exc: BaseException) -> Inbox:
        """No inbox, because it could not be opened (a full or read-only disk): logged now,
        and told to the admins once the bot is up (`tell_if_unavailable`)."""
        inbox = cls.disabled()
        inbox._unavailable = str(exc) or type(exc).__name__
        inbox.failing_since = time.time()
        logger.error(
            "inbox: cannot open it (%s); handling updates without keeping them (an update in "
            "flight at a crash is lost) until the next start",
            inbox._unavailable,
        )
        return inbox

    def tell_if_unavailable(self) -> None:
        """Tell the admins that the inbox could not be opened, if so (once the bot is up)."""
        if self._unavailable is not None:
            self._tell(replies.inbox_failing_text(self._unavailable))
            self._unavailable = None

    def tell_admins_with(self, bot: ExtBot[Any], admin_ids: frozenset[int]) -> None:
        """Who hears that the inbox cannot keep updates, through which bot."""
        self._admins = (bot, admin_ids)

    async def receive(self, updates: Sequence[Update]) -> None:
        """Keep `updates` (before Telegram is told they arrived). Those already in the inbox
        are skipped when they reach the processor; a disk failure is logged and told."""
        if self._store is None or self._thread is None or not updates:
            return
        rows = [(u.update_id, u.to_json()) for u in updates]
        await self.receive_json(rows, skip_copies=True)

    async def receive_json(
        self, rows: Sequence[tuple[int, str]], *, skip_copies: bool = False
    ) -> set[int]:
        """Keep (id, JSON) rows; returns the ids that were new (all of them when nothing could
        be kept). With `skip_copies`, the processor skips the copies of the others (they are
        queued anyway); without, the caller leaves them out. Raises what is not a storage
        failure (the webhook answers 500 then)."""
        if self._store is None or self._thread is None:
            return {i for i, _ in rows}
        try:
            new = await self._thread.run(self._store.receive, rows)
        except FeedbackUnavailable as exc:
            self.counts.unkept += len(rows)
            self._failed(exc)
            return {i for i, _ in rows}
        self._working()
        self.counts.received += len(new)
        self.counts.pending += len(new)
        for update_id, _ in rows:
            if update_id not in new:
                self.counts.duplicates += 1
                if skip_copies:
                    self._duplicates.add(update_id)
        return new

    def is_duplicate(self, update_id: int) -> bool:
        """Whether this copy of the update is one Telegram sent again (skip it: once)."""
        if update_id in self._duplicates:
            self._duplicates.discard(update_id)
            return True
        return False

    def hold(self, update: Update) -> None:
        """Keep the update undone when its handler returns (an album photo: `release` marks it
        done once the album's reply is sent)."""
        message = update.effective_message
        if self._store is None or message is None:
            return
        self._held[(message.chat_id, message.message_id)] = update.update_id
        self._holding.add(update.update_id)

    async def release(self, messages: Sequence[Message]) -> None:
        """The album these messages are was answered: mark their updates done."""
        ids = [
            i
            for m in messages
            if (i := self._held.pop((m.chat_id, m.message_id), None)) is not None
        ]
        self._holding.difference_update(ids)
        await self._mark_done(ids)

    def started(self, update: Update) -> None:
        """The update's handlers are about to run (so that `answered` can find it)."""
        message = update.effective_message
        if self._store is not None and message is not None:
            self._running[(message.chat_id, message.message_id)] = update.update_id

    async def answered(self, message: Message) -> None:
        """The reply to `message` was sent: mark its update done now, not when its handler
        returns (what a crash in between costs is a second answer: keep that short)."""
        update_id = self._running.pop((message.chat_id, message.message_id), None)
        if update_id is None or update_id in self._holding:
            return
        self._done_early.add(update_id)
        await self._mark_done([update_id])

    async def finished(self, update: Update) -> None:
        """The update's handler returned: mark it done unless it is held or done already."""
        message = update.effective_message
        if message is not None:
            key = (message.chat_id, message.message_id)
            if self._running.get(key) == update.update_id:
                del self._running[key]
        if update.update_id in self._done_early:
            self._done_early.discard(update.update_id)
        elif update.update_id not in self._holding:
            await self._mark_done([update.update_id])

    async def _mark_done(self, ids: list[int]) -> None:
        if self._store is None or self._thread is None or not ids:
            return
        try:
            await self._thread.run(self._store.mark_done, ids)
        except FeedbackUnavailable as exc:
            self._failed(exc)  # replayed at the next start: a second answer, not a lost one
            return
        self.counts.done += len(ids)
        self.counts.pending = max(0, self.counts.pending - len(ids))

    async def replay(self, queue: asyncio.Queue[object], bot: Bot) -> int:
        """Put the updates not done into `queue`, in order; how many."""
        if self._store is None or self._thread is None:
            return 0
        try:
            pending, given_up = await self._thread.run(self._store.take_pending)
        except FeedbackUnavailable as exc:
            self._failed(exc)
            return 0
        for update_id in given_up:
            logger.error(
                "inbox: update %d was tried %d times without finishing; given up",
                update_id,
                MAX_ATTEMPTS,
            )
        self.counts.pending = len(pending)
        for item in pending:
            update = _parse(item, bot)
            if update is not None:
                await queue.put(update)
        self.counts.replayed += len(pending)
        if pending:
            logger.info("inbox: replaying %d update(s) not handled before", len(pending))
        return len(pending)

    async def prune(self, older_than_s: float = KEEP_DONE_S) -> int:
        """Remove updates done more than `older_than_s` ago; never one not done."""
        if self._store is None or self._thread is None:
            return 0
        return await self._thread.run(self._store.prune, older_than_s)

    async def prune_forever(self) -> None:
        """Prune every `PRUNE_EVERY_S` (only while running: a copy Telegram sends again at
        start is recognised before the done update it copies is pruned)."""
        while True:
            await asyncio.sleep(PRUNE_EVERY_S)
            try:
                removed = await self.prune()
                if removed:
                    logger.debug("inbox: pruned %d done update(s)", removed)
            except Exception:
                logger.exception("inbox: pruning failed; trying again later")

    async def close(self) -> None:
        """Close the database after every write already asked for."""
        if self._store is not None and self._thread is not None:
            await self._thread.close(self._store.close)

    def _failed(self, exc: FeedbackUnavailable) -> None:
        if self.failing_since is not None:
            logger.debug("inbox: still failing: %s", exc)
            return
        self.failing_since = time.time()
        logger.error(
            "inbox: cannot keep updates (%s); handling them without keeping them (an update in "
            "flight at a crash is lost) until a write works again",
            exc,
        )
        self._tell(replies.inbox_failing_text(str(exc)))

    def _working(self) -> None:
        if self.failing_since is None:
            return
        self.failing_since = None
        logger.warning("inbox: keeping updates again")
        self._tell(replies.INBOX_WORKING_AGAIN)

    def _tell(self, text: str) -> None:
        if self._admins is None:
            return
        bot, admin_ids = self._admins

        task = asyncio.get_running_loop().create_task(tell_admins(bot, admin_ids, text))
        self._telling.add(task)  # held until done: the loop keeps only a weak reference
        task.add_done_callback(self._telling.discard)


def _parse(item: Pending, bot: Bot) -> Update | None:
    try:
        return Update.de_json(json.loads(item.body), bot)
    except (ValueError, TypeError, KeyError):
        logger.exception("inbox: update %d could not be read back; skipped", item.update_id)
        return None


class InboxBot(ExtBot[Any]):
    """The bot, keeping every batch of updates in the inbox before returning it (so before the
    Updater's next `getUpdates` confirms it to Telegram)."""

    __slots__ = ("_inbox",)

    def __init__(self, *args: Any, inbox: Inbox, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._inbox = inbox  # a private name: the bot's public attributes are frozen

    async def get_updates(self, *args: Any, **kwargs: Any) -> tuple[Update, ...]:
        """`getUpdates`, the batch kept before it is returned."""
        updates = await super().get_updates(*args, **kwargs)
        await self._inbox.receive(updates)
        return updates

    async def answer_callback_query(self, *args: Any, **kwargs: Any) -> bool:
        """`answerCallbackQuery`; a query past Telegram's answer window (a tap replayed after
        a restart) is logged, not an error: what the tap did stands."""
        try:
            return await super().answer_callback_query(*args, **kwargs)
        except BadRequest as exc:
            if "query is too old" not in str(exc).lower():
                raise
            logger.info("a button tap was handled too late to answer it: %s", exc)
            return False


class InboxProcessor(BaseUpdateProcessor):
    """Handles updates concurrently (as `concurrent_updates(True)` does), marking each done in
    the inbox when its handling returned; a copy Telegram sent again is skipped."""

    def __init__(self, inbox: Inbox, max_concurrent_updates: int = 256) -> None:
        super().__init__(max_concurrent_updates)
        self.inbox = inbox

    async def do_process_update(self, update: object, coroutine: Awaitable[Any]) -> None:
        """Run the handlers, then mark the update done (not when cancelled: it is replayed)."""
        if isinstance(update, Update) and self.inbox.is_duplicate(update.update_id):
            if asyncio.iscoroutine(coroutine):
                coroutine.close()
            logger.debug("inbox: update %d was sent again; skipped", update.update_id)
            return
        if isinstance(update, Update):
            self.inbox.started(update)
        await coroutine
        if isinstance(update, Update):
            await self.inbox.finished(update)

    async def initialize(self) -> None:
        """Nothing to set up."""

    async def shutdown(self) -> None:
        """Nothing to free."""
