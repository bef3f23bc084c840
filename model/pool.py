"""`Classifier`: the async front the bot calls; the learner runs in a separate worker process."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from model import worker
from model.types import ClassifierUnavailable, Prediction
from model.worker import WorkerConfig

logger = logging.getLogger(__name__)


class Classifier:
    """Classify image bytes in a worker process that holds the learner; restart it if it dies."""

    def __init__(
        self, config: WorkerConfig, *, timeout: float = 30.0, start_timeout: float = 300.0
    ) -> None:
        self._config = config
        self._timeout = timeout
        self._start_timeout = start_timeout
        self._executor: ProcessPoolExecutor | None = None
        self._generation = 0
        self._restart_lock = asyncio.Lock()
        self._ready = asyncio.Event()
        self.model_name = ""
        self.restarts = 0

    @property
    def ready(self) -> bool:
        """True once a worker has loaded the learner and run one image."""
        return self._ready.is_set()

    async def start(self) -> None:
        """Start the worker and wait until it has loaded and warmed up the learner."""
        self._executor = self._new_executor()
        loop = asyncio.get_running_loop()
        try:
            self.model_name = await asyncio.wait_for(
                loop.run_in_executor(self._executor, worker.warm_up), self._start_timeout
            )
        except BrokenProcessPool as exc:
            raise ClassifierUnavailable("the model worker failed to start; see its log") from exc
        self._ready.set()
        logger.info("classifier ready with model %s", self.model_name)

    async def classify(self, image: bytes) -> Prediction:
        """Top-k labels for `image`; raises `ImageRejected` or `ClassifierUnavailable`."""
        if self._executor is None:
            raise ClassifierUnavailable("the classifier is not started")
        for attempt in (1, 2):
            generation = self._generation
            executor = self._executor
            try:
                future = asyncio.get_running_loop().run_in_executor(
                    executor, worker.classify, image
                )
                return await asyncio.wait_for(future, self._timeout)
            except BrokenProcessPool:
                logger.warning("model worker died (attempt %d); restarting it", attempt)
                await self._restart(generation)
            except TimeoutError:
                raise ClassifierUnavailable(f"no answer within {self._timeout:g} s") from None
        raise ClassifierUnavailable("the model worker died twice on this image")

    async def _restart(self, generation: int) -> None:
        async with self._restart_lock:
            if generation != self._generation:
                return  # another request already replaced the broken worker
            old = self._executor
            self._executor = self._new_executor()
            self._generation += 1
            self.restarts += 1
            if old is not None:
                old.shutdown(wait=False, cancel_futures=True)

    def _new_executor(self) -> ProcessPoolExecutor:
        # spawn, not fork: forking after torch has started its threads can deadlock.
        return ProcessPoolExecutor(
            max_workers=1,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=worker.initialize,
            initargs=(self._config,),
        )

    async def close(self) -> None:
        """Finish what is running and stop the worker."""
        executor, self._executor = self._executor, None
        self._ready.clear()
        if executor is not None:
            await asyncio.get_running_loop().run_in_executor(None, executor.shutdown, True)
