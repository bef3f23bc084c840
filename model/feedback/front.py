"""`SqliteFeedbackLog`: the async feedback log the bot uses.

Every database and file operation runs on one dedicated thread (`DiskThread`) that owns the
store's connection, so the event loop never waits on a disk and writes stay strictly ordered.
What each method does is documented on the protocols in `interfaces`.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from model.feedback.health import Trouble, WriteGuard, set_aside, trouble_of
from model.feedback.labeltable import SqliteLabelLog
from model.feedback.records import (
    AnsweredPhoto,
    DisputeEntry,
    FeedbackStats,
    ForgetSummary,
    PredictionRecord,
    ReviewDecision,
    ReviewItem,
    ReviewRecord,
    VerdictKind,
    VerdictOutcome,
    VerdictRecord,
)
from model.feedback.schema import BUSY_TIMEOUT_S
from model.feedback.settings import SqliteSettingsStore
from model.feedback.store import DEFAULT_PENDING_TTL_S, FeedbackStore
from model.feedback.thread import DiskThread

if TYPE_CHECKING:
    from model.feedback.interfaces import (
        PredictionLog,
        PrivacyLog,
        ReviewLog,
        SettingsStore,
        VerdictLog,
    )


class SqliteFeedbackLog:
    """The feedback log in SQLite; all disk work runs on one thread owned by this object.

    `settings`: the run-time settings in the same database, on the same thread; `labels`:
    the proposed labels and the admins' decisions on them, likewise.
    """

    def __init__(self, store: FeedbackStore, thread: DiskThread) -> None:
        # Use `await SqliteFeedbackLog.open(...)`: the store must be opened on `thread`.
        self._store = store
        self._thread = thread
        self.settings = SqliteSettingsStore(store.settings, thread)
        self.labels = SqliteLabelLog(store.labels, thread)

    @classmethod
    async def open(
        cls,
        data_dir: Path,
        *,
        clock: Callable[[], float] = time.time,
        pending_ttl_s: float = DEFAULT_PENDING_TTL_S,
        busy_timeout_s: float = BUSY_TIMEOUT_S,
    ) -> SqliteFeedbackLog:
        """Open (creating if needed) the feedback log under `data_dir`.

        A corrupt database is set aside and a new one started (`health.set_aside`). From then
        on a call that fails for want of disk or database raises `FeedbackUnavailable`; the
        next call simply tries again (see `model.feedback.health`).
        """
        thread = DiskThread("feedback-log")
        try:
            store = await thread.run(
                _open_writer, data_dir, clock=clock, pending_ttl_s=pending_ttl_s
            )
            await thread.run(store.set_busy_timeout, busy_timeout_s)
        except BaseException:
            thread.abandon()
            raise
        thread.guard(
            WriteGuard(store.set_busy_timeout, lambda: store.total_changes, busy_timeout_s)
        )
        return cls(store, thread)

    async def close(self) -> None:
        """Finish queued work, then close the database; later calls raise `FeedbackLogClosed`."""
        await self._thread.close(self._store.close)

    # -- PredictionLog ----------------------------------------------------------------------

    async def record_prediction(self, photo: AnsweredPhoto) -> PredictionRecord:
        return await self._thread.run(self._store.record_prediction, photo)

    async def set_reply_message(self, prediction_id: str, reply_message_id: int) -> None:
        await self._thread.run(self._store.set_reply_message, prediction_id, reply_message_id)

    # -- VerdictLog -------------------------------------------------------------------------

    async def get_prediction(self, prediction_id: str) -> PredictionRecord | None:
        return await self._thread.run(self._store.get_prediction, prediction_id)

    async def predictions_for_reply(
        self, chat_id: int, reply_message_id: int
    ) -> list[PredictionRecord]:
        return await self._thread.run(self._store.predictions_for_reply, chat_id, reply_message_id)

    async def get_verdict(self, prediction_id: str) -> VerdictRecord | None:
        return await self._thread.run(self._store.get_verdict, prediction_id)

    async def record_verdict(
        self,
        prediction_id: str,
        *,
        user_id: int,
        kind: VerdictKind | str,
        label: str | None,
        image: bytes | None = None,
    ) -> VerdictOutcome:
        return await self._thread.run(
            self._store.record_verdict,
            prediction_id,
            user_id=user_id,
            kind=kind,
            label=label,
            image=image,
        )

    async def has_image(self, prediction_id: str) -> bool:
        return await self._thread.run(self._store.has_image, prediction_id)

    async def set_pending_label(self, *, chat_id: int, user_id: int, prediction_id: str) -> None:
        await self._thread.run(
            self._store.set_pending_label,
            chat_id=chat_id,
            user_id=user_id,
            prediction_id=prediction_id,
        )

    async def get_pending_label(self, *, chat_id: int, user_id: int) -> str | None:
        return await self._thread.run(
            self._store.get_pending_label, chat_id=chat_id, user_id=user_id
        )

    async def clear_pending_label(self, *, chat_id: int, user_id: int) -> None:
        await self._thread.run(self._store.clear_pending_label, chat_id=chat_id, user_id=user_id)

    # -- PrivacyLog -------------------------------------------------------------------------

    async def count_user_items(self, user_id: int) -> ForgetSummary:
        return await self._thread.run(self._store.count_user_items, user_id)

    async def forget_user(self, user_id: int) -> ForgetSummary:
        return await self._thread.run(self._store.forget_user, user_id)

    async def prune(self, *, older_than_s: float) -> int:
        return await self._thread.run(self._store.prune, older_than_s=older_than_s)

    # -- ReviewLog --------------------------------------------------------------------------

    async def stats_since(self, since: float) -> FeedbackStats:
        return await self._thread.run(self._store.stats_since, since)

    async def list_disputes(self, offset: int, limit: int) -> tuple[list[DisputeEntry], int]:
        return await self._thread.run(self._store.list_disputes, offset, limit)

    async def next_for_review(self) -> ReviewItem | None:
        return await self._thread.run(self._store.next_for_review)

    async def count_for_review(self) -> int:
        return await self._thread.run(self._store.count_for_review)

    async def get_review(self, prediction_id: str) -> ReviewRecord | None:
        return await self._thread.run(self._store.get_review, prediction_id)

    async def record_review(
        self,
        prediction_id: str,
        *,
        admin_id: int,
        decision: ReviewDecision | str,
        label: str | None = None,
    ) -> bool:
        return await self._thread.run(
            self._store.record_review,
            prediction_id,
            admin_id=admin_id,
            decision=decision,
            label=label,
        )

    # -- diagnostics ------------------------------------------------------------------------

    async def stats(self) -> dict[str, int]:
        """Counts of predictions, verdicts by kind, stored images and pending labels."""
        return await self._thread.run(self._store.stats)


def _open_writer(
    data_dir: Path, *, clock: Callable[[], float], pending_ttl_s: float
) -> FeedbackStore:
    """The store under `data_dir`; a corrupt database is set aside for a new one."""
    try:
        return FeedbackStore.open(data_dir, clock=clock, pending_ttl_s=pending_ttl_s)
    except sqlite3.DatabaseError as exc:
        if trouble_of(exc) is not Trouble.CORRUPT:
            raise
        set_aside(data_dir, str(exc))
    return FeedbackStore.open(data_dir, clock=clock, pending_ttl_s=pending_ttl_s)


if TYPE_CHECKING:
    # mypy checks here that the SQLite log satisfies each protocol the bot is written against.
    def _predictions(log: SqliteFeedbackLog) -> PredictionLog:
        return log

    def _verdicts(log: SqliteFeedbackLog) -> VerdictLog:
        return log

    def _privacy(log: SqliteFeedbackLog) -> PrivacyLog:
        return log

    def _reviews(log: SqliteFeedbackLog) -> ReviewLog:
        return log

    def _settings(log: SqliteFeedbackLog) -> SettingsStore:
        return log.settings
