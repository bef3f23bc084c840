"""Settings changed at run time (such as the confidence threshold), kept across restarts.

Not feedback, but kept in the feedback database's `settings` table (so databases in the field
keep their values) and reached through the feedback log's connection and thread: one writer
thread per connection.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from model.feedback.schema import transaction
from model.feedback.thread import DiskThread

if TYPE_CHECKING:
    from model.feedback.interfaces import SettingsStore

MAX_SETTING_KEY_LENGTH = 100


def check_setting_key(key: str) -> str:
    """`key` if it is a valid setting key; raises `ValueError` otherwise."""
    if not isinstance(key, str) or not key.strip() or len(key) > MAX_SETTING_KEY_LENGTH:
        raise ValueError(
            f"a setting key is a non-empty string of at most "
            f"{MAX_SETTING_KEY_LENGTH} characters, not {key!r}"
        )
    return key


class SettingsTable:
    """The `settings` table over a connection; synchronous, for the thread that owns it."""

    def __init__(self, conn: sqlite3.Connection, *, clock: Callable[[], float] = time.time):
        self._conn = conn
        self._clock = clock

    def get_setting(self, key: str) -> str | None:
        row = self._conn.execute(
            "SELECT value FROM settings WHERE key = ?", (check_setting_key(key),)
        ).fetchone()
        return None if row is None else str(row[0])

    def set_setting(self, key: str, value: str) -> None:
        """Store a setting, replacing any earlier value; keys and values are strings."""
        key = check_setting_key(key)
        if not isinstance(value, str):
            raise TypeError(f"setting values are strings, not {type(value).__name__}")
        with transaction(self._conn):
            self._conn.execute(
                "INSERT INTO settings (key, value, updated) VALUES (?, ?, ?)"
                " ON CONFLICT (key) DO UPDATE"
                " SET value = excluded.value, updated = excluded.updated",
                (key, value, self._clock()),
            )


class SqliteSettingsStore:
    """The async settings store: `table`'s calls run on `thread`, the connection's owner."""

    def __init__(self, table: SettingsTable, thread: DiskThread) -> None:
        self._table = table
        self._thread = thread

    async def get_setting(self, key: str) -> str | None:
        return await self._thread.run(self._table.get_setting, key)

    async def set_setting(self, key: str, value: str) -> None:
        await self._thread.run(self._table.set_setting, key, value)


if TYPE_CHECKING:
    # mypy checks here that the store satisfies the protocol the bot is written against.
    def _conforms(store: SqliteSettingsStore) -> SettingsStore:
        return store
