"""`Classifier`: the async front the bot calls. Worker processes hold the learner.

Requests (raw image bytes) wait in a bounded queue; a dispatcher hands micro-batches to idle
workers, each a separate process fed through a pipe (model/workers.py, model/worker.py). A
worker that dies, hangs or breaks the protocol is killed and replaced, and the requests it held
are retried once; a hot swap warms new workers before retiring the old ones.

No caller is stranded: every request ends (answered, retried, or failed with a clear error),
`classify` waits at most `timeout_s + hang_timeout_s`, and `close` is bounded by its grace
period. Start, swap and close take turns (`_swap_lock`); close abandons a start or swap in
progress, whose new workers are killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import multiprocessing
import time
from collections import Counter, deque
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from model import worker
from model.compiled import CompiledModel
from model.files import sha256_file
from model.poolconfig import ONNX_START_METHOD, PoolConfig, PoolStats, percentile
from model.registry import RegistryError, card_sha256
from model.types import (
    ClassifierBusy,
    ClassifierError,
    ClassifierUnavailable,
    ImageRejected,
    Prediction,
)
from model.worker import Batch, BatchItem, BatchResult, WorkerConfig
from model.workers import ModelLoadError, NotSent, WorkerLost, WorkerProcess, WorkerTarget

__all__ = ["BatchObserver", "Classifier", "ModelLoadError", "PoolConfig", "PoolStats"]

logger = logging.getLogger(__name__)

BatchObserver = Callable[[int, list[float], float], None]


@dataclass(eq=False)
class _Request:
    id: int
    data: bytes
    future: asyncio.Future[Prediction]
    enqueued: float
    deadline: float
    crashes: int = 0  # times a worker died while holding it


@dataclass(eq=False)
class _Worker:
    """A worker process as the dispatcher sees it."""

    process: WorkerProcess
    generation: int  # the swap it was started for; only the current generation gets requests
    batch: list[_Request] | None = None  # what it is answering now; None while idle
    retiring: bool = False  # a swap replaced its generation: finish the batch, then stop
    dead: bool = False  # stopped or gone: hand it nothing more

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def model(self) -> str:
        return self.process.model

    @property
    def device(self) -> str:
        return self.process.config.device


class Classifier:
    """Classify image bytes on a pool of worker processes; see the module docstring."""

    def __init__(
        self,
        worker_config: WorkerConfig,
        pool_config: PoolConfig | None = None,
        *,
        worker_target: WorkerTarget = worker.serve,
    ) -> None:
        """`worker_target` is the worker processes' entry point. Only tests change it: they
        pass a fake worker (tests/fakeworker.py) that hangs, dies or misbehaves on command."""
        self._worker_config = worker_config
        self._pool_config = pool_config or PoolConfig()
        self._worker_target = worker_target
        self._contexts: dict[str, Any] = {}  # by start method, made when first needed
        self._queue: deque[_Request] = deque()
        self._workers: list[_Worker] = []
        self._generation = 0
        self._ids = itertools.count(1)
        self._wakeup = asyncio.Event()
        self._dispatcher: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._swap_lock = asyncio.Lock()  # start, swap and close, one at a time
        self._starting: asyncio.Task[list[_Worker]] | None = None  # close cancels it
        self._accepting = False
        self._closing = False
        self._closed = False
        self.model_name = ""
        self._backend = worker_config.backend
        self._labels: dict[str, tuple[str, ...]] = {}  # every model served since start
        self._observer: BatchObserver | None = None
        # Counters and recent samples for PoolStats.
        self._counts: Counter[str] = Counter()
        self._batch_sizes: Counter[int] = Counter()
        self._queue_ms: deque[float] = deque(maxlen=2000)
        self._inference_ms: deque[float] = deque(maxlen=2000)

    # ----------------------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Start the workers and wait until every one has loaded and warmed up the model.

        Cancelling it (SIGTERM while starting) kills the workers started so far.
        """
        async with self._swap_lock:
            if self._closing:
                raise ClassifierUnavailable("the classifier is shutting down")
            config = await self._checked(self._worker_config)
            workers = await self._start_generation(self._generation, config)
            self._worker_config = config
            self._workers.extend(workers)
            self.model_name, self._backend = workers[0].model, workers[0].process.backend
            self._accepting = True
            self._dispatcher = asyncio.create_task(self._dispatch_loop(), name="pool-dispatcher")
            self._dispatcher.add_done_callback(self._task_done)
        logger.info(
            "classifier ready: %d worker(s), model %s on %s",
            len(workers),
            self.model_name,
            self._backend,
        )

    async def close(self, grace_s: float = 30.0) -> None:
        """Stop taking requests, answer what is queued (up to `grace_s`), stop the workers.

        A swap in progress is abandoned (its new workers are killed). When `grace_s` is over,
        a worker still busy (hung) is killed at once, whatever its I/O thread is doing, and an
        idle one gets a second to exit on `Stop`; every request has ended when this returns.
        """
        if self._closing:
            return
        self._closing = True
        self._accepting = False
        deadline = time.monotonic() + grace_s
        if self._starting is not None:
            self._starting.cancel()
        async with self._swap_lock:  # the abandoned swap has cleaned up once we hold it
            while (self._queue or self._in_flight()) and time.monotonic() < deadline:
                if not any(self._serving(w) for w in self._workers) and not self._tasks:
                    break
                await asyncio.sleep(0.02)
            self._closed = True
            self._fail(self._queue, "the bot is shutting down")
            self._queue.clear()
            if self._dispatcher is not None:
                self._dispatcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._dispatcher
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            for w in self._workers:
                self._fail(w.batch or (), "the bot is shutting down")
            # Past the grace period a worker still busy (hung) is killed now; an idle one is
            # asked to exit and given a moment.
            remaining = max(0.0, deadline - time.monotonic())
            await asyncio.gather(
                *(
                    w.process.kill()
                    if w.process.busy and not remaining
                    else self._stop_worker(w, max(remaining, 1.0))
                    for w in list(self._workers)
                )
            )
            self._workers.clear()

    async def swap(
        self,
        model_path: Path,
        sha256: str | None = None,
        compiled: CompiledModel | None = None,
    ) -> str:
        """Serve `model_path` (or its `compiled` form) from now on, without failing a request;
        returns its model name.

        `sha256` is what the file must hash to (the registry card's, as `checked_model` gave
        it); when None, a registry version's file is held to its card, and any other file to
        the hash it has now. With `compiled`, the workers serve that ONNX form instead (the
        backend may change either way), held to `compiled.sha256`, which is required, and
        `model_path` is not read. The workers check the bytes they load. New workers load
        and warm up first; if that fails, `ModelLoadError` is raised and the current model
        keeps serving. Then new requests go to the new workers while the old ones finish
        their batch and stop. `ClassifierUnavailable` when the classifier closes meanwhile.
        """
        async with self._swap_lock:
            if self._closing:
                raise ClassifierUnavailable("the classifier is shutting down")
            config = replace(
                self._worker_config,
                model_path=model_path,
                model_sha256=sha256,
                compiled=compiled,
            )
            config = await self._checked(config)
            generation = self._generation + 1
            workers = await self._start_generation(generation, config)
            old = [w for w in self._workers if w.generation < generation]
            self._workers.extend(workers)
            self._generation, self._worker_config = generation, config
            self.model_name, self._backend = workers[0].model, workers[0].process.backend
            for w in old:
                w.retiring = True
                if w.batch is None:
                    self._spawn(self._stop_worker(w), f"pool-retire-{w.pid}")
            self._wakeup.set()
            logger.info("swapped to model %s on %s", self.model_name, self._backend)
            return self.model_name

    # ------------------------------------------------------------------------------- requests

    async def classify(self, image: bytes) -> Prediction:
        """Top-k labels for `image`.

        Raises `ImageRejected` (bad image), `ClassifierBusy` (queue full, or the request waited
        past its deadline), or `ClassifierUnavailable` / `ClassifierError` (workers failing).
        """
        if not self._accepting:
            raise ClassifierUnavailable("the classifier is not running")
        if len(self._queue) >= self._pool_config.queue_size:
            self._counts["busy"] += 1
            raise ClassifierBusy(f"{len(self._queue)} requests already waiting")
        now = time.monotonic()
        request = _Request(
            next(self._ids),
            image,
            asyncio.get_running_loop().create_future(),
            now,
            now + self._pool_config.timeout_s,
        )
        self._queue.append(request)
        self._wakeup.set()
        try:
            return await asyncio.wait_for(
                asyncio.shield(request.future), self._pool_config.timeout_s
            )
        except TimeoutError:
            if request in self._queue:
                # Still queued at its deadline: answering "busy" now beats answering late.
                self._queue.remove(request)
                raise self._expired() from None
        # A worker holds it: the answer is coming (a hung worker is killed after
        # hang_timeout_s, and its requests retried or failed). Never wait without bound.
        try:
            return await asyncio.wait_for(
                asyncio.shield(request.future), self._pool_config.hang_timeout_s
            )
        except TimeoutError:
            if request in self._queue:
                self._queue.remove(request)
            request.future.cancel()  # whatever comes later is for no one
            self._counts["failed"] += 1
            logger.error("request %d got no answer in time; failing it", request.id)
            raise ClassifierUnavailable("the model workers did not answer in time") from None

    def stats(self) -> PoolStats:
        """Counters and latency percentiles since start."""
        return PoolStats(
            model=self.model_name,
            workers_ready=sum(1 for w in self._workers if self._serving(w)),
            workers_wanted=self._pool_config.workers,
            queue_depth=len(self._queue),
            in_flight=self._in_flight(),
            answered=self._counts["answered"],
            rejected=self._counts["rejected"],
            failed=self._counts["failed"],
            busy_refusals=self._counts["busy"],
            expired=self._counts["expired"],
            worker_restarts=self._counts["restarts"],
            batches=sum(self._batch_sizes.values()),
            batch_sizes=dict(sorted(self._batch_sizes.items())),
            queue_ms_p50=percentile(self._queue_ms, 50),
            queue_ms_p95=percentile(self._queue_ms, 95),
            inference_ms_p50=percentile(self._inference_ms, 50),
            inference_ms_p95=percentile(self._inference_ms, 95),
            backend=self._backend,
        )

    def set_observer(self, observer: BatchObserver | None) -> None:
        """Call `observer(batch_size, queue_seconds_each, inference_seconds)` after each batch."""
        self._observer = observer

    def labels_for(self, model: str) -> tuple[str, ...] | None:
        """The labels of `model`, in its output order, if it has been served since start."""
        return self._labels.get(model)

    @property
    def backend(self) -> str:
        """What serves the current model: "fastai", "onnx" or "onnx-int8"."""
        return self._backend

    @property
    def queue_size(self) -> int:
        """How many requests may wait at once; more are refused "busy" (the bot admits no
        more photos than this at a time, so none is downloaded only to be refused)."""
        return self._pool_config.queue_size

    def worker_pids(self) -> list[int]:
        """Process ids of the live workers (for tests, benchmarks and memory accounting)."""
        return [w.pid for w in self._workers if not w.dead]

    # ----------------------------------------------------------------------------- dispatching

    async def _dispatch_loop(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            try:
                self._dispatch()
            except Exception:  # a bug here must not stop all answering
                logger.exception("dispatching failed; trying again at the next request")

    def _dispatch(self) -> None:
        """Hand queued requests to idle workers, as micro-batches."""
        now = time.monotonic()
        while self._queue:
            idle = next((w for w in self._workers if self._serving(w) and w.batch is None), None)
            if idle is None:
                return  # a finishing batch wakes us up again
            self._drop_expired(now)
            if not self._queue:
                return
            head = self._queue[0]
            if head.crashes:
                batch = [self._queue.popleft()]  # a retried request goes alone: it may be poison
            else:
                wait_s = self._pool_config.max_wait_ms / 1000 - (now - head.enqueued)
                if len(self._queue) < self._pool_config.max_batch and wait_s > 0:
                    # Give the batch a moment to fill; come back when the wait is over.
                    asyncio.get_running_loop().call_later(wait_s, self._wakeup.set)
                    return
                batch = []
                while self._queue and len(batch) < self._pool_config.max_batch:
                    if self._queue[0].crashes:
                        break
                    batch.append(self._queue.popleft())
            idle.batch = batch
            self._spawn(self._run_batch(idle, batch), f"pool-batch-{batch[0].id}")

    def _drop_expired(self, now: float) -> None:
        kept = deque(r for r in self._queue if r.deadline > now or r.future.done())
        for request in self._queue:
            if request.deadline <= now and not request.future.done():
                request.future.set_exception(self._expired())
        self._queue = kept

    def _expired(self) -> ClassifierBusy:
        """Count a request that waited in the queue past its deadline; the error it gets."""
        self._counts["expired"] += 1
        return ClassifierBusy("waited too long in the queue; the bot is overloaded")

    async def _run_batch(self, w: _Worker, batch: list[_Request]) -> None:
        """Run one batch on `w`; every request in it ends: answered, retried, or failed."""
        dispatched = time.monotonic()
        waited = [dispatched - request.enqueued for request in batch]
        self._queue_ms.extend(seconds * 1000 for seconds in waited)
        items = tuple(BatchItem(r.id, r.data) for r in batch)
        try:
            try:
                result = await w.process.run(
                    Batch(batch[0].id, items), self._pool_config.hang_timeout_s
                )
            except NotSent:
                # The worker was already gone: it never saw these requests.
                self._requeue(batch, crashed=False)
                await self._replace(w)
                return
            except WorkerLost as lost:
                logger.warning(
                    "worker %d %s holding %d request(s); retrying them once",
                    w.pid,
                    lost,
                    len(batch),
                )
                self._requeue(batch, crashed=True)
                await self._replace(w)
                return
            except Exception:  # a bug on this side: the worker's state is unknown
                logger.exception("batch on worker %d failed; replacing the worker", w.pid)
                await w.process.kill()
                self._requeue(batch, crashed=True)
                await self._replace(w)
                return
            try:
                self._answer(batch, result, waited)
            except Exception:  # a bug on this side; the worker itself answered
                logger.exception("could not hand out the answers of worker %d", w.pid)
                self._fail(batch, "the answer could not be read", error=ClassifierError)
        except asyncio.CancelledError:
            self._fail(batch, "the bot is shutting down")
            raise
        w.batch = None
        if w.retiring:
            self._spawn(self._stop_worker(w), f"pool-retire-{w.pid}")
        self._wakeup.set()

    def _answer(self, batch: list[_Request], result: BatchResult, waited: list[float]) -> None:
        """Hand each request its result (`WorkerProcess.run` checked they match the batch)."""
        self._batch_sizes[len(batch)] += 1
        self._inference_ms.append(result.infer_s * 1000)
        if self._observer is not None:
            try:
                self._observer(len(batch), waited, result.infer_s)
            except Exception:  # metrics must never break answering
                logger.exception("batch observer failed")
        for request, item in zip(batch, result.results, strict=True):
            if request.future.done():
                continue
            if isinstance(item.result, Prediction):
                self._counts["answered"] += 1
                request.future.set_result(item.result)
            else:
                rejected = isinstance(item.result, ImageRejected)
                self._counts["rejected" if rejected else "failed"] += 1
                request.future.set_exception(item.result)

    def _fail(
        self,
        requests: Iterable[_Request],
        reason: str,
        error: type[ClassifierError] = ClassifierUnavailable,
    ) -> None:
        """End every request not answered yet with `error(reason)`."""
        for request in requests:
            if not request.future.done():
                self._counts["failed"] += 1
                request.future.set_exception(error(reason))

    def _requeue(self, batch: Sequence[_Request], *, crashed: bool) -> None:
        """Put a batch's unanswered requests back at the head of the queue; with `crashed`,
        count the worker's death against each, and fail those it was the second for."""
        for request in reversed(batch):
            if request.future.done():
                continue
            if crashed:
                request.crashes += 1
            if request.crashes >= 2:
                self._counts["failed"] += 1
                request.future.set_exception(
                    ClassifierError("this image made the model worker crash twice")
                )
            elif self._closed:
                self._fail([request], "the bot is shutting down")
            else:
                self._queue.appendleft(request)  # retried first: it has waited longest
        self._wakeup.set()

    async def _replace(self, w: _Worker) -> None:
        """Forget a dead worker and, unless it was retiring, start a new one in its place
        (on the same device)."""
        w.dead = True
        w.batch = None
        if w in self._workers:
            self._workers.remove(w)
        await w.process.kill()  # reaps a dead one; kills one that broke the protocol
        if w.retiring or not self._accepting:
            return
        self._counts["restarts"] += 1
        while self._accepting and w.generation == self._generation:
            try:
                (new,) = await self._start_workers(
                    w.generation, self._worker_config, devices=[w.device]
                )
            except Exception:
                logger.exception("could not restart a worker; trying again in 5 s")
                await asyncio.sleep(5)
                continue
            if self._accepting and new.generation == self._generation:
                self._workers.append(new)
                self._wakeup.set()
            else:
                await self._stop_worker(new)
            return

    # ----------------------------------------------------------------------------- processes

    async def _checked(self, config: WorkerConfig) -> WorkerConfig:
        """`config` with the sha256 its model file must have (see `swap`); `ModelLoadError`
        when it cannot be had. A compiled form's sha256 comes with it (from the card)."""
        if config.compiled is not None:
            if not config.compiled.sha256:
                raise ModelLoadError(
                    f"the compiled form {config.compiled.path} comes without its sha256"
                )
            return config
        if config.model_path is None or config.model_sha256 is not None:
            return config
        path = config.model_path
        try:
            expected = await asyncio.to_thread(card_sha256, path)
            if expected is None:
                expected = await asyncio.to_thread(sha256_file, path)
                logger.info("model file %s has sha256 %s", path, expected)
        except (OSError, RegistryError) as exc:
            raise ModelLoadError(f"cannot check the model file {path}: {exc}") from exc
        return replace(config, model_sha256=expected)

    async def _start_generation(self, generation: int, config: WorkerConfig) -> list[_Worker]:
        """`_start_workers` as a task that `close` can cancel."""
        starting = asyncio.create_task(
            self._start_workers(generation, config), name=f"pool-start-g{generation}"
        )
        self._starting = starting
        try:
            return await starting
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if self._closing and (task is None or not task.cancelling()):
                raise ClassifierUnavailable(
                    "the classifier shut down before the new workers were ready"
                ) from None
            raise
        finally:
            self._starting = None

    async def _start_workers(
        self,
        generation: int,
        config: WorkerConfig,
        count: int | None = None,
        devices: Sequence[str] | None = None,
    ) -> list[_Worker]:
        """Start `count` workers (all of them by default) on `devices` (by default spread over
        the GPUs when `config` says "cuda"). Cancelling it kills those started so far."""
        count = len(devices) if devices is not None else count
        count = self._pool_config.workers if count is None else count
        if devices is None and config.device == "cuda":
            # One worker per GPU by default: spread them over the devices.
            gpus = max(1, self._pool_config.gpus)
            devices = [f"cuda:{i % gpus}" for i in range(count)]
        configs = (
            [replace(config, device=device) for device in devices] if devices else [config] * count
        )
        tasks = [asyncio.create_task(self._start_worker(generation, c)) for c in configs]
        try:
            results = await asyncio.gather(*tasks, return_exceptions=True)
        except asyncio.CancelledError:
            # gather cancelled the starts still running (they kill their process); kill the
            # workers that were ready already.
            ready = [
                t.result() for t in tasks if t.done() and not t.cancelled() and not t.exception()
            ]
            await asyncio.gather(*(w.process.kill() for w in ready))
            raise
        started = [r for r in results if isinstance(r, _Worker)]
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            await asyncio.gather(*(self._stop_worker(w) for w in started))
            raise ModelLoadError(str(errors[0])) from errors[0]
        return started

    def _context_for(self, config: WorkerConfig) -> Any:
        """The multiprocessing context `config`'s workers start from (see `PoolConfig`).

        The torch fork server is set up, and so started, only when a fastai worker starts: a
        pool serving only compiled forms never has it (its memory is the bot's to pay).
        """
        method = self._pool_config.start_method
        if method == "forkserver" and config.compiled is not None:
            method = ONNX_START_METHOD
        context = self._contexts.get(method)
        if context is None:
            context = multiprocessing.get_context(method)
            if method == "forkserver":
                # The fork server imports torch and fastai once; forked workers share those.
                context.set_forkserver_preload(["model.worker_preload"])
            self._contexts[method] = context
        return context

    async def _start_worker(self, generation: int, config: WorkerConfig) -> _Worker:
        process = await WorkerProcess.start(
            self._context_for(config),
            config,
            name=f"verdict-worker-g{generation}",
            timeout_s=self._pool_config.start_timeout_s,
            target=self._worker_target,
        )
        self._labels[process.model] = process.labels
        return _Worker(process, generation)

    async def _stop_worker(self, w: _Worker, timeout_s: float = 10.0) -> None:
        if w in self._workers:
            self._workers.remove(w)
        w.dead = True
        await w.process.stop(timeout_s)

    # --------------------------------------------------------------------------------- helpers

    def _serving(self, w: _Worker) -> bool:
        return not w.dead and not w.retiring and w.generation == self._generation

    def _in_flight(self) -> int:
        return sum(len(w.batch) for w in self._workers if w.batch)

    def _spawn(self, coroutine: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coroutine, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        """Forget a finished task; log its error, if any (nobody awaits these tasks)."""
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("pool task %s failed", task.get_name(), exc_info=task.exception())
