"""The feedback log: predictions the bot answered, users' verdicts on them, disputed images.

It also holds what admins decide about uncertain and disputed items (reviews). One SQLite
database (WAL) at ``DATA_DIR/feedback/feedback.sqlite3`` and the kept images beside it under
``DATA_DIR/feedback/images/<sha256[:2]>/<sha256>.<ext>``; the settings changed at run time
(such as the confidence threshold) are kept in the same database.

    records     records, verdict kinds, review decisions, errors, label rules
    schema      where the database lives, opening it, migrations, transactions
    rows        rows to records
    imagestore  the content-addressed image files
    queries     reads: stats, disputes, the review queue, labelled items
    store       `FeedbackStore`, the synchronous core (one connection, one thread)
    settings    run-time settings (`SqliteSettingsStore`)
    labels      labels users typed that the model does not know: keys, proposals, decisions
    labeltable  the decisions' table and the proposals read from the verdicts (`SqliteLabelLog`)
    interfaces  the protocols the bot is written against, one per kind of caller
    front       `SqliteFeedbackLog`, the async front (every call on one dedicated thread)
    export      the labelled images as label folders and a manifest, for training
    health      a full disk, a locked or corrupt database: `FeedbackUnavailable`, set aside

Nothing here imports torch, fastai, Pillow or telegram.
"""

from __future__ import annotations

from model.feedback.front import SqliteFeedbackLog
from model.feedback.health import FeedbackUnavailable, Trouble
from model.feedback.imagestore import ORPHAN_GRACE_S
from model.feedback.interfaces import (
    LabelLog,
    PredictionLog,
    PrivacyLog,
    ReviewLog,
    SettingsStore,
    VerdictLog,
)
from model.feedback.labels import (
    MAX_TYPED_LABEL_LENGTH,
    DecisionOutcome,
    InvalidLabelDecision,
    LabelBook,
    LabelDecision,
    LabelDecisionKind,
    LabelProblem,
    LabelProposals,
    Outcome,
    Proposal,
    Resolution,
    UnknownLabel,
    display_label,
    label_id,
    label_key,
    typed_label_problem,
)
from model.feedback.labeltable import LabelTable, SqliteLabelLog
from model.feedback.records import (
    DISPUTED_KINDS,
    MAX_LABEL_LENGTH,
    REVIEW_DECISIONS,
    VERDICT_KINDS,
    AnsweredPhoto,
    DisputeEntry,
    FeedbackError,
    FeedbackLogClosed,
    FeedbackStats,
    ForgetSummary,
    InvalidReview,
    InvalidVerdict,
    LabelledEntry,
    MissingDatabase,
    PredictionRecord,
    ReviewDecision,
    ReviewItem,
    ReviewRecord,
    UnknownPrediction,
    VerdictKind,
    VerdictOutcome,
    VerdictRecord,
    is_reviewable,
    normalize_label,
)
from model.feedback.schema import (
    DATABASE_NAME,
    SCHEMA_VERSION,
    database_path,
    feedback_dir,
    migrate,
)
from model.feedback.settings import MAX_SETTING_KEY_LENGTH, SettingsTable, SqliteSettingsStore
from model.feedback.store import DEFAULT_PENDING_TTL_S, FeedbackStore
from model.imagetypes import image_extension

__all__ = [
    "DATABASE_NAME",
    "DEFAULT_PENDING_TTL_S",
    "DISPUTED_KINDS",
    "MAX_LABEL_LENGTH",
    "MAX_SETTING_KEY_LENGTH",
    "MAX_TYPED_LABEL_LENGTH",
    "ORPHAN_GRACE_S",
    "REVIEW_DECISIONS",
    "SCHEMA_VERSION",
    "VERDICT_KINDS",
    "AnsweredPhoto",
    "DecisionOutcome",
    "DisputeEntry",
    "FeedbackError",
    "FeedbackLogClosed",
    "FeedbackStats",
    "FeedbackStore",
    "FeedbackUnavailable",
    "ForgetSummary",
    "InvalidLabelDecision",
    "InvalidReview",
    "InvalidVerdict",
    "LabelBook",
    "LabelDecision",
    "LabelDecisionKind",
    "LabelLog",
    "LabelProblem",
    "LabelProposals",
    "LabelTable",
    "LabelledEntry",
    "MissingDatabase",
    "Outcome",
    "PredictionLog",
    "PredictionRecord",
    "PrivacyLog",
    "Proposal",
    "Resolution",
    "ReviewDecision",
    "ReviewItem",
    "ReviewLog",
    "ReviewRecord",
    "SettingsStore",
    "SettingsTable",
    "SqliteFeedbackLog",
    "SqliteLabelLog",
    "SqliteSettingsStore",
    "Trouble",
    "UnknownLabel",
    "UnknownPrediction",
    "VerdictKind",
    "VerdictLog",
    "VerdictOutcome",
    "VerdictRecord",
    "database_path",
    "display_label",
    "feedback_dir",
    "image_extension",
    "is_reviewable",
    "label_id",
    "label_key",
    "migrate",
    "normalize_label",
    "typed_label_problem",
]
