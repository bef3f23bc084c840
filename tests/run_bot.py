"""Runs `python -m bot`'s main() and, once it has returned, writes the modules it had imported.

The end-to-end tests start the bot through this script so that they can check, after real
photos went through, that the bot process never imported torch or fastai.

With VERDICT_TEST_DISK_FULL set to a path, every write of the feedback log fails as SQLite's
do on a full disk ("database or disk is full") while a file exists at that path: the test
fills and frees the disk by creating and deleting it. VERDICT_TEST_INBOX_FULL does the same
to the inbox's writes, and VERDICT_TEST_INBOX_BUG makes them raise what no disk does. With
VERDICT_TEST_HOLD set to a path, classifying a photo and storing a verdict wait while a file
exists there: the test holds updates in flight, then kills the bot.
Nothing of this is in the bot itself.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bot.__main__ import main


def _fail_writes_while(flag: Path) -> None:
    from model.feedback import FeedbackStore

    def failing(write: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if flag.exists():
                raise sqlite3.OperationalError("database or disk is full")
            return write(*args, **kwargs)

        return wrapper

    for name in ("record_prediction", "set_reply_message", "record_verdict"):
        setattr(FeedbackStore, name, failing(getattr(FeedbackStore, name)))


def _fail_inbox_writes_while(flag: Path) -> None:
    from bot.inboxstore import InboxStore

    def failing(write: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if flag.exists():
                raise sqlite3.OperationalError("database or disk is full")
            return write(*args, **kwargs)

        return wrapper

    for name in ("receive", "mark_done"):
        setattr(InboxStore, name, failing(getattr(InboxStore, name)))


def _break_inbox_while(flag: Path) -> None:
    """The inbox's writes raise what no disk does (a bug): the webhook must answer 500."""
    from bot.inboxstore import InboxStore

    receive = InboxStore.receive

    def broken(*args: Any, **kwargs: Any) -> Any:
        if flag.exists():
            raise RuntimeError("a bug in the inbox")
        return receive(*args, **kwargs)

    setattr(InboxStore, "receive", broken)  # noqa: B010


def _hold_while(flag: Path) -> None:
    from model.feedback import FeedbackStore
    from model.pool import Classifier

    classify = Classifier.classify
    record_verdict = FeedbackStore.record_verdict

    async def held_classify(self: Classifier, image: bytes) -> Any:
        while await asyncio.to_thread(flag.exists):
            await asyncio.sleep(0.02)
        return await classify(self, image)

    def held_record_verdict(*args: Any, **kwargs: Any) -> Any:
        while flag.exists():  # on the feedback log's thread
            time.sleep(0.02)
        return record_verdict(*args, **kwargs)

    for cls, name, held in (
        (Classifier, "classify", held_classify),
        (FeedbackStore, "record_verdict", held_record_verdict),
    ):
        setattr(cls, name, held)


if __name__ == "__main__":  # spawned workers re-import this file as __mp_main__
    if os.environ.get("VERDICT_TEST_DISK_FULL"):
        _fail_writes_while(Path(os.environ["VERDICT_TEST_DISK_FULL"]))
    if os.environ.get("VERDICT_TEST_INBOX_FULL"):
        _fail_inbox_writes_while(Path(os.environ["VERDICT_TEST_INBOX_FULL"]))
    if os.environ.get("VERDICT_TEST_INBOX_BUG"):
        _break_inbox_while(Path(os.environ["VERDICT_TEST_INBOX_BUG"]))
    if os.environ.get("VERDICT_TEST_HOLD"):
        _hold_while(Path(os.environ["VERDICT_TEST_HOLD"]))
    status = main()
    with open(sys.argv[1], "w", encoding="utf-8") as handle:
        json.dump(sorted(sys.modules), handle)
    sys.exit(status)
