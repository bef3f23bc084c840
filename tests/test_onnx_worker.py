"""Workers serving the compiled (ONNX) form: real onnxruntime, the default learner compiled.

The pools are module-scoped (one ONNX pool, one fastai pool), so the whole file starts a
handful of worker processes.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Awaitable
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import pytest
import pytest_asyncio

from model.compiled import CompiledModel
from model.default import DEFAULT_MODEL_FILE
from model.pool import Classifier, ModelLoadError, PoolConfig
from model.types import CorruptImage, NotAnImage, Prediction
from model.worker import HEAVY_MODULES, WorkerConfig
from tests import images

pytestmark = pytest.mark.asyncio(loop_scope="module")

T = TypeVar("T")
WAIT_S = 60.0  # a bound on every wait below, never a fixed sleep


def learner_of(compiled: CompiledModel) -> Path:
    """The learner the compiled form was made from (beside it, in its version's folder)."""
    return compiled.path.parent / "model.pkl"


def onnx_config(models_dir: Path, compiled: CompiledModel) -> WorkerConfig:
    return WorkerConfig(
        models_dir=models_dir,
        model_path=learner_of(compiled),
        compiled=compiled,
        threads=1,
        top_k=3,
    )


def pool_config(workers: int = 2) -> PoolConfig:
    # "forkserver" as the bot has it: ONNX workers must not come from the torch fork server.
    return PoolConfig(workers=workers, max_batch=4, timeout_s=60, start_method="forkserver")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def onnx_pool(
    models_dir: Path, compiled_default: CompiledModel
) -> AsyncIterator[Classifier]:
    pool = Classifier(onnx_config(models_dir, compiled_default), pool_config())
    await pool.start()
    try:
        yield pool
    finally:
        await pool.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def fastai_pool(
    models_dir: Path, compiled_default: CompiledModel
) -> AsyncIterator[Classifier]:
    config = WorkerConfig(models_dir=models_dir, model_path=learner_of(compiled_default))
    pool = Classifier(config, pool_config(workers=1))
    await pool.start()
    try:
        yield pool
    finally:
        await pool.close()


async def within(awaitable: Awaitable[T]) -> T:
    return await asyncio.wait_for(awaitable, WAIT_S)


async def until(condition: Any) -> None:
    """Wait (bounded) until `condition()` holds, yielding to the event loop in between."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_S
    while not condition():
        assert loop.time() < deadline, "timed out waiting"
        await asyncio.sleep(0.01)


def parent_pid(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


def running(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def mapped_libraries(pid: int) -> set[str]:
    return {
        Path(line.split()[-1]).name
        for line in Path(f"/proc/{pid}/maps").read_text().splitlines()
        if line.split()[-1].startswith("/")
    }


async def test_an_onnx_worker_answers_as_the_fastai_worker(
    onnx_pool: Classifier, fastai_pool: Classifier
) -> None:
    coffee = images.coffee_jpeg()
    onnx, fastai = await within(
        asyncio.gather(onnx_pool.classify(coffee), fastai_pool.classify(coffee))
    )
    assert onnx.top.label == fastai.top.label == "espresso"
    assert abs(onnx.top.probability - fastai.top.probability) < 1e-3
    assert [s.label for s in onnx.scores] == [s.label for s in fastai.scores]
    assert onnx.model == fastai.model  # the version's name, whatever form answers
    assert (onnx.width, onnx.height) == (fastai.width, fastai.height)
    assert onnx_pool.backend == onnx_pool.stats().backend == "onnx"
    assert fastai_pool.backend == fastai_pool.stats().backend == "fastai"


async def test_an_onnx_worker_has_no_torch_and_no_fork_server(onnx_pool: Classifier) -> None:
    workers = [w.process for w in onnx_pool._workers]
    assert len(workers) == 2
    for process in workers:
        assert process.backend == "onnx"
        assert process.modules == ()  # what the worker's sys.modules held, from Ready
        libraries = mapped_libraries(process.pid)
        assert not [name for name in libraries if name.startswith("libtorch")], libraries
        assert any(name.startswith("libonnxruntime") for name in libraries)
        # Started by this process (spawn), not forked from the fork server that holds torch.
        assert parent_pid(process.pid) == os.getpid()
    assert set(HEAVY_MODULES) == {"torch", "fastai", "timm", "torchvision"}


async def test_bad_images_are_rejected_as_on_fastai(onnx_pool: Classifier) -> None:
    with pytest.raises(NotAnImage):
        await within(onnx_pool.classify(images.minimal_pdf()))
    with pytest.raises(CorruptImage):
        await within(onnx_pool.classify(images.truncated_jpeg()))


async def test_a_killed_onnx_worker_is_replaced_and_its_requests_answered(
    onnx_pool: Classifier,
) -> None:
    restarts = onnx_pool.stats().worker_restarts
    coffee = images.coffee_jpeg()
    requests = [asyncio.ensure_future(onnx_pool.classify(coffee)) for _ in range(24)]
    await until(lambda: any(w.batch for w in onnx_pool._workers))
    victim = next(w for w in onnx_pool._workers if w.batch)
    os.kill(victim.pid, signal.SIGKILL)
    answers = await within(asyncio.gather(*requests))
    assert all(answer.top.label == "espresso" for answer in answers)
    await until(
        lambda: len(onnx_pool.worker_pids()) == 2 and victim.pid not in onnx_pool.worker_pids()
    )
    assert onnx_pool.stats().worker_restarts == restarts + 1
    assert all(w.process.backend == "onnx" for w in onnx_pool._workers)


async def test_a_compiled_file_that_changed_is_refused_and_the_old_model_serves(
    onnx_pool: Classifier, compiled_default: CompiledModel, models_dir: Path
) -> None:
    learner = models_dir / DEFAULT_MODEL_FILE
    altered = replace(compiled_default, sha256="0" * 64)
    with pytest.raises(ModelLoadError, match="sha256"):
        await within(onnx_pool.swap(learner, compiled=altered))
    unsigned = replace(compiled_default, sha256="")
    with pytest.raises(ModelLoadError, match="sha256"):
        await within(onnx_pool.swap(learner, compiled=unsigned))
    answer = await within(onnx_pool.classify(images.coffee_jpeg()))
    assert answer.top.label == "espresso" and onnx_pool.backend == "onnx"


async def test_a_compiled_model_with_other_labels_does_not_load(
    onnx_pool: Classifier, compiled_default: CompiledModel, models_dir: Path
) -> None:
    fewer = replace(compiled_default, labels=compiled_default.labels[:10])
    with pytest.raises(ModelLoadError, match="1000 outputs but the model has 10 labels"):
        await within(onnx_pool.swap(models_dir / DEFAULT_MODEL_FILE, compiled=fewer))
    assert (await within(onnx_pool.classify(images.coffee_jpeg()))).top.label == "espresso"


async def test_swaps_between_fastai_and_onnx_under_load_fail_no_request(
    fastai_pool: Classifier, compiled_default: CompiledModel, models_dir: Path
) -> None:
    learner = models_dir / DEFAULT_MODEL_FILE
    coffee = images.coffee_jpeg()
    stop = asyncio.Event()
    answers: list[Prediction] = []

    async def load() -> None:
        while not stop.is_set():
            answers.append(await fastai_pool.classify(coffee))

    clients = [asyncio.create_task(load()) for _ in range(3)]
    try:
        await until(lambda: len(answers) >= 3)
        await within(fastai_pool.swap(learner, compiled=compiled_default))
        assert fastai_pool.backend == "onnx"
        seen = len(answers)
        await until(lambda: len(answers) >= seen + 3)
        await within(fastai_pool.swap(learner))
        assert fastai_pool.backend == "fastai"
        seen = len(answers)
        await until(lambda: len(answers) >= seen + 3)
    finally:
        stop.set()
        await within(asyncio.gather(*clients))  # a failed request would raise here
    assert all(answer.top.label == "espresso" for answer in answers)
    assert fastai_pool.stats().failed == 0
    assert all(w.process.backend == "fastai" for w in fastai_pool._workers)


async def test_close_answers_what_is_queued(
    models_dir: Path, compiled_default: CompiledModel
) -> None:
    pool = Classifier(onnx_config(models_dir, compiled_default), pool_config(workers=1))
    await within(pool.start())
    pids = pool.worker_pids()
    requests = [asyncio.ensure_future(pool.classify(images.coffee_jpeg())) for _ in range(8)]
    await until(lambda: pool.stats().in_flight > 0)
    await within(pool.close())
    answers = await within(asyncio.gather(*requests))
    assert all(answer.top.label == "espresso" for answer in answers)
    assert pool.worker_pids() == []
    assert not any(running(pid) for pid in pids)
