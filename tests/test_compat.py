"""Learners exported in course notebooks load: __main__ functions, Windows paths, old pickle."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from model.compat import UnsupportedModel, load_learner_compat
from model.worker import Engine, WorkerConfig
from tests import images
from tests.botharness import REPO, start_bot

pytestmark = pytest.mark.timeout(600)


def make(out: Path, *flags: str) -> Path:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    subprocess.run(
        [sys.executable, str(REPO / "tests" / "make_legacy_learner.py"), str(out), *flags],
        check=True,
        env=env,
        cwd=out.parent,
        capture_output=True,
    )
    return out


@pytest.fixture(scope="module")
def legacy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make(tmp_path_factory.mktemp("legacy") / "export.pkl")


def test_plain_load_learner_fails_on_it(legacy: Path) -> None:
    """The problem is real: today's load_learner cannot read this file."""
    import warnings

    from fastai.learner import load_learner

    with warnings.catch_warnings(), pytest.raises((AttributeError, NotImplementedError)):
        warnings.simplefilter("ignore")
        load_learner(legacy)


def test_it_loads_with_the_stubbed_names_reported(legacy: Path) -> None:
    learn, report = load_learner_compat(legacy)
    assert sorted(report.stubbed) == ["__main__.Brighten", "__main__.is_cat"]
    assert report.windows_paths == 1
    assert str(learn.path) == "C:/Users/me/bears"
    assert list(learn.dls.vocab) == ["cat", "other"]


def test_it_classifies_through_the_engine(legacy: Path, tmp_path: Path) -> None:
    engine = Engine(WorkerConfig(models_dir=tmp_path, model_path=legacy, top_k=2))
    engine.warm_up()
    ((_, prediction),) = engine.classify([(1, images.coffee_jpeg())])[0]
    assert {s.label for s in prediction.scores} == {"cat", "other"}  # type: ignore[union-attr]


def test_a_multi_label_learner_is_refused_clearly(tmp_path: Path) -> None:
    path = make(tmp_path / "multi.pkl", "--multilabel")
    with pytest.raises(UnsupportedModel, match=r"multi-label.*not supported yet"):
        load_learner_compat(path)


def test_a_file_that_is_not_a_learner_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "nope.pkl"
    path.write_bytes(b"PK\x03\x04 definitely not a pickle")
    with pytest.raises(UnsupportedModel):
        load_learner_compat(path)


def test_the_bot_serves_it_end_to_end(legacy: Path, tmp_path: Path) -> None:
    bot = start_bot(tmp_path, {"MODEL_PATH": str(legacy)})
    try:
        reply = bot.send_photo(images.coffee_jpeg())["replies"][0]
        assert reply["text"].split(" ")[0] in ("cat", "other", "Not")
        assert "Brighten" in bot.log() and "is_cat" in bot.log()
    finally:
        assert bot.stop() == 0


def test_import_registers_it_and_the_bot_serves_it_from_the_registry(
    legacy: Path, tmp_path: Path
) -> None:
    """`python -m training import FILE` into a fresh data folder: summary printed, the version
    active (as after `fit`), and the bot's first start serves it: no ImageNet "espresso" for the
    user's photos, and no bundled default registered next to it."""
    data_dir = tmp_path / "data"
    result = import_cli(legacy, data_dir)
    assert result.returncode == 0, result.stderr
    assert "2 labels (cat, other)" in result.stdout
    assert "__main__.is_cat" in result.stdout and "__main__.Brighten" in result.stdout

    from model.default import DEFAULT_MODEL_FILE
    from model.registry import Registry

    registry = Registry(data_dir / "models")
    active = registry.active()
    assert active is not None and active.labels == ("cat", "other")
    assert f"{active.version} is now active" in result.stdout
    bot = start_bot(tmp_path, {"DATA_DIR": str(data_dir)})
    try:
        reply = bot.send_photo(images.coffee_jpeg())["replies"][0]
        assert reply["text"].split(" ")[0] in ("cat", "other", "Not"), reply["text"]
    finally:
        assert bot.stop() == 0
    assert registry.versions() == [active] and registry.active() == active
    assert not (registry.models_dir / DEFAULT_MODEL_FILE).exists()
    assert "exports the bundled default" not in bot.log()


def test_import_no_activate_registers_and_says_how_to_switch(legacy: Path, tmp_path: Path) -> None:
    result = import_cli(legacy, tmp_path / "data", "--no-activate")
    assert result.returncode == 0, result.stderr

    from model.registry import ACTIVE_NAME, Registry

    registry = Registry(tmp_path / "data" / "models")
    (card,) = registry.versions()
    assert not (registry.models_dir / ACTIVE_NAME).exists()
    assert (
        f"{card.version} is registered but not active; switch to it with "
        f"`python -m training use {card.version}` (a running bot: /use {card.version})."
    ) in result.stdout


def import_cli(path: Path, data_dir: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "training",
            "import",
            str(path),
            *flags,
            "--data-dir",
            str(data_dir),
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
    )


def test_importing_a_multi_label_learner_fails_clearly(tmp_path: Path) -> None:
    path = make(tmp_path / "multi.pkl", "--multilabel")
    result = subprocess.run(
        [sys.executable, "-m", "training", "import", str(path), "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
    )
    assert result.returncode == 2
    assert "not supported yet" in result.stderr
