"""Inline keyboards: pure functions, so tests can call them directly.

Every button's callback data is built by `bot/callbacks.py`, which also parses it back.
"""

from __future__ import annotations

from collections.abc import Sequence

from telegram import InlineKeyboardButton, InlineKeyboardMarkup

from bot.callbacks import (
    DisputesPage,
    ForgetButton,
    LabelAction,
    LabelButton,
    ModelButton,
    ReviewAction,
    ReviewButton,
    VerdictAction,
    VerdictButton,
)
from bot.replies import percent
from model.types import LabelScore

LABELS_PER_PAGE = 10


def _button(
    text: str,
    data: VerdictButton | ForgetButton | DisputesPage | ReviewButton | ModelButton | LabelButton,
) -> InlineKeyboardButton:
    return InlineKeyboardButton(text, callback_data=data.encode())


def _verdict(prediction_id: str, action: VerdictAction, number: int = 0) -> VerdictButton:
    return VerdictButton(prediction_id, action, number)


def verdict_keyboard(prediction_id: str) -> InlineKeyboardMarkup:
    """[✅ Right] [❌ Wrong] under a prediction."""
    return InlineKeyboardMarkup(
        [
            [
                _button("✅ Right", _verdict(prediction_id, VerdictAction.RIGHT)),
                _button("❌ Wrong", _verdict(prediction_id, VerdictAction.WRONG)),
            ]
        ]
    )


def album_keyboard(items: Sequence[tuple[int, str]]) -> InlineKeyboardMarkup:
    """Right/Wrong per photo of an album: (number in the album, prediction id)."""
    return InlineKeyboardMarkup(
        [
            [
                _button(f"{number} ✅", _verdict(prediction_id, VerdictAction.RIGHT)),
                _button(f"{number} ❌", _verdict(prediction_id, VerdictAction.WRONG)),
            ]
            for number, prediction_id in items
        ]
    )


def correction_keyboard(
    prediction_id: str, scores: Sequence[LabelScore], can_browse: bool
) -> InlineKeyboardMarkup:
    """The other candidates, the labels the model knows, "Something else…" and "Not sure"."""
    rows = [
        [
            _button(
                f"{score.label} ({percent(score.probability)})",
                _verdict(prediction_id, VerdictAction.CANDIDATE, i),
            )
        ]
        for i, score in enumerate(scores)
        if i > 0
    ]
    extra = [_button("✏️ Something else…", _verdict(prediction_id, VerdictAction.TYPE))]
    if can_browse:
        extra.insert(0, _button("📚 All labels", _verdict(prediction_id, VerdictAction.PAGE, 0)))
    rows.append(extra)
    rows.append(
        [
            _button("🤷 Not sure", _verdict(prediction_id, VerdictAction.UNSURE)),
            _button("« Back", _verdict(prediction_id, VerdictAction.BACK)),
        ]
    )
    return InlineKeyboardMarkup(rows)


def browse_order(labels: Sequence[str]) -> list[int]:
    """Label numbers in the order a person looks for them: alphabetical, case-insensitive."""
    return sorted(range(len(labels)), key=lambda i: (labels[i].casefold(), i))


def pages(labels: Sequence[object]) -> int:
    """How many pages the label list (or a list of label buttons) takes."""
    return max(1, -(-len(labels) // LABELS_PER_PAGE))


def labels_keyboard(prediction_id: str, labels: Sequence[str], page: int) -> InlineKeyboardMarkup:
    """One page of the model's labels, two per row, with page navigation."""
    total = pages(labels)
    page = min(max(page, 0), total - 1)
    order = browse_order(labels)[page * LABELS_PER_PAGE : (page + 1) * LABELS_PER_PAGE]
    buttons = [_button(labels[i], _verdict(prediction_id, VerdictAction.LABEL, i)) for i in order]
    rows = [buttons[i : i + 2] for i in range(0, len(buttons), 2)]
    navigation = []
    if page > 0:
        navigation.append(_button("‹ Prev", _verdict(prediction_id, VerdictAction.PAGE, page - 1)))
    navigation.append(_button(f"{page + 1}/{total}", _verdict(prediction_id, VerdictAction.NOOP)))
    if page < total - 1:
        navigation.append(_button("Next ›", _verdict(prediction_id, VerdictAction.PAGE, page + 1)))
    rows.append(navigation)
    rows.append(
        [
            _button("✏️ Something else…", _verdict(prediction_id, VerdictAction.TYPE)),
            _button("« Back", _verdict(prediction_id, VerdictAction.WRONG)),
        ]
    )
    return InlineKeyboardMarkup(rows)


def typing_keyboard(prediction_id: str) -> InlineKeyboardMarkup:
    """While waiting for a typed label: a way back."""
    return InlineKeyboardMarkup(
        [[_button("« Back", _verdict(prediction_id, VerdictAction.WRONG))]]
    )


def forget_keyboard(user_id: int) -> InlineKeyboardMarkup:
    """/forget confirmation."""
    return InlineKeyboardMarkup(
        [
            [
                _button("🗑 Yes, delete", ForgetButton(user_id, confirmed=True)),
                _button("Keep it", ForgetButton(user_id, confirmed=False)),
            ]
        ]
    )


def disputes_keyboard(offset: int, per_page: int, total: int) -> InlineKeyboardMarkup | None:
    """‹ Newer / Older › under a page of /disputes, when there is more to see."""
    buttons = []
    if offset > 0:
        buttons.append(_button("‹ Newer", DisputesPage(max(0, offset - per_page))))
    if offset + per_page < total:
        buttons.append(_button("Older ›", DisputesPage(offset + per_page)))
    return InlineKeyboardMarkup([buttons]) if buttons else None


def review_keyboard(
    prediction_id: str, scores: Sequence[LabelScore], proposed: str | None
) -> InlineKeyboardMarkup:
    """Confirm the proposed label, pick another candidate, discard, or stop reviewing."""
    rows = []
    if proposed:
        confirm = ReviewButton(prediction_id, ReviewAction.CONFIRM)
        rows.append([_button(f"✅ Confirm “{proposed}”"[:60], confirm)])
    rows.append(
        [
            _button(score.label[:40], ReviewButton(prediction_id, ReviewAction.RELABEL, i))
            for i, score in enumerate(scores)
            if score.label != proposed
        ][:3]
    )
    rows.append(
        [
            _button("🗑 Discard", ReviewButton(prediction_id, ReviewAction.DISCARD)),
            _button("⏭ Stop", ReviewButton(prediction_id, ReviewAction.STOP)),
        ]
    )
    return InlineKeyboardMarkup([row for row in rows if row])


def retrained_keyboard(version: str) -> InlineKeyboardMarkup:
    """[Use it] [Keep current] under a finished retraining."""
    return InlineKeyboardMarkup(
        [[_button("Use it", ModelButton(version)), _button("Keep current", ModelButton(None))]]
    )


# ---------------------------------------------------------------------------- /labels

BUTTON_LABEL_CHARS = 40


def _short(label: str) -> str:
    return label if len(label) <= BUTTON_LABEL_CHARS else label[: BUTTON_LABEL_CHARS - 1] + "…"


def _counted(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def proposal_keyboard(
    proposal_id: str, label: str, photos: int, users: int, close: Sequence[tuple[str, str]]
) -> InlineKeyboardMarkup:
    """Add, merge into a close spelling (label, label id) or any label, reject."""
    add = LabelButton(proposal_id, LabelAction.ADD)
    rows = [
        [
            _button(
                f"➕ Add “{_short(label)}” ({_counted(photos, 'photo')}, "
                f"{_counted(users, 'user')})",
                add,
            )
        ]
    ]
    rows += [
        [
            _button(
                f"🔀 Merge into “{_short(target)}”",
                LabelButton(proposal_id, LabelAction.MERGE, target_id=target_id),
            )
        ]
        for target, target_id in close[:3]
    ]
    rows.append(
        [
            _button("📚 Merge into…", LabelButton(proposal_id, LabelAction.PAGE, page=0)),
            _button("🚫 Reject", LabelButton(proposal_id, LabelAction.REJECT)),
        ]
    )
    return InlineKeyboardMarkup(rows)


def merge_targets_keyboard(
    proposal_id: str, targets: Sequence[tuple[str, str]], page: int
) -> InlineKeyboardMarkup:
    """One page of the labels to merge into (label, label id), two per row, with navigation."""
    total = pages(targets)
    page = min(max(page, 0), total - 1)
    shown = targets[page * LABELS_PER_PAGE : (page + 1) * LABELS_PER_PAGE]
    buttons = [
        _button(_short(label), LabelButton(proposal_id, LabelAction.MERGE, target_id=target_id))
        for label, target_id in shown
    ]
    rows = [buttons[i : i + 2] for i in range(0, len(buttons), 2)]
    navigation = []
    if page > 0:
        navigation.append(
            _button("‹ Prev", LabelButton(proposal_id, LabelAction.PAGE, page=page - 1))
        )
    navigation.append(_button(f"{page + 1}/{total}", LabelButton(proposal_id, LabelAction.NOOP)))
    if page < total - 1:
        navigation.append(
            _button("Next ›", LabelButton(proposal_id, LabelAction.PAGE, page=page + 1))
        )
    rows.append(navigation)
    rows.append([_button("« Back", LabelButton(proposal_id, LabelAction.BACK))])
    return InlineKeyboardMarkup(rows)


def decided_keyboard(proposal_id: str) -> InlineKeyboardMarkup:
    """After a decision in /labels: a way to take it back."""
    return InlineKeyboardMarkup([[_button("↩️ Undo", LabelButton(proposal_id, LabelAction.UNDO))]])
