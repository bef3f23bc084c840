"""The one place rows become records: every query selects these columns under these names."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable

from model.feedback.records import (
    PredictionRecord,
    ReviewRecord,
    VerdictRecord,
    review_decision,
    verdict_kind,
)
from model.types import LabelScore

PREDICTION_COLUMNS = (
    "p.id, p.chat_id, p.user_id, p.message_id, p.reply_message_id, p.file_id, "
    "p.file_unique_id, p.model, p.scores, p.created, p.image_sha256, p.uncertain"
)
VERDICT_COLUMNS = (
    "v.prediction_id AS v_prediction_id, v.user_id AS v_user_id, v.kind AS v_kind, "
    "v.label AS v_label, v.created AS v_created"
)
REVIEW_COLUMNS = (
    "r.prediction_id AS r_prediction_id, r.admin_id AS r_admin_id, r.decision AS r_decision, "
    "r.label AS r_label, r.created AS r_created"
)


def scores_to_json(scores: Iterable[LabelScore]) -> str:
    """Scores as stored: [[label, probability], ...], best first."""
    return json.dumps([[s.label, s.probability] for s in scores], ensure_ascii=False)


def prediction_from_row(row: sqlite3.Row) -> PredictionRecord:
    """The prediction in a row that selected `PREDICTION_COLUMNS`."""
    reply = row["reply_message_id"]
    sha = row["image_sha256"]
    return PredictionRecord(
        id=str(row["id"]),
        chat_id=int(row["chat_id"]),
        user_id=int(row["user_id"]),
        message_id=int(row["message_id"]),
        reply_message_id=None if reply is None else int(reply),
        file_id=str(row["file_id"]),
        file_unique_id=str(row["file_unique_id"]),
        model=str(row["model"]),
        scores=tuple(
            LabelScore(str(label), float(probability))
            for label, probability in json.loads(row["scores"])
        ),
        created=float(row["created"]),
        image_sha256=None if sha is None else str(sha),
        uncertain=bool(row["uncertain"]),
    )


def verdict_from_row(row: sqlite3.Row) -> VerdictRecord:
    """The verdict in a row that selected `VERDICT_COLUMNS` (and found one)."""
    label = row["v_label"]
    return VerdictRecord(
        prediction_id=str(row["v_prediction_id"]),
        user_id=int(row["v_user_id"]),
        kind=verdict_kind(str(row["v_kind"])),
        label=None if label is None else str(label),
        created=float(row["v_created"]),
    )


def optional_verdict_from_row(row: sqlite3.Row) -> VerdictRecord | None:
    """The verdict in a row that selected `VERDICT_COLUMNS` through an outer join, if any."""
    return None if row["v_prediction_id"] is None else verdict_from_row(row)


def review_from_row(row: sqlite3.Row) -> ReviewRecord | None:
    """The review in a row that selected `REVIEW_COLUMNS`, if any."""
    if row["r_prediction_id"] is None:
        return None
    label = row["r_label"]
    return ReviewRecord(
        prediction_id=str(row["r_prediction_id"]),
        admin_id=int(row["r_admin_id"]),
        decision=review_decision(str(row["r_decision"])),
        label=None if label is None else str(label),
        created=float(row["r_created"]),
    )
