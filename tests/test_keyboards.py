"""Callback data stays within Telegram's 64 bytes and parses back; forged data does not."""

from __future__ import annotations

import pytest

from bot import keyboards
from bot.callbacks import (
    DisputesPage,
    ForgetButton,
    ModelButton,
    ReviewAction,
    ReviewButton,
    VerdictAction,
    VerdictButton,
)
from model.default import imagenet_labels
from model.types import LabelScore

PID = "AbCdEfGhIjK"


def all_data(markup: keyboards.InlineKeyboardMarkup) -> list[str]:
    return [str(b.callback_data) for row in markup.inline_keyboard for b in row]


def test_every_button_fits_in_64_bytes_and_round_trips() -> None:
    scores = (LabelScore("espresso", 0.5), LabelScore("cup", 0.3), LabelScore("mug", 0.1))
    labels = imagenet_labels()
    markups = [
        keyboards.verdict_keyboard(PID),
        keyboards.correction_keyboard(PID, scores, can_browse=True),
        keyboards.labels_keyboard(PID, labels, 0),
        keyboards.labels_keyboard(PID, labels, 99),
        keyboards.typing_keyboard(PID),
    ]
    for markup in markups:
        for data in all_data(markup):
            assert len(data.encode()) <= 64
            parsed = VerdictButton.parse(data)
            assert parsed is not None and parsed.prediction_id == PID


def test_label_pages_cover_every_label_once_alphabetically() -> None:
    labels = imagenet_labels()
    seen: list[int] = []
    for page in range(keyboards.pages(labels)):
        for data in all_data(keyboards.labels_keyboard(PID, labels, page)):
            parsed = VerdictButton.parse(data)
            if parsed is not None and parsed.action is VerdictAction.LABEL:
                seen.append(parsed.number)
    assert sorted(seen) == list(range(1000))
    names = [labels[i].casefold() for i in seen]
    assert names == sorted(names)


def test_candidates_skip_the_top_label() -> None:
    scores = (LabelScore("espresso", 0.5), LabelScore("cup", 0.3))
    texts = [
        b.text
        for row in keyboards.correction_keyboard(PID, scores, False).inline_keyboard
        for b in row
    ]
    assert "cup (30%)" in texts and not any(t.startswith("espresso") for t in texts)
    assert "📚 All labels" not in texts


def test_forged_or_foreign_data_does_not_parse() -> None:
    for data in ["", "v:", "v:abc", "v:abc:z", "v:a/b:r", "v:abc:c:x", "x:abc:r", "v:abc:r:1"]:
        assert VerdictButton.parse(data) is None, data
    assert ForgetButton.parse("f:12:y") == ForgetButton(12, confirmed=True)
    assert ForgetButton.parse("f:12:n") == ForgetButton(12, confirmed=False)
    assert ForgetButton.parse("f:-1:y") is None
    for data in ["d:", "d:-5", "d:x", "r:abc", "r:abc:z", "r:abc:s", "r:abc:c:1", "m:use:", "m:x"]:
        parsed = [kind.parse(data) for kind in (DisputesPage, ReviewButton, ModelButton)]
        assert parsed == [None, None, None], data


def test_admin_buttons_round_trip_through_their_classes() -> None:
    scores = (LabelScore("espresso", 0.5), LabelScore("cup", 0.3), LabelScore("mug", 0.1))
    review = keyboards.review_keyboard(PID, scores, proposed="espresso")
    parsed = [ReviewButton.parse(data) for data in all_data(review)]
    assert parsed == [
        ReviewButton(PID, ReviewAction.CONFIRM),
        ReviewButton(PID, ReviewAction.RELABEL, 1),
        ReviewButton(PID, ReviewAction.RELABEL, 2),
        ReviewButton(PID, ReviewAction.DISCARD),
        ReviewButton(PID, ReviewAction.STOP),
    ]
    pages = keyboards.disputes_keyboard(5, 5, 12)
    assert pages is not None
    assert [DisputesPage.parse(d) for d in all_data(pages)] == [DisputesPage(0), DisputesPage(10)]
    assert keyboards.disputes_keyboard(0, 5, 5) is None
    retrained = keyboards.retrained_keyboard("v12-20261201-190000")
    assert [ModelButton.parse(d) for d in all_data(retrained)] == [
        ModelButton("v12-20261201-190000"),
        ModelButton(None),
    ]


def test_every_class_matches_only_its_own_data() -> None:
    """A handler registered with one class's pattern never sees another class's buttons."""
    samples = {
        VerdictButton: VerdictButton(PID, VerdictAction.PAGE, 3).encode(),
        ForgetButton: ForgetButton(7, confirmed=True).encode(),
        DisputesPage: DisputesPage(10).encode(),
        ReviewButton: ReviewButton(PID, ReviewAction.RELABEL, 2).encode(),
        ModelButton: ModelButton("v2").encode(),
    }
    for kind in samples:
        for other, data in samples.items():
            assert (kind.PATTERN.match(data) is not None) == (kind is other), (kind, data)
            assert (kind.parse(data) is not None) == (kind is other), (kind, data)


def test_data_over_64_bytes_is_refused_when_built() -> None:
    with pytest.raises(ValueError, match="64 bytes"):
        ModelButton("v" * 70).encode()
