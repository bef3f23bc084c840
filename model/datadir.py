"""The data folder, DATA_DIR: where it is, read the one way the bot and `training` share.

Settings come from the process environment over the file `.env` in the working directory; an
empty value counts as unset. Under DATA_DIR live `models/` (the registry) and `feedback/` (the
feedback log and its images).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from dotenv import dotenv_values

DEFAULT_DATA_DIR = Path("data")
ENV_FILE = Path(".env")


def read_environment(
    environ: Mapping[str, str] | None = None, env_file: Path | None = ENV_FILE
) -> dict[str, str]:
    """`environ` (default: the process environment) over the values in `env_file`."""
    values: dict[str, str] = {}
    if env_file is not None and env_file.is_file():
        values.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
    values.update(os.environ if environ is None else environ)
    return values


def data_dir(values: Mapping[str, str]) -> Path:
    """DATA_DIR from settings `values`, else `data`."""
    value = values.get("DATA_DIR", "").strip()
    return Path(value) if value else DEFAULT_DATA_DIR


def models_dir(data_dir: Path) -> Path:
    """Where the registry keeps model versions (and the exported default)."""
    return data_dir / "models"
