"""Hostile and odd images through a real pool: each gets a clear answer in time, none kills a
worker more than once, and the photo sent with it is still answered.

The corpus (tests/fuzzimages.py) is made here: damaged camera formats, decompression bombs,
empty and 1×1 images, unusual modes, random bytes behind magic numbers. One pool serves the
whole corpus.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from model.pool import Classifier, PoolConfig
from model.types import (
    CorruptImage,
    EmptyFile,
    ImageRejected,
    Prediction,
    TooManyPixels,
)
from model.worker import WorkerConfig
from tests import fuzzimages, images

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(300)]

TIMEOUT_S = 10.0  # the pool's classify timeout: every answer must come within it
CASES = fuzzimages.corpus()
EXPECTED: dict[str, type[BaseException] | tuple[type[BaseException], ...]] = {
    "too-many-pixels": TooManyPixels,
    "corrupt": CorruptImage,
    "empty": EmptyFile,
    "rejected": ImageRejected,
}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def pool(models_dir: Path) -> AsyncIterator[Classifier]:
    classifier = Classifier(
        WorkerConfig(models_dir=models_dir, threads=1, top_k=3),
        PoolConfig(workers=1, max_batch=2, timeout_s=TIMEOUT_S, hang_timeout_s=TIMEOUT_S),
    )
    await classifier.start()
    try:
        yield classifier
    finally:
        await classifier.close()


@pytest.fixture(scope="module")
def photo() -> bytes:
    return images.coffee_jpeg()


@pytest.mark.parametrize(("data", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
async def test_each_hostile_file_gets_a_clear_answer_in_time(
    pool: Classifier, photo: bytes, data: bytes, expected: str
) -> None:
    restarts = pool.stats().worker_restarts
    # Sent together, so that the photo shares the hostile file's batch.
    result, beside = await asyncio.wait_for(
        asyncio.gather(pool.classify(data), pool.classify(photo), return_exceptions=True),
        timeout=TIMEOUT_S,
    )
    if expected == "prediction":
        assert isinstance(result, Prediction), result
    elif expected == "any":
        assert isinstance(result, Prediction | ImageRejected), result
    else:
        assert isinstance(result, EXPECTED[expected]), result
    assert isinstance(beside, Prediction) and beside.top.label == "espresso", beside
    assert pool.stats().worker_restarts - restarts <= 1
    await asyncio.wait_for(_until_ready(pool), timeout=120)


async def test_no_worker_died_on_the_corpus(pool: Classifier) -> None:
    """Run last: decoding never crashed a worker (what the per-file limit allows, once)."""
    assert pool.stats().worker_restarts == 0


async def _until_ready(pool: Classifier) -> None:
    while pool.stats().workers_ready < 1:
        await asyncio.sleep(0.05)
