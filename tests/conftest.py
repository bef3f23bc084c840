"""Shared fixtures: an exported default learner, built once per test session."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from model.feedback import SqliteFeedbackLog

START = 1_700_000_000.0  # the feedback tests' fake "now"


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder holding the exported default learner (exported on first use)."""
    from model.default import ensure_default_learner

    folder = tmp_path_factory.mktemp("models")
    ensure_default_learner(folder)
    return folder


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    """A hand-moved clock starting at START."""
    return FakeClock()


@pytest.fixture
async def log(tmp_path: Path, clock: FakeClock) -> AsyncIterator[SqliteFeedbackLog]:
    """A feedback log in tmp_path on the fake clock."""
    feedback = await SqliteFeedbackLog.open(tmp_path, clock=clock)
    try:
        yield feedback
    finally:
        await feedback.close()


@pytest.fixture(scope="session")
def compiled_default() -> Any:
    """The bundled default's compiled ONNX form (`CompiledModel`), as `training compile`
    made and verified it (tests/seeded.py: once a test run)."""
    from model.registry import Registry
    from model.serving import served_form
    from tests.seeded import compiled_default_models

    registry = Registry(compiled_default_models())
    card = registry.active()
    assert card is not None
    served = served_form(registry, card, "onnx")
    assert served.compiled is not None, card.compiled
    return served.compiled
