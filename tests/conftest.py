"""Shared fixtures: an exported default learner, built once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder holding the exported default learner (exported on first use)."""
    from model.default import ensure_default_learner

    folder = tmp_path_factory.mktemp("models")
    ensure_default_learner(folder)
    return folder
