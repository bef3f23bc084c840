"""Users' files, fetched within bounds: a slot before the first byte, never more bytes than the
limit.

A flood of photos must not become a flood of memory: each image the bot holds (downloading,
waiting in the pool's queue, being classified) takes one of `PhotoSlots` (as many as the pool's
queue holds, within a budget of bytes), and a photo that finds none is answered "busy" before
anything is downloaded. The bytes arrive into one growing buffer that is handed on without a
copy, and a download stops as soon as it passes the limit, whatever the file's announced size
said.
"""

from __future__ import annotations

import asyncio
import io
import logging
import urllib.parse
from collections.abc import Sequence
from pathlib import Path

import httpx
from telegram import Bot
from telegram.error import BadRequest, NetworkError

logger = logging.getLogger(__name__)

CHUNK_BYTES = 64 * 1024
#: What the images the bot holds may weigh together (at least one file at the download limit).
MEMORY_BUDGET_BYTES = 160 * 1024 * 1024
REFETCHES_AT_ONCE = 4


class FileTooBig(Exception):
    """The file is over the download limit (ours, or Telegram's 20 MB for bots)."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"{size} bytes, over the limit of {limit}")
        self.size = size
        self.limit = limit


class PhotoSlots:
    """How many images, and how many of their bytes, the bot may hold at once; one lives in
    `Services`.

    `capacity`: the pool's queue size (the pool could not take more anyway). `budget_bytes`:
    what their files may weigh together, each counted at its size as Telegram announces it (or
    the download limit when it does not), so that a flood of large files is refused sooner
    than one of photos. The bot's memory stays under about its idle size plus 1.3 × the budget
    however many photos arrive.
    """

    def __init__(self, capacity: int, budget_bytes: int) -> None:
        if capacity < 1 or budget_bytes < 1:
            raise ValueError("capacity and budget_bytes must be at least 1")
        self.capacity = capacity
        self.budget_bytes = budget_bytes
        self.in_use = 0
        self.bytes_in_use = 0
        self.refused = 0  # images answered "busy" for want of a slot, since start

    def take(self, sizes: Sequence[int]) -> int:
        """Slots for the images of these sizes, in order, as long as they fit; returns how
        many were granted (0: answer "busy"; an album gets its first ones)."""
        granted = 0
        for size in sizes:
            if self.in_use >= self.capacity or self.bytes_in_use + size > self.budget_bytes:
                break
            self.in_use += 1
            self.bytes_in_use += size
            granted += 1
        self.refused += len(sizes) - granted
        return granted

    def give_back(self, sizes: Sequence[int]) -> None:
        """Return the slots `take` granted for images of these sizes."""
        if len(sizes) > self.in_use or sum(sizes) > self.bytes_in_use:
            raise ValueError("giving back more than was taken")
        self.in_use -= len(sizes)
        self.bytes_in_use -= sum(sizes)


def reserved_bytes(size: int | None, limit: int) -> int:
    """What a file counts against the budget: its announced size, else the limit."""
    return limit if size is None else min(size, limit)


class Downloader:
    """Downloads Telegram files into memory over one connection pool; one lives in `Services`.

    Errors are python-telegram-bot's: `FileTooBig`, or a `TelegramError` (`BadRequest` from
    getFile, `NetworkError` for the download itself).
    """

    def __init__(self, timeout_s: float = 60.0) -> None:
        self._timeout = httpx.Timeout(timeout_s, connect=min(timeout_s, 15.0))
        self._client: httpx.AsyncClient | None = None
        #: Held around downloads that take no photo slot (a disputed photo fetched again).
        self.refetching = asyncio.Semaphore(REFETCHES_AT_ONCE)

    async def fetch(self, bot: Bot, file_id: str, limit: int, size: int | None = None) -> bytes:
        """The bytes of a Telegram file; `FileTooBig` past `limit`: before downloading when
        Telegram told the size, else as soon as the bytes pass it."""
        if size is not None and size > limit:
            raise FileTooBig(size, limit)
        try:
            file = await bot.get_file(file_id)
        except BadRequest as exc:
            if "too big" in exc.message.lower():
                raise FileTooBig(size if size is not None else limit + 1, limit) from None
            raise
        if file.file_size is not None and file.file_size > limit:
            raise FileTooBig(file.file_size, limit)
        if not file.file_path:
            raise NetworkError("Telegram gave no path to download the file from")
        if not file.file_path.startswith(("http://", "https://")):
            # A local Bot API server (--local) hands out paths on this machine.
            return await asyncio.to_thread(_read_local, Path(file.file_path), limit)
        return await self._stream(_encoded_url(file.file_path), limit)

    async def _stream(self, url: str, limit: int) -> bytes:
        client = self._client
        if client is None:
            client = self._client = httpx.AsyncClient(
                timeout=self._timeout,
                limits=httpx.Limits(max_connections=None, max_keepalive_connections=32),
            )
        buffer = io.BytesIO()
        try:
            async with client.stream("GET", url) as response:
                if response.status_code != 200:
                    # Never the URL: it holds the bot token.
                    raise NetworkError(f"downloading the file failed: HTTP {response.status_code}")
                announced = response.headers.get("content-length", "")
                if announced.isdigit() and int(announced) > limit:
                    raise FileTooBig(int(announced), limit)
                async for chunk in response.aiter_bytes(CHUNK_BYTES):
                    if buffer.tell() + len(chunk) > limit:
                        raise FileTooBig(buffer.tell() + len(chunk), limit)
                    buffer.write(chunk)
        except httpx.HTTPError as exc:
            raise NetworkError(f"downloading the file failed: {type(exc).__name__}") from exc
        # Written front to back and never exported: CPython hands over the buffer, no copy.
        return buffer.getvalue()

    async def aclose(self) -> None:
        """Close the connection pool (at shutdown)."""
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()


def _encoded_url(file_url: str) -> str:
    """The file URL with its path percent-encoded (file paths may hold any UTF-8)."""
    parts = urllib.parse.urlsplit(file_url)
    return urllib.parse.urlunsplit(parts._replace(path=urllib.parse.quote(parts.path)))


def _read_local(path: Path, limit: int) -> bytes:
    with path.open("rb") as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise FileTooBig(max(len(data), path.stat().st_size), limit)
    return data
