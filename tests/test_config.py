"""Settings come from the environment over `.env`, and bad values fail loudly by name."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import ConfigError, Secret, Settings, load_settings

TOKEN = "123456789:AAHfakeTOKENfor-tests_only"


def test_defaults_without_anything(tmp_path: Path) -> None:
    settings = load_settings({}, env_file=None)
    assert settings.telegram_token is None
    assert settings.telegram_api_url == "https://api.telegram.org"
    assert settings.admin_ids == frozenset()
    assert settings.model_path is None


def test_values_are_parsed(tmp_path: Path) -> None:
    model = tmp_path / "export.pkl"
    model.write_bytes(b"x")
    settings = load_settings(
        {
            "TELEGRAM_TOKEN": TOKEN,
            "TELEGRAM_API_URL": "http://localhost:8081/",
            "ADMIN_IDS": "12, 34 56",
            "DATA_DIR": str(tmp_path / "data"),
            "MODEL_PATH": str(model),
            "CONFIDENCE_THRESHOLD": "40%",
            "TOP_K": "5",
        },
        env_file=None,
    )
    assert settings.telegram_token == Secret(TOKEN)
    assert settings.telegram_api_url == "http://localhost:8081"
    assert settings.admin_ids == frozenset({12, 34, 56})
    assert settings.data_dir == tmp_path / "data"
    assert settings.models_dir == tmp_path / "data" / "models"
    assert settings.model_path == model
    assert settings.confidence_threshold == pytest.approx(0.4)
    assert settings.top_k == 5


def test_environment_wins_over_env_file(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("TOP_K=4\nCONFIDENCE_THRESHOLD=0.7\n")
    settings = load_settings({"TOP_K": "2"}, env_file=env_file)
    assert settings.top_k == 2
    assert settings.confidence_threshold == pytest.approx(0.7)


def test_every_bad_value_is_reported_by_name(tmp_path: Path) -> None:
    """All errors at once, each naming its variable."""
    with pytest.raises(ConfigError) as caught:
        load_settings(
            {
                "TELEGRAM_API_URL": "api.telegram.org",
                "ADMIN_IDS": "12,@alice",
                "MODEL_PATH": str(tmp_path / "missing.pkl"),
                "CONFIDENCE_THRESHOLD": "high",
                "TOP_K": "0",
                "LOG_LEVEL": "chatty",
            },
            env_file=None,
        )
    message = str(caught.value)
    for name in (
        "TELEGRAM_API_URL",
        "ADMIN_IDS",
        "MODEL_PATH",
        "CONFIDENCE_THRESHOLD",
        "TOP_K",
        "LOG_LEVEL",
    ):
        assert name in message
    assert "@alice" in message


def test_a_malformed_token_is_refused_without_echoing_it() -> None:
    bad = "123456789 AAHsecretButBroken"
    with pytest.raises(ConfigError) as caught:
        load_settings({"TELEGRAM_TOKEN": bad}, env_file=None)
    assert "TELEGRAM_TOKEN" in str(caught.value)
    assert "AAHsecretButBroken" not in str(caught.value)


def test_the_token_never_prints() -> None:
    settings = Settings(telegram_token=Secret(TOKEN))
    assert TOKEN not in repr(settings)
    assert TOKEN not in str(settings.telegram_token)
    assert settings.telegram_token is not None and settings.telegram_token.get() == TOKEN


def test_the_mode_names_sandbox_polling_or_webhook() -> None:
    """For /readyz; `sandbox` is set by `python -m bot` only, never from the environment."""
    assert load_settings({"SANDBOX": "1"}, env_file=None).mode == "polling"
    assert Settings(sandbox=True).mode == "sandbox"
    hooked = {"WEBHOOK_URL": "https://example.org/hook", "WEBHOOK_SECRET": "s"}
    assert load_settings({"TELEGRAM_TOKEN": TOKEN, **hooked}, env_file=None).mode == "webhook"


def test_env_example_documents_every_setting() -> None:
    """Every variable `load_settings` reads is in .env.example."""
    import inspect

    import bot.config

    source = inspect.getsource(bot.config.load_settings)
    import re

    names = set(re.findall(r'"([A-Z][A-Z_]+)"', source))
    example = (Path(__file__).parent.parent / ".env.example").read_text()
    documented = set(re.findall(r"^#?\s*([A-Z][A-Z_]+)=", example, flags=re.MULTILINE))
    assert names, "no settings found"
    assert names <= documented, f"undocumented: {sorted(names - documented)}"
