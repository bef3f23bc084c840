"""What a fit reports: validation metrics per label, a confusion matrix and the top losses.

`metrics_from_confusion` and `format_metrics` are plain Python (tested directly);
`interpret` runs fastai's `ClassificationInterpretation` and draws the two PNGs with
matplotlib's Agg backend (no display needed).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CONFUSION_MATRIX_PNG = "confusion_matrix.png"
TOP_LOSSES_PNG = "top_losses.png"
TOP_LOSSES_SHOWN = 9


def metrics_from_confusion(
    confusion: Sequence[Sequence[int]], labels: Sequence[str]
) -> dict[str, Any]:
    """Accuracy, error rate and per-label precision/recall from a confusion matrix.

    Rows are the actual labels and columns the predicted ones (fastai's layout). A precision
    with no predictions of that label, or a recall with no images of it, is None.
    """
    size = len(labels)
    if len(confusion) != size or any(len(row) != size for row in confusion):
        raise ValueError(f"the confusion matrix is not {size}×{size}")
    total = sum(sum(row) for row in confusion)
    correct = sum(confusion[i][i] for i in range(size))
    per_label = {}
    for i, label in enumerate(labels):
        actual = sum(confusion[i])
        predicted = sum(confusion[row][i] for row in range(size))
        per_label[label] = {
            "precision": confusion[i][i] / predicted if predicted else None,
            "recall": confusion[i][i] / actual if actual else None,
            "images": actual,
        }
    accuracy = correct / total if total else math.nan
    return {
        "accuracy": accuracy,
        "error_rate": 1 - accuracy if total else math.nan,
        "valid_images": total,
        "per_label": per_label,
        "confusion_matrix": [list(map(int, row)) for row in confusion],
    }


def _percent(value: float | None) -> str:
    return "–" if value is None or math.isnan(value) else f"{value:.1%}"


def format_metrics(metrics: dict[str, Any]) -> list[str]:
    """Lines for people: the headline numbers, then a precision/recall table per label."""
    lines = [
        f"Validation ({metrics['valid_images']} images): accuracy "
        f"{_percent(metrics['accuracy'])}, error rate {_percent(metrics['error_rate'])}"
        + (f", loss {metrics['valid_loss']:.4f}" if metrics.get("valid_loss") is not None else "")
    ]
    per_label: dict[str, dict[str, Any]] = metrics["per_label"]
    width = max([len("label"), *(len(label) for label in per_label)])
    lines.append(f"  {'label':<{width}}  precision  recall  images")
    for label, row in per_label.items():
        lines.append(
            f"  {label:<{width}}  {_percent(row['precision']):>9}  "
            f"{_percent(row['recall']):>6}  {row['images']:>6}"
        )
    return lines


@dataclass(frozen=True, slots=True)
class Miss:
    """One of the validation images with the highest loss."""

    item: Any  # what the validation set holds: here, the path of the image
    actual: str
    predicted: str
    probability: float  # of the predicted label
    loss: float


def interpret(learn: Any, out_dir: Path) -> tuple[dict[str, Any], dict[str, Path], list[Miss]]:
    """Validation metrics, the two PNGs under `out_dir`, and the highest-loss images.

    One pass over the validation set (fastai's `ClassificationInterpretation`).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from fastai.interpret import ClassificationInterpretation

    # One pass over the validation set for everything but the plots.
    dl = learn.dls.valid.new(shuffle=False, drop_last=False)
    preds, targs, decoded, losses = learn.get_preds(dl=dl, with_decoded=True, with_loss=True)
    interp = ClassificationInterpretation(learn, dl, losses)
    labels = [str(label) for label in learn.dls.vocab]
    actual_ids = [int(t) for t in targs.view(-1).tolist()]
    predicted_ids = [int(d) for d in decoded.view(-1).tolist()]
    confusion = [[0] * len(labels) for _ in labels]
    for actual, predicted in zip(actual_ids, predicted_ids, strict=True):
        confusion[actual][predicted] += 1
    metrics = metrics_from_confusion(confusion, labels)
    metrics["valid_loss"] = float(losses.mean()) if len(losses) else None

    out_dir.mkdir(parents=True, exist_ok=True)
    plots = {}
    size = max(4.0, 0.6 * len(labels) + 3)
    interp.plot_confusion_matrix(figsize=(size, size), dpi=100)
    plots["confusion_matrix"] = out_dir / CONFUSION_MATRIX_PNG
    plt.savefig(plots["confusion_matrix"], bbox_inches="tight")
    plt.close("all")

    shown = min(TOP_LOSSES_SHOWN, len(losses))
    worst = []
    if shown:
        rows = math.ceil(math.sqrt(shown))
        interp.plot_top_losses(shown, nrows=rows, figsize=(3.2 * rows, 3.4 * rows))
        plots["top_losses"] = out_dir / TOP_LOSSES_PNG
        plt.savefig(plots["top_losses"], bbox_inches="tight")
        plt.close("all")
        top, indices = losses.topk(shown)
        for loss, index in zip(top.tolist(), indices.tolist(), strict=True):
            worst.append(
                Miss(
                    dl.items[index],
                    labels[actual_ids[index]],
                    labels[predicted_ids[index]],
                    float(preds[index].max()),
                    float(loss),
                )
            )
    return metrics, plots, worst
