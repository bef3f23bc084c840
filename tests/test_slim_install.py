"""The base install (`pip install .`, no `train` extra: what the slim image has) serves compiled
versions with no torch anywhere: a real virtualenv is made with it, a compiled version is moved
in as a bundle, the bot answers photos from it, and what needs fastai says so plainly."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from model.registry import Registry
from tests import images
from tests.botharness import start_bot
from tests.seeded import compiled_default_models

REPO = Path(__file__).resolve().parent.parent
ADMIN = 7001


@pytest.fixture(scope="module")
def slim_python(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A virtualenv holding the base install only, at the pinned versions."""
    venv = tmp_path_factory.mktemp("slim-venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    source = tmp_path_factory.mktemp("slim-source")
    # A copy of the sources: the build writes its egg-info beside them.
    for name in ("bot", "model", "training", "sandbox"):
        shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "constraints.txt"):
        shutil.copy(REPO / name, source / name)
    result = subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "--constraint", "constraints.txt", "."],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    for heavy in ("torch", "fastai", "torchvision", "timm", "onnx"):
        probe = subprocess.run([python, "-c", f"import {heavy}"], capture_output=True)
        assert probe.returncode != 0, f"{heavy} came with the base install"
    return python


def test_the_base_install_serves_a_bundled_version_and_refuses_what_needs_fastai(
    slim_python: str, tmp_path: Path
) -> None:
    # In the full install: the compiled default, bundled without its learner.
    bundle = tmp_path / "default.tar"
    made = subprocess.run(
        [
            sys.executable,
            "-m",
            "training",
            "bundle",
            "default",
            str(bundle),
            "--without-learner",
            "--data-dir",
            str(compiled_default_models().parent),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert made.returncode == 0, made.stdout + made.stderr
    data = tmp_path / "data"

    def training(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [slim_python, "-m", "training", *args, "--data-dir", str(data)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
        )

    # A learner cannot be imported here; the message says how to bring a version in.
    pickle = tmp_path / "export.pkl"
    pickle.write_bytes(b"\x80\x04N.")
    refused = training("import", str(pickle))
    assert refused.returncode == 2
    assert "needs the full image" in refused.stderr and "training bundle" in refused.stderr
    # The bundle is checked and registered.
    imported = training("import", str(bundle))
    assert imported.returncode == 0, imported.stdout + imported.stderr
    card = Registry(data / "models").active()
    assert card is not None and card.compile_record is not None and card.compile_record.ok

    bot = start_bot(tmp_path, {"ADMIN_IDS": str(ADMIN)}, seed=False, python=slim_python)
    try:
        reply = bot.send_photo(images.coffee_jpeg(), user_id=ADMIN)["replies"]
        assert reply and reply[0]["text"].startswith("espresso"), reply
        retrain = bot.send(text="/retrain", user_id=ADMIN)["replies"]
        assert retrain and "needs the full image" in retrain[0]["text"], retrain
        stats = bot.send(text="/stats", user_id=ADMIN)["replies"]
        assert any("on onnx" in (r.get("text") or r.get("caption") or "") for r in stats), stats
    finally:
        assert bot.stop() == 0
    assert "serving " + card.version + " on onnx" in bot.log()
    assert not {"torch", "fastai", "onnx"} & set(bot.modules())
