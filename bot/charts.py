"""The /stats chart: answers per label (last 24 h and since start) and the accuracy verdicts imply.

Rendered with matplotlib's Agg backend on `matplotlib.figure.Figure` objects, never pyplot, so
that no figure outlives a call and a worker thread (`asyncio.to_thread`) can draw it. matplotlib
is imported when the first chart is drawn, not when the bot starts.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.figure import Figure

WIDTH_PX = 800
HEIGHT_PX = 600
DPI = 100
TOP_LABELS = 10
MIN_ROWS = 6
MAX_LABEL_CHARS = 22
EMPTY_TEXT = "no photos yet"

COLOR_DAY = "#1f77b4"
COLOR_ALL = "#aec7e8"
COLOR_ACCURACY = "#2ca02c"


def _short(label: str) -> str:
    return label if len(label) <= MAX_LABEL_CHARS else label[: MAX_LABEL_CHARS - 1] + "…"


def top_labels(per_label_24h: dict[str, int], per_label_all: dict[str, int]) -> list[str]:
    """The labels the chart shows, most answered first (by the larger of the two counts)."""
    labels = {
        label
        for counts in (per_label_24h, per_label_all)
        for label, count in counts.items()
        if count > 0
    }

    def rank(label: str) -> tuple[int, int, str]:
        day, total = per_label_24h.get(label, 0), per_label_all.get(label, 0)
        return (-max(day, total), -(day + total), label)

    return sorted(labels, key=rank)[:TOP_LABELS]


def stats_chart(
    per_label_24h: dict[str, int],
    per_label_all: dict[str, int],
    accuracy: dict[str, tuple[int, int]],
    title: str,
) -> bytes:
    """An 800×600 PNG: answers per label (24 h beside since start), and implied accuracy."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(WIDTH_PX / DPI, HEIGHT_PX / DPI), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    figure.suptitle(title, fontsize=15, fontweight="bold")
    labels = top_labels(per_label_24h, per_label_all)
    if not labels:
        axes = figure.add_subplot()
        axes.set_axis_off()
        axes.text(0.5, 0.5, EMPTY_TEXT, ha="center", va="center", fontsize=24, color="#777777")
        return _png(figure)

    judged = {
        label: accuracy[label] for label in labels if label in accuracy and accuracy[label][1] > 0
    }
    if judged:
        answers_axes, accuracy_axes = figure.subplots(
            1, 2, sharey=True, gridspec_kw={"width_ratios": (3, 2)}
        )
    else:
        answers_axes, accuracy_axes = figure.add_subplot(), None

    # Most answered at the top: barh draws the first row at the bottom.
    rows = list(range(len(labels)))[::-1]
    height = 0.4
    day = [per_label_24h.get(label, 0) for label in labels]
    total = [per_label_all.get(label, 0) for label in labels]
    day_bars = answers_axes.barh(
        [row + height / 2 for row in rows], day, height, color=COLOR_DAY, label="last 24 h"
    )
    all_bars = answers_axes.barh(
        [row - height / 2 for row in rows], total, height, color=COLOR_ALL, label="since start"
    )
    answers_axes.bar_label(day_bars, padding=3, fontsize=10)
    answers_axes.bar_label(all_bars, padding=3, fontsize=10)
    answers_axes.set_yticks(rows, [_short(label) for label in labels], fontsize=12)
    answers_axes.set_xlim(0, max(max(day), max(total)) * 1.18 + 1)
    answers_axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    # Room for at least MIN_ROWS labels, so that one or two labels do not make giant bars.
    answers_axes.set_ylim(max(rows) + 0.6 - max(len(rows), MIN_ROWS), max(rows) + 0.6)
    answers_axes.set_title("Answers per label", fontsize=13)
    answers_axes.legend(loc="lower right", fontsize=10, frameon=False)
    answers_axes.tick_params(axis="x", labelsize=10)
    answers_axes.spines[["top", "right"]].set_visible(False)

    if accuracy_axes is not None:
        shown = [row for row, label in zip(rows, labels, strict=True) if label in judged]
        shares = [100 * judged[label][0] / judged[label][1] for label in labels if label in judged]
        bars = accuracy_axes.barh(shown, shares, 0.6, color=COLOR_ACCURACY)
        accuracy_axes.bar_label(
            bars,
            labels=[
                f"{share:.0f}% ({judged[label][0]}/{judged[label][1]})"
                for share, label in zip(shares, (lb for lb in labels if lb in judged), strict=True)
            ],
            padding=3,
            fontsize=10,
        )
        accuracy_axes.set_xlim(0, 175)
        accuracy_axes.set_xticks([0, 50, 100], ["0%", "50%", "100%"], fontsize=10)
        accuracy_axes.set_title("Implied accuracy", fontsize=13)
        accuracy_axes.tick_params(axis="y", left=False)
        accuracy_axes.spines[["top", "right"]].set_visible(False)
    return _png(figure)


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    # No bbox_inches="tight": the size must stay exactly WIDTH_PX × HEIGHT_PX.
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()
