"""The pool never strands a caller: fake workers (tests/fakeworker.py) hang, die and break the
protocol on command, and every request still ends, every process is reaped, close() is bounded.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from model.pool import Classifier, ModelLoadError, PoolConfig
from model.types import ClassifierError, ClassifierUnavailable, Prediction
from model.worker import WorkerConfig
from tests import fakeworker

pytestmark = pytest.mark.timeout(120)


def fake_pool(folder: Path, device: str = "cpu", **overrides: object) -> Classifier:
    settings: dict[str, object] = {
        "workers": 2,
        "max_batch": 4,
        "timeout_s": 10,
        "hang_timeout_s": 60,
        "start_timeout_s": 60,
        "start_method": "spawn",  # the fake needs no fork server (no torch to share)
    }
    settings.update(overrides)
    return Classifier(
        WorkerConfig(models_dir=folder, device=device),
        PoolConfig(**settings),  # type: ignore[arg-type]
        worker_target=fakeworker.serve,
    )


@pytest.fixture
async def pool(tmp_path: Path) -> AsyncIterator[Classifier]:
    classifier = fake_pool(tmp_path)
    await classifier.start()
    try:
        yield classifier
    finally:
        await classifier.close(grace_s=2)


async def until(condition: Callable[[], bool], timeout: float = 10, what: str = "") -> None:
    """Wait for `condition()` to hold (polling an event we cannot subscribe to)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        await asyncio.sleep(0.005)


def reaped(pid: int) -> bool:
    """Whether `pid` is gone for good: not running and not a zombie waiting to be joined."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def holder(pool: Classifier) -> int | None:
    """The pid of a worker holding a batch right now."""
    return next((w.pid for w in pool._workers if w.batch), None)


def io_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(("pool-io", "pool-start"))]


async def test_close_kills_a_hung_worker_within_the_grace_period(tmp_path: Path) -> None:
    """The worker hangs holding a batch (its I/O thread blocked in recv): close(grace_s=1)
    still returns in about a second, the worker is killed and reaped, the caller is told."""
    pool = fake_pool(tmp_path)
    await pool.start()
    waiting = asyncio.create_task(pool.classify(b"hang"))
    await until(lambda: holder(pool) is not None, what="a worker holding the batch")
    hung = holder(pool)
    assert hung is not None
    pids = pool.worker_pids()
    started = time.monotonic()
    await asyncio.wait_for(pool.close(grace_s=1), timeout=15)
    took = time.monotonic() - started
    assert took < 2.5, f"close took {took:.1f} s with grace_s=1"
    assert all(reaped(pid) for pid in pids)
    with pytest.raises(ClassifierUnavailable):
        await asyncio.wait_for(waiting, timeout=1)
    await until(lambda: not io_threads(), what="the I/O threads to end")


async def test_a_worker_hanging_twice_on_an_image_gets_an_error(tmp_path: Path) -> None:
    """Past hang_timeout_s the worker is killed and the image retried alone; the second hang
    fails it clearly. The pool is back to two workers and answers the next photo."""
    pool = fake_pool(tmp_path, hang_timeout_s=0.5)
    await pool.start()
    try:
        with pytest.raises(ClassifierError, match="crash twice"):
            await asyncio.wait_for(pool.classify(b"hang"), timeout=10)
        assert isinstance(await pool.classify(b"photo"), Prediction)
        await until(lambda: pool.stats().workers_ready == 2, what="two workers again")
        assert pool.stats().worker_restarts == 2
    finally:
        await pool.close(grace_s=2)


FAULTS = ["die", "garbage", "wrong-batch", "unknown-id", "unexpected", "close-pipe"]


@pytest.mark.parametrize("fault", FAULTS)
async def test_a_worker_that_breaks_the_protocol_is_replaced_and_the_request_ends(
    pool: Classifier, fault: str
) -> None:
    """Every way a worker can answer wrongly: the request fails after one retry (never waits
    forever), its batch-mates are answered, the worker is reaped, the pool heals."""
    before = set(pool.worker_pids())
    results = await asyncio.wait_for(
        asyncio.gather(
            pool.classify(fault.encode()),
            *(pool.classify(b"photo %d" % n) for n in range(5)),
            return_exceptions=True,
        ),
        timeout=20,
    )
    bad, *good = results
    assert isinstance(bad, ClassifierError) and "crash twice" in str(bad), bad
    assert all(isinstance(r, Prediction) for r in good), good
    await until(lambda: pool.stats().workers_ready == 2, what="two workers again")
    gone = before - set(pool.worker_pids())
    assert gone and all(reaped(pid) for pid in gone)
    assert isinstance(await pool.classify(b"next photo"), Prediction)


@pytest.mark.parametrize("fault", ["hang", *FAULTS])
async def test_a_fault_once_is_retried_and_answered(tmp_path: Path, fault: str) -> None:
    pool = fake_pool(tmp_path, hang_timeout_s=0.5)
    await pool.start()
    try:
        result = await asyncio.wait_for(pool.classify(f"{fault}-once".encode()), timeout=10)
        assert isinstance(result, Prediction)
        assert pool.stats().worker_restarts == 1
    finally:
        await pool.close(grace_s=2)


async def test_classify_never_waits_without_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Should a batch never end (a bug in the pool), the caller still gets an answer, within
    timeout_s + hang_timeout_s."""
    pool = fake_pool(tmp_path, timeout_s=0.2, hang_timeout_s=0.3)
    await pool.start()
    never_ends = asyncio.Event()

    async def run_batch_that_never_ends(*args: object) -> None:
        await never_ends.wait()

    monkeypatch.setattr(pool, "_run_batch", run_batch_that_never_ends)
    try:
        started = time.monotonic()
        with pytest.raises(ClassifierUnavailable, match="did not answer in time"):
            await asyncio.wait_for(pool.classify(b"photo"), timeout=5)
        assert time.monotonic() - started < 2
    finally:
        never_ends.set()
        await pool.close(grace_s=2)


async def test_errors_of_the_pools_tasks_are_logged(
    pool: Classifier, caplog: pytest.LogCaptureFixture
) -> None:
    done = asyncio.Event()

    async def boom() -> None:
        done.set()
        raise RuntimeError("a bug in a spawned task")

    with caplog.at_level(logging.ERROR, logger="model.pool"):
        pool._spawn(boom(), "pool-test-task")
        await done.wait()
        await until(lambda: "pool-test-task" in caplog.text, what="the error in the log")
    assert "a bug in a spawned task" in caplog.text


async def test_cancelling_start_kills_and_reaps_the_starting_workers(tmp_path: Path) -> None:
    """SIGTERM while the model loads cancels start(): nothing is left behind — no process, no
    zombie, no I/O thread."""
    pool = Classifier(
        WorkerConfig(models_dir=tmp_path, model_path=tmp_path / "hang-at-start"),
        PoolConfig(workers=2, start_method="spawn", start_timeout_s=60),
        worker_target=fakeworker.serve,
    )
    (tmp_path / "hang-at-start").write_bytes(b"a model that never loads")
    starting = asyncio.create_task(pool.start())
    await until(lambda: len(fakeworker.started_pids(tmp_path)) == 2, what="two workers")
    starting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(starting, timeout=10)
    pids = fakeworker.started_pids(tmp_path)
    assert all(reaped(pid) for pid in pids)
    await until(lambda: not io_threads(), what="the I/O threads to end")
    await pool.close()


async def test_close_during_a_swap_abandons_it_and_leaves_no_worker(
    pool: Classifier, tmp_path: Path
) -> None:
    """close() waits for no model to load: the swap in progress gives up, and every worker,
    old and new, is gone when close() returns."""
    old = set(pool.worker_pids())
    (tmp_path / "hang-at-start").write_bytes(b"a model that never loads")
    swapping = asyncio.create_task(pool.swap(tmp_path / "hang-at-start"))
    await until(lambda: len(fakeworker.started_pids(tmp_path)) == 4, what="two new workers")
    new = fakeworker.started_pids(tmp_path) - old
    started = time.monotonic()
    await asyncio.wait_for(pool.close(grace_s=5), timeout=15)
    assert time.monotonic() - started < 5
    with pytest.raises(ClassifierUnavailable):
        await asyncio.wait_for(swapping, timeout=1)
    assert all(reaped(pid) for pid in old | new)
    with pytest.raises(ClassifierUnavailable):
        await pool.swap(tmp_path / "hang-at-start")


async def test_a_failed_swap_leaves_no_new_worker(pool: Classifier, tmp_path: Path) -> None:
    (tmp_path / "fail-at-start").write_bytes(b"a model that fails to load")
    before = set(pool.worker_pids())
    with pytest.raises(ModelLoadError, match="told to fail"):
        await pool.swap(tmp_path / "fail-at-start")
    new = fakeworker.started_pids(tmp_path) - before
    assert len(new) == 2 and all(reaped(pid) for pid in new)
    assert set(pool.worker_pids()) == before


async def test_a_replacement_worker_takes_the_dead_workers_gpu(tmp_path: Path) -> None:
    """Two workers on two GPUs; the one on cuda:0 dies: its replacement goes to cuda:0, not
    onto cuda:1 beside the survivor. (The fake worker only records the device.)"""
    pool = fake_pool(tmp_path, device="cuda", gpus=2)
    await pool.start()
    try:
        assert sorted(w.device for w in pool._workers) == ["cuda:0", "cuda:1"]
        victim = next(w for w in pool._workers if w.device == "cuda:0")
        os.kill(victim.pid, signal.SIGKILL)
        # The pool notices the death when it hands the dead worker a batch.
        while pool.stats().worker_restarts == 0:
            assert isinstance(await pool.classify(b"photo"), Prediction)
        await until(lambda: pool.stats().workers_ready == 2, what="two workers again")
        assert sorted(w.device for w in pool._workers) == ["cuda:0", "cuda:1"]
        assert victim.pid not in pool.worker_pids()
    finally:
        await pool.close(grace_s=2)
