"""The feedback log: predictions the bot answered, users' verdicts on them, disputed images.

It also holds what admins decide about uncertain and disputed items (reviews) and the settings
changed at run time (such as the confidence threshold).

One SQLite database (WAL) at ``DATA_DIR/feedback/feedback.sqlite3`` and the kept images beside it
under ``DATA_DIR/feedback/images/<sha256[:2]>/<sha256>.<ext>``. ``FeedbackStore`` is the
synchronous core (one connection, one thread); ``SqliteFeedbackLog`` is the async front the bot
uses, running every database and file operation on one dedicated thread so that the event loop
never waits on a disk. ``training`` reads the same store synchronously.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import logging
import os
import re
import secrets
import sqlite3
import time
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, ParamSpec, Protocol, TypeVar

from model.files import write_atomically
from model.types import LabelScore, Prediction

logger = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

VerdictKind = Literal["right", "wrong", "unsure"]
VERDICT_KINDS: tuple[VerdictKind, ...] = ("right", "wrong", "unsure")
# Verdicts that make a prediction training data: retention never removes these.
DISPUTED_KINDS: tuple[VerdictKind, ...] = ("wrong", "unsure")
ReviewDecision = Literal["confirm", "relabel", "discard"]
REVIEW_DECISIONS: tuple[ReviewDecision, ...] = ("confirm", "relabel", "discard")
MAX_SETTING_KEY_LENGTH = 100
MAX_LABEL_LENGTH = 100
DEFAULT_PENDING_TTL_S = 3600.0
# Files in the image store that no row references are removed at open only once they are this
# old, so that a file another process has just written but not yet linked is never swept away.
ORPHAN_GRACE_S = 3600.0
DATABASE_NAME = "feedback.sqlite3"
_SHA256 = re.compile(r"[0-9a-f]{64}")


def feedback_dir(data_dir: Path) -> Path:
    """The folder holding the feedback database and its images."""
    return data_dir / "feedback"


def database_path(data_dir: Path) -> Path:
    """Where the feedback database lives under `data_dir`."""
    return feedback_dir(data_dir) / DATABASE_NAME


def image_extension(data: bytes) -> str:
    """A file extension for image bytes, from their magic number ('bin' when unknown)."""
    if data.startswith(b"\xff\xd8\xff"):
        return "jpg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    if data.startswith(b"BM"):
        return "bmp"
    if data.startswith((b"II*\x00", b"MM\x00*")):
        return "tif"
    return "bin"


class FeedbackError(Exception):
    """Base class for everything the feedback log raises on purpose."""


class UnknownPrediction(FeedbackError, KeyError):
    """No prediction has this id (never recorded, forgotten, pruned, or forged)."""

    def __init__(self, prediction_id: str) -> None:
        super().__init__(prediction_id)
        self.prediction_id = prediction_id

    def __str__(self) -> str:
        return f"no prediction with id {self.prediction_id!r}"


class InvalidVerdict(FeedbackError, ValueError):
    """A verdict with an unknown kind, or a label that is missing, too long or not allowed."""


class InvalidReview(FeedbackError, ValueError):
    """A review with an unknown decision, a bad label, or of an item that is not up for review."""


class MissingDatabase(FeedbackError):
    """There is no feedback database yet (the bot creates it when it first starts)."""


class FeedbackLogClosed(FeedbackError):
    """The feedback log was used after `close()`."""


@dataclass(frozen=True, slots=True)
class PredictionRecord:
    """One answered photo: who sent it, where the reply is, and what the model said."""

    id: str
    chat_id: int
    user_id: int
    message_id: int
    reply_message_id: int | None
    file_id: str
    file_unique_id: str
    model: str
    scores: tuple[LabelScore, ...]
    created: float
    image_sha256: str | None
    uncertain: bool

    @property
    def top(self) -> LabelScore:
        """The label the model ranked first."""
        return self.scores[0]


@dataclass(frozen=True, slots=True)
class VerdictRecord:
    """A user's verdict on a prediction; `label` is the corrected or confirmed label."""

    prediction_id: str
    user_id: int
    kind: VerdictKind
    label: str | None
    created: float


@dataclass(frozen=True, slots=True)
class VerdictOutcome:
    """Whether `record_verdict` stored a verdict, and the verdict that stands."""

    recorded: bool
    verdict: VerdictRecord


@dataclass(frozen=True, slots=True)
class ForgetSummary:
    """How many of a user's records `/forget` removes (or would remove)."""

    predictions: int
    verdicts: int
    images: int

    @property
    def total(self) -> int:
        """All removed items together."""
        return self.predictions + self.verdicts + self.images


@dataclass(frozen=True, slots=True)
class FeedbackEntry:
    """A prediction with its verdict, and where its image should be (None if none was kept)."""

    prediction: PredictionRecord
    verdict: VerdictRecord
    image_path: Path | None


@dataclass(frozen=True, slots=True)
class ReviewRecord:
    """An admin's decision on an item; `label` is the label it trains as (None for "discard")."""

    prediction_id: str
    admin_id: int
    decision: ReviewDecision
    label: str | None
    created: float


@dataclass(frozen=True, slots=True)
class DisputeEntry:
    """A disputed prediction ("wrong" or "unsure"), its image location and any review of it."""

    prediction: PredictionRecord
    verdict: VerdictRecord
    image_path: Path | None
    review: ReviewRecord | None


@dataclass(frozen=True, slots=True)
class ReviewItem:
    """An item awaiting review: disputed, or uncertain with its image kept (verdict optional)."""

    prediction: PredictionRecord
    verdict: VerdictRecord | None
    image_path: Path | None


@dataclass(frozen=True, slots=True)
class LabelledEntry:
    """A prediction with a verdict, a review or both, as the export reads it."""

    prediction: PredictionRecord
    verdict: VerdictRecord | None
    review: ReviewRecord | None
    image_path: Path | None


@dataclass(frozen=True, slots=True)
class FeedbackStats:
    """What happened since `since`: answers per top label, verdicts, implied accuracy.

    `accuracy_per_label` maps each predicted top label to ("right" verdicts, "right" + "wrong"
    verdicts) over the verdicts given since `since`; labels without such verdicts are absent.
    `per_label` and `accuracy_per_label` are ordered by count, largest first.
    """

    since: float
    photos: int
    uncertain: int
    per_label: dict[str, int]
    verdicts: dict[str, int]
    accuracy_per_label: dict[str, tuple[int, int]]


class FeedbackLog(Protocol):
    """The durable feedback log as the bot sees it; SQLite now, PostgreSQL can follow."""

    async def record_prediction(
        self,
        *,
        chat_id: int,
        user_id: int,
        message_id: int,
        file_id: str,
        file_unique_id: str,
        prediction: Prediction,
        uncertain: bool,
        image: bytes | None,
    ) -> PredictionRecord:
        """Store a prediction (and its image, when given) before the reply is sent."""
        ...

    async def set_reply_message(self, prediction_id: str, reply_message_id: int) -> None:
        """Remember which bot message answered the prediction."""
        ...

    async def get_prediction(self, prediction_id: str) -> PredictionRecord | None:
        """The prediction with this id, or None for an unknown or forged id."""
        ...

    async def get_verdict(self, prediction_id: str) -> VerdictRecord | None:
        """The verdict on this prediction, if any."""
        ...

    async def predictions_for_reply(
        self, chat_id: int, reply_message_id: int
    ) -> list[PredictionRecord]:
        """Every prediction one bot message answers (several for an album), in order."""
        ...

    async def record_verdict(
        self,
        prediction_id: str,
        *,
        user_id: int,
        kind: str,
        label: str | None,
        image: bytes | None = None,
    ) -> VerdictOutcome:
        """Store the one verdict a prediction may get; a later call returns the first one."""
        ...

    async def has_image(self, prediction_id: str) -> bool:
        """Whether the prediction's image is in the store."""
        ...

    async def set_pending_label(self, *, chat_id: int, user_id: int, prediction_id: str) -> None:
        """The next text this user sends in this chat is the label for this prediction."""
        ...

    async def get_pending_label(self, *, chat_id: int, user_id: int) -> str | None:
        """The prediction id awaiting a typed label from this user in this chat, if not expired."""
        ...

    async def clear_pending_label(self, *, chat_id: int, user_id: int) -> None:
        """Stop waiting for a typed label from this user in this chat."""
        ...

    async def count_user_items(self, user_id: int) -> ForgetSummary:
        """What `forget_user` would remove, for the confirmation prompt."""
        ...

    async def forget_user(self, user_id: int) -> ForgetSummary:
        """Delete the user's predictions, verdicts, pending state and images nobody else uses."""
        ...

    async def prune(self, *, older_than_s: float) -> int:
        """Delete undisputed predictions older than `older_than_s`; returns how many."""
        ...

    async def stats(self) -> dict[str, int]:
        """Counts of predictions, verdicts by kind and stored images."""
        ...

    async def stats_since(self, since: float) -> FeedbackStats:
        """Answers per label, verdicts and the accuracy they imply, from `since` on."""
        ...

    async def list_disputes(self, offset: int, limit: int) -> tuple[list[DisputeEntry], int]:
        """One page of disputed predictions, newest verdict first, and how many there are."""
        ...

    async def next_for_review(self) -> ReviewItem | None:
        """The oldest item awaiting review, or None when there is none."""
        ...

    async def count_for_review(self) -> int:
        """How many items await review."""
        ...

    async def get_review(self, prediction_id: str) -> ReviewRecord | None:
        """The review of this prediction, if any."""
        ...

    async def record_review(
        self, prediction_id: str, *, admin_id: int, decision: str, label: str | None = None
    ) -> bool:
        """Store the one review an item may get; False if it already has one."""
        ...

    async def get_setting(self, key: str) -> str | None:
        """The stored value of a run-time setting, or None if it was never set."""
        ...

    async def set_setting(self, key: str, value: str) -> None:
        """Store a run-time setting (replacing any earlier value)."""
        ...

    async def close(self) -> None:
        """Finish pending writes and release the database."""
        ...


# Each migration is a list of statements taking the schema from version N to N + 1; append new
# ones, never edit old ones (databases in the field have already run them).
_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """
        CREATE TABLE images (
            sha256 TEXT PRIMARY KEY,
            ext TEXT NOT NULL,
            size INTEGER NOT NULL,
            created REAL NOT NULL
        )
        """,
        """
        CREATE TABLE predictions (
            id TEXT PRIMARY KEY,
            chat_id INTEGER NOT NULL,
            user_id INTEGER NOT NULL,
            message_id INTEGER NOT NULL,
            reply_message_id INTEGER,
            file_id TEXT NOT NULL,
            file_unique_id TEXT NOT NULL,
            model TEXT NOT NULL,
            scores TEXT NOT NULL,
            created REAL NOT NULL,
            image_sha256 TEXT REFERENCES images (sha256),
            uncertain INTEGER NOT NULL CHECK (uncertain IN (0, 1))
        )
        """,
        "CREATE INDEX predictions_user_id ON predictions (user_id)",
        "CREATE INDEX predictions_created ON predictions (created)",
        "CREATE INDEX predictions_image_sha256 ON predictions (image_sha256)",
        """
        CREATE TABLE verdicts (
            prediction_id TEXT PRIMARY KEY REFERENCES predictions (id) ON DELETE CASCADE,
            user_id INTEGER NOT NULL,
            kind TEXT NOT NULL CHECK (kind IN ('right', 'wrong', 'unsure')),
            label TEXT,
            created REAL NOT NULL
        )
        """,
        "CREATE INDEX verdicts_user_id ON verdicts (user_id)",
        "CREATE INDEX verdicts_created ON verdicts (created)",
        """
        CREATE TABLE pending_labels (
            chat_id INTEGER NOT NULL,
            user_id INTEGER NOT NULL,
            prediction_id TEXT NOT NULL REFERENCES predictions (id) ON DELETE CASCADE,
            created REAL NOT NULL,
            PRIMARY KEY (chat_id, user_id)
        )
        """,
        "CREATE INDEX pending_labels_user_id ON pending_labels (user_id)",
        "CREATE INDEX pending_labels_prediction_id ON pending_labels (prediction_id)",
    ),
    # 2: albums — one bot reply answers several predictions.
    ("CREATE INDEX predictions_reply ON predictions (chat_id, reply_message_id)",),
    # 3: admins' reviews of uncertain and disputed items; settings changed at run time.
    (
        """
        CREATE TABLE reviews (
            prediction_id TEXT PRIMARY KEY REFERENCES predictions (id) ON DELETE CASCADE,
            admin_id INTEGER NOT NULL,
            decision TEXT NOT NULL CHECK (decision IN ('confirm', 'relabel', 'discard')),
            label TEXT,
            created REAL NOT NULL,
            CHECK ((decision = 'discard') = (label IS NULL))
        )
        """,
        # The review queue's uncertain half, without scanning every prediction.
        "CREATE INDEX predictions_kept_uncertain ON predictions (created)"
        " WHERE uncertain = 1 AND image_sha256 IS NOT NULL",
        """
        CREATE TABLE settings (
            key TEXT PRIMARY KEY,
            value TEXT NOT NULL,
            updated REAL NOT NULL
        )
        """,
    ),
)
SCHEMA_VERSION = len(_MIGRATIONS)


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the schema up to `SCHEMA_VERSION`, one transaction per step; returns the version."""
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if version > SCHEMA_VERSION:
        raise FeedbackError(
            f"the feedback database has schema version {version}, newer than this code "
            f"understands ({SCHEMA_VERSION}); upgrade Verdict"
        )
    while version < SCHEMA_VERSION:
        with _transaction(conn):
            # Read again under the write lock: another process may have migrated meanwhile.
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            if version >= SCHEMA_VERSION:
                break
            for statement in _MIGRATIONS[version]:
                conn.execute(statement)
            version += 1
            conn.execute(f"PRAGMA user_version = {version}")
        logger.info("Feedback database migrated to schema version %r", version)
    return version


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection, mode: str = "IMMEDIATE") -> Iterator[None]:
    # IMMEDIATE takes the write lock up front, so read-then-write sequences cannot interleave
    # with another writer; DEFERRED is used for consistent multi-statement reads.
    conn.execute(f"BEGIN {mode}")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


# The one place rows become records: every query selects these columns under these names.
_PREDICTION_COLUMNS = (
    "p.id, p.chat_id, p.user_id, p.message_id, p.reply_message_id, p.file_id, "
    "p.file_unique_id, p.model, p.scores, p.created, p.image_sha256, p.uncertain"
)
_VERDICT_COLUMNS = (
    "v.prediction_id AS v_prediction_id, v.user_id AS v_user_id, v.kind AS v_kind, "
    "v.label AS v_label, v.created AS v_created"
)

_REVIEW_COLUMNS = (
    "r.prediction_id AS r_prediction_id, r.admin_id AS r_admin_id, r.decision AS r_decision, "
    "r.label AS r_label, r.created AS r_created"
)
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


def _scores_to_json(scores: Iterable[LabelScore]) -> str:
    return json.dumps([[s.label, s.probability] for s in scores], ensure_ascii=False)


def _prediction_from_row(row: sqlite3.Row) -> PredictionRecord:
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


def _verdict_from_row(row: sqlite3.Row) -> VerdictRecord:
    label = row["v_label"]
    return VerdictRecord(
        prediction_id=str(row["v_prediction_id"]),
        user_id=int(row["v_user_id"]),
        kind=_check_kind(str(row["v_kind"])),
        label=None if label is None else str(label),
        created=float(row["v_created"]),
    )


def _optional_verdict_from_row(row: sqlite3.Row) -> VerdictRecord | None:
    return None if row["v_prediction_id"] is None else _verdict_from_row(row)


def _review_from_row(row: sqlite3.Row) -> ReviewRecord | None:
    if row["r_prediction_id"] is None:
        return None
    label = row["r_label"]
    return ReviewRecord(
        prediction_id=str(row["r_prediction_id"]),
        admin_id=int(row["r_admin_id"]),
        decision=_check_decision(str(row["r_decision"])),
        label=None if label is None else str(label),
        created=float(row["r_created"]),
    )


_KIND_BY_NAME: dict[str, VerdictKind] = {kind: kind for kind in VERDICT_KINDS}
_DECISION_BY_NAME: dict[str, ReviewDecision] = {name: name for name in REVIEW_DECISIONS}


def _check_kind(kind: str) -> VerdictKind:
    checked = _KIND_BY_NAME.get(kind)
    if checked is None:
        raise InvalidVerdict(f"unknown verdict kind {kind!r}; expected one of {VERDICT_KINDS}")
    return checked


def _check_decision(decision: str) -> ReviewDecision:
    checked = _DECISION_BY_NAME.get(decision)
    if checked is None:
        raise InvalidReview(
            f"unknown review decision {decision!r}; expected one of {REVIEW_DECISIONS}"
        )
    return checked


def _review_label(label: str) -> str:
    try:
        return normalize_label(label)
    except InvalidVerdict as exc:
        raise InvalidReview(str(exc)) from None


def is_reviewable(prediction: PredictionRecord, verdict: VerdictRecord | None) -> bool:
    """Whether an item is up for review: disputed, or uncertain with its image kept."""
    disputed = verdict is not None and verdict.kind in DISPUTED_KINDS
    return disputed or (prediction.uncertain and prediction.image_sha256 is not None)


def normalize_label(label: str) -> str:
    """A typed label cleaned up: whitespace runs become one space; refuses empty or bad labels."""
    # Collapsing whitespace also removes newlines and tabs, which would garble the manifest.
    text = " ".join(label.split())
    if not text:
        raise InvalidVerdict("the label is empty")
    if len(text) > MAX_LABEL_LENGTH:
        raise InvalidVerdict(f"the label is longer than {MAX_LABEL_LENGTH} characters")
    if any(unicodedata.category(char) == "Cc" for char in text):
        raise InvalidVerdict("the label contains control characters")
    return text


def _confirmed_label(prediction: PredictionRecord, verdict: VerdictRecord | None) -> str:
    # What "confirm" keeps: the user's correction, or the prediction the user (or nobody) took.
    if verdict is None:
        return prediction.top.label
    if verdict.kind == "unsure":
        raise InvalidReview(
            'the user was not sure, so there is no label to confirm; use "relabel" or "discard"'
        )
    return verdict.label if verdict.label is not None else prediction.top.label


def _check_setting_key(key: str) -> str:
    if not isinstance(key, str) or not key.strip() or len(key) > MAX_SETTING_KEY_LENGTH:
        raise ValueError(
            f"a setting key is a non-empty string of at most "
            f"{MAX_SETTING_KEY_LENGTH} characters, not {key!r}"
        )
    return key


class FeedbackStore:
    """The feedback log over one SQLite connection; synchronous, for use from one thread."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        root: Path,
        *,
        clock: Callable[[], float] = time.time,
        pending_ttl_s: float = DEFAULT_PENDING_TTL_S,
    ) -> None:
        self._conn = conn
        self._root = root
        self._images = root / "images"
        self._clock = clock
        self._pending_ttl_s = pending_ttl_s

    @classmethod
    def open(
        cls,
        data_dir: Path,
        *,
        clock: Callable[[], float] = time.time,
        pending_ttl_s: float = DEFAULT_PENDING_TTL_S,
        create: bool = True,
    ) -> FeedbackStore:
        """Open (with `create`, create) the database under `data_dir` and migrate its schema."""
        root = feedback_dir(data_dir)
        path = database_path(data_dir)
        if create:
            (root / "images").mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(path, isolation_level=None)
        else:
            if not path.is_file():
                raise MissingDatabase(f"no feedback database at {path}")
            # mode=rw: a reader must never create an empty database where it expected one.
            uri = f"{path.resolve().as_uri()}?mode=rw"
            conn = sqlite3.connect(uri, uri=True, isolation_level=None)
        try:
            conn.row_factory = sqlite3.Row
            # Wait for another process's write instead of failing at once with "locked".
            conn.execute("PRAGMA busy_timeout = 10000")
            conn.execute("PRAGMA foreign_keys = ON")
            mode = str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
            if mode.lower() != "wal":
                logger.warning("SQLite refused WAL mode for %r; using %r", str(path), mode)
            # A verdict acknowledged to the user must survive the process being killed, and
            # the machine losing power, right after: FULL syncs the WAL on every commit.
            conn.execute("PRAGMA synchronous = FULL")
            migrate(conn)
        except BaseException:
            conn.close()
            raise
        store = cls(conn, root, clock=clock, pending_ttl_s=pending_ttl_s)
        if create:
            store.sweep_orphans()
        return store

    def close(self) -> None:
        """Close the connection (SQLite checkpoints the WAL when the last one closes)."""
        self._conn.close()

    @property
    def images_dir(self) -> Path:
        """The root of the content-addressed image store."""
        return self._images

    def image_path(self, sha256: str, ext: str) -> Path:
        """Where the image with this hash and extension is stored."""
        return self._images / sha256[:2] / f"{sha256}.{ext}"

    # -- predictions ------------------------------------------------------------------------

    def record_prediction(
        self,
        *,
        chat_id: int,
        user_id: int,
        message_id: int,
        file_id: str,
        file_unique_id: str,
        prediction: Prediction,
        uncertain: bool,
        image: bytes | None,
    ) -> PredictionRecord:
        """Store a prediction (and its image, when given) before the reply is sent."""
        if not prediction.scores:
            raise ValueError("a prediction needs at least one label score")
        conn = self._conn
        with _transaction(conn):
            created = self._clock()
            sha = self._store_image(image, created) if image else None
            prediction_id = self._new_prediction_id()
            conn.execute(
                "INSERT INTO predictions (id, chat_id, user_id, message_id, reply_message_id,"
                " file_id, file_unique_id, model, scores, created, image_sha256, uncertain)"
                " VALUES (?, ?, ?, ?, NULL, ?, ?, ?, ?, ?, ?, ?)",
                (
                    prediction_id,
                    chat_id,
                    user_id,
                    message_id,
                    file_id,
                    file_unique_id,
                    prediction.model,
                    _scores_to_json(prediction.scores),
                    created,
                    sha,
                    int(uncertain),
                ),
            )
        return PredictionRecord(
            id=prediction_id,
            chat_id=chat_id,
            user_id=user_id,
            message_id=message_id,
            reply_message_id=None,
            file_id=file_id,
            file_unique_id=file_unique_id,
            model=prediction.model,
            scores=tuple(prediction.scores),
            created=created,
            image_sha256=sha,
            uncertain=uncertain,
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
        with _transaction(self._conn):
            cursor = self._conn.execute(
                "UPDATE predictions SET reply_message_id = ? WHERE id = ?",
                (reply_message_id, prediction_id),
            )
        if cursor.rowcount == 0:
            # The user may have run /forget between the prediction and the reply.
            logger.debug("No prediction %r to attach reply %r to", prediction_id, reply_message_id)

    def get_prediction(self, prediction_id: str) -> PredictionRecord | None:
        """The prediction with this id, or None for an unknown or forged id."""
        return self._prediction(prediction_id)

    def predictions_for_reply(self, chat_id: int, reply_message_id: int) -> list[PredictionRecord]:
        """Every prediction one bot message answers (several for an album), in order."""
        rows = self._conn.execute(
            f"SELECT {_PREDICTION_COLUMNS} FROM predictions p"
            " WHERE p.chat_id = ? AND p.reply_message_id = ? ORDER BY p.message_id, p.created",
            (chat_id, reply_message_id),
        ).fetchall()
        return [_prediction_from_row(row) for row in rows]

    def _prediction(self, prediction_id: str) -> PredictionRecord | None:
        row = self._conn.execute(
            f"SELECT {_PREDICTION_COLUMNS} FROM predictions p WHERE p.id = ?", (prediction_id,)
        ).fetchone()
        return None if row is None else _prediction_from_row(row)

    def has_image(self, prediction_id: str) -> bool:
        """Whether the prediction's image is in the store (its file included)."""
        path = self._prediction_image_path(prediction_id)
        return path is not None and path.is_file()

    def _prediction_image_path(self, prediction_id: str) -> Path | None:
        row = self._conn.execute(
            "SELECT i.sha256, i.ext FROM predictions p JOIN images i ON i.sha256 = p.image_sha256"
            " WHERE p.id = ?",
            (prediction_id,),
        ).fetchone()
        return None if row is None else self.image_path(str(row[0]), str(row[1]))

    # -- verdicts ---------------------------------------------------------------------------

    def get_verdict(self, prediction_id: str) -> VerdictRecord | None:
        """The verdict on this prediction, if any."""
        row = self._conn.execute(
            f"SELECT {_VERDICT_COLUMNS} FROM verdicts v WHERE v.prediction_id = ?",
            (prediction_id,),
        ).fetchone()
        return None if row is None else _verdict_from_row(row)

    def record_verdict(
        self,
        prediction_id: str,
        *,
        user_id: int,
        kind: str,
        label: str | None,
        image: bytes | None = None,
    ) -> VerdictOutcome:
        """Store the one verdict a prediction may get; a later call returns the first one.

        `label`: required for "wrong" (the corrected label); for "right" None or the predicted
        label (the predicted label is stored); None for "unsure". `image`: the disputed image,
        stored and linked to the prediction unless it already has one on disk.
        """
        verdict_kind = _check_kind(kind)
        if verdict_kind == "wrong":
            if label is None:
                raise InvalidVerdict('a "wrong" verdict needs the correct label')
            label = normalize_label(label)
        elif verdict_kind == "unsure" and label is not None:
            raise InvalidVerdict('an "unsure" verdict has no label')
        conn = self._conn
        with _transaction(conn):
            prediction = self._prediction(prediction_id)
            if prediction is None:
                raise UnknownPrediction(prediction_id)
            if verdict_kind == "right":
                if label is not None and label != prediction.top.label:
                    raise InvalidVerdict('a "right" verdict confirms the predicted label')
                label = prediction.top.label
            existing = self.get_verdict(prediction_id)
            if existing is not None:
                return VerdictOutcome(recorded=False, verdict=existing)
            created = self._clock()
            replaced: list[Path] = []
            if image and not self.has_image(prediction_id):
                sha = self._store_image(image, created)
                conn.execute(
                    "UPDATE predictions SET image_sha256 = ? WHERE id = ?", (sha, prediction_id)
                )
                # A link to a file that has gone missing is replaced; drop its row if now unused.
                if prediction.image_sha256 not in (None, sha):
                    replaced = self._drop_unreferenced_images([prediction.image_sha256])
            # The primary key makes a second verdict impossible even from another process;
            # DO NOTHING turns that race into "not recorded" rather than an error.
            cursor = conn.execute(
                "INSERT INTO verdicts (prediction_id, user_id, kind, label, created)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (prediction_id) DO NOTHING",
                (prediction_id, user_id, verdict_kind, label, created),
            )
            if cursor.rowcount == 0:
                existing = self.get_verdict(prediction_id)
                if existing is not None:
                    return VerdictOutcome(recorded=False, verdict=existing)
            conn.execute("DELETE FROM pending_labels WHERE prediction_id = ?", (prediction_id,))
        self._unlink(replaced)
        verdict = VerdictRecord(prediction_id, user_id, verdict_kind, label, created)
        return VerdictOutcome(recorded=True, verdict=verdict)

    # -- pending labels ---------------------------------------------------------------------

    def set_pending_label(self, *, chat_id: int, user_id: int, prediction_id: str) -> None:
        """The next text this user sends in this chat is the label for this prediction."""
        with _transaction(self._conn):
            if self._prediction(prediction_id) is None:
                raise UnknownPrediction(prediction_id)
            self._conn.execute(
                "INSERT INTO pending_labels (chat_id, user_id, prediction_id, created)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (chat_id, user_id) DO UPDATE"
                " SET prediction_id = excluded.prediction_id, created = excluded.created",
                (chat_id, user_id, prediction_id, self._clock()),
            )

    def get_pending_label(self, *, chat_id: int, user_id: int) -> str | None:
        """The prediction id awaiting a typed label from this user in this chat, if not expired."""
        row = self._conn.execute(
            "SELECT prediction_id, created FROM pending_labels WHERE chat_id = ? AND user_id = ?",
            (chat_id, user_id),
        ).fetchone()
        if row is None:
            return None
        if float(row["created"]) < self._clock() - self._pending_ttl_s:
            # Expired: drop it so that a stale question never swallows an ordinary message.
            with _transaction(self._conn):
                self._conn.execute(
                    "DELETE FROM pending_labels WHERE chat_id = ? AND user_id = ? AND created = ?",
                    (chat_id, user_id, row["created"]),
                )
            return None
        return str(row["prediction_id"])

    def clear_pending_label(self, *, chat_id: int, user_id: int) -> None:
        """Stop waiting for a typed label from this user in this chat."""
        with _transaction(self._conn):
            self._conn.execute(
                "DELETE FROM pending_labels WHERE chat_id = ? AND user_id = ?", (chat_id, user_id)
            )

    # -- privacy and retention --------------------------------------------------------------

    def count_user_items(self, user_id: int) -> ForgetSummary:
        """What `forget_user` would remove, for the confirmation prompt."""
        with _transaction(self._conn, "DEFERRED"):
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

    def forget_user(self, user_id: int) -> ForgetSummary:
        """Delete the user's predictions, verdicts, pending state and images nobody else uses."""
        conn = self._conn
        with _transaction(conn):
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
            removed = self._drop_unreferenced_images(candidates)
        self._unlink(removed)
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
        with _transaction(conn):
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
            removed = self._drop_unreferenced_images(candidates)
        self._unlink(removed)
        if deleted.rowcount:
            logger.info(
                "Pruned %r predictions and %r images older than %r s",
                deleted.rowcount,
                len(removed),
                older_than_s,
            )
        return deleted.rowcount

    def stats(self) -> dict[str, int]:
        """Counts of predictions, verdicts by kind, stored images and pending labels."""
        conn = self._conn
        with _transaction(conn, "DEFERRED"):
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
            result[f"verdicts_{kind}"] = int(by_kind.get(kind, 0))
        result["images"] = int(images)
        result["image_bytes"] = int(image_bytes)
        result["pending_labels"] = int(pending)
        return result

    def stats_since(self, since: float) -> FeedbackStats:
        """Answers per top label, verdicts and the accuracy they imply, from `since` on."""
        conn = self._conn
        with _transaction(conn, "DEFERRED"):
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
            verdicts={kind: int(by_kind.get(kind, 0)) for kind in VERDICT_KINDS},
            accuracy_per_label={
                str(row["top_label"]): (int(row["n_right"]), int(row["judged"])) for row in judged
            },
        )

    # -- disputes and reviews ---------------------------------------------------------------

    def list_disputes(self, offset: int, limit: int) -> tuple[list[DisputeEntry], int]:
        """One page of disputed predictions, newest verdict first, and how many there are."""
        if offset < 0 or limit < 0:
            raise ValueError("offset and limit must not be negative")
        conn = self._conn
        with _transaction(conn, "DEFERRED"):
            total = conn.execute(
                "SELECT count(*) FROM verdicts WHERE kind IN ('wrong', 'unsure')"
            ).fetchone()[0]
            rows = conn.execute(
                f"SELECT {_PREDICTION_COLUMNS}, {_VERDICT_COLUMNS}, {_REVIEW_COLUMNS},"
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
            prediction = _prediction_from_row(row)
            disputes.append(
                DisputeEntry(
                    prediction=prediction,
                    verdict=_verdict_from_row(row),
                    image_path=self._row_image_path(row, prediction),
                    review=_review_from_row(row),
                )
            )
        return disputes, int(total)

    def next_for_review(self) -> ReviewItem | None:
        """The oldest item awaiting review: disputed, or uncertain with its image kept."""
        row = self._conn.execute(
            f"SELECT {_PREDICTION_COLUMNS}, {_VERDICT_COLUMNS}, i.ext AS image_ext"
            " FROM predictions p LEFT JOIN verdicts v ON v.prediction_id = p.id"
            " LEFT JOIN images i ON i.sha256 = p.image_sha256"
            f" WHERE {_AWAITING_REVIEW} ORDER BY p.created, p.id LIMIT 1"
        ).fetchone()
        if row is None:
            return None
        prediction = _prediction_from_row(row)
        return ReviewItem(
            prediction=prediction,
            verdict=_optional_verdict_from_row(row),
            image_path=self._row_image_path(row, prediction),
        )

    def count_for_review(self) -> int:
        """How many items await review."""
        row = self._conn.execute(
            f"SELECT count(*) FROM predictions p WHERE {_AWAITING_REVIEW}"
        ).fetchone()
        return int(row[0])

    def get_review(self, prediction_id: str) -> ReviewRecord | None:
        """The review of this prediction, if any."""
        row = self._conn.execute(
            f"SELECT {_REVIEW_COLUMNS} FROM reviews r WHERE r.prediction_id = ?",
            (prediction_id,),
        ).fetchone()
        return None if row is None else _review_from_row(row)

    def record_review(
        self, prediction_id: str, *, admin_id: int, decision: str, label: str | None = None
    ) -> bool:
        """Store the one review an item may get; False (nothing stored) if it already has one.

        "confirm" keeps what the user said: the corrected label of a "wrong" verdict, or the
        predicted label for a "right" verdict or an uncertain item without one (`label`: None
        or that label); an "unsure" verdict has nothing to confirm. "relabel" needs `label`
        (normalized as verdict labels are). "discard" takes no label and keeps the item out of
        training data. Raises `UnknownPrediction`, or `InvalidReview` for a bad decision or
        label, or an item that is not up for review (see `is_reviewable`).
        """
        checked = _check_decision(decision)
        if checked == "relabel":
            if label is None:
                raise InvalidReview('a "relabel" review needs the new label')
            label = _review_label(label)
        elif checked == "discard" and label is not None:
            raise InvalidReview('a "discard" review has no label')
        conn = self._conn
        with _transaction(conn):
            prediction = self._prediction(prediction_id)
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
            if checked == "confirm":
                confirmed = _confirmed_label(prediction, verdict)
                if label is not None and _review_label(label) != confirmed:
                    raise InvalidReview(
                        f'"confirm" keeps the label {confirmed!r}; use "relabel" for another'
                    )
                label = confirmed
            # The primary key keeps it to one review even with another process writing.
            cursor = conn.execute(
                "INSERT INTO reviews (prediction_id, admin_id, decision, label, created)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (prediction_id) DO NOTHING",
                (prediction_id, admin_id, checked, label, self._clock()),
            )
        recorded = cursor.rowcount == 1
        if recorded:
            logger.info("Admin %r reviewed %r: %r %r", admin_id, prediction_id, checked, label)
        return recorded

    # -- settings ---------------------------------------------------------------------------

    def get_setting(self, key: str) -> str | None:
        """The stored value of a run-time setting, or None if it was never set."""
        row = self._conn.execute(
            "SELECT value FROM settings WHERE key = ?", (_check_setting_key(key),)
        ).fetchone()
        return None if row is None else str(row[0])

    def set_setting(self, key: str, value: str) -> None:
        """Store a run-time setting (replacing any earlier value)."""
        key = _check_setting_key(key)
        if not isinstance(value, str):
            raise TypeError(f"setting values are strings, not {type(value).__name__}")
        with _transaction(self._conn):
            self._conn.execute(
                "INSERT INTO settings (key, value, updated) VALUES (?, ?, ?)"
                " ON CONFLICT (key) DO UPDATE"
                " SET value = excluded.value, updated = excluded.updated",
                (key, value, self._clock()),
            )

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
        with _transaction(conn, "DEFERRED"):
            rows = conn.execute(
                f"SELECT {_PREDICTION_COLUMNS}, {_VERDICT_COLUMNS}, {_REVIEW_COLUMNS},"
                " i.ext AS image_ext"
                " FROM predictions p LEFT JOIN verdicts v ON v.prediction_id = p.id"
                " LEFT JOIN reviews r ON r.prediction_id = p.id"
                " LEFT JOIN images i ON i.sha256 = p.image_sha256"
                f" WHERE {condition}"
                " ORDER BY coalesce(v.created, r.created), p.id"
            ).fetchall()
        entries = []
        for row in rows:
            prediction = _prediction_from_row(row)
            entries.append(
                LabelledEntry(
                    prediction=prediction,
                    verdict=_optional_verdict_from_row(row),
                    review=_review_from_row(row),
                    image_path=self._row_image_path(row, prediction),
                )
            )
        return entries

    def _row_image_path(self, row: sqlite3.Row, prediction: PredictionRecord) -> Path | None:
        sha, ext = prediction.image_sha256, row["image_ext"]
        return None if sha is None or ext is None else self.image_path(sha, str(ext))

    def entries(self) -> list[FeedbackEntry]:
        """Every verdict with its prediction and image location, oldest verdict first."""
        rows = self._conn.execute(
            f"SELECT {_PREDICTION_COLUMNS}, {_VERDICT_COLUMNS}, i.ext AS image_ext"
            " FROM verdicts v JOIN predictions p ON p.id = v.prediction_id"
            " LEFT JOIN images i ON i.sha256 = p.image_sha256"
            " ORDER BY v.created, v.prediction_id"
        ).fetchall()
        entries = []
        for row in rows:
            prediction = _prediction_from_row(row)
            path = self._row_image_path(row, prediction)
            entries.append(FeedbackEntry(prediction, _verdict_from_row(row), path))
        return entries

    # -- the image store --------------------------------------------------------------------

    def _store_image(self, data: bytes, now: float) -> str:
        """Write `data` to the content-addressed store and register it; returns its sha256.

        Call inside a write transaction: the file is on disk before any row can point at it.
        """
        sha = hashlib.sha256(data).hexdigest()
        ext = image_extension(data)
        path = self.image_path(sha, ext)
        if path.is_file():
            # Refresh its age so the orphan sweep of another process cannot race this link.
            os.utime(path)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            # A crash leaves either no file or the whole file, never half of one.
            write_atomically(path, data)
        self._conn.execute(
            "INSERT INTO images (sha256, ext, size, created) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (sha256) DO NOTHING",
            (sha, ext, len(data), now),
        )
        return sha

    def _drop_unreferenced_images(self, candidates: Iterable[str]) -> list[Path]:
        """Delete the image rows no prediction references; returns their files to unlink."""
        removed = []
        for sha in candidates:
            row = self._conn.execute(
                "SELECT ext FROM images i WHERE sha256 = ? AND NOT EXISTS"
                " (SELECT 1 FROM predictions p WHERE p.image_sha256 = i.sha256)",
                (sha,),
            ).fetchone()
            if row is not None:
                self._conn.execute("DELETE FROM images WHERE sha256 = ?", (sha,))
                removed.append(self.image_path(sha, str(row[0])))
        return removed

    def _unlink(self, paths: Iterable[Path]) -> None:
        # After the commit: a crash in between leaves an orphan file, which the sweep at the
        # next open removes, never a row pointing at a deleted file.
        for path in paths:
            try:
                path.unlink(missing_ok=True)
            except OSError:
                logger.warning("Could not delete image %r", str(path), exc_info=True)

    def sweep_orphans(self, grace_s: float = ORPHAN_GRACE_S) -> int:
        """Delete store files no row references (left by a crash); returns how many."""
        known = {
            (str(sha), str(ext))
            for sha, ext in self._conn.execute("SELECT sha256, ext FROM images").fetchall()
        }
        # File ages are wall-clock times whatever `clock` says.
        cutoff = time.time() - grace_s
        removed = 0
        for folder in self._images.iterdir():
            if not folder.is_dir():
                continue
            for path in folder.iterdir():
                name = path.name
                sha, _, ext = name.partition(".")
                ours = (name.startswith(".") and name.endswith(".tmp")) or (
                    _SHA256.fullmatch(sha) is not None and (sha, ext) not in known
                )
                try:
                    if ours and path.is_file() and path.stat().st_mtime < cutoff:
                        path.unlink()
                        removed += 1
                except OSError:
                    logger.warning("Could not sweep %r", str(path), exc_info=True)
        if removed:
            logger.info("Removed %r orphaned files from the image store", removed)
        return removed


class SqliteFeedbackLog:
    """The feedback log in SQLite; all disk work runs on one thread owned by this object."""

    def __init__(self, store: FeedbackStore, executor: ThreadPoolExecutor) -> None:
        # Use `await SqliteFeedbackLog.open(...)`: the store must be opened on `executor`.
        self._store = store
        self._executor = executor
        self._closed = False

    @classmethod
    async def open(
        cls,
        data_dir: Path,
        *,
        clock: Callable[[], float] = time.time,
        pending_ttl_s: float = DEFAULT_PENDING_TTL_S,
    ) -> SqliteFeedbackLog:
        """Open (creating if needed) the feedback log under `data_dir`."""
        # One thread owns the connection: SQLite connections are not for sharing between
        # threads, and a single writer keeps every transaction strictly ordered.
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="feedback-log")
        loop = asyncio.get_running_loop()
        try:
            store = await loop.run_in_executor(
                executor,
                functools.partial(
                    FeedbackStore.open, data_dir, clock=clock, pending_ttl_s=pending_ttl_s
                ),
            )
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return cls(store, executor)

    async def _call(self, func: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        if self._closed:
            raise FeedbackLogClosed("the feedback log is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(func, *args, **kwargs))

    async def record_prediction(
        self,
        *,
        chat_id: int,
        user_id: int,
        message_id: int,
        file_id: str,
        file_unique_id: str,
        prediction: Prediction,
        uncertain: bool,
        image: bytes | None,
    ) -> PredictionRecord:
        """Store a prediction (and its image, when given) before the reply is sent."""
        return await self._call(
            self._store.record_prediction,
            chat_id=chat_id,
            user_id=user_id,
            message_id=message_id,
            file_id=file_id,
            file_unique_id=file_unique_id,
            prediction=prediction,
            uncertain=uncertain,
            image=image,
        )

    async def set_reply_message(self, prediction_id: str, reply_message_id: int) -> None:
        """Remember which bot message answered the prediction (no-op if it is gone)."""
        await self._call(self._store.set_reply_message, prediction_id, reply_message_id)

    async def get_prediction(self, prediction_id: str) -> PredictionRecord | None:
        """The prediction with this id, or None for an unknown or forged id."""
        return await self._call(self._store.get_prediction, prediction_id)

    async def predictions_for_reply(
        self, chat_id: int, reply_message_id: int
    ) -> list[PredictionRecord]:
        """Every prediction one bot message answers (several for an album), in order."""
        return await self._call(self._store.predictions_for_reply, chat_id, reply_message_id)

    async def get_verdict(self, prediction_id: str) -> VerdictRecord | None:
        """The verdict on this prediction, if any."""
        return await self._call(self._store.get_verdict, prediction_id)

    async def record_verdict(
        self,
        prediction_id: str,
        *,
        user_id: int,
        kind: str,
        label: str | None,
        image: bytes | None = None,
    ) -> VerdictOutcome:
        """Store the one verdict a prediction may get; a later call returns the first one."""
        return await self._call(
            self._store.record_verdict,
            prediction_id,
            user_id=user_id,
            kind=kind,
            label=label,
            image=image,
        )

    async def has_image(self, prediction_id: str) -> bool:
        """Whether the prediction's image is in the store."""
        return await self._call(self._store.has_image, prediction_id)

    async def set_pending_label(self, *, chat_id: int, user_id: int, prediction_id: str) -> None:
        """The next text this user sends in this chat is the label for this prediction."""
        await self._call(
            self._store.set_pending_label,
            chat_id=chat_id,
            user_id=user_id,
            prediction_id=prediction_id,
        )

    async def get_pending_label(self, *, chat_id: int, user_id: int) -> str | None:
        """The prediction id awaiting a typed label from this user in this chat, if not expired."""
        return await self._call(self._store.get_pending_label, chat_id=chat_id, user_id=user_id)

    async def clear_pending_label(self, *, chat_id: int, user_id: int) -> None:
        """Stop waiting for a typed label from this user in this chat."""
        await self._call(self._store.clear_pending_label, chat_id=chat_id, user_id=user_id)

    async def count_user_items(self, user_id: int) -> ForgetSummary:
        """What `forget_user` would remove, for the confirmation prompt."""
        return await self._call(self._store.count_user_items, user_id)

    async def forget_user(self, user_id: int) -> ForgetSummary:
        """Delete the user's predictions, verdicts, pending state and images nobody else uses."""
        return await self._call(self._store.forget_user, user_id)

    async def prune(self, *, older_than_s: float) -> int:
        """Delete undisputed predictions older than `older_than_s`; returns how many."""
        return await self._call(self._store.prune, older_than_s=older_than_s)

    async def stats(self) -> dict[str, int]:
        """Counts of predictions, verdicts by kind, stored images and pending labels."""
        return await self._call(self._store.stats)

    async def stats_since(self, since: float) -> FeedbackStats:
        """Answers per label, verdicts and the accuracy they imply, from `since` on."""
        return await self._call(self._store.stats_since, since)

    async def list_disputes(self, offset: int, limit: int) -> tuple[list[DisputeEntry], int]:
        """One page of disputed predictions, newest verdict first, and how many there are."""
        return await self._call(self._store.list_disputes, offset, limit)

    async def next_for_review(self) -> ReviewItem | None:
        """The oldest item awaiting review, or None when there is none."""
        return await self._call(self._store.next_for_review)

    async def count_for_review(self) -> int:
        """How many items await review."""
        return await self._call(self._store.count_for_review)

    async def get_review(self, prediction_id: str) -> ReviewRecord | None:
        """The review of this prediction, if any."""
        return await self._call(self._store.get_review, prediction_id)

    async def record_review(
        self, prediction_id: str, *, admin_id: int, decision: str, label: str | None = None
    ) -> bool:
        """Store the one review an item may get; False if it already has one."""
        return await self._call(
            self._store.record_review,
            prediction_id,
            admin_id=admin_id,
            decision=decision,
            label=label,
        )

    async def get_setting(self, key: str) -> str | None:
        """The stored value of a run-time setting, or None if it was never set."""
        return await self._call(self._store.get_setting, key)

    async def set_setting(self, key: str, value: str) -> None:
        """Store a run-time setting (replacing any earlier value)."""
        await self._call(self._store.set_setting, key, value)

    async def close(self) -> None:
        """Finish queued work, then close the database; later calls raise `FeedbackLogClosed`."""
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        # Queued behind every call already submitted, so none of them is cut off.
        await loop.run_in_executor(self._executor, self._store.close)
        self._executor.shutdown(wait=False)


if TYPE_CHECKING:
    # mypy checks here that the SQLite log satisfies the protocol the bot is written against.
    def _conforms(log: SqliteFeedbackLog) -> FeedbackLog:
        return log
