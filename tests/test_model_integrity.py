"""What a worker unpickles is what was checked: one read, hashed, compared, then loaded."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from model.registry import IntegrityError, Registry, card_sha256
from model.worker import ModelMismatch, model_name, read_checked


def test_read_checked_returns_the_bytes_it_hashed(tmp_path: Path) -> None:
    path = tmp_path / "model.pkl"
    path.write_bytes(b"learner bytes")
    expected = hashlib.sha256(b"learner bytes").hexdigest()
    assert read_checked(path, expected) == (b"learner bytes", expected)
    assert read_checked(path, expected.upper()) == (b"learner bytes", expected)
    assert read_checked(path, None) == (b"learner bytes", expected)


def test_read_checked_refuses_other_bytes_with_both_hashes(tmp_path: Path) -> None:
    path = tmp_path / "model.pkl"
    path.write_bytes(b"learner bytes, changed")
    expected = hashlib.sha256(b"learner bytes").hexdigest()
    actual = hashlib.sha256(b"learner bytes, changed").hexdigest()
    with pytest.raises(ModelMismatch) as caught:
        read_checked(path, expected)
    message = str(caught.value)
    assert str(path) in message and expected[:12] in message and actual[:12] in message
    assert "not loaded" in message


def test_the_model_name_carries_the_hash_of_what_was_loaded(tmp_path: Path) -> None:
    assert model_name(tmp_path / "v3-20260101-000000" / "model.pkl", "ab" * 32) == (
        "v3-20260101-000000@abababab"
    )
    assert model_name(tmp_path / "export.pkl", "cd" * 32) == "export@cdcdcdcd"


def registered(tmp_path: Path) -> tuple[Registry, Path, str]:
    learner = tmp_path / "learner.pkl"
    learner.write_bytes(b"learner")
    registry = Registry(tmp_path / "models")
    card = registry.register(learner, architecture="arch", labels=["a"], image_size=224)
    checked = registry.checked_model(card)
    return registry, checked.path, checked.sha256


def test_checked_model_gives_the_path_and_the_cards_hash(tmp_path: Path) -> None:
    registry, path, sha256 = registered(tmp_path)
    assert sha256 == hashlib.sha256(b"learner").hexdigest()
    assert path == registry.path_for(path.parent.name)
    path.write_bytes(b"changed")
    with pytest.raises(IntegrityError):
        registry.checked_model(path.parent.name)


def test_card_sha256_holds_a_version_file_to_its_card(tmp_path: Path) -> None:
    _, path, sha256 = registered(tmp_path)
    assert card_sha256(path) == sha256
    path.write_bytes(b"changed")  # the card still says what it was
    assert card_sha256(path) == sha256
    assert card_sha256(tmp_path / "learner.pkl") is None  # not a registry file
    assert card_sha256(path.parent / "other.pkl") is None  # not the file the card names
    (path.parent / "card.json").write_text("{not json")
    with pytest.raises(IntegrityError, match="card is unreadable"):
        card_sha256(path)
