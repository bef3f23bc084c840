"""The one thread that does the async front's disk work, in the order it was asked for."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

from model.feedback.records import FeedbackLogClosed

P = ParamSpec("P")
R = TypeVar("R")


class DiskThread:
    """Runs blocking calls on one dedicated thread, so the event loop never waits on a disk.

    One thread owns the SQLite connection: connections are not for sharing between threads,
    and a single writer keeps every transaction strictly ordered.
    """

    def __init__(self, name: str) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._closed = False

    async def run(self, func: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """`func(*args, **kwargs)` on the thread; raises `FeedbackLogClosed` after `close`."""
        if self._closed:
            raise FeedbackLogClosed("the feedback log is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(func, *args, **kwargs))

    async def close(self, last: Callable[[], object]) -> None:
        """Run `last` after every call already submitted, then stop; later calls raise."""
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        # Queued behind every call already submitted, so none of them is cut off.
        await loop.run_in_executor(self._executor, last)
        self._executor.shutdown(wait=False)

    def abandon(self) -> None:
        """Stop the thread without waiting (for an open that failed)."""
        self._closed = True
        self._executor.shutdown(wait=False)
