"""The bundled ImageNet learner: labels in the model's order, real predictions on real photos."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest

from model.default import DEFAULT_MODEL_FILE, imagenet_labels
from tests import images


@pytest.fixture(scope="module")
def learn(models_dir: Path) -> Any:
    from model.worker import load

    return load(models_dir / DEFAULT_MODEL_FILE)


def predict(learn: Any, image: Any) -> list[tuple[str, float]]:
    dl = learn.dls.test_dl([image], num_workers=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        probabilities, _ = learn.get_preds(dl=dl)
    values, indices = probabilities[0].topk(5)
    return [(learn.dls.vocab[int(i)], float(v)) for v, i in zip(values, indices, strict=True)]


def test_imagenet_labels_are_complete_and_unique() -> None:
    labels = imagenet_labels()
    assert len(labels) == 1000
    assert len(set(labels)) == 1000
    assert labels[0] == "tench"
    assert labels[967] == "espresso"
    assert labels[281] == "tabby"


def test_vocab_keeps_the_model_output_order_not_sorted(learn: Any) -> None:
    """fastai sorts a CategoryBlock vocab by default; ours must stay in output order."""
    vocab = list(learn.dls.vocab)
    assert vocab == imagenet_labels()
    assert vocab != sorted(vocab)


def test_coffee_is_espresso(learn: Any) -> None:
    top = predict(learn, images.coffee())
    assert top[0][0] == "espresso"
    assert top[0][1] > 0.8


def test_chelsea_is_a_cat(learn: Any) -> None:
    top = predict(learn, images.chelsea())
    assert top[0][0] in {"tabby", "tiger cat", "Egyptian cat", "Persian cat", "lynx"}


def test_probabilities_sum_to_one(learn: Any) -> None:
    dl = learn.dls.test_dl([images.coffee()], num_workers=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        probabilities, _ = learn.get_preds(dl=dl)
    assert probabilities.shape == (1, 1000)
    assert float(probabilities.sum()) == pytest.approx(1.0, abs=1e-4)


def test_export_is_reused_not_rebuilt(models_dir: Path) -> None:
    """The second start loads the exported file instead of exporting again."""
    from model.default import ensure_default_learner

    path = models_dir / DEFAULT_MODEL_FILE
    before = path.stat().st_mtime_ns
    assert ensure_default_learner(models_dir) == path
    assert path.stat().st_mtime_ns == before
