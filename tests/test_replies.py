"""Reply texts are pure functions of what the model said."""

from __future__ import annotations

from bot import replies
from model.feedback import VerdictKind
from model.types import (
    CorruptImage,
    EmptyFile,
    LabelScore,
    NotAnImage,
    Prediction,
    TooManyPixels,
    UnsupportedImage,
)


def prediction(*scores: tuple[str, float]) -> Prediction:
    return Prediction(tuple(LabelScore(label, p) for label, p in scores), "test@0", 10, 10)


def test_confident_answer_is_one_label() -> None:
    text = replies.prediction_text(prediction(("espresso", 0.951), ("cup", 0.02)), 0.5)
    assert text == "espresso — 95%"


def test_below_threshold_lists_the_runner_ups_in_order() -> None:
    p = prediction(("espresso", 0.41), ("cup", 0.30), ("coffee mug", 0.12))
    assert replies.prediction_text(p, 0.5) == "Not sure: espresso 41%, cup 30%, coffee mug 12%"
    assert replies.prediction_text(p, 0.4) == "espresso — 41%"


def test_percentages_never_mislead_at_the_ends() -> None:
    assert replies.percent(0.001) == "<1%"
    assert replies.percent(0.0) == "0%"
    assert replies.percent(0.996) == ">99%"
    assert replies.percent(1.0) == "100%"
    assert replies.percent(0.505) in ("50%", "51%")


def test_each_rejection_names_its_problem() -> None:
    assert "empty" in replies.rejection_text(EmptyFile())
    assert "PDF" in replies.rejection_text(NotAnImage("a PDF document"))
    assert "not an image" in replies.rejection_text(NotAnImage(""))
    assert "HEIC" in replies.rejection_text(UnsupportedImage("HEIC"))
    assert "damaged" in replies.rejection_text(CorruptImage("truncated"))
    text = replies.rejection_text(TooManyPixels(40_000, 40_000, 50_000_000))
    assert "40000×40000" in text and "50 megapixels" in text


def test_too_big_names_both_sizes() -> None:
    text = replies.too_big_text(25 * 1024 * 1024, 20 * 1024 * 1024)
    assert "25.0 MB" in text and "20 MB" in text


def test_help_says_what_is_kept_and_for_how_long() -> None:
    from model.default import imagenet_labels

    hint = replies.labels_hint(imagenet_labels())
    assert replies.labels_hint(["cat", "dog"]) == "I tell these apart: cat, dog."
    assert "I know 20 labels" in replies.labels_hint([f"l{i}" for i in range(20)])
    text = replies.help_text(hint, 0.5, 30, keep_uncertain=True)
    assert "What I keep" in text and "ImageNet" in text and "/forget" in text
    assert "after 30 days" in text and "less than 50% sure about" in text
    assert "sure about" not in replies.help_text(hint, 0.5, 30, keep_uncertain=False)


def test_verdict_footers() -> None:
    assert "right" in replies.verdict_footer(VerdictKind.RIGHT, "espresso")
    assert "Corrected to: cup" in replies.verdict_footer(VerdictKind.WRONG, "cup")
    assert "not sure" in replies.verdict_footer(VerdictKind.UNSURE, None)
    assert replies.forget_prompt(0).startswith("I keep nothing")
    assert "1 item (" in replies.forget_prompt(1)
    assert replies.forgotten_text(1, 1, 1).startswith("Done: deleted 3 items")
