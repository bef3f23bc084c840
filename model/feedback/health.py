"""When the disk or the database fails the feedback log: what kind of trouble it is, what the
log's one thread does about it, and setting a corrupt database aside.

A full disk, a database another process keeps locked, a read-only or failing disk: each write
then raises `FeedbackUnavailable`, which says which, and the caller goes on without keeping
what it was given (the bot answers photos without buttons). Nothing is retried behind its back:
the next write simply tries again, so keeping resumes with the first write that works. While
writes fail, the log waits only briefly for a lock (`DEGRADED_BUSY_TIMEOUT_S`) so that a
locked database does not hold every caller for the full busy timeout (`BUSY_TIMEOUT_S`) in
turn.

A corrupt database cannot be written to again: the writer that opens it sets it aside
(``feedback/corrupt-<time>/``, with its images, for an operator to recover or delete) and
starts a new one. One that turns out corrupt while the bot runs fails its writes until the next
start does that.
"""

from __future__ import annotations

import enum
import errno
import logging
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import ParamSpec, TypeVar

from model.feedback.records import FeedbackError
from model.feedback.schema import DATABASE_NAME, IMAGES_FOLDER, feedback_dir

logger = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

#: How long a write waits for a lock while writes are failing (normally: `BUSY_TIMEOUT_S`).
DEGRADED_BUSY_TIMEOUT_S = 0.25


class Trouble(enum.StrEnum):
    """Why the feedback log cannot keep data."""

    FULL = "the disk is full"
    LOCKED = "the database is locked by another process"
    READ_ONLY = "the disk or the database is read-only"
    IO = "the disk fails to read or write"
    CORRUPT = "the database is corrupt (the next start sets it aside for a new one)"


class FeedbackUnavailable(FeedbackError):
    """The feedback log could not keep what it was given (nothing of it was kept)."""

    def __init__(self, trouble: Trouble, detail: str) -> None:
        super().__init__(f"{trouble.value} ({detail})")
        self.trouble = trouble
        self.detail = detail


_SQLITE_TROUBLE = {
    "SQLITE_FULL": Trouble.FULL,
    "SQLITE_BUSY": Trouble.LOCKED,
    "SQLITE_LOCKED": Trouble.LOCKED,
    "SQLITE_READONLY": Trouble.READ_ONLY,
    "SQLITE_IOERR": Trouble.IO,
    "SQLITE_CANTOPEN": Trouble.IO,
    "SQLITE_CORRUPT": Trouble.CORRUPT,
    "SQLITE_NOTADB": Trouble.CORRUPT,
}
# The same, from SQLite's messages (an error raised without its code: tests, older Pythons).
_MESSAGE_TROUBLE = (
    ("database or disk is full", Trouble.FULL),
    ("database is locked", Trouble.LOCKED),
    ("database table is locked", Trouble.LOCKED),
    ("readonly database", Trouble.READ_ONLY),
    ("disk i/o error", Trouble.IO),
    ("unable to open database file", Trouble.IO),
    ("database disk image is malformed", Trouble.CORRUPT),
    ("file is not a database", Trouble.CORRUPT),
)
_ERRNO_TROUBLE = {
    errno.ENOSPC: Trouble.FULL,
    errno.EDQUOT: Trouble.FULL,
    errno.EROFS: Trouble.READ_ONLY,
    errno.EACCES: Trouble.READ_ONLY,
    errno.EIO: Trouble.IO,
}


def trouble_of(exc: BaseException) -> Trouble | None:
    """The storage trouble `exc` reports; None for anything else (a bug, a bad argument)."""
    if isinstance(exc, sqlite3.DatabaseError):
        name = getattr(exc, "sqlite_errorname", None)
        if isinstance(name, str):
            base = name.split("_", 2)
            code = "_".join(base[:2])
            if code in _SQLITE_TROUBLE:
                return _SQLITE_TROUBLE[code]
        message = str(exc).lower()
        for fragment, trouble in _MESSAGE_TROUBLE:
            if fragment in message:
                return trouble
        return None
    if isinstance(exc, OSError):
        return _ERRNO_TROUBLE.get(exc.errno or 0)
    return None


class WriteGuard:
    """What the feedback log's thread runs every call through (on that thread).

    `set_busy_timeout` sets the connection's lock wait; `total_changes` counts the rows the
    connection has changed (a call that changed rows proves the database writable again).
    """

    def __init__(
        self,
        set_busy_timeout: Callable[[float], None],
        total_changes: Callable[[], int],
        busy_timeout_s: float,
    ) -> None:
        self._set_busy_timeout = set_busy_timeout
        self._total_changes = total_changes
        self._busy_timeout_s = busy_timeout_s
        self.failing: Trouble | None = None

    def call(self, func: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """`func(*args, **kwargs)`, its storage failures raised as `FeedbackUnavailable`."""
        before = self._total_changes()
        try:
            result = func(*args, **kwargs)
        except Exception as exc:
            trouble = trouble_of(exc)
            if trouble is None:
                raise
            if self.failing is None:
                # Fail fast on a lock from now on, until a write works.
                self._set_busy_timeout(min(DEGRADED_BUSY_TIMEOUT_S, self._busy_timeout_s))
            self.failing = trouble
            raise FeedbackUnavailable(trouble, str(exc) or type(exc).__name__) from exc
        if self.failing is not None and self._total_changes() != before:
            self.failing = None
            self._set_busy_timeout(self._busy_timeout_s)
        return result


def set_aside(data_dir: Path, why: str) -> Path:
    """Move a corrupt feedback database (and the images its rows named) out of the way, into
    ``feedback/corrupt-<time>/``; returns that folder. Logs what it did, once, loudly."""
    folder = feedback_dir(data_dir)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    target = folder / f"corrupt-{stamp}"
    suffix = 1
    while target.exists():
        suffix += 1
        target = folder / f"corrupt-{stamp}-{suffix}"
    target.mkdir()
    for name in (DATABASE_NAME, f"{DATABASE_NAME}-wal", f"{DATABASE_NAME}-shm", IMAGES_FOLDER):
        source = folder / name
        if source.exists():
            source.rename(target / name)
    logger.error(
        "The feedback database was corrupt (%s): moved it and its images aside to %s and "
        "started a new, empty one. Recover what it held with `sqlite3 %s .recover`, or delete "
        "the folder: /forget and the retention period do not reach it.",
        why,
        target,
        target / DATABASE_NAME,
    )
    return target
