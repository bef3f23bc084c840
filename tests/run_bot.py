"""Runs `python -m bot`'s main() and, once it has returned, writes the modules it had imported.

The end-to-end tests start the bot through this script so that they can check, after real
photos went through, that the bot process never imported torch or fastai.

With VERDICT_TEST_DISK_FULL set to a path, every write of the feedback log fails as SQLite's
do on a full disk ("database or disk is full") while a file exists at that path: the test
fills and frees the disk by creating and deleting it. Nothing of this is in the bot itself.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
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


if __name__ == "__main__":  # spawned workers re-import this file as __mp_main__
    if os.environ.get("VERDICT_TEST_DISK_FULL"):
        _fail_writes_while(Path(os.environ["VERDICT_TEST_DISK_FULL"]))
    status = main()
    with open(sys.argv[1], "w", encoding="utf-8") as handle:
        json.dump(sorted(sys.modules), handle)
    sys.exit(status)
