"""Inline keyboards and their callback data: pure functions, so tests can call them directly.

Callback data is at most 64 bytes, so it carries only the prediction id and a short action;
everything else is read back from the feedback log, which also refuses forged or stale ids.
  v:<id>:r         right             v:<id>:w         wrong: ask for the right label
  v:<id>:c:<i>     the i-th candidate                 v:<id>:p:<n>     browse labels, page n
  v:<id>:l:<i>     the model's label number i         v:<id>:t         type it ("Something else…")
  v:<id>:u         not sure          v:<id>:b         back to Right/Wrong
  v:<id>:x         no-op (the page counter)
  f:<user>:y / f:<user>:n   /forget confirmation
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from telegram import InlineKeyboardButton, InlineKeyboardMarkup

from bot.replies import percent
from model.types import LabelScore

LABELS_PER_PAGE = 10
_VERDICT = re.compile(r"^v:([A-Za-z0-9_-]{1,32}):([rwtubx]|[cpl]:\d{1,6})$")
_FORGET = re.compile(r"^f:(\d{1,20}):([yn])$")


@dataclass(frozen=True, slots=True)
class VerdictAction:
    """A parsed verdict button: which prediction, what to do, and its number argument."""

    prediction_id: str
    action: str
    number: int = 0


def parse_verdict(data: str) -> VerdictAction | None:
    """The action behind `data`, or None when it is not well-formed (forged or foreign)."""
    match = _VERDICT.match(data)
    if match is None:
        return None
    prediction_id, action = match.groups()
    if ":" in action:
        kind, number = action.split(":")
        return VerdictAction(prediction_id, kind, int(number))
    return VerdictAction(prediction_id, action)


def parse_forget(data: str) -> tuple[int, bool] | None:
    """(user id, confirmed) for a /forget button, or None."""
    match = _FORGET.match(data)
    if match is None:
        return None
    return int(match.group(1)), match.group(2) == "y"


def _button(text: str, data: str) -> InlineKeyboardButton:
    return InlineKeyboardButton(text, callback_data=data)


def verdict_keyboard(prediction_id: str) -> InlineKeyboardMarkup:
    """[✅ Right] [❌ Wrong] under a prediction."""
    return InlineKeyboardMarkup(
        [
            [
                _button("✅ Right", f"v:{prediction_id}:r"),
                _button("❌ Wrong", f"v:{prediction_id}:w"),
            ]
        ]
    )


def album_keyboard(items: Sequence[tuple[int, str]]) -> InlineKeyboardMarkup:
    """Right/Wrong per photo of an album: (number in the album, prediction id)."""
    return InlineKeyboardMarkup(
        [
            [
                _button(f"{number} ✅", f"v:{prediction_id}:r"),
                _button(f"{number} ❌", f"v:{prediction_id}:w"),
            ]
            for number, prediction_id in items
        ]
    )


def correction_keyboard(
    prediction_id: str, scores: Sequence[LabelScore], can_browse: bool
) -> InlineKeyboardMarkup:
    """The other candidates, the labels the model knows, "Something else…" and "Not sure"."""
    rows = [
        [_button(f"{score.label} ({percent(score.probability)})", f"v:{prediction_id}:c:{i}")]
        for i, score in enumerate(scores)
        if i > 0
    ]
    extra = [_button("✏️ Something else…", f"v:{prediction_id}:t")]
    if can_browse:
        extra.insert(0, _button("📚 All labels", f"v:{prediction_id}:p:0"))
    rows.append(extra)
    rows.append(
        [_button("🤷 Not sure", f"v:{prediction_id}:u"), _button("« Back", f"v:{prediction_id}:b")]
    )
    return InlineKeyboardMarkup(rows)


def browse_order(labels: Sequence[str]) -> list[int]:
    """Label numbers in the order a person looks for them: alphabetical, case-insensitive."""
    return sorted(range(len(labels)), key=lambda i: (labels[i].casefold(), i))


def pages(labels: Sequence[str]) -> int:
    """How many pages the label list takes."""
    return max(1, -(-len(labels) // LABELS_PER_PAGE))


def labels_keyboard(prediction_id: str, labels: Sequence[str], page: int) -> InlineKeyboardMarkup:
    """One page of the model's labels, two per row, with page navigation."""
    total = pages(labels)
    page = min(max(page, 0), total - 1)
    order = browse_order(labels)[page * LABELS_PER_PAGE : (page + 1) * LABELS_PER_PAGE]
    buttons = [_button(labels[i], f"v:{prediction_id}:l:{i}") for i in order]
    rows = [buttons[i : i + 2] for i in range(0, len(buttons), 2)]
    navigation = []
    if page > 0:
        navigation.append(_button("‹ Prev", f"v:{prediction_id}:p:{page - 1}"))
    navigation.append(_button(f"{page + 1}/{total}", f"v:{prediction_id}:x"))
    if page < total - 1:
        navigation.append(_button("Next ›", f"v:{prediction_id}:p:{page + 1}"))
    rows.append(navigation)
    rows.append(
        [
            _button("✏️ Something else…", f"v:{prediction_id}:t"),
            _button("« Back", f"v:{prediction_id}:w"),
        ]
    )
    return InlineKeyboardMarkup(rows)


def typing_keyboard(prediction_id: str) -> InlineKeyboardMarkup:
    """While waiting for a typed label: a way back."""
    return InlineKeyboardMarkup([[_button("« Back", f"v:{prediction_id}:w")]])


def forget_keyboard(user_id: int) -> InlineKeyboardMarkup:
    """/forget confirmation."""
    return InlineKeyboardMarkup(
        [[_button("🗑 Yes, delete", f"f:{user_id}:y"), _button("Keep it", f"f:{user_id}:n")]]
    )
