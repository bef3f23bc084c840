"""The inbox's SQLite table: every update as Telegram sent it, kept until it was handled.

One database (WAL) at ``DATA_DIR/inbox/inbox.sqlite3``, apart from the feedback log so that
neither waits on the other's writes; one connection on one thread (`InboxStore` is synchronous,
`bot.inbox.Inbox` runs it on its own `DiskThread`). An update is written with FULL sync before
Telegram is told it arrived: it survives the process being killed, and a power loss, right
after. Marking it done needs no sync of its own (NORMAL): a done mark lost to a power loss
costs a second answer, never a lost one.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from model.feedback.schema import transaction

DATABASE_NAME = "inbox.sqlite3"
#: How long a write waits for a lock: getUpdates waits on it, so briefly (only this process
#: writes the inbox; a lock is an operator's sqlite3 shell).
BUSY_TIMEOUT_S = 1.0
#: How often a replayed update is tried before it is given up (a photo that kills the bot).
MAX_ATTEMPTS = 3

_SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS updates (
        update_id INTEGER PRIMARY KEY,
        body TEXT NOT NULL,
        received REAL NOT NULL,
        done REAL,
        attempts INTEGER NOT NULL DEFAULT 0
    )
    """,
    "CREATE INDEX IF NOT EXISTS updates_pending ON updates (update_id) WHERE done IS NULL",
)


def inbox_path(data_dir: Path) -> Path:
    """Where the inbox database lives under `data_dir`."""
    return data_dir / "inbox" / DATABASE_NAME


@dataclass(frozen=True)
class Pending:
    """An update not yet handled: its id and JSON, as received."""

    update_id: int
    body: str


class InboxStore:
    """The inbox table, for the one thread that owns the connection."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    @classmethod
    def open(cls, data_dir: Path) -> InboxStore:
        """The inbox under `data_dir`, created when missing."""
        path = inbox_path(data_dir)
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            conn.execute(f"PRAGMA busy_timeout = {round(BUSY_TIMEOUT_S * 1000):d}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
            for statement in _SCHEMA:
                conn.execute(statement)
        except BaseException:
            conn.close()
            raise
        return cls(conn)

    def receive(self, updates: Sequence[tuple[int, str]]) -> set[int]:
        """Keep the updates (id, JSON) in one transaction; returns the ids that were new (the
        others are in the inbox already: Telegram sent them again)."""
        if not updates:
            return set()
        ids = [update_id for update_id, _ in updates]
        now = time.time()
        with transaction(self.conn):
            marks = ",".join("?" * len(ids))
            known = {
                int(row[0])
                for row in self.conn.execute(
                    f"SELECT update_id FROM updates WHERE update_id IN ({marks})", ids
                )
            }
            new = [(i, body, now) for i, body in updates if i not in known]
            self.conn.executemany(
                "INSERT INTO updates (update_id, body, received) VALUES (?, ?, ?)", new
            )
        return {i for i, _, _ in new}

    def mark_done(self, update_ids: Sequence[int]) -> None:
        """The updates were handled (a power loss may forget this: see the module's doc)."""
        self.conn.execute("PRAGMA synchronous = NORMAL")
        try:
            with transaction(self.conn):
                self.conn.executemany(
                    "UPDATE updates SET done = ? WHERE update_id = ? AND done IS NULL",
                    [(time.time(), i) for i in update_ids],
                )
        finally:
            self.conn.execute("PRAGMA synchronous = FULL")

    def take_pending(self) -> tuple[list[Pending], list[int]]:
        """The updates to replay, in order, each counted as one more attempt; and the ids given
        up (tried `MAX_ATTEMPTS` times already: they are marked done, never tried again)."""
        with transaction(self.conn):
            rows = self.conn.execute(
                "SELECT update_id, body, attempts FROM updates WHERE done IS NULL "
                "ORDER BY update_id"
            ).fetchall()
            given_up = [int(r[0]) for r in rows if int(r[2]) >= MAX_ATTEMPTS]
            replay = [Pending(int(r[0]), str(r[1])) for r in rows if int(r[2]) < MAX_ATTEMPTS]
            self.conn.executemany(
                "UPDATE updates SET attempts = attempts + 1 WHERE update_id = ?",
                [(p.update_id,) for p in replay],
            )
            self.conn.executemany(
                "UPDATE updates SET done = ? WHERE update_id = ?",
                [(time.time(), i) for i in given_up],
            )
        return replay, given_up

    def pending_count(self) -> int:
        """How many updates are not done."""
        row = self.conn.execute("SELECT count(*) FROM updates WHERE done IS NULL").fetchone()
        return int(row[0])

    def prune(self, older_than_s: float) -> int:
        """Remove updates done more than `older_than_s` ago (never one not done); how many."""
        with transaction(self.conn):
            cursor = self.conn.execute(
                "DELETE FROM updates WHERE done IS NOT NULL AND done < ?",
                (time.time() - older_than_s,),
            )
        return cursor.rowcount

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()
