"""`training compile`: a version's learner as ONNX, verified against fastai, maybe int8."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from model.compiled import FORM_FP32, FORM_INT8, choose_form
from model.registry import Registry
from tests.trainingdata import make_folders

pytestmark = pytest.mark.timeout(900)

ROOT = Path(__file__).resolve().parents[1]
PER_LABEL = {"coffee": 10, "cat": 10, "rocket": 10}


def run_training(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATA_DIR", "OMP_NUM_THREADS")}
    return subprocess.run(
        [sys.executable, "-m", "training", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("photos")
    make_folders(root, PER_LABEL, seed=3)
    return root


def learner(photos: Path, item_tfms: Any, batch_tfms: list[Any] | None = None) -> Any:
    """A learner over `photos` with the default architecture (pretrained, head untrained)."""
    from fastai.vision.all import (
        CategoryBlock,
        DataBlock,
        ImageBlock,
        Normalize,
        RandomSplitter,
        get_image_files,
        parent_label,
        vision_learner,
    )

    from model.arch import DEFAULT_STATS, efficientnet_lite0

    block = DataBlock(
        blocks=(ImageBlock, CategoryBlock),
        get_y=parent_label,
        splitter=RandomSplitter(0.3, seed=1),
        item_tfms=item_tfms,
        batch_tfms=[*(batch_tfms or []), Normalize.from_stats(*DEFAULT_STATS)],
    )
    dls = block.dataloaders(get_image_files(photos), bs=8, num_workers=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        learn = vision_learner(dls, efficientnet_lite0, normalize=False, pretrained=True)
    from fastai.callback.progress import ProgressCallback

    learn.remove_cb(ProgressCallback)
    return learn


@pytest.fixture(scope="module")
def fitted(photos: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Registry, str]:
    """A quickly fitted learner (presized and cropped on the batch, as `fit` does),
    registered in a fresh registry."""
    import torch
    from fastai.torch_core import set_seed
    from fastai.vision.all import Resize, aug_transforms

    set_seed(0, reproducible=True)
    learn = learner(photos, Resize(197), aug_transforms(size=96, min_scale=0.75))
    # An in-process worker Engine earlier in the run turned gradients off for the process.
    with warnings.catch_warnings(), torch.enable_grad():
        warnings.simplefilter("ignore")
        learn.fine_tune(4, base_lr=5e-3, freeze_epochs=1)
        root = tmp_path_factory.mktemp("fitted")
        learn.path = root
        learn.export("model.pkl")
    registry = Registry(root / "data" / "models")
    card = registry.register(
        root / "model.pkl",
        architecture="efficientnet_lite0",
        labels=[str(v) for v in learn.dls.vocab],
        image_size=96,
    )
    return registry, card.version


@pytest.mark.parametrize(
    ("method", "pad_mode", "size"), [("squish", "reflection", 64), ("pad", "zeros", (48, 64))]
)
def test_squished_and_padded_learners_compile_and_verify(
    photos: Path, tmp_path: Path, method: str, pad_mode: str, size: Any
) -> None:
    import onnxruntime as ort
    from fastai.vision.all import Resize

    from training.compile import compile_learner, spec_from_learner

    learn = learner(photos, Resize(size, method=method, pad_mode=pad_mode))
    spec = spec_from_learner(learn)
    height, width = (size, size) if isinstance(size, int) else size
    assert (spec.method, spec.pad_mode, spec.width, spec.height) == (
        method,
        pad_mode,
        width,
        height,
    )
    record, files = compile_learner(learn, tmp_path)
    assert record.ok, record.reason
    assert record.spec == spec
    assert record.checked_images >= 7
    assert record.int8 == "not made: no calibration images"
    form = record.forms[FORM_FP32]
    assert form.max_probability_diff is not None and form.max_probability_diff <= 1e-3
    assert form.ms_per_image and record.fastai_ms_per_image
    session = ort.InferenceSession(str(files[FORM_FP32]), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["images"]
    assert [o.name for o in session.get_outputs()] == ["probabilities"]


def test_an_unexportable_layer_registers_and_serves_on_fastai(
    photos: Path, tmp_path: Path
) -> None:
    from fastai.vision.all import Resize

    from tests.unexportable import SingularValues

    learn = learner(photos, Resize(64))
    learn.model[1].add_module("svd", SingularValues())
    learn.path = tmp_path
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        learn.export("odd.pkl")
    data = tmp_path / "data"
    result = run_training("import", str(tmp_path / "odd.pkl"), "--data-dir", str(data))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    registry = Registry(data / "models")
    card = registry.active()
    assert card is not None and card.source == "import"
    record = card.compile_record
    assert record is not None and not record.ok and not record.forms
    assert record.reason is not None and record.reason.startswith("cannot export to ONNX: ")
    assert "\n" not in record.reason
    assert choose_form(record, "auto")[0] is None
    listing = run_training("models", "--data-dir", str(data))
    assert listing.returncode == 0, listing.stderr
    lines = [line for line in listing.stdout.splitlines() if "serves on fastai" in line]
    assert len(lines) == 1 and "cannot export to ONNX" in lines[0], listing.stdout


def test_int8_is_kept_when_its_accuracy_holds(fitted: tuple[Registry, str], photos: Path) -> None:
    from training.compile import compile_version

    registry, version = fitted
    lines: list[str] = []
    card = compile_version(registry, version, calibrate=photos, images=photos, out=lines.append)
    record = card.compile_record
    assert record is not None and record.ok, record and record.reason
    assert record.int8 is not None and record.int8.startswith("kept: "), record.int8
    assert FORM_INT8 in record.forms
    int8, fp32 = record.forms[FORM_INT8], record.forms[FORM_FP32]
    assert fp32.accuracy is not None and fp32.accuracy >= 0.9
    assert int8.accuracy is not None and int8.accuracy >= fp32.accuracy - 0.01
    assert int8.agreement is not None and int8.agreement >= 0.98
    assert int8.file_size < fp32.file_size  # the convolutions in int8, the head in float
    assert registry.checked_compiled(card, FORM_INT8).path.is_file()
    assert choose_form(record, "onnx-int8")[0] == int8
    assert any(line.strip().startswith("onnx-int8: model-int8.onnx") for line in lines), lines


def test_int8_calibrated_on_black_images_is_refused(
    fitted: tuple[Registry, str], photos: Path, tmp_path: Path
) -> None:
    black = tmp_path / "black"
    black.mkdir()
    for index in range(8):
        Image.new("RGB", (200, 150), (index, index, index)).save(black / f"{index}.png")
    from training.compile import compile_version

    registry, version = fitted
    card = compile_version(registry, version, calibrate=black, images=photos, out=lambda _: None)
    record = card.compile_record
    assert record is not None and record.ok
    assert FORM_INT8 not in record.forms
    assert record.int8 is not None and record.int8.startswith("refused: accuracy "), record.int8
    assert not (registry.version_dir(card) / "model-int8.onnx").exists()
    assert choose_form(record, "onnx-int8")[1] is not None


def test_a_spec_that_does_not_match_fails_verification(
    photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fastai.vision.all import Resize

    from training import compile as compiler

    learn = learner(photos, Resize(64))
    real = compiler._plan

    def doctored(learn: Any) -> Any:
        plan = real(learn)
        # Squish where the learner crops: same size, different pixels.
        return dataclasses.replace(plan, spec=dataclasses.replace(plan.spec, method="squish"))

    monkeypatch.setattr(compiler, "_plan", doctored)
    record, files = compiler.compile_learner(learn, tmp_path)
    assert not record.ok and not record.forms and files == {}
    assert record.reason is not None and record.reason.startswith("verification failed: ")


def test_other_validation_transforms_are_not_compilable(photos: Path) -> None:
    from fastai.vision.all import RandomResizedCrop

    from training.compile import NotCompilable, spec_from_learner

    learn = learner(photos, RandomResizedCrop(64))
    with pytest.raises(NotCompilable, match="RandomResizedCrop"):
        spec_from_learner(learn)


def test_the_tie_rule() -> None:
    import numpy as np

    from training.compile import _mismatch

    reference = np.array([[0.5002, 0.4998, 0.0], [0.9, 0.05, 0.05]], dtype=np.float32)
    flipped = np.array([[0.4998, 0.5002, 0.0], [0.9, 0.05, 0.05]], dtype=np.float32)
    assert _mismatch(reference, flipped) is None  # a tie in the learner's own answer
    far = reference + np.array([[0.0, 0.0, 0.0], [-0.002, 0.002, 0.0]], dtype=np.float32)
    assert "differ by up to" in (_mismatch(reference, far) or "")
