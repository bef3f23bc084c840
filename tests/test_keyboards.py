"""Callback data stays within Telegram's 64 bytes and parses back; forged data does not."""

from __future__ import annotations

from bot import keyboards
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
            parsed = keyboards.parse_verdict(data)
            assert parsed is not None and parsed.prediction_id == PID


def test_label_pages_cover_every_label_once_alphabetically() -> None:
    labels = imagenet_labels()
    seen: list[int] = []
    for page in range(keyboards.pages(labels)):
        for data in all_data(keyboards.labels_keyboard(PID, labels, page)):
            parsed = keyboards.parse_verdict(data)
            if parsed is not None and parsed.action == "l":
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
        assert keyboards.parse_verdict(data) is None, data
    assert keyboards.parse_forget("f:12:y") == (12, True)
    assert keyboards.parse_forget("f:12:n") == (12, False)
    assert keyboards.parse_forget("f:-1:y") is None
