"""`Classifier`: the async front the bot calls. Worker processes hold the learner.

Requests (raw image bytes) wait in a bounded queue; a dispatcher hands micro-batches to idle
workers, each a separate process fed through a pipe (model/workers.py, model/messages.py). A
worker that dies is replaced and the requests it held are retried once; a hot swap warms new
workers before retiring the old ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import multiprocessing
import statistics
import time
from collections import Counter, deque
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from model.messages import Batch, BatchItem
from model.types import (
    ClassifierBusy,
    ClassifierError,
    ClassifierUnavailable,
    ImageRejected,
    Prediction,
)
from model.worker import WorkerConfig
from model.workers import ModelLoadError, NotSent, WorkerProcess

__all__ = ["BatchObserver", "Classifier", "ModelLoadError", "PoolConfig", "PoolStats"]

logger = logging.getLogger(__name__)

BatchObserver = Callable[[int, list[float], float], None]


@dataclass(frozen=True, slots=True)
class PoolConfig:
    """How many workers, how requests are batched, and how long they may wait."""

    workers: int = 1
    max_batch: int = 4
    max_wait_ms: float = 0.0
    queue_size: int = 64
    timeout_s: float = 30.0
    start_timeout_s: float = 300.0
    hang_timeout_s: float = 120.0
    start_method: str = "forkserver"
    gpus: int = 0

    @classmethod
    def for_machine(cls, cpus: int, gpus: int = 0, **overrides: Any) -> PoolConfig:
        """Defaults that fit the machine: one single-thread worker per core, or one per GPU.

        On CPU, parallel processes pay and batching does not (EfficientNet's depthwise
        convolutions), so a batch forms only from what queued while every worker was busy. On
        GPU, one worker per device waits a few milliseconds to fill larger batches.
        """
        if gpus:
            base = cls(workers=gpus, max_batch=32, max_wait_ms=5.0, queue_size=256, gpus=gpus)
        else:
            base = cls(workers=max(1, cpus), max_batch=4, max_wait_ms=0.0, queue_size=64)
        return replace(base, **overrides)


@dataclass(frozen=True, slots=True)
class PoolStats:
    """A snapshot of the pool for /stats, /readyz and /metrics."""

    model: str
    workers_ready: int
    workers_wanted: int
    queue_depth: int
    in_flight: int
    answered: int
    rejected: int
    failed: int
    busy_refusals: int
    expired: int
    worker_restarts: int
    batches: int
    batch_sizes: dict[int, int]
    queue_ms_p50: float
    queue_ms_p95: float
    inference_ms_p50: float
    inference_ms_p95: float


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


class Classifier:
    """Classify image bytes on a pool of worker processes; see the module docstring."""

    def __init__(self, worker_config: WorkerConfig, pool_config: PoolConfig | None = None) -> None:
        self._worker_config = worker_config
        self._pool_config = pool_config or PoolConfig()
        self._context = multiprocessing.get_context(self._pool_config.start_method)
        if self._pool_config.start_method == "forkserver":
            # The fork server imports torch and fastai once; forked workers share those pages.
            self._context.set_forkserver_preload(["model.worker_preload"])
        self._queue: deque[_Request] = deque()
        self._workers: list[_Worker] = []
        self._generation = 0
        self._ids = itertools.count(1)
        self._wakeup = asyncio.Event()
        self._dispatcher: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._swap_lock = asyncio.Lock()
        self._accepting = False
        self._closed = False
        self.model_name = ""
        self._labels: dict[str, tuple[str, ...]] = {}  # every model served since start
        self._observer: BatchObserver | None = None
        # Counters and recent samples for PoolStats.
        self._counts: Counter[str] = Counter()
        self._batch_sizes: Counter[int] = Counter()
        self._queue_ms: deque[float] = deque(maxlen=2000)
        self._inference_ms: deque[float] = deque(maxlen=2000)

    # ----------------------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Start the workers and wait until every one has loaded and warmed up the model."""
        workers = await self._start_workers(self._generation, self._worker_config)
        self._workers.extend(workers)
        self.model_name = workers[0].model
        self._accepting = True
        self._dispatcher = asyncio.create_task(self._dispatch_loop(), name="pool-dispatcher")
        logger.info("classifier ready: %d worker(s), model %s", len(workers), self.model_name)

    async def close(self, grace_s: float = 30.0) -> None:
        """Stop taking requests, answer what is queued (up to `grace_s`), stop the workers."""
        if self._closed:
            return
        self._accepting = False
        deadline = time.monotonic() + grace_s
        while (self._queue or self._in_flight()) and time.monotonic() < deadline:
            if not any(self._serving(w) for w in self._workers) and not self._tasks:
                break
            await asyncio.sleep(0.02)
        self._closed = True
        for request in self._queue:
            if not request.future.done():
                request.future.set_exception(ClassifierUnavailable("the bot is shutting down"))
        self._queue.clear()
        if self._dispatcher is not None:
            self._dispatcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._dispatcher
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*(self._stop_worker(w) for w in list(self._workers)))
        self._workers.clear()

    async def swap(self, model_path: Path) -> str:
        """Serve `model_path` from now on, without failing a request; returns its model name.

        New workers load and warm up first; if that fails, `ModelLoadError` is raised and the
        current model keeps serving. Then new requests go to the new workers while the old
        ones finish their batch and stop.
        """
        async with self._swap_lock:
            config = replace(self._worker_config, model_path=model_path)
            generation = self._generation + 1
            workers = await self._start_workers(generation, config)
            old = [w for w in self._workers if w.generation < generation]
            self._workers.extend(workers)
            self._generation, self._worker_config = generation, config
            self.model_name = workers[0].model
            for w in old:
                w.retiring = True
                if w.batch is None:
                    self._spawn(self._stop_worker(w))
            self._wakeup.set()
            logger.info("swapped to model %s", self.model_name)
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
        # A worker holds it: the answer is coming (a hung worker is killed after hang_timeout_s).
        return await request.future

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
            queue_ms_p50=_percentile(self._queue_ms, 50),
            queue_ms_p95=_percentile(self._queue_ms, 95),
            inference_ms_p50=_percentile(self._inference_ms, 50),
            inference_ms_p95=_percentile(self._inference_ms, 95),
        )

    def set_observer(self, observer: BatchObserver | None) -> None:
        """Call `observer(batch_size, queue_seconds_each, inference_seconds)` after each batch."""
        self._observer = observer

    def labels_for(self, model: str) -> tuple[str, ...] | None:
        """The labels of `model`, in its output order, if it has been served since start."""
        return self._labels.get(model)

    def worker_pids(self) -> list[int]:
        """Process ids of the live workers (for tests, benchmarks and memory accounting)."""
        return [w.pid for w in self._workers if not w.dead]

    # ----------------------------------------------------------------------------- dispatching

    async def _dispatch_loop(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            self._dispatch()

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
            self._spawn(self._run_batch(idle, batch))

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
        dispatched = time.monotonic()
        waited = [dispatched - request.enqueued for request in batch]
        self._queue_ms.extend(seconds * 1000 for seconds in waited)
        items = tuple(BatchItem(r.id, r.data) for r in batch)
        try:
            result = await w.process.run(
                Batch(batch[0].id, items), self._pool_config.hang_timeout_s
            )
        except NotSent:
            # The worker was already gone: it never saw these requests.
            self._requeue(batch, crashed=False)
            await self._replace(w)
            return
        if result is None:
            logger.warning(
                "worker %d died holding %d request(s); retrying them once", w.pid, len(batch)
            )
            self._requeue(batch, crashed=True)
            await self._replace(w)
            return
        self._batch_sizes[len(batch)] += 1
        self._inference_ms.append(result.infer_s * 1000)
        if self._observer is not None:
            try:
                self._observer(len(batch), waited, result.infer_s)
            except Exception:  # metrics must never break answering
                logger.exception("batch observer failed")
        by_id = {r.id: r for r in batch}
        for item in result.results:
            request = by_id[item.request_id]
            if request.future.done():
                continue
            if isinstance(item.result, Prediction):
                self._counts["answered"] += 1
                request.future.set_result(item.result)
            else:
                rejected = isinstance(item.result, ImageRejected)
                self._counts["rejected" if rejected else "failed"] += 1
                request.future.set_exception(item.result)
        w.batch = None
        if w.retiring:
            self._spawn(self._stop_worker(w))
        self._wakeup.set()

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
            else:
                self._queue.appendleft(request)  # retried first: it has waited longest
        self._wakeup.set()

    async def _replace(self, w: _Worker) -> None:
        """Forget a dead worker and, unless it was retiring, start a new one in its place."""
        w.dead = True
        w.batch = None
        self._workers.remove(w)
        w.process.close()
        if w.retiring or not self._accepting:
            return
        self._counts["restarts"] += 1
        while self._accepting and w.generation == self._generation:
            try:
                (new,) = await self._start_workers(w.generation, self._worker_config, count=1)
            except ModelLoadError:
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

    async def _start_workers(
        self, generation: int, config: WorkerConfig, count: int | None = None
    ) -> list[_Worker]:
        count = self._pool_config.workers if count is None else count
        configs = [config] * count
        if config.device == "cuda":
            # One worker per GPU by default: spread them over the devices.
            gpus = max(1, self._pool_config.gpus)
            offset = len(self._workers)
            configs = [replace(config, device=f"cuda:{(offset + i) % gpus}") for i in range(count)]
        results = await asyncio.gather(
            *(self._start_worker(generation, c) for c in configs),
            return_exceptions=True,
        )
        started = [r for r in results if isinstance(r, _Worker)]
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            await asyncio.gather(*(self._stop_worker(w) for w in started))
            raise ModelLoadError(str(errors[0])) from errors[0]
        return started

    async def _start_worker(self, generation: int, config: WorkerConfig) -> _Worker:
        process = await WorkerProcess.start(
            self._context,
            config,
            name=f"verdict-worker-g{generation}",
            timeout_s=self._pool_config.start_timeout_s,
        )
        self._labels[process.model] = process.labels
        return _Worker(process, generation)

    async def _stop_worker(self, w: _Worker) -> None:
        if w in self._workers:
            self._workers.remove(w)
        w.dead = True
        await w.process.stop()

    # --------------------------------------------------------------------------------- helpers

    def _serving(self, w: _Worker) -> bool:
        return not w.dead and not w.retiring and w.generation == self._generation

    def _in_flight(self) -> int:
        return sum(len(w.batch) for w in self._workers if w.batch)

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _percentile(samples: Sequence[float], pct: int) -> float:
    if not samples:
        return 0.0
    if len(samples) == 1:
        return float(samples[0])
    return float(statistics.quantiles(samples, n=100, method="inclusive")[pct - 1])
