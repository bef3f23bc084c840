"""What this bot runs on: its own version and those of the libraries that shape its answers.

Read from the installed packages' metadata, so the bot process learns torch's version without
importing torch. `/readyz` shows them and `python -m bot --version` prints them.
"""

from __future__ import annotations

import functools
import platform
from importlib import metadata

#: The distributions whose versions are reported, in this order (after Python's).
PACKAGES = ("verdict", "python-telegram-bot", "torch", "torchvision", "fastai", "timm")


@functools.cache
def versions() -> dict[str, str]:
    """{"python": "3.11.7", "verdict": "0.1.0", "torch": "2.14.1", ...}; "not installed" for
    a package that is missing."""
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def version_line() -> str:
    """One line for `--version`: "verdict 0.1.0 (python 3.11.7, torch 2.14.1, ...)"."""
    found = dict(versions())
    own = found.pop("verdict")
    return f"verdict {own} (" + ", ".join(f"{k} {v}" for k, v in found.items()) + ")"
