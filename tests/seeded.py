"""A models folder holding the bundled default registered and compiled, made once per test run
and copied into the data folder of every bot the tests start.

What a real first start does — the workers export the default, the bot registers it and
compiles it in the background — takes a minute of CPU; twenty bot processes doing it side by
side would slow every test. Tests of that first start pass `seed=False` to `start_bot`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
_made: Path | None = None


def compiled_default_models() -> Path:
    """The models folder (made on first call, by `python -m training compile default`)."""
    global _made
    if _made is None:
        data = Path(tempfile.mkdtemp(prefix="verdict-test-seed-"))
        result = subprocess.run(
            [sys.executable, "-m", "training", "compile", "default", "--data-dir", str(data)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=600,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        if result.returncode != 0:
            raise RuntimeError(f"compiling the default failed:\n{result.stdout}{result.stderr}")
        _made = data / "models"
    return _made


def seed_data_dir(data_dir: Path) -> None:
    """Put a copy of the compiled default into `data_dir/models` as the active version (a
    copy, not hard links: tests tamper with model files to see them refused)."""
    source = compiled_default_models()
    target = data_dir / "models"
    if target.exists():
        return
    data_dir.mkdir(parents=True, exist_ok=True)
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("*.lock"))
