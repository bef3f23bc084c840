"""One worker process seen from the bot: start it, hand it a batch, stop it.

`WorkerProcess` owns the process, the pipe to it and the thread that blocks on that pipe, and
speaks the protocol of model/worker.py. Which worker gets which batch, and replacing dead
or retired workers, is `model.pool`'s business. Nothing here imports torch.

Whatever happens — a worker that hangs, dies, or sends something the protocol does not allow,
a caller cancelled half-way — the process ends up dead and reaped within a bounded time, and
its pipe is closed only once the I/O thread no longer reads from it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from model import worker
from model.types import ClassifierError, Prediction
from model.worker import (
    Batch,
    BatchResult,
    ItemResult,
    LoadFailed,
    Ready,
    Stop,
    UnexpectedMessage,
    WorkerConfig,
)

logger = logging.getLogger(__name__)

# A worker process's entry point: `model.worker.serve`, or a test's fake worker.
WorkerTarget = Callable[[Connection, WorkerConfig], None]

KILL_WAIT_S = 5.0  # how long a SIGKILLed process may take to be reaped


class ModelLoadError(ClassifierError):
    """A model could not be loaded by a worker; the message says why."""


class NotSent(Exception):
    """The pipe to a worker was closed before the batch could be written."""


class WorkerLost(Exception):
    """The worker died, hung, or broke the protocol while holding a batch; it has been killed.

    The message says which, for the log.
    """


@dataclass(eq=False)
class WorkerProcess:
    """A started worker process, the pipe to it, and the model it reported `Ready` with."""

    process: BaseProcess
    conn: Connection
    config: WorkerConfig
    model: str = ""
    labels: tuple[str, ...] = ()
    backend: str = ""  # what serves the model ("fastai", "onnx", "onnx-int8"), from Ready
    modules: tuple[str, ...] = ()  # the heavy libraries (torch, fastai...) it has imported
    # The one thread that blocks on the pipe, so that the event loop never does.
    io: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="pool-io")
    )
    # The call running on `io` now (a batch's round trip, the wait for Ready), if any.
    _pending: asyncio.Future[Any] | None = field(default=None, init=False, repr=False)
    _exited: asyncio.Future[None] | None = field(default=None, init=False, repr=False)
    _closed: bool = field(default=False, init=False, repr=False)

    @property
    def pid(self) -> int:
        return self.process.pid or 0

    @property
    def busy(self) -> bool:
        """Whether the I/O thread is waiting on the worker (a batch, or the model loading)."""
        return self._pending is not None and not self._pending.done()

    @classmethod
    async def start(
        cls,
        context: Any,
        config: WorkerConfig,
        name: str,
        timeout_s: float,
        target: WorkerTarget = worker.serve,
    ) -> WorkerProcess:
        """Start a worker and wait (up to `timeout_s`) until it has loaded and warmed up the
        model; `ModelLoadError` (the worker stopped) when it could not.

        Cancelling this kills the process, waits for it to be reaped and closes its pipe.
        """
        parent, child = context.Pipe()
        process = context.Process(target=target, args=(child, config), name=name)
        try:
            await _start_off_loop(process, child)
        except BaseException:
            parent.close()
            raise
        started = cls(process, parent, config)
        logger.debug("worker %d started; loading the model", started.pid)
        try:
            message = await asyncio.wait_for(
                asyncio.shield(started._on_io(parent.recv)), timeout_s
            )
        except BaseException as exc:
            await started.kill()
            if isinstance(exc, EOFError | OSError):
                raise ModelLoadError(
                    f"the worker exited while loading the model ({type(exc).__name__})"
                ) from None
            if isinstance(exc, TimeoutError):
                raise ModelLoadError(
                    f"the worker did not load the model within {timeout_s:g} s"
                ) from None
            if isinstance(exc, Exception):  # e.g. bytes that do not unpickle
                raise ModelLoadError(
                    f"the worker sent an unreadable message ({type(exc).__name__})"
                ) from exc
            raise  # cancelled
        match message:
            case Ready():
                started.model, started.labels = message.model, message.labels
                started.backend, started.modules = message.backend, tuple(message.modules)
                return started
            case LoadFailed():
                await started.stop()
                raise ModelLoadError(message.reason)
            case _:
                error = UnexpectedMessage(message, "Ready or LoadFailed")
                await started.kill()
                raise ModelLoadError(f"the worker did not start: {error}") from error

    async def run(self, batch: Batch, hang_timeout_s: float) -> BatchResult:
        """Send `batch` and wait for its `BatchResult`, checked against the batch.

        `WorkerLost` when the worker died holding the batch, held it past `hang_timeout_s`,
        or answered something else (it has been killed then). `NotSent` when the worker was
        gone before it could see the batch.
        """
        # One thread hop for the send and the answer: the worker is idle, so it reads at once.
        roundtrip = self._on_io(_roundtrip, self.conn, batch)
        try:
            message = await asyncio.wait_for(asyncio.shield(roundtrip), hang_timeout_s)
        except NotSent:
            await self.kill()
            raise
        except TimeoutError:
            logger.error("worker %d hung on a batch for %gs; killing it", self.pid, hang_timeout_s)
            reason = f"hung for {hang_timeout_s:g} s"
        except (EOFError, OSError):
            reason = "exited"
        except Exception as exc:  # unpickling garbage: UnpicklingError, AttributeError, ...
            reason = f"sent an unreadable message ({type(exc).__name__}: {exc})"
        else:
            problem = _check_answer(message, batch)
            if problem is None:
                assert isinstance(message, BatchResult)
                return message
            reason = problem
        await self.kill()
        if reason == "exited" and self.process.exitcode is not None:
            reason = f"exited with status {self.process.exitcode}"
        raise WorkerLost(reason)

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the worker within about `timeout_s`, then close the pipe.

        An idle worker is sent `Stop` and given until then to exit; a busy one (holding a
        batch, or still loading) is given until then to finish. Past that it is killed,
        whatever its I/O thread is doing. Cancelling this kills it at once.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout_s)
        try:
            if self._pending is not None and not self._pending.done():
                await asyncio.wait({self._pending}, timeout=max(0.0, deadline - loop.time()))
            if not self.busy and not self._closed:
                with contextlib.suppress(OSError, ValueError, TimeoutError):
                    await asyncio.wait_for(
                        asyncio.shield(self._on_io(self.conn.send, Stop())),
                        max(0.0, deadline - loop.time()),
                    )
            if not await self._wait_exit(max(0.0, deadline - loop.time())):
                logger.warning(
                    "worker %d did not stop within %gs; killing it", self.pid, timeout_s
                )
        finally:
            await self.kill()

    async def kill(self) -> None:
        """SIGKILL the process (if it still runs), wait until it is reaped, close the pipe."""
        try:
            if self.process.pid is not None and self.process.is_alive():
                self.process.kill()
            if not await self._wait_exit(KILL_WAIT_S):
                logger.error("worker %d was killed but has not exited", self.pid)
        finally:
            self.close()

    def close(self) -> None:
        """Close the pipe and let the I/O thread go, without waiting for the process.

        While the I/O thread still reads the pipe (a worker just killed), the pipe is closed
        when that read ends: closing it under the thread could hand its descriptor number to
        another file.
        """
        if self._closed:
            return
        self._closed = True
        if self._pending is not None and not self._pending.done():
            self._pending.add_done_callback(lambda _: self._close_now())
        else:
            self._close_now()

    # ------------------------------------------------------------------------------ internals

    def _close_now(self) -> None:
        with contextlib.suppress(OSError):
            self.conn.close()
        self.io.shutdown(wait=False)

    def _on_io(self, function: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        """Run `function(*args)` on the I/O thread; remembered as the pending call."""
        future = asyncio.get_running_loop().run_in_executor(self.io, function, *args)
        self._pending = future
        # A cancelled caller must not leave "exception never retrieved" behind.
        future.add_done_callback(lambda f: f.cancelled() or f.exception())
        return future

    async def _wait_exit(self, timeout_s: float) -> bool:
        """Wait (without a thread) until the process has exited and is reaped; whether it has."""
        if self.process.pid is None or not self.process.is_alive():
            return True
        if self._exited is None:
            self._exited = self._watch_exit()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._exited), timeout_s)
        # The sentinel turns readable as the process's files close, a moment before the
        # kernel lets it be reaped: poll for that moment (is_alive reaps it).
        while self.process.is_alive():
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(0.005)
        return True

    def _watch_exit(self) -> asyncio.Future[None]:
        """A future done when the process's sentinel becomes readable (it exited)."""
        loop = asyncio.get_running_loop()
        exited: asyncio.Future[None] = loop.create_future()
        sentinel = self.process.sentinel

        def readable() -> None:
            loop.remove_reader(sentinel)
            if not exited.done():
                exited.set_result(None)

        loop.add_reader(sentinel, readable)
        return exited


def _check_answer(message: object, batch: Batch) -> str | None:
    """What is wrong with `message` as the answer to `batch`; None when it is the answer."""
    if not isinstance(message, BatchResult):
        return f"broke the protocol: {UnexpectedMessage(message, 'BatchResult')}"
    if message.batch_id != batch.batch_id:
        return f"answered batch {message.batch_id!r} instead of batch {batch.batch_id}"
    results = message.results
    if not isinstance(results, tuple) or not all(
        isinstance(item, ItemResult) and isinstance(item.result, Prediction | ClassifierError)
        for item in results
    ):
        return "sent results of the wrong type"
    if [item.request_id for item in results] != [item.request_id for item in batch.items]:
        return "answered other requests than the batch's"
    return None


async def _start_off_loop(process: BaseProcess, child: Connection) -> None:
    """`process.start()` on a thread of its own, then close the worker's end of the pipe.

    With the fork server, the first start waits until the server has imported torch (seconds);
    the event loop must keep running meanwhile (SIGTERM, the sandbox). If the caller is
    cancelled first, whoever sees the start finish last kills the process. The thread is a
    daemon: a bot exiting early does not wait for the fork server.
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    lock = threading.Lock()
    state = {"finished": False, "abandoned": False}

    def settle(error: BaseException | None) -> None:
        if done.done():
            return
        if error is None:
            done.set_result(None)
        else:
            done.set_exception(error)

    def start() -> None:
        error: BaseException | None = None
        try:
            process.start()
        except BaseException as exc:
            error = exc
        finally:
            child.close()  # only the worker holds its end now: its death reads as EOF
        with lock:
            state["finished"] = True
            abandoned = state["abandoned"]
        if abandoned:
            if error is None:
                process.kill()
                process.join(KILL_WAIT_S)
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            loop.call_soon_threadsafe(settle, error)

    threading.Thread(target=start, name="pool-start", daemon=True).start()
    try:
        await done
    except asyncio.CancelledError:
        with lock:
            state["abandoned"] = True
            finished = state["finished"]
        if finished and process.pid is not None:  # started, but the thread had handed over
            process.kill()
            await asyncio.to_thread(process.join, KILL_WAIT_S)
        raise


def _roundtrip(conn: Connection, batch: Batch) -> object:
    try:
        conn.send(batch)
    except (OSError, ValueError) as exc:
        raise NotSent() from exc
    return conn.recv()
