"""The packages keep their boundaries: read statically from every import statement.

The bot process must stay light (no torch, fastai, timm, torchvision, and no training code);
`model/` and `training/` know nothing of Telegram; `sandbox/` knows nothing of the product.
A run-time check of a real bot process's `sys.modules` lives in tests/test_bot.py; this one
also covers imports inside functions and branches that a test run may never reach.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

FORBIDDEN = {
    "bot": {"training", "torch", "fastai", "timm", "torchvision", "fastcore", "onnx"},
    "model": {"telegram", "bot", "training"},
    "training": {"telegram", "bot"},
    # The stand-in Bot API stays apart from the product: it shares only the token redaction.
    "sandbox": {"bot", "model", "training", "telegram", "torch", "fastai", "timm"},
}
ALLOWED = {"sandbox": {"bot.logs"}}


def imported_modules(path: Path) -> set[str]:
    """Every module an import statement in `path` names (absolute imports only)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def violations(package: str) -> list[str]:
    """`file: module` for each import in `package` of a forbidden top-level module."""
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for name in sorted(imported_modules(path)):
            if name.split(".")[0] in FORBIDDEN[package] and name not in ALLOWED.get(package, ()):
                found.append(f"{path.relative_to(ROOT)}: {name}")
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_nothing_it_must_not(package: str) -> None:
    assert violations(package) == []


def test_the_check_sees_imports_inside_functions(tmp_path: Path) -> None:
    """The reader is not fooled by a lazy import: it would catch `bot/admin.py`'s old one."""
    source = tmp_path / "lazy.py"
    source.write_text(
        "def export():\n    from training.export import export_feedback\n    import torch.nn\n"
    )
    assert imported_modules(source) == {"training.export", "torch.nn"}
