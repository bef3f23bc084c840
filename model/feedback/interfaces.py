"""The feedback log as each part of the bot sees it: one small protocol per kind of caller.

SQLite implements them all (`SqliteFeedbackLog`, `SqliteSettingsStore`); PostgreSQL can follow.
Every method is async: implementations keep disk and network waits off the event loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from model.feedback.labels import (
    DecisionOutcome,
    LabelDecision,
    LabelDecisionKind,
    LabelProposals,
)
from model.feedback.records import (
    AnsweredPhoto,
    DisputeEntry,
    FeedbackStats,
    ForgetSummary,
    PredictionRecord,
    ReviewDecision,
    ReviewItem,
    ReviewRecord,
    VerdictKind,
    VerdictOutcome,
    VerdictRecord,
)


class PredictionLog(Protocol):
    """Answering photos (bot/photos.py): what the model said, and which message said it."""

    async def record_prediction(self, photo: AnsweredPhoto) -> PredictionRecord:
        """Store a prediction (and its image, when given) before the reply is sent."""
        ...

    async def set_reply_message(self, prediction_id: str, reply_message_id: int) -> None:
        """Remember which bot message answered the prediction (no-op if it is gone)."""
        ...


class VerdictLog(Protocol):
    """Verdict buttons and typed labels: users saying whether an answer was right."""

    async def get_prediction(self, prediction_id: str) -> PredictionRecord | None:
        """The prediction with this id, or None for an unknown or forged id."""
        ...

    async def predictions_for_reply(
        self, chat_id: int, reply_message_id: int
    ) -> list[PredictionRecord]:
        """Every prediction one bot message answers (several for an album), in order."""
        ...

    async def get_verdict(self, prediction_id: str) -> VerdictRecord | None:
        """The verdict on this prediction, if any."""
        ...

    async def record_verdict(
        self,
        prediction_id: str,
        *,
        user_id: int,
        kind: VerdictKind | str,
        label: str | None,
        image: bytes | None = None,
    ) -> VerdictOutcome:
        """Store the one verdict a prediction may get; a later call returns the first one.

        `kind`: a `VerdictKind` or its value ("right", "wrong", "unsure"). `label`: the
        correction for "wrong"; None (or the predicted label) for "right"; None for "unsure".
        `image`: the disputed image, kept unless the prediction already has one. Raises
        `UnknownPrediction` or `InvalidVerdict`.
        """
        ...

    async def has_image(self, prediction_id: str) -> bool:
        """Whether the prediction's image is in the store (its file included)."""
        ...

    async def set_pending_label(self, *, chat_id: int, user_id: int, prediction_id: str) -> None:
        """The next text this user sends in this chat is the label for this prediction."""
        ...

    async def get_pending_label(self, *, chat_id: int, user_id: int) -> str | None:
        """The prediction id awaiting a typed label from this user in this chat, if not expired."""
        ...

    async def clear_pending_label(self, *, chat_id: int, user_id: int) -> None:
        """Stop waiting for a typed label from this user in this chat."""
        ...


class PrivacyLog(Protocol):
    """`/forget` (bot/verdicts.py) and the retention period (bot/__main__.py)."""

    async def count_user_items(self, user_id: int) -> ForgetSummary:
        """What `forget_user` would remove, for the confirmation prompt."""
        ...

    async def forget_user(self, user_id: int) -> ForgetSummary:
        """Delete the user's predictions, verdicts, pending state and images nobody else uses."""
        ...

    async def prune(self, *, older_than_s: float) -> int:
        """Delete undisputed predictions older than `older_than_s`; returns how many.

        Disputed ones and those an admin confirmed or relabelled are training data: kept.
        """
        ...


class ReviewLog(Protocol):
    """The admins' commands (bot/admin.py): stats, disputes and the review queue."""

    async def get_prediction(self, prediction_id: str) -> PredictionRecord | None:
        """The prediction with this id, or None for an unknown or forged id."""
        ...

    async def stats_since(self, since: float) -> FeedbackStats:
        """Answers per top label, verdicts and the accuracy they imply, from `since` on."""
        ...

    async def list_disputes(self, offset: int, limit: int) -> tuple[list[DisputeEntry], int]:
        """One page of disputed predictions, newest verdict first, and how many there are."""
        ...

    async def next_for_review(self) -> ReviewItem | None:
        """The oldest item awaiting review (disputed, or uncertain with its image kept)."""
        ...

    async def count_for_review(self) -> int:
        """How many items await review."""
        ...

    async def get_review(self, prediction_id: str) -> ReviewRecord | None:
        """The review of this prediction, if any."""
        ...

    async def record_review(
        self,
        prediction_id: str,
        *,
        admin_id: int,
        decision: ReviewDecision | str,
        label: str | None = None,
    ) -> bool:
        """Store the one review an item may get; False if it already has one.

        `decision`: a `ReviewDecision` or its value ("confirm", "relabel" with `label`,
        "discard"). Raises `UnknownPrediction` or `InvalidReview`.
        """
        ...


class SettingsStore(Protocol):
    """Settings admins change at run time (`/threshold`), read back at start-up."""

    async def get_setting(self, key: str) -> str | None:
        """The stored value of a run-time setting, or None if it was never set."""
        ...

    async def set_setting(self, key: str, value: str) -> None:
        """Store a run-time setting, replacing any earlier value.

        Raises `ValueError` for a key that is blank or longer than `MAX_SETTING_KEY_LENGTH`.
        """
        ...


class LabelLog(Protocol):
    """New labels users typed (bot/labels.py, /stats, typed labels): proposals and decisions."""

    async def label_proposals(self, known: Sequence[str]) -> LabelProposals:
        """Corrections naming none of the `known` labels, grouped by key: pending and decided."""
        ...

    async def label_decisions(self) -> dict[str, LabelDecision]:
        """Every decision taken, by label key."""
        ...

    async def decide_label(
        self,
        label: str,
        decision: LabelDecisionKind | str,
        *,
        target: str | None = None,
        admin_id: int,
    ) -> DecisionOutcome:
        """Add, merge (into `target`) or reject the label; an existing decision stands.

        Raises `UnknownLabel` (no correction names it) or `InvalidLabelDecision`.
        """
        ...

    async def undo_label_decision(self, label: str) -> LabelDecision | None:
        """Make the label pending again; the decision that was removed, if any."""
        ...
