"""Which form of a version the workers get (model/serving.py): by INFERENCE_BACKEND, by what
was verified and measured, by what this install can run; altered files refused."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from model.compiled import (
    FORM_FP32,
    FORM_INT8,
    CompiledForm,
    CompileRecord,
    PreprocessSpec,
    choose_form,
)
from model.registry import IntegrityError, ModelCard, Registry
from model.serving import NeedsFullInstall, served_form

SPEC = PreprocessSpec(width=64, height=48, method="squish", mean=(0.5,) * 3, std=(0.5,) * 3)


def form(kind: str, data: bytes, ms: float) -> CompiledForm:
    name = "model.onnx" if kind == FORM_FP32 else "model-int8.onnx"
    return CompiledForm(kind, name, hashlib.sha256(data).hexdigest(), len(data), ms_per_image=ms)


def compiled_version(
    tmp_path: Path, *, fp32_ms: float = 10.0, int8_ms: float | None = 6.0, fastai_ms: float = 30.0
) -> tuple[Registry, ModelCard]:
    registry = Registry(tmp_path / "models")
    learner = tmp_path / "export.pkl"
    learner.write_bytes(b"a learner")
    card = registry.register(learner, architecture="resnet34", labels=["a", "b"], image_size=64)
    files = {FORM_FP32: tmp_path / "fp32.onnx"}
    files[FORM_FP32].write_bytes(b"fp32 graph")
    forms = {FORM_FP32: form(FORM_FP32, b"fp32 graph", fp32_ms)}
    if int8_ms is not None:
        files[FORM_INT8] = tmp_path / "int8.onnx"
        files[FORM_INT8].write_bytes(b"int8 graph")
        forms[FORM_INT8] = form(FORM_INT8, b"int8 graph", int8_ms)
    record = CompileRecord(
        compiled_at="2026-12-01T00:00:00Z",
        spec=SPEC,
        forms=forms,
        int8="kept" if int8_ms is not None else "refused: accuracy 60.0% vs 90.0% fp32",
        fastai_ms_per_image=fastai_ms,
    )
    return registry, registry.record_compiled(card, record, files)


def test_auto_serves_the_fastest_verified_form(tmp_path: Path) -> None:
    registry, card = compiled_version(tmp_path)
    served = served_form(registry, card, "auto", can_fastai=True)
    assert served.backend == FORM_INT8 and served.compiled is not None
    assert served.compiled.path == registry.models_dir / card.version / "model-int8.onnx"
    assert served.compiled.spec == SPEC and served.compiled.labels == ("a", "b")
    # Predictions carry the learner's name whatever form answers.
    assert served.compiled.name == f"{card.version}@{card.sha256[:8]}"
    assert served_form(registry, card, "onnx", can_fastai=True).backend == FORM_FP32
    assert served_form(registry, card, "fastai", can_fastai=True).compiled is None


def test_auto_keeps_the_learner_when_it_measured_faster(tmp_path: Path) -> None:
    registry, card = compiled_version(tmp_path, fp32_ms=40.0, int8_ms=None, fastai_ms=30.0)
    served = served_form(registry, card, "auto", can_fastai=True)
    assert served.compiled is None and served.note and "fastai measured faster" in served.note
    # Without fastai the compiled form serves anyway.
    assert served_form(registry, card, "auto", can_fastai=False).backend == FORM_FP32


def test_int8_asked_for_but_refused_serves_fp32_and_says_why(tmp_path: Path) -> None:
    registry, card = compiled_version(tmp_path, int8_ms=None)
    served = served_form(registry, card, "onnx-int8", can_fastai=True)
    assert served.backend == FORM_FP32
    assert served.note is not None and "refused: accuracy 60.0%" in served.note


def test_an_altered_compiled_file_refuses_the_version(tmp_path: Path) -> None:
    registry, card = compiled_version(tmp_path)
    (registry.models_dir / card.version / "model-int8.onnx").write_bytes(b"something else")
    with pytest.raises(IntegrityError, match="does not match its card"):
        served_form(registry, card, "auto", can_fastai=True)


def test_without_fastai_an_uncompiled_version_needs_the_full_install(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "models")
    learner = tmp_path / "export.pkl"
    learner.write_bytes(b"a learner")
    card = registry.register(learner, architecture="resnet34", labels=["a", "b"], image_size=64)
    with pytest.raises(NeedsFullInstall, match="training bundle"):
        served_form(registry, card, "auto", can_fastai=False)
    served = served_form(registry, card, "auto", can_fastai=True)
    assert served.compiled is None and served.note and "not compiled yet" in served.note


def test_a_version_that_did_not_compile_serves_on_fastai_and_says_why() -> None:
    record = CompileRecord(
        compiled_at="2026-12-01T00:00:00Z",
        reason="cannot export to ONNX: Unsupported: linalg_svd",
    )
    chosen, note = choose_form(record, "auto")
    assert chosen is None and note is not None and "linalg_svd" in note
