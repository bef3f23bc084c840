"""Model versions on disk: register, list, activate, roll back; tampered files refused."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bot.config import Settings
from bot.startup import adopt_default_export, choose_model
from model.default import DEFAULT_MODEL_FILE
from model.registry import (
    ACTIVE_NAME,
    CARD_NAME,
    IntegrityError,
    ModelCard,
    Registry,
    RegistryError,
    UnknownVersion,
    imagenet_labels_without_torch,
)
from model.serving import Served

ROOT = Path(__file__).resolve().parents[1]


def learner_file(folder: Path, content: bytes) -> Path:
    """A stand-in for an exported learner: the registry never unpickles what it stores."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"learner-{len(list(folder.iterdir()))}.pkl"
    path.write_bytes(content)
    return path


def register(registry: Registry, tmp_path: Path, content: bytes, **fields: object) -> ModelCard:
    values: dict[str, object] = {
        "architecture": "tf_efficientnet_lite0",
        "labels": ["black", "grizzly", "teddy"],
        "image_size": 224,
        **fields,
    }
    return registry.register(learner_file(tmp_path / "in", content), **values)  # type: ignore[arg-type]


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    return Registry(tmp_path / "data" / "models")


def run_cli(*args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    """The CLI in a fresh interpreter, reporting every import on stderr (-X importtime)."""
    env = {k: v for k, v in os.environ.items() if k != "DATA_DIR"}
    return subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "training", *args, "--data-dir", str(data_dir)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def imported(stderr: str) -> set[str]:
    return set(re.findall(r"^import time:.*\|\s*([\w]+)", stderr, flags=re.MULTILINE))


def messages(stderr: str) -> str:
    return "\n".join(line for line in stderr.splitlines() if not line.startswith("import time:"))


def test_register_list_and_activate(registry: Registry, tmp_path: Path) -> None:
    """Versions are numbered in order, listed oldest first, and one is active."""
    assert registry.versions() == [] and registry.active() is None
    first = register(registry, tmp_path, b"one", metrics={"accuracy": 0.9})
    second = register(registry, tmp_path, b"two", parent=first.version, training_images=40)
    assert re.fullmatch(r"v1-\d{8}-\d{6}", first.version)
    assert re.fullmatch(r"v2-\d{8}-\d{6}", second.version)
    assert registry.versions() == [first, second]
    assert registry.active() is None  # nothing activated, no default registered
    assert registry.activate(second.version) == second
    assert registry.active() == second
    assert (registry.models_dir / ACTIVE_NAME).read_text() == second.version + "\n"
    assert registry.get("v1") == first and registry.get(second.version) == second
    assert registry.path_for(second).read_bytes() == b"two"
    active = registry.active()
    assert active is not None and registry.path_for(active) == registry.path_for(second)
    card = json.loads((registry.models_dir / second.version / CARD_NAME).read_text())
    assert card["parent"] == first.version and card["training_images"] == 40
    assert card["label_count"] == 3 and card["file"] == "model.pkl"


def test_register_can_activate_in_the_same_step(registry: Registry, tmp_path: Path) -> None:
    card = register(registry, tmp_path, b"x", activate=True)
    assert registry.active() == card


def test_register_copies_artifacts_and_moves_the_file(registry: Registry, tmp_path: Path) -> None:
    png = tmp_path / "confusion_matrix.png"
    png.write_bytes(b"\x89PNG fake")
    source = learner_file(tmp_path / "in", b"learner")
    card = registry.register(
        source,
        architecture="resnet34",
        labels=["a", "b"],
        image_size=224,
        artifacts={"confusion_matrix": png},
        move=True,
    )
    assert not source.exists()
    artifact = registry.artifact(card, "confusion_matrix")
    assert artifact is not None and artifact.read_bytes() == b"\x89PNG fake"
    assert registry.artifact(card, "top_losses") is None


def test_rollback_goes_to_the_version_active_before(registry: Registry, tmp_path: Path) -> None:
    """previous() is the version active before the current one, like `cd -`."""
    v1, v2, v3 = (register(registry, tmp_path, bytes([n])) for n in range(3))
    registry.activate(v3.version)
    # No earlier activation on record: the newest version older than the active one.
    assert registry.previous() == v2
    registry.activate(v1.version)
    registry.activate(v3.version)
    assert registry.previous() == v1
    registry.activate(registry.get("previous"))
    assert registry.active() == v1 and registry.previous() == v3


def test_an_altered_model_file_is_refused(registry: Registry, tmp_path: Path) -> None:
    """A file that no longer matches its card's sha256 is never handed out or activated."""
    card = register(registry, tmp_path, b"original learner")
    (registry.models_dir / card.version / "model.pkl").write_bytes(b"something else")
    with pytest.raises(IntegrityError, match="does not match its card"):
        registry.path_for(card)
    with pytest.raises(IntegrityError):
        registry.activate(card.version)
    assert registry.active() is None
    (registry.models_dir / card.version / "model.pkl").unlink()
    with pytest.raises(IntegrityError, match="is missing"):
        registry.path_for(card.version)


def test_a_card_edited_to_match_another_file_is_caught(registry: Registry, tmp_path: Path) -> None:
    """path_for re-reads the card from disk rather than trusting a card object in memory."""
    card = register(registry, tmp_path, b"learner")
    stale = ModelCard.from_json({**card.to_json(), "sha256": "0" * 64})
    assert registry.path_for(stale).read_bytes() == b"learner"


def test_register_refuses_a_file_with_an_unexpected_hash(
    registry: Registry, tmp_path: Path
) -> None:
    with pytest.raises(IntegrityError, match="not registered"):
        register(registry, tmp_path, b"learner", expected_sha256="ab" * 32)
    assert registry.versions() == []
    assert not list(registry.models_dir.glob(".staging-*"))


def test_the_default_is_registered_first_and_once(registry: Registry, tmp_path: Path) -> None:
    """The bundled ImageNet learner is version 1 with 1000 labels, no metrics; registering it
    again returns the same version."""
    default_file = learner_file(tmp_path / "in", b"default learner")
    default = registry.register_default(default_file)
    assert default.number == 1 and default.is_default
    assert default.architecture == "tf_efficientnet_lite0" and default.image_size == 224
    assert len(default.labels) == 1000 and default.labels[967] == "espresso"
    assert default.metrics is None
    assert registry.register_default(default_file) == default
    fitted = register(registry, tmp_path, b"fitted", parent=default.version)
    assert registry.default() == default and fitted.number == 2
    # With no version activated, the bot serves the default, and the registry says so.
    assert registry.active() == default
    registry.activate(fitted.version)
    assert registry.get("default") == default


def test_imagenet_labels_are_read_without_importing_torch() -> None:
    code = (
        "import sys; from model.registry import imagenet_labels_without_torch as f; "
        "names = f(); print(len(names), names[0], 'torch' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.stdout.split() == ["1000", "tench", "False"], result.stderr
    assert len(imagenet_labels_without_torch()) == 1000


def test_the_registry_imports_nothing_heavy() -> None:
    """The bot process imports this module: no torch, fastai or telegram."""
    code = (
        "import sys, model.registry; "
        "print(sorted(m for m in ('torch', 'fastai', 'telegram', 'PIL', 'numpy') "
        "if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.stdout.strip() == "[]", result.stdout + result.stderr


def test_unknown_versions_and_a_broken_active_file(registry: Registry, tmp_path: Path) -> None:
    with pytest.raises(UnknownVersion, match="registered: none yet"):
        registry.get("v7")
    card = register(registry, tmp_path, b"x")
    with pytest.raises(UnknownVersion, match=card.version):
        registry.get("v2-20000101-000000")
    (registry.models_dir / ACTIVE_NAME).write_text("v9-20000101-000000\n")
    with pytest.raises(RegistryError, match="is not in"):
        registry.active()
    (registry.models_dir / ACTIVE_NAME).write_text("../../etc\n")
    with pytest.raises(RegistryError, match="does not name a version"):
        registry.active()


def test_an_unreadable_card_is_left_out_of_the_list(
    registry: Registry, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    good = register(registry, tmp_path, b"good")
    bad = register(registry, tmp_path, b"bad")
    (registry.models_dir / bad.version / CARD_NAME).write_text("{not json")
    assert registry.versions() == [good]
    assert bad.version in caplog.text
    # Its number stays taken: the next version does not reuse it.
    assert register(registry, tmp_path, b"next").number == 3


def test_cards_keep_fields_they_do_not_know() -> None:
    card = ModelCard.from_json(
        {
            "version": "v1-20260101-000000",
            "number": 1,
            "created": "2026-01-01T00:00:00+00:00",
            "source": "fit",
            "architecture": "resnet34",
            "labels": ["a", "b"],
            "image_size": 224,
            "sha256": "a" * 64,
            "file_size": 3,
            "file": "model.pkl",
            "from_the_future": {"x": 1},
        }
    )
    assert card.extra == {"from_the_future": {"x": 1}}
    assert card.to_json()["from_the_future"] == {"x": 1}
    assert ModelCard.from_json(card.to_json()) == card
    with pytest.raises(RegistryError, match="number must be int"):
        ModelCard.from_json({**card.to_json(), "number": "1"})
    with pytest.raises(RegistryError, match="not a plain name"):
        ModelCard.from_json({**card.to_json(), "file": "../model.pkl"})


def _register_many(models_dir: str, worker: int, count: int) -> list[str]:
    registry = Registry(Path(models_dir))
    versions = []
    for index in range(count):
        source = Path(models_dir).parent / f"w{worker}-{index}.pkl"
        source.write_bytes(f"{worker}-{index}".encode() * 1000)
        card = registry.register(
            source, architecture="a", labels=["x", "y"], image_size=224, activate=index % 2 == 0
        )
        versions.append(card.version)
    return versions


def test_processes_registering_at_once_get_distinct_versions(tmp_path: Path) -> None:
    """Four processes, five registrations each: twenty numbered versions, all intact."""
    models_dir = tmp_path / "models"
    context = multiprocessing.get_context("spawn")
    with context.Pool(4) as pool:
        results = pool.starmap(_register_many, [(str(models_dir), w, 5) for w in range(4)])
    registry = Registry(models_dir)
    versions = registry.versions()
    assert sorted(v for batch in results for v in batch) == sorted(v.version for v in versions)
    assert [v.number for v in versions] == list(range(1, 21))
    for card in versions:
        registry.path_for(card)
    assert registry.active() is not None
    assert not list(models_dir.glob(".staging-*"))
    assert not list(models_dir.glob(".ACTIVE.*"))


def test_use_switches_the_active_version_without_torch(registry: Registry, tmp_path: Path) -> None:
    first = register(registry, tmp_path, b"one", activate=True)
    second = register(registry, tmp_path, b"two")
    data_dir = registry.models_dir.parent
    result = run_cli("use", "v2", data_dir=data_dir)
    assert result.returncode == 0, result.stderr
    assert f"{second.version} is now active" in result.stdout
    assert registry.active() == second
    result = run_cli("use", "previous", data_dir=data_dir)
    assert result.returncode == 0, result.stderr
    assert registry.active() == first
    assert not {"torch", "fastai", "PIL"} & imported(result.stderr)


def test_use_refuses_an_altered_file_and_unknown_versions(
    registry: Registry, tmp_path: Path
) -> None:
    card = register(registry, tmp_path, b"one")
    (registry.models_dir / card.version / "model.pkl").write_bytes(b"tampered")
    data_dir = registry.models_dir.parent
    result = run_cli("use", card.version, data_dir=data_dir)
    assert result.returncode == 2
    assert "does not match its card" in messages(result.stderr)
    result = run_cli("use", "v9", data_dir=data_dir)
    assert result.returncode == 2
    assert "no model version 'v9'" in messages(result.stderr)
    assert "Traceback" not in result.stderr


def test_models_registers_an_existing_default_export_and_lists_it(
    registry: Registry, tmp_path: Path
) -> None:
    """The bot's exported default becomes version 1 the first time versions are listed."""
    registry.models_dir.mkdir(parents=True)
    (registry.models_dir / DEFAULT_MODEL_FILE).write_bytes(b"exported default")
    data_dir = registry.models_dir.parent
    result = run_cli("models", data_dir=data_dir)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == [
        "VERSION",
        "ARCHITECTURE",
        "LABELS",
        "ACCURACY",
        "IMAGES",
        "CREATED",
        "(UTC)",
    ]
    assert re.match(r"^\*\s+v1-\d{8}-\d{6}\s+tf_efficientnet_lite0\s+1000\s+–\s+–", lines[1])
    assert "bundled ImageNet default" in lines[1]
    assert not {"torch", "fastai", "PIL", "numpy"} & imported(result.stderr)
    assert registry.default() is not None
    result = run_cli("models", "--json", data_dir=data_dir)
    (card,) = json.loads(result.stdout)
    assert card["source"] == "default" and card["label_count"] == 1000


def test_models_with_nothing_registered_says_how_to_start(tmp_path: Path) -> None:
    result = run_cli("models", data_dir=tmp_path)
    assert result.returncode == 0
    assert "No model versions" in result.stdout and "python -m training fit" in result.stdout


def test_versions_are_readable_by_other_users(registry: Registry, tmp_path: Path) -> None:
    """`training` may run as another user than the bot: nothing it writes is private."""
    card = register(registry, tmp_path, b"x", activate=True)
    folder = registry.models_dir / card.version
    for path in (folder, folder / CARD_NAME, folder / "model.pkl", folder.parent / ACTIVE_NAME):
        assert path.stat().st_mode & 0o004, path


# ------------------------------------------------- what the bot serves at start (bot/__main__)


def exported_default(registry: Registry) -> Path:
    """What the model workers write when no version is active: the default's export."""
    registry.models_dir.mkdir(parents=True, exist_ok=True)
    path = registry.models_dir / DEFAULT_MODEL_FILE
    path.write_bytes(b"exported default")
    return path


def bot_settings(registry: Registry) -> Settings:
    return Settings(data_dir=registry.models_dir.parent)


def test_registering_the_default_moves_its_export_in(registry: Registry) -> None:
    """The data folder holds the model once: in its version's folder, readable by others."""
    export = exported_default(registry)
    export.chmod(0o600)  # as mkstemp made it
    card = registry.register_default(export)
    assert not export.exists()
    stored = registry.models_dir / card.version / "model.pkl"
    assert stored.read_bytes() == b"exported default" and stored.stat().st_mode & 0o004
    assert registry.path_for(card) == stored


def served_path(served: Served | None) -> Path | None:
    """The learner file a start would serve (these versions were never compiled)."""
    assert served is None or served.compiled is None
    return None if served is None else served.path


def test_the_first_start_registers_the_default_as_v1_and_activates_it(registry: Registry) -> None:
    assert choose_model(bot_settings(registry), registry) is None  # the workers export it
    exported_default(registry)
    card = adopt_default_export(registry)
    assert card.number == 1 and card.is_default
    assert (registry.models_dir / ACTIVE_NAME).read_text() == card.version + "\n"
    assert not list(registry.models_dir.glob("*.pkl"))
    assert served_path(choose_model(bot_settings(registry), registry)) == registry.path_for(card)


def test_an_imported_active_version_is_served_and_the_default_stays_out(
    registry: Registry, tmp_path: Path
) -> None:
    """`training import` into a fresh data folder, then the bot: the import is what it serves."""
    bears = register(registry, tmp_path, b"bears", source="import", activate=True)
    assert served_path(choose_model(bot_settings(registry), registry)) == registry.path_for(bears)
    assert registry.versions() == [bears] and registry.default() is None


def test_next_to_a_version_nobody_activated_the_default_comes_second_and_says_how_to_switch(
    registry: Registry, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bears = register(registry, tmp_path, b"bears", source="import")  # import --no-activate
    assert choose_model(bot_settings(registry), registry) is None
    exported_default(registry)
    with caplog.at_level(logging.WARNING, logger="bot"):
        card = adopt_default_export(registry)
    assert card.number == 2 and card.is_default and registry.active() == card
    assert not (registry.models_dir / ACTIVE_NAME).exists()  # served, but nobody chose it
    assert f"Not active: {bears.version}" in caplog.text
    assert "/use VERSION" in caplog.text and "`python -m training use VERSION`" in caplog.text


def test_an_export_left_beside_the_versions_is_registered_or_removed(registry: Registry) -> None:
    """From a start that stopped before registering it, or from an older release that kept a
    copy: at the next start the model ends up stored once."""
    export = exported_default(registry)
    served = choose_model(bot_settings(registry), registry)
    default = registry.default()
    assert default is not None and registry.active() == default
    assert served_path(served) == registry.path_for(default) and not export.exists()
    exported_default(registry)  # the copy an older release kept
    assert choose_model(bot_settings(registry), registry) == served
    assert not export.exists() and registry.versions() == [default]
