"""The `label_decisions` table and the proposals read from the verdicts (see `labels`).

Proposals are computed from the verdicts every time, never stored: `/forget` deleting a user's
verdicts removes their corrections from every proposal and count by construction. Only the
admins' decisions are stored, one per label key. Like `SettingsTable`, `LabelTable` works over
the feedback store's connection (synchronous, for the thread that owns it), and
`SqliteLabelLog` is its async front on the log's disk thread.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

from model.feedback.labels import (
    Correction,
    DecisionOutcome,
    InvalidLabelDecision,
    LabelDecision,
    LabelDecisionKind,
    LabelProposals,
    UnknownLabel,
    class_name,
    display_label,
    group_proposals,
    label_key,
)
from model.feedback.records import checked_enum
from model.feedback.schema import transaction
from model.feedback.thread import DiskThread

if TYPE_CHECKING:
    from model.feedback.interfaces import LabelLog

logger = logging.getLogger(__name__)

# A user's "wrong" verdicts with a label, by spelling and user: what an admin's review left
# standing (none, or "confirm"; "relabel" and "discard" overrule the user's label).
_CORRECTIONS = (
    "SELECT v.label AS label, v.user_id AS user_id, count(*) AS corrections,"
    " count(DISTINCT p.image_sha256) AS photos"
    " FROM verdicts v JOIN predictions p ON p.id = v.prediction_id"
    " LEFT JOIN reviews r ON r.prediction_id = v.prediction_id"
    " WHERE v.kind = 'wrong' AND v.label IS NOT NULL"
    " AND (r.prediction_id IS NULL OR r.decision = 'confirm')"
    " GROUP BY v.label, v.user_id"
)
_DECISION_COLUMNS = "key, label, decision, target, admin_id, created"


def _kind(decision: LabelDecisionKind | str) -> LabelDecisionKind:
    return checked_enum(LabelDecisionKind, decision, InvalidLabelDecision, "label decision")


def _decision_from_row(row: sqlite3.Row) -> LabelDecision:
    target, admin = row["target"], row["admin_id"]
    return LabelDecision(
        key=str(row["key"]),
        label=str(row["label"]),
        decision=_kind(str(row["decision"])),
        target=None if target is None else str(target),
        admin_id=None if admin is None else int(admin),
        created=float(row["created"]),
    )


class LabelTable:
    """Proposals and the `label_decisions` table over the store's connection; one thread."""

    def __init__(self, conn: sqlite3.Connection, *, clock: Callable[[], float] = time.time):
        self._conn = conn
        self._clock = clock

    def corrections(self) -> list[Correction]:
        """Every standing correction, by spelling and user."""
        return [
            Correction(
                str(row["label"]), int(row["user_id"]), int(row["corrections"]), int(row["photos"])
            )
            for row in self._conn.execute(_CORRECTIONS).fetchall()
        ]

    def decisions(self) -> dict[str, LabelDecision]:
        """Every decision, by label key."""
        rows = self._conn.execute(
            f"SELECT {_DECISION_COLUMNS} FROM label_decisions ORDER BY created, key"
        ).fetchall()
        return {str(row["key"]): _decision_from_row(row) for row in rows}

    def snapshot(self) -> tuple[list[Correction], dict[str, LabelDecision]]:
        """The corrections and the decisions, read in one transaction (one state)."""
        with transaction(self._conn, "DEFERRED"):
            return self.corrections(), self.decisions()

    def proposals(self, known: Iterable[str]) -> LabelProposals:
        """The corrections naming none of the `known` labels, grouped (see `group_proposals`)."""
        corrections, decisions = self.snapshot()
        return group_proposals(corrections, known, decisions)

    def decide(
        self,
        label: str,
        decision: LabelDecisionKind | str,
        *,
        target: str | None = None,
        admin_id: int | None = None,
        replace: bool = False,
    ) -> DecisionOutcome:
        """Decide about every correction whose label has `label`'s key.

        "add" makes it a class (named `class_name(label)`); "merge" trains it as `target`
        (followed through the target's own merge, refused into itself, into a loop or into a
        rejected label); "reject" keeps it out of training. Without `replace` an existing
        decision stands (not recorded; an admin's tap racing another's); with it, it is
        replaced (an operator changing their mind). Raises `UnknownLabel` when no correction
        names the label and it has no decision, `InvalidLabelDecision` for a bad one.
        """
        kind = _kind(decision)
        key = label_key(label)
        if not key:
            raise InvalidLabelDecision("the label is empty")
        if kind == LabelDecisionKind.MERGE and not (target and label_key(target)):
            raise InvalidLabelDecision("a merge needs the label to merge into")
        if kind != LabelDecisionKind.MERGE and target is not None:
            raise InvalidLabelDecision(f'"{kind}" takes no target label')
        if target is not None and label_key(target) == key:
            raise InvalidLabelDecision("a label cannot be merged into itself")
        conn = self._conn
        with transaction(conn):
            decisions = self.decisions()
            existing = decisions.get(key)
            if existing is not None and not replace:
                return DecisionOutcome(recorded=False, decision=existing)
            if existing is None and not any(label_key(c.label) == key for c in self.corrections()):
                raise UnknownLabel(label)
            name = class_name(label) if kind == LabelDecisionKind.ADD else display_label(label)
            if target is not None:
                target = _merge_target(key, target, decisions)
            created = self._clock()
            conn.execute(
                f"INSERT INTO label_decisions ({_DECISION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (key) DO UPDATE SET label = excluded.label,"
                " decision = excluded.decision, target = excluded.target,"
                " admin_id = excluded.admin_id, created = excluded.created",
                (key, name, kind.value, target, admin_id, created),
            )
        logger.info(
            "Label %r decided by %s: %s%s",
            name,
            "an operator" if admin_id is None else f"admin {admin_id}",
            kind.value,
            f" into {target!r}" if target else "",
        )
        return DecisionOutcome(True, LabelDecision(key, name, kind, target, admin_id, created))

    def undo(self, label: str) -> LabelDecision | None:
        """Remove the decision on `label`'s key (it is pending again); the removed decision."""
        key = label_key(label)
        with transaction(self._conn):
            existing = self.decisions().get(key)
            if existing is not None:
                self._conn.execute("DELETE FROM label_decisions WHERE key = ?", (key,))
        return existing


def _merge_target(key: str, target: str, decisions: dict[str, LabelDecision]) -> str:
    """The label a merge of `key` into `target` trains as: the target's own merges followed."""
    seen = {key}
    current = display_label(target)
    while True:
        target_key = label_key(current)
        if target_key in seen:
            raise InvalidLabelDecision(
                f"merging into {target!r} would go round in a circle back to this label"
            )
        seen.add(target_key)
        decision = decisions.get(target_key)
        if decision is None:
            return current
        if decision.decision == LabelDecisionKind.REJECT:
            raise InvalidLabelDecision(f"{decision.label!r} is rejected; merge into another label")
        if decision.decision == LabelDecisionKind.ADD:
            return decision.label
        assert decision.target is not None
        current = decision.target


class SqliteLabelLog:
    """The async label log: `table`'s calls run on `thread`, the connection's owner."""

    def __init__(self, table: LabelTable, thread: DiskThread) -> None:
        self._table = table
        self._thread = thread

    async def label_proposals(self, known: Sequence[str]) -> LabelProposals:
        corrections, decisions = await self._thread.run(self._table.snapshot)
        # Grouping compares spellings with every known label (a thousand for ImageNet): off
        # the disk thread, which other writers wait on, and off the event loop.
        return await asyncio.to_thread(group_proposals, corrections, tuple(known), decisions)

    async def label_decisions(self) -> dict[str, LabelDecision]:
        return await self._thread.run(self._table.decisions)

    async def decide_label(
        self,
        label: str,
        decision: LabelDecisionKind | str,
        *,
        target: str | None = None,
        admin_id: int,
    ) -> DecisionOutcome:
        return await self._thread.run(
            self._table.decide, label, decision, target=target, admin_id=admin_id
        )

    async def undo_label_decision(self, label: str) -> LabelDecision | None:
        return await self._thread.run(self._table.undo, label)


if TYPE_CHECKING:
    # mypy checks here that the log satisfies the protocol the bot is written against.
    def _conforms(log: SqliteLabelLog) -> LabelLog:
        return log
