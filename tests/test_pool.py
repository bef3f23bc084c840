"""The worker pool: batching, backpressure, self-healing and hot swap, with the real learner."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from model.default import DEFAULT_MODEL_FILE
from model.pool import Classifier, ModelLoadError, PoolConfig
from model.registry import CheckedModel, Registry
from model.types import (
    ClassifierBusy,
    ClassifierError,
    ClassifierUnavailable,
    CorruptImage,
    NotAnImage,
    Prediction,
    TooManyPixels,
)
from model.worker import WorkerConfig
from tests import images

CATS = {"tabby", "tiger cat", "Egyptian cat", "Persian cat", "lynx"}


def make_pool(models_dir: Path, **overrides: object) -> Classifier:
    settings: dict[str, object] = {"workers": 2, "max_batch": 4, "timeout_s": 60}
    settings.update(overrides)
    return Classifier(
        WorkerConfig(models_dir=models_dir, threads=1, top_k=3),
        PoolConfig(**settings),  # type: ignore[arg-type]
    )


@pytest.fixture
async def pool(models_dir: Path) -> AsyncIterator[Classifier]:
    classifier = make_pool(models_dir)
    await classifier.start()
    try:
        yield classifier
    finally:
        await classifier.close()


async def test_workers_start_warm_and_in_their_own_processes(pool: Classifier) -> None:
    pids = pool.worker_pids()
    assert len(pids) == 2 and os.getpid() not in pids and len(set(pids)) == 2
    assert pool.stats().workers_ready == 2  # what /readyz reads
    assert pool.model_name.startswith("default-efficientnet-lite0-imagenet@")


async def test_many_concurrent_requests_each_get_their_own_answer(pool: Classifier) -> None:
    """48 requests at once, mixing coffee, cats and bad files: no answer crosses over."""
    coffee, cat, pdf = images.coffee_jpeg(), images.chelsea_jpeg(), images.minimal_pdf()
    inputs = [(coffee, cat, pdf)[i % 3] for i in range(48)]
    results = await asyncio.gather(
        *(pool.classify(data) for data in inputs), return_exceptions=True
    )
    for data, result in zip(inputs, results, strict=True):
        if data is coffee:
            assert isinstance(result, Prediction) and result.top.label == "espresso"
        elif data is cat:
            assert isinstance(result, Prediction) and result.top.label in CATS
        else:
            assert isinstance(result, NotAnImage)
    stats = pool.stats()
    assert stats.answered == 32 and stats.rejected == 16
    assert stats.batches >= 48 // 4
    assert max(stats.batch_sizes) > 1, "requests queued behind busy workers form batches"
    assert sum(size * n for size, n in stats.batch_sizes.items()) == 48


async def test_bad_images_are_rejected_with_their_reason(pool: Classifier) -> None:
    with pytest.raises(CorruptImage):
        await pool.classify(images.truncated_jpeg())
    with pytest.raises(TooManyPixels) as caught:
        await pool.classify(images.huge_png())
    assert caught.value.width == 40_000
    assert (await pool.classify(images.coffee_jpeg())).top.label == "espresso"


async def test_full_queue_refuses_at_once_and_recovers(models_dir: Path) -> None:
    """Beyond the queue bound, classify fails fast with ClassifierBusy; later ones succeed."""
    classifier = make_pool(models_dir, workers=1, max_batch=1, queue_size=3)
    await classifier.start()
    try:
        data = images.coffee_jpeg()
        tasks = [asyncio.create_task(classifier.classify(data)) for _ in range(12)]
        started = time.monotonic()
        done, _ = await asyncio.wait(tasks, timeout=0.5)
        refused = [t for t in done if isinstance(t.exception(), ClassifierBusy)]
        assert len(refused) >= 12 - 1 - 3 - 1, [t.exception() for t in done]
        assert time.monotonic() - started < 0.5
        results = await asyncio.gather(*tasks, return_exceptions=True)
        answered = [r for r in results if isinstance(r, Prediction)]
        assert answered and all(r.top.label == "espresso" for r in answered)
        assert len(answered) + len(refused) == 12
        assert classifier.stats().busy_refusals == len(refused)
        assert (await classifier.classify(data)).top.label == "espresso"
    finally:
        await classifier.close()


async def test_a_request_past_its_deadline_is_answered_busy(models_dir: Path) -> None:
    classifier = make_pool(models_dir, workers=1, max_batch=1, queue_size=100, timeout_s=0.25)
    await classifier.start()
    try:
        results = await asyncio.gather(
            *(classifier.classify(images.coffee_jpeg()) for _ in range(40)),
            return_exceptions=True,
        )
        expired = [r for r in results if isinstance(r, ClassifierBusy)]
        assert expired, "40 requests on one worker cannot all finish within 0.25 s"
        assert any(isinstance(r, Prediction) for r in results)
        assert classifier.stats().expired == len(expired)
    finally:
        await classifier.close()


async def wait_for_batch(pool: Classifier, timeout: float = 10) -> int:
    """The pid of a worker that holds a batch right now."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for w in pool._workers:
            if w.batch:
                return w.pid
        await asyncio.sleep(0.001)
    raise AssertionError("no worker picked up a batch")


async def test_sigkill_mid_batch_loses_nothing_and_the_pool_heals(pool: Classifier) -> None:
    """Kill a worker holding a batch: every request is still answered; back to 2 workers."""
    data = images.coffee_jpeg()
    tasks = [asyncio.create_task(pool.classify(data)) for _ in range(16)]
    victim = await wait_for_batch(pool)
    os.kill(victim, signal.SIGKILL)
    results = await asyncio.gather(*tasks)
    assert all(r.top.label == "espresso" for r in results)
    deadline = time.monotonic() + 60
    while pool.stats().workers_ready < 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert pool.stats().workers_ready == 2
    assert victim not in pool.worker_pids()
    assert pool.stats().worker_restarts == 1


async def test_a_request_that_kills_workers_twice_gets_an_error(pool: Classifier) -> None:
    """Whoever holds the 'poison' request dies, twice: it fails; the others are answered."""
    poison = images.chelsea_jpeg()
    poison_task = asyncio.create_task(pool.classify(poison))
    for _ in range(2):
        deadline = time.monotonic() + 60
        holder = None
        while holder is None and time.monotonic() < deadline:
            holder = next(
                (w for w in pool._workers if w.batch and any(r.data is poison for r in w.batch)),
                None,
            )
            await asyncio.sleep(0.001)
        assert holder is not None
        os.kill(holder.pid, signal.SIGKILL)
        while holder in pool._workers:
            await asyncio.sleep(0.001)
    with pytest.raises(ClassifierError) as caught:
        await poison_task
    assert "crash" in str(caught.value)
    assert (await pool.classify(images.coffee_jpeg())).top.label == "espresso"


def make_two_label_learner(path: Path) -> None:
    """A tiny second model (cat/coffee head on the default backbone) to swap to."""
    import warnings

    from fastai.vision.all import (
        CategoryBlock,
        CrossEntropyLossFlat,
        DataBlock,
        ImageBlock,
        Learner,
        Normalize,
        Resize,
        get_image_files,
        parent_label,
    )

    from model.default import pretrained_backbone

    root = path.parent / "two-label-data"
    for label, image in (("cat", images.chelsea()), ("coffee", images.coffee())):
        (root / label).mkdir(parents=True, exist_ok=True)
        image.save(root / label / "a.jpg")
    dls = DataBlock(
        blocks=(ImageBlock, CategoryBlock),
        get_items=get_image_files,
        get_y=parent_label,
        item_tfms=Resize(224, method="crop"),
        batch_tfms=Normalize.from_stats([0.5] * 3, [0.5] * 3),
    ).dataloaders(root, bs=1, num_workers=0, valid_pct=0.5, seed=0)
    learn = Learner(dls, pretrained_backbone(num_classes=2), loss_func=CrossEntropyLossFlat())
    learn.path = path.parent
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        learn.export(path.name)


async def test_hot_swap_under_load_fails_no_request(
    pool: Classifier, tmp_path: Path, models_dir: Path
) -> None:
    """Requests keep flowing during a swap; all succeed; afterwards the new model answers."""
    new_model = tmp_path / "two-labels.pkl"
    make_two_label_learner(new_model)
    old_pids = set(pool.worker_pids())
    stop = asyncio.Event()
    results: list[Prediction | BaseException] = []

    async def load() -> None:
        while not stop.is_set():
            try:
                results.append(await pool.classify(images.coffee_jpeg()))
            except Exception as exc:
                results.append(exc)

    loaders = [asyncio.create_task(load()) for _ in range(4)]
    await asyncio.sleep(0.5)
    name = await pool.swap(new_model)
    await asyncio.sleep(0.5)
    stop.set()
    await asyncio.gather(*loaders)
    failures = [r for r in results if not isinstance(r, Prediction)]
    assert not failures
    models = [r.model for r in results if isinstance(r, Prediction)]
    assert models[0].startswith("default-") and models[-1] == name
    assert name.startswith("two-labels@")
    after = await pool.classify(images.coffee_jpeg())
    assert {s.label for s in after.scores} <= {"cat", "coffee"}
    assert not old_pids & set(pool.worker_pids())
    assert len(pool.worker_pids()) == 2
    # And back: the default model is one swap away.
    assert (await pool.swap(models_dir / DEFAULT_MODEL_FILE)).startswith("default-")


async def test_a_corrupt_model_file_leaves_the_old_model_serving(
    pool: Classifier, tmp_path: Path
) -> None:
    broken = tmp_path / "broken.pkl"
    broken.write_bytes(b"this is not a pickle")
    before = pool.model_name
    with pytest.raises(ModelLoadError):
        await pool.swap(broken)
    assert pool.model_name == before
    assert (await pool.classify(images.coffee_jpeg())).top.label == "espresso"
    assert len(pool.worker_pids()) == 2


async def test_close_answers_what_is_queued_then_refuses(models_dir: Path) -> None:
    classifier = make_pool(models_dir)
    await classifier.start()
    tasks = [asyncio.create_task(classifier.classify(images.coffee_jpeg())) for _ in range(8)]
    await asyncio.sleep(0)
    pids = classifier.worker_pids()
    await classifier.close()
    results = await asyncio.gather(*tasks)
    assert all(r.top.label == "espresso" for r in results)
    with pytest.raises(ClassifierUnavailable):
        await classifier.classify(images.coffee_jpeg())
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def register_copy_of_default(models_dir: Path, registry_dir: Path) -> CheckedModel:
    """The default learner registered as a version; the registry's check of it."""
    registry = Registry(registry_dir)
    card = registry.register(
        models_dir / DEFAULT_MODEL_FILE,
        architecture="tf_efficientnet_lite0",
        labels=["a", "b"],
        image_size=224,
    )
    return registry.checked_model(card)


async def test_a_model_changed_after_the_registry_check_is_not_loaded(
    pool: Classifier, tmp_path: Path, models_dir: Path
) -> None:
    """The registry checked the file; then it changed (still a loadable learner) before the
    workers read it: they refuse it, with the reason, and the old model keeps serving."""
    checked = register_copy_of_default(models_dir, tmp_path / "registry")
    with checked.path.open("ab") as file:
        file.write(b"changed after the check")  # a zip with a trailing comment still loads
    before, pids = pool.model_name, set(pool.worker_pids())
    # The sha256 as the registry's check gave it, or as the pool reads it from the card.
    for sha256 in (checked.sha256, None):
        with pytest.raises(ModelLoadError, match="not the file that was checked") as caught:
            await pool.swap(checked.path, sha256)
        assert checked.sha256[:12] in str(caught.value)
    assert pool.model_name == before and set(pool.worker_pids()) == pids
    assert (await pool.classify(images.coffee_jpeg())).top.label == "espresso"


async def test_a_swap_loads_the_bytes_the_registry_checked(
    pool: Classifier, tmp_path: Path, models_dir: Path
) -> None:
    checked = register_copy_of_default(models_dir, tmp_path / "registry")
    name = await pool.swap(checked.path, checked.sha256)
    assert name == f"{checked.path.parent.name}@{checked.sha256[:8]}"


async def test_model_path_is_hashed_at_start_and_the_workers_load_those_bytes(
    models_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A file outside the registry (MODEL_PATH) is hashed where it is chosen, and the hash
    logged; a change after that is refused by the workers."""
    import model.pool

    path = tmp_path / "export.pkl"
    path.write_bytes((models_dir / DEFAULT_MODEL_FILE).read_bytes())
    really_hash = model.pool.sha256_file

    def hash_then_tamper(file: Path) -> str:
        digest = really_hash(file)
        with file.open("ab") as handle:
            handle.write(b"changed after the bot hashed it")
        return digest

    monkeypatch.setattr(model.pool, "sha256_file", hash_then_tamper)
    classifier = Classifier(
        WorkerConfig(models_dir=models_dir, model_path=path, threads=1), PoolConfig(workers=1)
    )
    with (
        caplog.at_level("INFO", logger="model.pool"),
        pytest.raises(ModelLoadError, match="not the file that was checked"),
    ):
        await classifier.start()
    assert f"{path} has sha256 " in caplog.text
    assert classifier.worker_pids() == []
    await classifier.close()
