"""`FeedbackStore`: the feedback log's writes over one SQLite connection, synchronous.

Predictions, verdicts, pending typed labels, admins' reviews, `/forget` and retention. Every
read-then-write runs in one IMMEDIATE transaction; an image is on disk before a row points at it
and unlinked only after the commit that dropped its row (see `imagestore`). The bot uses it
through `SqliteFeedbackLog`, which runs it on one thread; `training` and tests use it directly.
"""

from __future__ import annotations

import logging
import secrets
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from model.feedback.imagestore import ImageStore
from model.feedback.labeltable import LabelTable
from model.feedback.queries import FeedbackQueries
from model.feedback.records import (
    AnsweredPhoto,
    ForgetSummary,
    InvalidReview,
    InvalidVerdict,
    PredictionRecord,
    ReviewDecision,
    UnknownPrediction,
    VerdictKind,
    VerdictOutcome,
    VerdictRecord,
    confirmed_label,
    is_reviewable,
    normalize_label,
    review_decision,
    review_label,
    verdict_kind,
)
from model.feedback.rows import scores_to_json
from model.feedback.schema import IMAGES_FOLDER, connect, feedback_dir, transaction
from model.feedback.settings import SettingsTable

logger = logging.getLogger(__name__)

DEFAULT_PENDING_TTL_S = 3600.0


class FeedbackStore(FeedbackQueries):
    """The feedback log over one SQLite connection; synchronous, for use from one thread.

    `settings`: the run-time settings in the same database, over the same connection;
    `labels`: the proposed labels and the admins' decisions on them, likewise.
    """

    def __init__(
        self,
        conn: sqlite3.Connection,
        root: Path,
        *,
        clock: Callable[[], float] = time.time,
        pending_ttl_s: float = DEFAULT_PENDING_TTL_S,
    ) -> None:
        super().__init__(conn, ImageStore(conn, root / IMAGES_FOLDER))
        self._clock = clock
        self._pending_ttl_s = pending_ttl_s
        self.settings = SettingsTable(conn, clock=clock)
        self.labels = LabelTable(conn, clock=clock)

    @classmethod
    def open(
        cls,
        data_dir: Path,
        *,
        clock: Callable[[], float] = time.time,
        pending_ttl_s: float = DEFAULT_PENDING_TTL_S,
        create: bool = True,
    ) -> FeedbackStore:
        """Open (with `create`, create) the database under `data_dir` and migrate its schema.

        With `create` (a writer), image files a crash left unlinked are swept away.
        """
        conn = connect(data_dir, create=create)
        store = cls(conn, feedback_dir(data_dir), clock=clock, pending_ttl_s=pending_ttl_s)
        if create:
            store.sweep_orphans()
        return store

    def close(self) -> None:
        """Close the connection (SQLite checkpoints the WAL when the last one closes)."""
        self._conn.close()

    @property
    def total_changes(self) -> int:
        """Rows the connection has inserted, updated or deleted since it opened."""
        return self._conn.total_changes

    def set_busy_timeout(self, seconds: float) -> None:
        """How long a write waits for another process's lock before failing."""
        self._conn.execute(f"PRAGMA busy_timeout = {round(seconds * 1000):d}")

    @property
    def images_dir(self) -> Path:
        """The root of the content-addressed image store."""
        return self._images.root

    def sweep_orphans(self) -> int:
        """Delete store files no row references (left by a crash); returns how many."""
        return self._images.sweep_orphans()

    # -- predictions ------------------------------------------------------------------------

    def record_prediction(self, photo: AnsweredPhoto) -> PredictionRecord:
        prediction = photo.prediction
        if not prediction.scores:
            raise ValueError("a prediction needs at least one label score")
        conn = self._conn
        with transaction(conn):
            created = self._clock()
            sha = self._images.store(photo.image, created) if photo.image else None
            prediction_id = self._new_prediction_id()
            conn.execute(
                "INSERT INTO predictions (id, chat_id, user_id, message_id, reply_message_id,"
                " file_id, file_unique_id, model, scores, created, image_sha256, uncertain)"
                " VALUES (?, ?, ?, ?, NULL, ?, ?, ?, ?, ?, ?, ?)",
                (
                    prediction_id,
                    photo.chat_id,
                    photo.user_id,
                    photo.message_id,
                    photo.file_id,
                    photo.file_unique_id,
                    prediction.model,
                    scores_to_json(prediction.scores),
                    created,
                    sha,
                    int(photo.uncertain),
                ),
            )
        return PredictionRecord(
            id=prediction_id,
            chat_id=photo.chat_id,
            user_id=photo.user_id,
            message_id=photo.message_id,
            reply_message_id=None,
            file_id=photo.file_id,
            file_unique_id=photo.file_unique_id,
            model=prediction.model,
            scores=tuple(prediction.scores),
            created=created,
            image_sha256=sha,
            uncertain=photo.uncertain,
        )

    def _new_prediction_id(self) -> str:
        # 8 random bytes → 11 URL-safe characters: "v:<id>:w" stays far below Telegram's 64-byte
        # callback_data limit, and ids cannot be guessed to press someone else's buttons.
        while True:
            candidate = secrets.token_urlsafe(8)
            if not self._conn.execute(
                "SELECT 1 FROM predictions WHERE id = ?", (candidate,)
            ).fetchone():
                return candidate

    def set_reply_message(self, prediction_id: str, reply_message_id: int) -> None:
        """Remember which bot message answered the prediction (no-op if it is gone)."""
        with transaction(self._conn):
            cursor = self._conn.execute(
                "UPDATE predictions SET reply_message_id = ? WHERE id = ?",
                (reply_message_id, prediction_id),
            )
        if cursor.rowcount == 0:
            # The user may have run /forget between the prediction and the reply.
            logger.debug("No prediction %r to attach reply %r to", prediction_id, reply_message_id)

    # -- verdicts ---------------------------------------------------------------------------

    def record_verdict(
        self,
        prediction_id: str,
        *,
        user_id: int,
        kind: VerdictKind | str,
        label: str | None,
        image: bytes | None = None,
    ) -> VerdictOutcome:
        """Store the one verdict a prediction may get; a later call returns the first one.

        `kind`: a `VerdictKind` or its value. `label`: required for "wrong" (the corrected
        label); for "right" None or the predicted label (the predicted label is stored); None
        for "unsure". `image`: the disputed image, stored and linked to the prediction unless
        it already has one on disk. Raises `UnknownPrediction` or `InvalidVerdict`.
        """
        checked = verdict_kind(kind)
        if checked == VerdictKind.WRONG:
            if label is None:
                raise InvalidVerdict('a "wrong" verdict needs the correct label')
            label = normalize_label(label)
        elif checked == VerdictKind.UNSURE and label is not None:
            raise InvalidVerdict('an "unsure" verdict has no label')
        conn = self._conn
        with transaction(conn):
            prediction = self.get_prediction(prediction_id)
            if prediction is None:
                raise UnknownPrediction(prediction_id)
            if checked == VerdictKind.RIGHT:
                if label is not None and label != prediction.top.label:
                    raise InvalidVerdict('a "right" verdict confirms the predicted label')
                label = prediction.top.label
            existing = self.get_verdict(prediction_id)
            if existing is not None:
                return VerdictOutcome(recorded=False, verdict=existing)
            created = self._clock()
            replaced: list[Path] = []
            if image and not self.has_image(prediction_id):
                sha = self._images.store(image, created)
                conn.execute(
                    "UPDATE predictions SET image_sha256 = ? WHERE id = ?", (sha, prediction_id)
                )
                # A link to a file that has gone missing is replaced; drop its row if now unused.
                if prediction.image_sha256 not in (None, sha):
                    replaced = self._images.drop_unreferenced([prediction.image_sha256])
            # The primary key makes a second verdict impossible even from another process;
            # DO NOTHING turns that race into "not recorded" rather than an error.
            cursor = conn.execute(
                "INSERT INTO verdicts (prediction_id, user_id, kind, label, created)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (prediction_id) DO NOTHING",
                (prediction_id, user_id, checked.value, label, created),
            )
            if cursor.rowcount == 0:
                existing = self.get_verdict(prediction_id)
                if existing is not None:
                    return VerdictOutcome(recorded=False, verdict=existing)
            conn.execute("DELETE FROM pending_labels WHERE prediction_id = ?", (prediction_id,))
        self._images.unlink(replaced)
        verdict = VerdictRecord(prediction_id, user_id, checked, label, created)
        return VerdictOutcome(recorded=True, verdict=verdict)

    # -- pending labels ---------------------------------------------------------------------

    def set_pending_label(self, *, chat_id: int, user_id: int, prediction_id: str) -> None:
        """Wait for a typed label for `prediction_id` (raises `UnknownPrediction`)."""
        with transaction(self._conn):
            if self.get_prediction(prediction_id) is None:
                raise UnknownPrediction(prediction_id)
            self._conn.execute(
                "INSERT INTO pending_labels (chat_id, user_id, prediction_id, created)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (chat_id, user_id) DO UPDATE"
                " SET prediction_id = excluded.prediction_id, created = excluded.created",
                (chat_id, user_id, prediction_id, self._clock()),
            )

    def get_pending_label(self, *, chat_id: int, user_id: int) -> str | None:
        """The awaited prediction id; one older than `pending_ttl_s` is dropped, not returned."""
        row = self._conn.execute(
            "SELECT prediction_id, created FROM pending_labels WHERE chat_id = ? AND user_id = ?",
            (chat_id, user_id),
        ).fetchone()
        if row is None:
            return None
        if float(row["created"]) < self._clock() - self._pending_ttl_s:
            # Expired: drop it so that a stale question never swallows an ordinary message.
            with transaction(self._conn):
                self._conn.execute(
                    "DELETE FROM pending_labels WHERE chat_id = ? AND user_id = ? AND created = ?",
                    (chat_id, user_id, row["created"]),
                )
            return None
        return str(row["prediction_id"])

    def clear_pending_label(self, *, chat_id: int, user_id: int) -> None:
        with transaction(self._conn):
            self._conn.execute(
                "DELETE FROM pending_labels WHERE chat_id = ? AND user_id = ?", (chat_id, user_id)
            )

    # -- privacy and retention --------------------------------------------------------------

    def forget_user(self, user_id: int) -> ForgetSummary:
        """Delete the user's predictions, verdicts, pending state and images nobody else uses.

        Also other users' verdicts on the user's photos, and reviews of what is deleted.
        """
        conn = self._conn
        with transaction(conn):
            counted = self._count_user_items(user_id)
            candidates = [
                str(row[0])
                for row in conn.execute(
                    "SELECT DISTINCT image_sha256 FROM predictions"
                    " WHERE user_id = ? AND image_sha256 IS NOT NULL",
                    (user_id,),
                )
            ]
            # A review of their verdict on someone else's photo judged what they said: it goes
            # with the verdict (the item returns to the queue if it is still up for review).
            conn.execute(
                "DELETE FROM reviews WHERE prediction_id IN"
                " (SELECT prediction_id FROM verdicts WHERE user_id = ?)",
                (user_id,),
            )
            conn.execute("DELETE FROM verdicts WHERE user_id = ?", (user_id,))
            conn.execute("DELETE FROM pending_labels WHERE user_id = ?", (user_id,))
            # Cascades to other users' verdicts, pending labels and the reviews of these
            # predictions.
            conn.execute("DELETE FROM predictions WHERE user_id = ?", (user_id,))
            removed = self._images.drop_unreferenced(candidates)
        self._images.unlink(removed)
        logger.info(
            "Forgot user %r: %r predictions, %r verdicts, %r images",
            user_id,
            counted.predictions,
            counted.verdicts,
            len(removed),
        )
        return ForgetSummary(counted.predictions, counted.verdicts, len(removed))

    def prune(self, *, older_than_s: float) -> int:
        """Delete undisputed predictions older than `older_than_s` and their unused images.

        Predictions an admin confirmed or relabelled are training data too, and are kept.
        """
        if older_than_s < 0:
            raise ValueError("older_than_s must not be negative")
        conn = self._conn
        undisputed = (
            "created < ? AND NOT EXISTS (SELECT 1 FROM verdicts v"
            " WHERE v.prediction_id = predictions.id AND v.kind IN ('wrong', 'unsure'))"
            " AND NOT EXISTS (SELECT 1 FROM reviews r"
            " WHERE r.prediction_id = predictions.id AND r.decision != 'discard')"
        )
        with transaction(conn):
            cutoff = self._clock() - older_than_s
            candidates = [
                str(row[0])
                for row in conn.execute(
                    "SELECT DISTINCT image_sha256 FROM predictions"
                    f" WHERE image_sha256 IS NOT NULL AND {undisputed}",
                    (cutoff,),
                )
            ]
            deleted = conn.execute(f"DELETE FROM predictions WHERE {undisputed}", (cutoff,))
            removed = self._images.drop_unreferenced(candidates)
        self._images.unlink(removed)
        if deleted.rowcount:
            logger.info(
                "Pruned %r predictions and %r images older than %r s",
                deleted.rowcount,
                len(removed),
                older_than_s,
            )
        return deleted.rowcount

    # -- reviews ----------------------------------------------------------------------------

    def record_review(
        self,
        prediction_id: str,
        *,
        admin_id: int,
        decision: ReviewDecision | str,
        label: str | None = None,
    ) -> bool:
        """Store the one review an item may get; False (nothing stored) if it already has one.

        `decision`: a `ReviewDecision` or its value. "confirm" keeps what the user said: the
        corrected label of a "wrong" verdict, or the predicted label for a "right" verdict or
        an uncertain item without one (`label`: None or that label); an "unsure" verdict has
        nothing to confirm. "relabel" needs `label` (normalized as verdict labels are).
        "discard" takes no label and keeps the item out of training data. Raises
        `UnknownPrediction`, or `InvalidReview` for a bad decision or label, or an item that
        is not up for review (see `is_reviewable`).
        """
        checked = review_decision(decision)
        if checked == ReviewDecision.RELABEL:
            if label is None:
                raise InvalidReview('a "relabel" review needs the new label')
            label = review_label(label)
        elif checked == ReviewDecision.DISCARD and label is not None:
            raise InvalidReview('a "discard" review has no label')
        conn = self._conn
        with transaction(conn):
            prediction = self.get_prediction(prediction_id)
            if prediction is None:
                raise UnknownPrediction(prediction_id)
            if self.get_review(prediction_id) is not None:
                return False
            verdict = self.get_verdict(prediction_id)
            if not is_reviewable(prediction, verdict):
                raise InvalidReview(
                    f"prediction {prediction_id!r} is neither disputed nor uncertain with a "
                    "kept image; there is nothing to review"
                )
            if checked == ReviewDecision.CONFIRM:
                confirmed = confirmed_label(prediction, verdict)
                if label is not None and review_label(label) != confirmed:
                    raise InvalidReview(
                        f'"confirm" keeps the label {confirmed!r}; use "relabel" for another'
                    )
                label = confirmed
            # The primary key keeps it to one review even with another process writing.
            cursor = conn.execute(
                "INSERT INTO reviews (prediction_id, admin_id, decision, label, created)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (prediction_id) DO NOTHING",
                (prediction_id, admin_id, checked.value, label, self._clock()),
            )
        recorded = cursor.rowcount == 1
        if recorded:
            logger.info(
                "Admin %r reviewed %r: %r %r", admin_id, prediction_id, checked.value, label
            )
        return recorded
