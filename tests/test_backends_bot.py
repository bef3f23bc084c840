"""The compiled form answers as the learner does, through the real bot: the bundled default and
a learner fitted here, each served once with INFERENCE_BACKEND=fastai and once with the
default (auto, which picks the verified ONNX form), the same photos, the same top label and a
probability within 0.1 percentage point. The bot process serving ONNX never imports torch."""

from __future__ import annotations

import io
import json
import shutil
import sqlite3
from pathlib import Path

import httpx
import pytest
import skimage.data
from PIL import Image

from model.feedback.schema import database_path
from model.registry import Registry
from tests.botharness import start_bot
from tests.seeded import compiled_default_models
from tests.test_training import run_training
from tests.trainingdata import make_folders

USER = 4242


def jpeg(array: object) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).convert("RGB").save(buffer, "JPEG", quality=90)  # type: ignore[arg-type]
    return buffer.getvalue()


PHOTOS = {
    "coffee": jpeg(skimage.data.coffee()),
    "cat": jpeg(skimage.data.chelsea()),
    "rocket": jpeg(skimage.data.rocket()),
}


def answers(
    models: Path, workdir: Path, backend: str
) -> tuple[dict[str, tuple[str, float]], dict]:
    """Each photo's top label and probability as the bot stored them, and its /readyz."""
    data = workdir / "data"
    shutil.copytree(models, data / "models", ignore=shutil.ignore_patterns("*.lock"))
    bot = start_bot(workdir, {"INFERENCE_BACKEND": backend}, seed=False)
    try:
        for name, photo in PHOTOS.items():
            reply = bot.send_photo(photo, user_id=USER, caption=name)
            assert reply["replies"], reply
        ready = httpx.get(f"{bot.web_url()}/readyz", timeout=10).json()
    finally:
        assert bot.stop() == 0
    assert not {"torch", "fastai"} & set(bot.modules())
    with sqlite3.connect(database_path(data)) as db:
        rows = db.execute("SELECT scores FROM predictions ORDER BY created").fetchall()
    assert len(rows) == len(PHOTOS)
    found = {}
    for name, (scores,) in zip(PHOTOS, rows, strict=True):
        label, probability = json.loads(scores)[0]
        found[name] = (label, float(probability))
    return found, ready


def assert_same(fastai: dict[str, tuple[str, float]], onnx: dict[str, tuple[str, float]]) -> None:
    for name in PHOTOS:
        assert onnx[name][0] == fastai[name][0], (name, fastai[name], onnx[name])
        assert abs(onnx[name][1] - fastai[name][1]) < 0.001, (name, fastai[name], onnx[name])


def test_the_default_answers_the_same_on_fastai_and_compiled(tmp_path: Path) -> None:
    models = compiled_default_models()
    fastai, ready_fastai = answers(models, tmp_path / "fastai", "fastai")
    onnx, ready_onnx = answers(models, tmp_path / "auto", "auto")
    assert ready_fastai["backend"] == "fastai" and ready_onnx["backend"] == "onnx"
    assert fastai["coffee"][0] == "espresso"
    assert_same(fastai, onnx)


@pytest.fixture(scope="module")
def fitted_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fit-backends")
    make_folders(root / "photos", {"coffee": 12, "cat": 12, "rocket": 12}, seed=3)
    data = root / "data"
    result = run_training(
        "fit", str(root / "photos"), "--data-dir", str(data), "--epochs", "1", timeout=600
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    card = Registry(data / "models").active()
    assert card is not None and not card.is_default
    record = card.compile_record
    assert record is not None and record.ok, card.compiled
    return data / "models"


def test_a_fitted_learner_answers_the_same_on_fastai_and_compiled(
    fitted_models: Path, tmp_path: Path
) -> None:
    fastai, ready_fastai = answers(fitted_models, tmp_path / "fastai", "fastai")
    onnx, ready_onnx = answers(fitted_models, tmp_path / "auto", "auto")
    assert ready_fastai["backend"] == "fastai" and ready_onnx["backend"].startswith("onnx")
    assert {label for label, _ in fastai.values()} <= {"coffee", "cat", "rocket"}
    assert_same(fastai, onnx)
