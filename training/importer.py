"""`python -m training import FILE`: register a learner exported elsewhere as a model version.

The file is unpickled once, in a separate process (unpickling runs code from the file: only
import files you trust), to check that it loads and to summarise what it contains.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from model.registry import ModelCard, Registry

INSPECT_TIMEOUT_S = 600


class ImportFailed(Exception):
    """The file could not be loaded as a servable learner; the message says why."""


def inspect_learner(path: Path) -> dict[str, Any]:
    """Load `path` in a child process; its summary (architecture, labels, stubbed names…)."""
    result = subprocess.run(
        [sys.executable, "-m", "training.importer", str(path)],
        capture_output=True,
        text=True,
        timeout=INSPECT_TIMEOUT_S,
        check=False,
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode != 0 or not lines:
        detail = (result.stderr.strip().splitlines() or ["it exited without a word"])[-1]
        raise ImportFailed(f"{path.name} does not load as a fastai learner: {detail}")
    summary: dict[str, Any] = json.loads(lines[-1])
    if "error" in summary:
        raise ImportFailed(str(summary["error"]))
    return summary


def import_learner(
    path: Path,
    registry: Registry,
    *,
    activate: bool = True,
    compile: bool = True,
    out: Callable[[str], None] | None = None,
) -> ModelCard:
    """Check, summarise, register and compile `path` (then activate it); the new version's
    card. A learner that does not compile is registered all the same: its card says why."""
    if not path.is_file():
        raise ImportFailed(f"no such file: {path}")
    summary = inspect_learner(path)
    size = summary.get("input_size") or []
    card = registry.register(
        path,
        architecture=str(summary["architecture"]),
        labels=[str(label) for label in summary["labels"]],
        image_size=int(size[0]) if size else None,
        source="import",
        params={
            "imported_from": path.name,
            "stubbed": summary["stubbed"],
            "windows_paths": summary["windows_paths"],
            "loss": summary["loss"],
            "fastai_version_loaded_with": summary["fastai_version_loaded_with"],
            "torch_version_loaded_with": summary["torch_version_loaded_with"],
        },
        activate=False,
    )
    if compile:
        from training.compile import compile_registered

        # No calibration images come with an import: its int8 form is "not made".
        card = compile_registered(registry, card, out=out or (lambda line: None))
    if activate:
        card = registry.activate(card)
    return card


def describe(card: ModelCard) -> str:
    """What was imported, for the command line."""
    stubbed = card.params.get("stubbed") or []
    labels = ", ".join(card.labels[:8]) + (" …" if len(card.labels) > 8 else "")
    lines = [
        f"imported {card.version}: {card.architecture}, {len(card.labels)} labels ({labels}), "
        f"input {card.image_size or '?'} px, sha256 {card.sha256[:12]}…",
    ]
    if stubbed:
        lines.append(
            "stubbed (defined in the exporting notebook, not needed for inference): "
            + ", ".join(stubbed)
        )
    if card.params.get("windows_paths"):
        lines.append(f"converted {card.params['windows_paths']} Windows path(s)")
    return "\n".join(lines)


def _main(path: str) -> int:
    """Child process: load the file and print its summary as one JSON line."""
    import logging
    import warnings

    warnings.simplefilter("ignore")
    logging.basicConfig(level=logging.ERROR)
    from model.compat import UnsupportedModel, load_learner_compat, summarize

    try:
        learn, report = load_learner_compat(Path(path))
    except UnsupportedModel as exc:
        print(json.dumps({"error": str(exc)}))
        return 0
    print(json.dumps(summarize(learn, report)))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1]))
