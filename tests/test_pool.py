"""The `Classifier`: the learner runs in a worker process, and a dead worker is replaced."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from model.pool import Classifier
from model.types import CorruptImage, NotAnImage, TooManyPixels
from model.worker import WorkerConfig
from tests import images


@pytest.fixture
async def classifier(models_dir: Path) -> AsyncIterator[Classifier]:
    pool = Classifier(WorkerConfig(models_dir=models_dir, threads=1, top_k=3), timeout=60)
    await pool.start()
    try:
        yield pool
    finally:
        await pool.close()


async def test_classifies_in_another_process(classifier: Classifier) -> None:
    """Espresso for coffee, a cat for chelsea; the model name says which model answered."""
    coffee, cat = await asyncio.gather(
        classifier.classify(images.coffee_jpeg()), classifier.classify(images.chelsea_jpeg())
    )
    assert coffee.top.label == "espresso"
    assert cat.top.label in {"tabby", "tiger cat", "Egyptian cat"}
    assert len(coffee.scores) == 3
    assert coffee.scores[0].probability >= coffee.scores[1].probability
    assert coffee.model.startswith("default-efficientnet-lite0-imagenet@")
    assert (coffee.width, coffee.height) == (600, 400)


async def test_bad_images_are_rejected_with_their_reason(classifier: Classifier) -> None:
    with pytest.raises(NotAnImage):
        await classifier.classify(images.minimal_pdf())
    with pytest.raises(CorruptImage):
        await classifier.classify(images.truncated_jpeg())
    with pytest.raises(TooManyPixels) as caught:
        await classifier.classify(images.huge_png())
    assert caught.value.width == 40_000
    # The worker is still healthy afterwards.
    assert (await classifier.classify(images.coffee_jpeg())).top.label == "espresso"


async def test_a_killed_worker_is_replaced_and_the_request_answered(
    classifier: Classifier,
) -> None:
    """SIGKILL the worker while it works: the request is retried on a new worker."""
    executor = classifier._executor
    assert executor is not None
    pids = list(executor._processes)  # type: ignore[attr-defined]
    assert len(pids) == 1
    pending = asyncio.create_task(classifier.classify(images.coffee_jpeg()))
    await asyncio.sleep(0.05)
    os.kill(pids[0], signal.SIGKILL)
    prediction = await pending
    assert prediction.top.label == "espresso"
    assert classifier.restarts == 1
