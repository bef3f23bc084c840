"""What the feedback log holds and raises: records, verdict kinds, review decisions, errors.

Also the rules every writer shares: how a typed label is cleaned up, and which items are up for
an admin's review.
"""

from __future__ import annotations

import enum
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from model.types import LabelScore, Prediction

MAX_LABEL_LENGTH = 100


class VerdictKind(enum.StrEnum):
    """A user's verdict on a prediction; stored in SQLite as its value."""

    RIGHT = "right"
    WRONG = "wrong"
    UNSURE = "unsure"


class ReviewDecision(enum.StrEnum):
    """An admin's decision on an item up for review; stored in SQLite as its value."""

    CONFIRM = "confirm"
    RELABEL = "relabel"
    DISCARD = "discard"


VERDICT_KINDS: tuple[VerdictKind, ...] = tuple(VerdictKind)
# Verdicts that make a prediction training data: retention never removes these.
DISPUTED_KINDS: tuple[VerdictKind, ...] = (VerdictKind.WRONG, VerdictKind.UNSURE)
REVIEW_DECISIONS: tuple[ReviewDecision, ...] = tuple(ReviewDecision)


class FeedbackError(Exception):
    """Base class for everything the feedback log raises on purpose."""


class UnknownPrediction(FeedbackError, KeyError):
    """No prediction has this id (never recorded, forgotten, pruned, or forged)."""

    def __init__(self, prediction_id: str) -> None:
        super().__init__(prediction_id)
        self.prediction_id = prediction_id

    def __str__(self) -> str:
        return f"no prediction with id {self.prediction_id!r}"


class InvalidVerdict(FeedbackError, ValueError):
    """A verdict with an unknown kind, or a label that is missing, too long or not allowed."""


class InvalidReview(FeedbackError, ValueError):
    """A review with an unknown decision, a bad label, or of an item that is not up for review."""


class MissingDatabase(FeedbackError):
    """There is no feedback database yet (the bot creates it when it first starts)."""


class FeedbackLogClosed(FeedbackError):
    """The feedback log was used after `close()`."""


@dataclass(frozen=True, slots=True)
class AnsweredPhoto:
    """What `record_prediction` stores about a photo the bot is answering: who sent it, where,
    what the model said, and the image itself when it is to be kept (else None)."""

    chat_id: int
    user_id: int
    message_id: int
    file_id: str
    file_unique_id: str
    prediction: Prediction
    uncertain: bool
    image: bytes | None = None


@dataclass(frozen=True, slots=True)
class PredictionRecord:
    """One answered photo: who sent it, where the reply is, and what the model said."""

    id: str
    chat_id: int
    user_id: int
    message_id: int
    reply_message_id: int | None
    file_id: str
    file_unique_id: str
    model: str
    scores: tuple[LabelScore, ...]
    created: float
    image_sha256: str | None
    uncertain: bool

    @property
    def top(self) -> LabelScore:
        """The label the model ranked first."""
        return self.scores[0]


@dataclass(frozen=True, slots=True)
class VerdictRecord:
    """A user's verdict on a prediction; `label` is the corrected or confirmed label."""

    prediction_id: str
    user_id: int
    kind: VerdictKind
    label: str | None
    created: float


@dataclass(frozen=True, slots=True)
class VerdictOutcome:
    """Whether `record_verdict` stored a verdict, and the verdict that stands."""

    recorded: bool
    verdict: VerdictRecord


@dataclass(frozen=True, slots=True)
class ForgetSummary:
    """How many of a user's records `/forget` removes (or would remove)."""

    predictions: int
    verdicts: int
    images: int

    @property
    def total(self) -> int:
        """All removed items together."""
        return self.predictions + self.verdicts + self.images


@dataclass(frozen=True, slots=True)
class ReviewRecord:
    """An admin's decision on an item; `label` is the label it trains as (None for "discard")."""

    prediction_id: str
    admin_id: int
    decision: ReviewDecision
    label: str | None
    created: float


@dataclass(frozen=True, slots=True)
class DisputeEntry:
    """A disputed prediction ("wrong" or "unsure"), its image location and any review of it."""

    prediction: PredictionRecord
    verdict: VerdictRecord
    image_path: Path | None
    review: ReviewRecord | None


@dataclass(frozen=True, slots=True)
class ReviewItem:
    """An item awaiting review: disputed, or uncertain with its image kept (verdict optional)."""

    prediction: PredictionRecord
    verdict: VerdictRecord | None
    image_path: Path | None


@dataclass(frozen=True, slots=True)
class LabelledEntry:
    """A prediction with a verdict, a review or both, as the export reads it."""

    prediction: PredictionRecord
    verdict: VerdictRecord | None
    review: ReviewRecord | None
    image_path: Path | None


@dataclass(frozen=True, slots=True)
class FeedbackStats:
    """What happened since `since`: answers per top label, verdicts, implied accuracy.

    `accuracy_per_label` maps each predicted top label to ("right" verdicts, "right" + "wrong"
    verdicts) over the verdicts given since `since`; labels without such verdicts are absent.
    `per_label` and `accuracy_per_label` are ordered by count, largest first.
    """

    since: float
    photos: int
    uncertain: int
    per_label: dict[str, int]
    verdicts: dict[str, int]
    accuracy_per_label: dict[str, tuple[int, int]]


E = TypeVar("E", bound=enum.StrEnum)


def checked_enum(kind: type[E], value: str, error: type[Exception], what: str) -> E:
    """`value` (a member of `kind` or its value) as a member; else `error` naming the value
    and every one expected (`what`: "verdict kind", "review decision", ...)."""
    try:
        return kind(value)
    except ValueError:
        expected = tuple(member.value for member in kind)
        raise error(f"unknown {what} {value!r}; expected one of {expected}") from None


def verdict_kind(kind: str) -> VerdictKind:
    """`kind` (a `VerdictKind` or its value) as a `VerdictKind`; raises `InvalidVerdict`."""
    return checked_enum(VerdictKind, kind, InvalidVerdict, "verdict kind")


def review_decision(decision: str) -> ReviewDecision:
    """`decision` (a `ReviewDecision` or its value) as one; raises `InvalidReview`."""
    return checked_enum(ReviewDecision, decision, InvalidReview, "review decision")


def normalize_label(label: str) -> str:
    """A typed label cleaned up: whitespace runs become one space; refuses empty or bad labels."""
    # Collapsing whitespace also removes newlines and tabs, which would garble the manifest.
    text = " ".join(label.split())
    if not text:
        raise InvalidVerdict("the label is empty")
    if len(text) > MAX_LABEL_LENGTH:
        raise InvalidVerdict(f"the label is longer than {MAX_LABEL_LENGTH} characters")
    if any(unicodedata.category(char) == "Cc" for char in text):
        raise InvalidVerdict("the label contains control characters")
    return text


def review_label(label: str) -> str:
    """`normalize_label` for a review: the same rules, raising `InvalidReview`."""
    try:
        return normalize_label(label)
    except InvalidVerdict as exc:
        raise InvalidReview(str(exc)) from None


def is_reviewable(prediction: PredictionRecord, verdict: VerdictRecord | None) -> bool:
    """Whether an item is up for review: disputed, or uncertain with its image kept."""
    disputed = verdict is not None and verdict.kind in DISPUTED_KINDS
    return disputed or (prediction.uncertain and prediction.image_sha256 is not None)


def confirmed_label(prediction: PredictionRecord, verdict: VerdictRecord | None) -> str:
    """What "confirm" keeps: the user's correction, or the prediction the user (or nobody) took.

    Raises `InvalidReview` for an "unsure" verdict, which has no label to confirm.
    """
    if verdict is None:
        return prediction.top.label
    if verdict.kind == VerdictKind.UNSURE:
        raise InvalidReview(
            'the user was not sure, so there is no label to confirm; use "relabel" or "discard"'
        )
    return verdict.label if verdict.label is not None else prediction.top.label
