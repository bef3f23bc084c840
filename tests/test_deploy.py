"""The Dockerfile and compose file, checked statically: no Docker engine runs here."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent


def compose() -> dict[str, Any]:
    data = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return data


def dockerfile() -> str:
    return (REPO / "Dockerfile").read_text()


def test_compose_has_the_bot_with_env_file_volume_healthcheck_and_restart() -> None:
    services = compose()["services"]
    bot = services["bot"]
    assert bot["env_file"] == ".env"
    assert any(v.endswith(":/data") for v in bot["volumes"])
    assert "verdict-data" in compose()["volumes"]
    assert bot["environment"]["DATA_DIR"] == "/data"
    assert "healthz" in " ".join(bot["healthcheck"]["test"])
    assert bot["restart"] in ("unless-stopped", "always")
    limits = bot["deploy"]["resources"]["limits"]
    assert float(limits["cpus"]) >= 1 and limits["memory"]
    assert bot["stop_grace_period"]


def test_compose_gpu_profile_reserves_a_gpu_and_uses_cuda_wheels() -> None:
    gpu = compose()["services"]["bot-gpu"]
    assert gpu["profiles"] == ["gpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]
    assert "/whl/cu" in gpu["build"]["args"]["TORCH_INDEX"]


def test_dockerfile_uses_cpu_wheels_a_dependency_layer_and_a_non_root_user() -> None:
    text = dockerfile()
    assert re.search(r"^FROM python:\$\{PYTHON_VERSION\}-slim", text, re.MULTILINE)
    assert "ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu" in text
    assert '--index-url "${TORCH_INDEX}" torch torchvision' in text
    # pyproject.toml is copied (and installed) before the sources: a cached dependency layer.
    assert text.index("COPY pyproject.toml") < text.index("COPY bot ")
    user = re.findall(r"^USER (\S+)", text, re.MULTILINE)
    assert user and user[-1] not in ("root", "0")
    assert "HEALTHCHECK" in text and "/healthz" in text
    assert 'CMD ["python", "-m", "bot"]' in text


def test_no_secret_is_baked_into_the_image() -> None:
    text = dockerfile()
    assert "TELEGRAM_TOKEN" not in text and "WEBHOOK_SECRET" not in text
    assert ".env" in (REPO / ".dockerignore").read_text().split()


def test_every_env_example_key_reaches_the_container_through_env_file() -> None:
    """Nothing in compose overrides the operator's token or admin ids."""
    environment = compose()["services"]["bot"]["environment"]
    assert not {"TELEGRAM_TOKEN", "ADMIN_IDS", "WEBHOOK_SECRET"} & set(environment)


def test_the_sandbox_stays_out_of_the_image() -> None:
    """sandbox/ is for development: not copied, not even in the build context."""
    copied = re.findall(r"^COPY\s+(.+?)\s+\S+$", dockerfile(), re.MULTILINE)
    assert copied and not [c for c in copied if "sandbox" in c or c.split()[0] == "."]
    assert "sandbox" in (REPO / ".dockerignore").read_text().split()
