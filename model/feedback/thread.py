"""The one thread that does the async front's disk work, in the order it was asked for."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

from model.feedback.health import WriteGuard
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
        self._guard: WriteGuard | None = None

    def guard(self, guard: WriteGuard) -> None:
        """Run every later call through `guard` (storage failures become `FeedbackUnavailable`)."""
        self._guard = guard

    async def run(self, func: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """`func(*args, **kwargs)` on the thread; raises `FeedbackLogClosed` after `close`."""
        if self._closed:
            raise FeedbackLogClosed("the feedback log is closed")
        loop = asyncio.get_running_loop()
        guard = self._guard
        if guard is not None:
            call = functools.partial(guard.call, func, *args, **kwargs)
        else:
            call = functools.partial(func, *args, **kwargs)
        return await loop.run_in_executor(self._executor, call)

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
