"""One worker process seen from the bot: start it, hand it a batch, stop it.

`WorkerProcess` owns the process, the pipe to it and the thread that blocks on that pipe, and
speaks the protocol of model/messages.py. Which worker gets which batch, and replacing dead
or retired workers, is `model.pool`'s business. Nothing here imports torch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from model import worker
from model.messages import Batch, BatchResult, LoadFailed, Ready, Stop, UnexpectedMessage
from model.types import ClassifierError
from model.worker import WorkerConfig

logger = logging.getLogger(__name__)


class ModelLoadError(ClassifierError):
    """A model could not be loaded by a worker; the message says why."""


class NotSent(Exception):
    """The pipe to a worker was closed before the batch could be written."""


@dataclass(eq=False)
class WorkerProcess:
    """A started worker process, the pipe to it, and the model it reported `Ready` with."""

    process: BaseProcess
    conn: Connection
    model: str = ""
    labels: tuple[str, ...] = ()
    # The one thread that blocks on the pipe, so that the event loop never does.
    io: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="pool-io")
    )

    @property
    def pid(self) -> int:
        return self.process.pid or 0

    @classmethod
    async def start(
        cls, context: Any, config: WorkerConfig, name: str, timeout_s: float
    ) -> WorkerProcess:
        """Start a worker and wait (up to `timeout_s`) until it has loaded and warmed up the
        model; `ModelLoadError` (the worker stopped) when it could not."""
        parent, child = context.Pipe()
        process = context.Process(target=worker.serve, args=(child, config), name=name)
        process.start()
        child.close()  # only the worker holds its end: its death reads as EOF here
        started = cls(process, parent)
        loop = asyncio.get_running_loop()
        try:
            message = await asyncio.wait_for(
                loop.run_in_executor(started.io, parent.recv), timeout_s
            )
        except asyncio.CancelledError:
            process.kill()
            raise
        except (EOFError, OSError, TimeoutError) as exc:
            await started.stop()
            raise ModelLoadError(
                f"the worker exited while loading the model ({type(exc).__name__})"
            ) from None
        match message:
            case Ready():
                started.model, started.labels = message.model, message.labels
                return started
            case LoadFailed():
                await started.stop()
                raise ModelLoadError(message.reason)
            case _:
                error = UnexpectedMessage(message, "Ready or LoadFailed")
                await started.stop()
                raise ModelLoadError(f"the worker did not start: {error}") from error

    async def run(self, batch: Batch, hang_timeout_s: float) -> BatchResult | None:
        """Send `batch` and wait for its `BatchResult`.

        None when the worker died holding the batch, or held it past `hang_timeout_s` (then
        it is killed). `NotSent` when the worker was gone before it could see the batch.
        """
        loop = asyncio.get_running_loop()
        # One thread hop for the send and the answer: the worker is idle, so it reads at once.
        roundtrip = loop.run_in_executor(self.io, _roundtrip, self.conn, batch)
        try:
            message = await asyncio.wait_for(asyncio.shield(roundtrip), hang_timeout_s)
        except TimeoutError:
            logger.error("worker %d hung on a batch for %gs; killing it", self.pid, hang_timeout_s)
            self.process.kill()
            with contextlib.suppress(Exception):
                await roundtrip
            return None
        except (EOFError, OSError, ValueError):
            return None
        if not isinstance(message, BatchResult):
            raise UnexpectedMessage(message, "BatchResult")
        return message

    async def stop(self) -> None:
        """Send `Stop`, wait for the process to exit (killing it after 10 s), close the pipe."""
        loop = asyncio.get_running_loop()
        with contextlib.suppress(OSError, ValueError):
            await loop.run_in_executor(self.io, self.conn.send, Stop())
        await loop.run_in_executor(None, self.process.join, 10)
        if self.process.is_alive():
            self.process.kill()
            await loop.run_in_executor(None, self.process.join, 5)
        self.close()

    def close(self) -> None:
        """Close the pipe and let the IO thread go, without waiting for the process."""
        with contextlib.suppress(OSError):
            self.conn.close()
        self.io.shutdown(wait=False)


def _roundtrip(conn: Connection, batch: Batch) -> object:
    try:
        conn.send(batch)
    except (OSError, ValueError) as exc:
        raise NotSent() from exc
    return conn.recv()
