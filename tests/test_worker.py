"""The worker's engine: its fast path is exactly fastai's test_dl + get_preds, batch or not."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from model.types import NotAnImage, Prediction
from model.worker import Engine, WorkerConfig
from tests import images


@pytest.fixture(scope="module")
def engine(models_dir: Path) -> Engine:
    engine = Engine(WorkerConfig(models_dir=models_dir, top_k=5))
    engine.warm_up()
    return engine


def test_fast_path_is_kept_and_matches_fastai(engine: Engine) -> None:
    """Same probabilities as fastai's own inference on real photos, not just the warm-up."""
    assert engine.fast
    photos = [images.coffee(), images.chelsea(), images.noise(500, 300)]
    fast = engine.probabilities(photos)
    dl = engine.learn.dls.test_dl(photos, num_workers=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference, _ = engine.learn.get_preds(dl=dl)
    assert fast.shape == (3, 1000)
    assert float((fast - reference).abs().max()) < 1e-4


def test_a_batch_answers_every_item_in_order(engine: Engine) -> None:
    items = [(7, images.chelsea_jpeg()), (3, images.minimal_pdf()), (9, images.coffee_jpeg())]
    results, decode_s, infer_s = engine.classify(items)
    assert [request_id for request_id, _ in results] == [7, 3, 9]
    cat, pdf, coffee = (result for _, result in results)
    assert isinstance(cat, Prediction) and cat.top.label != "espresso"
    assert isinstance(pdf, NotAnImage)
    assert isinstance(coffee, Prediction) and coffee.top.label == "espresso"
    assert len(coffee.scores) == 5
    assert decode_s > 0 and infer_s > 0
