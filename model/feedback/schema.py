"""The feedback database: where it lives, how it is opened, and its schema migrations.

One SQLite database (WAL) at ``DATA_DIR/feedback/feedback.sqlite3``; the kept images lie beside
it under ``images/``. A connection is used by one thread only; read-then-write sequences run in
IMMEDIATE transactions (`transaction`), so that no other writer can come in between.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from model.feedback.records import FeedbackError, MissingDatabase

logger = logging.getLogger(__name__)

DATABASE_NAME = "feedback.sqlite3"
IMAGES_FOLDER = "images"
#: How long a write waits for another process's write lock before it fails with "locked".
BUSY_TIMEOUT_S = 10.0


def feedback_dir(data_dir: Path) -> Path:
    """The folder holding the feedback database and its images."""
    return data_dir / "feedback"


def database_path(data_dir: Path) -> Path:
    """Where the feedback database lives under `data_dir`."""
    return feedback_dir(data_dir) / DATABASE_NAME


# Each migration is a list of statements taking the schema from version N to N + 1; append new
# ones, never edit old ones (databases in the field have already run them).
MIGRATIONS: tuple[tuple[str, ...], ...] = (
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
    # 4: admins' decisions on labels users typed that the model does not know, one per label
    # key (NFKC, case folded); the proposals themselves are read from the verdicts.
    (
        """
        CREATE TABLE label_decisions (
            key TEXT PRIMARY KEY,
            label TEXT NOT NULL,
            decision TEXT NOT NULL CHECK (decision IN ('add', 'merge', 'reject')),
            target TEXT,
            admin_id INTEGER,
            created REAL NOT NULL,
            CHECK ((decision = 'merge') = (target IS NOT NULL))
        )
        """,
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the schema up to `SCHEMA_VERSION`, one transaction per step; returns the version."""
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if version > SCHEMA_VERSION:
        raise FeedbackError(
            f"the feedback database has schema version {version}, newer than this code "
            f"understands ({SCHEMA_VERSION}); upgrade Verdict"
        )
    while version < SCHEMA_VERSION:
        with transaction(conn):
            # Read again under the write lock: another process may have migrated meanwhile.
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            if version >= SCHEMA_VERSION:
                break
            for statement in MIGRATIONS[version]:
                conn.execute(statement)
            version += 1
            conn.execute(f"PRAGMA user_version = {version}")
        logger.info("Feedback database migrated to schema version %r", version)
    return version


def check_integrity(conn: sqlite3.Connection) -> None:
    """Raise `sqlite3.DatabaseError` ("database disk image is malformed: ...") unless SQLite's
    quick check (every page and index, without comparing index contents) finds nothing."""
    problems = [str(row[0]) for row in conn.execute("PRAGMA quick_check(5)")]
    if problems != ["ok"]:
        raise sqlite3.DatabaseError(f"database disk image is malformed: {'; '.join(problems)}")


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection, mode: str = "IMMEDIATE") -> Iterator[None]:
    """One transaction around the block: committed when it ends, rolled back when it raises.

    IMMEDIATE takes the write lock up front, so read-then-write sequences cannot interleave
    with another writer; DEFERRED is for consistent multi-statement reads.
    """
    conn.execute(f"BEGIN {mode}")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def connect(data_dir: Path, *, create: bool = True) -> sqlite3.Connection:
    """The migrated feedback database under `data_dir`, opened for this thread.

    With `create`, the folders and the database are created when missing; without it, a
    missing database raises `MissingDatabase` (a reader must never create an empty one).
    Autocommit (`transaction` opens every transaction), rows as `sqlite3.Row`, WAL, foreign
    keys on, and FULL sync: a verdict acknowledged to the user survives a power loss. A writer
    (`create`) checks the database first: a corrupt one raises `sqlite3.DatabaseError`.
    """
    path = database_path(data_dir)
    if create:
        (feedback_dir(data_dir) / IMAGES_FOLDER).mkdir(parents=True, exist_ok=True)
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
        conn.execute(f"PRAGMA busy_timeout = {round(BUSY_TIMEOUT_S * 1000):d}")
        conn.execute("PRAGMA foreign_keys = ON")
        mode = str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
        if mode.lower() != "wal":
            logger.warning("SQLite refused WAL mode for %r; using %r", str(path), mode)
        # A verdict acknowledged to the user must survive the process being killed, and
        # the machine losing power, right after: FULL syncs the WAL on every commit.
        conn.execute("PRAGMA synchronous = FULL")
        if create:
            check_integrity(conn)
        migrate(conn)
    except BaseException:
        conn.close()
        raise
    return conn
