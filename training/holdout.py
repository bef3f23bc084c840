"""Proof that a new version is better where users said the old one was wrong.

The disputed photos held out from training (`training.data.hold_out_disputed`) are classified
by the old model (the version active when the fit started) and by the new one; `compare` counts
who got each right, overall and per label, and `format_comparison` prints it. The result goes on
the new version's card as ``metrics["disputed_holdout"]``, which the bot's /retrain message
reads. `compare` and `format_comparison` are plain Python; `predict` runs fastai.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from model.registry import ModelCard, Registry
    from training.data import Dataset

logger = logging.getLogger(__name__)


def compare(
    actual: Sequence[str],
    old: Sequence[str] | None,
    new: Sequence[str],
    old_version: str | None,
) -> dict[str, Any]:
    """How many of the held-out photos (true labels `actual`) the old and the new model got
    right, overall and per label (most photos first). `old` None: the old model could not be
    run. Labels compare by case-folded text (an old notebook model may say "Coffee")."""
    if len(new) != len(actual) or (old is not None and len(old) != len(actual)):
        raise ValueError("one prediction per held-out photo")

    def right(predicted: Sequence[str], indices: list[int]) -> int:
        return sum(predicted[i].casefold() == actual[i].casefold() for i in indices)

    by_label: dict[str, list[int]] = {}
    for index, label in enumerate(actual):
        by_label.setdefault(label, []).append(index)
    everything = list(range(len(actual)))
    result: dict[str, Any] = {
        "images": len(actual),
        "old_version": old_version,
        "old_right": None if old is None else right(old, everything),
        "new_right": right(new, everything),
        "per_label": {
            label: {
                "images": len(indices),
                "old": None if old is None else right(old, indices),
                "new": right(new, indices),
            }
            for label, indices in sorted(
                by_label.items(), key=lambda item: (-len(item[1]), item[0])
            )
        },
        "note": None,
    }
    total = len(actual)
    result["old_accuracy"] = None if old is None or not total else result["old_right"] / total
    result["new_accuracy"] = result["new_right"] / total if total else None
    return result


def _share(right: int | None, total: int) -> str:
    return "–" if right is None or not total else f"{right / total:.0%}"


def format_comparison(comparison: dict[str, Any]) -> list[str]:
    """Lines for people: "On photos users corrected …: old 0% → new 90%", then per label."""
    images = int(comparison.get("images") or 0)
    if not images:
        return [f"On photos users corrected: {comparison.get('note') or 'none held out'}."]
    old_version = comparison.get("old_version") or "the old model"
    lines = [
        f"On photos users corrected ({images} held out from training): "
        f"old {_share(comparison.get('old_right'), images)} → "
        f"new {_share(comparison.get('new_right'), images)} (old: {old_version})"
    ]
    for label, row in comparison.get("per_label", {}).items():
        n = int(row["images"])
        old = "–" if row.get("old") is None else row["old"]
        lines.append(f"  {label}: old {old}/{n} → new {row['new']}/{n}")
    return lines


def predict(learn: Any, paths: Sequence[Path]) -> list[str]:
    """The top label `learn` gives each image, with the learner's own validation transforms."""
    dl = learn.dls.test_dl(list(paths), num_workers=0)
    with learn.no_bar():
        probabilities, _ = learn.get_preds(dl=dl)
    vocab = [str(label) for label in learn.dls.vocab]
    return [vocab[int(index)] for index in probabilities.argmax(dim=1).tolist()]


def compare_on_held_out(
    learn: Any,
    dataset: Dataset,
    registry: Registry,
    old: ModelCard | None,
    out: Callable[[str], None],
) -> dict[str, Any]:
    """Classify the held-out disputed photos with the `old` version and the new learner; the
    comparison for the card (with a note instead when none were held out)."""
    held = dataset.held_out
    if not held:
        note = dataset.holdout_note or "no disputed photos were held out"
        return {"images": 0, "note": note}
    paths = [example.image for example in held]
    new = predict(learn, paths)
    previous = None
    if old is not None:
        try:
            from model.compat import load_learner_compat

            old_learn, _ = load_learner_compat(registry.path_for(old))
            previous = predict(old_learn, paths)
        except Exception as exc:  # a broken old version must not cost the new one
            logger.warning("could not run the old model %s on held-out photos", old.version)
            out(f"The old model {old.version} could not classify the held-out photos: {exc}")
    return compare(
        [example.label for example in held], previous, new, old.version if old else None
    )
