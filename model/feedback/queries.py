"""Reading the feedback log: predictions and verdicts, stats, disputes, the review queue, and
the labelled items the export turns into training data.

`FeedbackQueries` only reads (multi-statement reads in one DEFERRED transaction, so that they
see one state); `FeedbackStore` adds the writes on the same connection.
"""

from __future__ import annotations

import sqlite3

from model.feedback.imagestore import ImageStore
from model.feedback.records import (
    VERDICT_KINDS,
    DisputeEntry,
    FeedbackStats,
    ForgetSummary,
    LabelledEntry,
    PredictionRecord,
    ReviewItem,
    ReviewRecord,
    VerdictRecord,
)
from model.feedback.rows import (
    PREDICTION_COLUMNS,
    REVIEW_COLUMNS,
    VERDICT_COLUMNS,
    optional_verdict_from_row,
    prediction_from_row,
    review_from_row,
    verdict_from_row,
)
from model.feedback.schema import transaction

# Scores are stored as [[label, probability], ...], best first.
_TOP_LABEL = "json_extract(p.scores, '$[0][0]')"
# Items up for review: disputed ones, and uncertain ones whose image was kept. Each half is
# answered from an index; the caller adds "no review yet" where it wants the queue.
_REVIEWABLE_IDS = (
    "SELECT prediction_id FROM verdicts WHERE kind IN ('wrong', 'unsure')"
    " UNION SELECT id FROM predictions WHERE uncertain = 1 AND image_sha256 IS NOT NULL"
)
_AWAITING_REVIEW = (
    f"p.id IN ({_REVIEWABLE_IDS})"
    " AND NOT EXISTS (SELECT 1 FROM reviews r WHERE r.prediction_id = p.id)"
)


class FeedbackQueries:
    """Questions to the feedback database over one connection; synchronous, one thread."""

    def __init__(self, conn: sqlite3.Connection, images: ImageStore) -> None:
        self._conn = conn
        self._images = images

    # -- predictions and verdicts -----------------------------------------------------------

    def get_prediction(self, prediction_id: str) -> PredictionRecord | None:
        row = self._conn.execute(
            f"SELECT {PREDICTION_COLUMNS} FROM predictions p WHERE p.id = ?", (prediction_id,)
        ).fetchone()
        return None if row is None else prediction_from_row(row)

    def predictions_for_reply(self, chat_id: int, reply_message_id: int) -> list[PredictionRecord]:
        rows = self._conn.execute(
            f"SELECT {PREDICTION_COLUMNS} FROM predictions p"
            " WHERE p.chat_id = ? AND p.reply_message_id = ? ORDER BY p.message_id, p.created",
            (chat_id, reply_message_id),
        ).fetchall()
        return [prediction_from_row(row) for row in rows]

    def has_image(self, prediction_id: str) -> bool:
        """Whether the prediction's image is in the store: its row and its file."""
        path = self._images.path_of_prediction(prediction_id)
        return path is not None and path.is_file()

    def get_verdict(self, prediction_id: str) -> VerdictRecord | None:
        row = self._conn.execute(
            f"SELECT {VERDICT_COLUMNS} FROM verdicts v WHERE v.prediction_id = ?",
            (prediction_id,),
        ).fetchone()
        return None if row is None else verdict_from_row(row)

    # -- privacy ----------------------------------------------------------------------------

    def count_user_items(self, user_id: int) -> ForgetSummary:
        with transaction(self._conn, "DEFERRED"):
            return self._count_user_items(user_id)

    def _count_user_items(self, user_id: int) -> ForgetSummary:
        conn = self._conn
        predictions = conn.execute(
            "SELECT count(*) FROM predictions WHERE user_id = ?", (user_id,)
        ).fetchone()[0]
        # Their verdicts on anyone's predictions, and anyone's verdicts on their predictions.
        verdicts = conn.execute(
            "SELECT count(*) FROM verdicts v JOIN predictions p ON p.id = v.prediction_id"
            " WHERE v.user_id = ? OR p.user_id = ?",
            (user_id, user_id),
        ).fetchone()[0]
        images = conn.execute(
            "SELECT count(DISTINCT p.image_sha256) FROM predictions p"
            " WHERE p.user_id = ? AND p.image_sha256 IS NOT NULL AND NOT EXISTS ("
            "  SELECT 1 FROM predictions o WHERE o.image_sha256 = p.image_sha256"
            "  AND o.user_id != p.user_id)",
            (user_id,),
        ).fetchone()[0]
        return ForgetSummary(int(predictions), int(verdicts), int(images))

    # -- stats ------------------------------------------------------------------------------

    def stats(self) -> dict[str, int]:
        """Counts of predictions, verdicts by kind, stored images and pending labels."""
        conn = self._conn
        with transaction(conn, "DEFERRED"):
            predictions, uncertain = conn.execute(
                "SELECT count(*), coalesce(sum(uncertain), 0) FROM predictions"
            ).fetchone()
            by_kind = dict(
                conn.execute("SELECT kind, count(*) FROM verdicts GROUP BY kind").fetchall()
            )
            images, image_bytes = conn.execute(
                "SELECT count(*), coalesce(sum(size), 0) FROM images"
            ).fetchone()
            pending = conn.execute("SELECT count(*) FROM pending_labels").fetchone()[0]
        result = {
            "predictions": int(predictions),
            "uncertain": int(uncertain),
            "verdicts": sum(int(n) for n in by_kind.values()),
        }
        for kind in VERDICT_KINDS:
            result[f"verdicts_{kind.value}"] = int(by_kind.get(kind.value, 0))
        result["images"] = int(images)
        result["image_bytes"] = int(image_bytes)
        result["pending_labels"] = int(pending)
        return result

    def stats_since(self, since: float) -> FeedbackStats:
        conn = self._conn
        with transaction(conn, "DEFERRED"):
            answers = conn.execute(
                f"SELECT {_TOP_LABEL} AS top_label, count(*) AS answers,"
                " coalesce(sum(p.uncertain), 0) AS uncertain"
                " FROM predictions p WHERE p.created >= ?"
                " GROUP BY top_label ORDER BY answers DESC, top_label",
                (since,),
            ).fetchall()
            by_kind = dict(
                conn.execute(
                    "SELECT kind, count(*) FROM verdicts WHERE created >= ? GROUP BY kind",
                    (since,),
                ).fetchall()
            )
            judged = conn.execute(
                f"SELECT {_TOP_LABEL} AS top_label, sum(v.kind = 'right') AS n_right,"
                " count(*) AS judged"
                " FROM verdicts v JOIN predictions p ON p.id = v.prediction_id"
                " WHERE v.created >= ? AND v.kind IN ('right', 'wrong')"
                " GROUP BY top_label ORDER BY judged DESC, top_label",
                (since,),
            ).fetchall()
        return FeedbackStats(
            since=since,
            photos=sum(int(row["answers"]) for row in answers),
            uncertain=sum(int(row["uncertain"]) for row in answers),
            per_label={str(row["top_label"]): int(row["answers"]) for row in answers},
            verdicts={kind.value: int(by_kind.get(kind.value, 0)) for kind in VERDICT_KINDS},
            accuracy_per_label={
                str(row["top_label"]): (int(row["n_right"]), int(row["judged"])) for row in judged
            },
        )

    # -- disputes and reviews ---------------------------------------------------------------

    def list_disputes(self, offset: int, limit: int) -> tuple[list[DisputeEntry], int]:
        if offset < 0 or limit < 0:
            raise ValueError("offset and limit must not be negative")
        conn = self._conn
        with transaction(conn, "DEFERRED"):
            total = conn.execute(
                "SELECT count(*) FROM verdicts WHERE kind IN ('wrong', 'unsure')"
            ).fetchone()[0]
            rows = conn.execute(
                f"SELECT {PREDICTION_COLUMNS}, {VERDICT_COLUMNS}, {REVIEW_COLUMNS},"
                " i.ext AS image_ext"
                " FROM verdicts v JOIN predictions p ON p.id = v.prediction_id"
                " LEFT JOIN images i ON i.sha256 = p.image_sha256"
                " LEFT JOIN reviews r ON r.prediction_id = p.id"
                " WHERE v.kind IN ('wrong', 'unsure')"
                " ORDER BY v.created DESC, v.prediction_id DESC LIMIT ? OFFSET ?",
                (limit, offset),
            ).fetchall()
        disputes = []
        for row in rows:
            prediction = prediction_from_row(row)
            disputes.append(
                DisputeEntry(
                    prediction=prediction,
                    verdict=verdict_from_row(row),
                    image_path=self._images.path_in_row(row, prediction.image_sha256),
                    review=review_from_row(row),
                )
            )
        return disputes, int(total)

    def next_for_review(self) -> ReviewItem | None:
        row = self._conn.execute(
            f"SELECT {PREDICTION_COLUMNS}, {VERDICT_COLUMNS}, i.ext AS image_ext"
            " FROM predictions p LEFT JOIN verdicts v ON v.prediction_id = p.id"
            " LEFT JOIN images i ON i.sha256 = p.image_sha256"
            f" WHERE {_AWAITING_REVIEW} ORDER BY p.created, p.id LIMIT 1"
        ).fetchone()
        if row is None:
            return None
        prediction = prediction_from_row(row)
        return ReviewItem(
            prediction=prediction,
            verdict=optional_verdict_from_row(row),
            image_path=self._images.path_in_row(row, prediction.image_sha256),
        )

    def count_for_review(self) -> int:
        row = self._conn.execute(
            f"SELECT count(*) FROM predictions p WHERE {_AWAITING_REVIEW}"
        ).fetchone()
        return int(row[0])

    def get_review(self, prediction_id: str) -> ReviewRecord | None:
        row = self._conn.execute(
            f"SELECT {REVIEW_COLUMNS} FROM reviews r WHERE r.prediction_id = ?",
            (prediction_id,),
        ).fetchone()
        return None if row is None else review_from_row(row)

    # -- reading for training ---------------------------------------------------------------

    def labelled_entries(self, *, reviewed_only: bool = False) -> list[LabelledEntry]:
        """Every prediction with a verdict or a review (with `reviewed_only`, a review).

        Oldest first, by the verdict's time or, for items without one, the review's.
        """
        condition = (
            "r.prediction_id IS NOT NULL"
            if reviewed_only
            else "(v.prediction_id IS NOT NULL OR r.prediction_id IS NOT NULL)"
        )
        conn = self._conn
        with transaction(conn, "DEFERRED"):
            rows = conn.execute(
                f"SELECT {PREDICTION_COLUMNS}, {VERDICT_COLUMNS}, {REVIEW_COLUMNS},"
                " i.ext AS image_ext"
                " FROM predictions p LEFT JOIN verdicts v ON v.prediction_id = p.id"
                " LEFT JOIN reviews r ON r.prediction_id = p.id"
                " LEFT JOIN images i ON i.sha256 = p.image_sha256"
                f" WHERE {condition}"
                " ORDER BY coalesce(v.created, r.created), p.id"
            ).fetchall()
        entries = []
        for row in rows:
            prediction = prediction_from_row(row)
            entries.append(
                LabelledEntry(
                    prediction=prediction,
                    verdict=optional_verdict_from_row(row),
                    review=review_from_row(row),
                    image_path=self._images.path_in_row(row, prediction.image_sha256),
                )
            )
        return entries
