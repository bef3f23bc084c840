"""/labels: the labels users typed that the model does not know, and the admins' decisions.

Each proposal is one message with its buttons: ➕ Add (a label of its own at the next
/retrain), 🔀 Merge into a close spelling or any label the model knows (typos, synonyms),
🚫 Reject (kept in the log, never trained); ↩️ Undo after a decision. Buttons carry label ids
(`model.feedback.label_id`), resolved again against the current proposals at every tap.
Nobody else is told: the users whose corrections are used get no messages.

Also the typed-label checks (bot/verdicts.py `on_text`) and the lines /stats and /review show.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from telegram import InlineKeyboardMarkup, Update

from bot import keyboards, labeltexts, replies
from bot.callbacks import LabelAction, LabelButton
from bot.context import Ctx
from bot.edits import edit
from model.feedback import (
    InvalidLabelDecision,
    LabelDecisionKind,
    LabelProposals,
    Proposal,
    UnknownLabel,
    display_label,
    label_id,
    label_key,
    typed_label_problem,
)

logger = logging.getLogger(__name__)

PROPOSALS_SHOWN = 10
_DECISIONS = {
    LabelAction.ADD: LabelDecisionKind.ADD,
    LabelAction.MERGE: LabelDecisionKind.MERGE,
    LabelAction.REJECT: LabelDecisionKind.REJECT,
}


def model_labels(context: Ctx) -> Sequence[str]:
    """The labels of the model serving now (what is not new)."""
    classifier = context.services.classifier
    return classifier.labels_for(classifier.model_name) or ()


async def pending_count(context: Ctx) -> int:
    """How many proposals wait for a decision."""
    proposals = await context.services.labels.label_proposals(model_labels(context))
    return len(proposals.pending)


# ---------------------------------------------------------------------------- typing


@dataclass(frozen=True)
class TypedLabel:
    """A typed label to store: `label` (an existing label's spelling when it is one), and
    whether it is a label the model knows, or one the admins added."""

    label: str
    known: bool
    added: bool = False


async def check_typed(context: Ctx, typed: str, labels: Sequence[str]) -> TypedLabel | str:
    """The label to store for `typed`, or the reply refusing it (nothing is stored then).

    Refused: empty, longer than `MAX_TYPED_LABEL_LENGTH`, or no letters or digits. A label
    that is one of `labels` (the model's) or an added one but for case or Unicode form
    becomes that label.
    """
    problem = typed_label_problem(typed)
    if problem is not None:
        return labeltexts.refusal(problem, typed)
    shown = display_label(typed)
    key = label_key(shown)
    for label in labels:
        if label_key(label) == key:
            return TypedLabel(label, known=True)
    decisions = await context.services.labels.label_decisions()
    decision = decisions.get(key)
    if decision is not None and decision.decision == LabelDecisionKind.ADD:
        return TypedLabel(decision.label, known=False, added=True)
    return TypedLabel(shown, known=False)


# ---------------------------------------------------------------------------- /labels


async def on_labels(update: Update, context: Ctx) -> None:
    """/labels: each proposal waiting for a decision, with its buttons."""
    message = update.effective_message
    if message is None:
        return
    known = model_labels(context)
    proposals = await context.services.labels.label_proposals(known)
    if not proposals.pending:
        await message.reply_text(labeltexts.no_proposals(len(proposals.decided)))
        return
    shown = proposals.pending[:PROPOSALS_SHOWN]
    await message.reply_text(labeltexts.labels_header(len(proposals.pending), len(shown)))
    for proposal in shown:
        await message.reply_text(
            labeltexts.proposal_text(proposal),
            reply_markup=_proposal_keyboard(proposal, proposals, known),
        )


def _proposal_keyboard(
    proposal: Proposal, proposals: LabelProposals, known: Sequence[str]
) -> InlineKeyboardMarkup:
    return keyboards.proposal_keyboard(
        proposal.id,
        proposal.label,
        proposal.photos,
        proposal.users,
        _close_targets(proposal, proposals, known),
    )


def _close_targets(
    proposal: Proposal, proposals: LabelProposals, known: Sequence[str]
) -> list[tuple[str, str]]:
    """Close spellings worth merging into: the model's labels, and proposals with more
    corrections (a typo merges into the common spelling, not the other way round)."""
    known_keys = {label_key(label) for label in known}
    bigger = {
        p.key
        for p in proposals.pending
        if (p.corrections, p.key) > (proposal.corrections, proposal.key)
    }
    return [
        (label, label_id(label_key(label)))
        for label in proposal.close
        if label_key(label) in known_keys or label_key(label) in bigger
    ]


async def _merge_targets(
    context: Ctx, proposal: Proposal, proposals: LabelProposals, known: Sequence[str]
) -> list[tuple[str, str]]:
    """Every label a proposal may merge into: the model's, the added ones, other proposals;
    sorted as a person looks for them."""
    decisions = await context.services.labels.label_decisions()
    added = [d.label for d in decisions.values() if d.decision == LabelDecisionKind.ADD]
    targets: dict[str, str] = {}
    for label in [*known, *added, *(p.label for p in proposals.pending)]:
        key = label_key(label)
        if key != proposal.key:
            targets.setdefault(key, label)
    ordered = sorted(targets.items(), key=lambda item: (item[1].casefold(), item[1]))
    return [(label, label_id(key)) for key, label in ordered]


async def on_label_button(update: Update, context: Ctx) -> None:
    """A tap under a proposal: page the merge targets, decide, or undo."""
    query = update.callback_query
    if query is None or query.data is None:
        return
    button = LabelButton.parse(query.data)
    if button is None:
        await query.answer(replies.UNKNOWN_BUTTON)
        return
    log = context.services.labels
    known = model_labels(context)
    proposals = await log.label_proposals(known)
    proposal = proposals.find(button.label_id)
    if proposal is None:
        await query.answer(labeltexts.GONE, show_alert=True)
        await edit(query, reply_markup=None)
        return
    action = button.action
    if action is LabelAction.NOOP:
        await query.answer()
    elif action is LabelAction.PAGE or action is LabelAction.BACK:
        await query.answer()
        if proposal.decision is not None:
            text = labeltexts.decided_text(proposal, proposal.decision)
            await edit(query, text=text, reply_markup=keyboards.decided_keyboard(proposal.id))
        elif action is LabelAction.BACK:
            markup = _proposal_keyboard(proposal, proposals, known)
            await edit(query, text=labeltexts.proposal_text(proposal), reply_markup=markup)
        else:
            targets = await _merge_targets(context, proposal, proposals, known)
            markup = keyboards.merge_targets_keyboard(proposal.id, targets, button.page)
            await edit(query, reply_markup=markup)
    elif action is LabelAction.UNDO:
        if proposal.decision is None:
            await query.answer("Nothing to undo: no decision was taken.")
        else:
            await log.undo_label_decision(proposal.label)
            logger.info("admin %s undid the decision on %r", query.from_user.id, proposal.label)
            await query.answer("Undone: the label waits for a decision again.")
        proposals = await log.label_proposals(known)
        pending = proposals.find(proposal.id)
        if pending is not None and pending.decision is None:
            markup = _proposal_keyboard(pending, proposals, known)
            await edit(query, text=labeltexts.proposal_text(pending), reply_markup=markup)
    else:
        await _decide(update, context, button, proposal, proposals, known)


async def _decide(
    update: Update,
    context: Ctx,
    button: LabelButton,
    proposal: Proposal,
    proposals: LabelProposals,
    known: Sequence[str],
) -> None:
    query = update.callback_query
    assert query is not None
    if proposal.decision is not None:
        await query.answer(labeltexts.already_decided(proposal.decision))
        text = labeltexts.decided_text(proposal, proposal.decision)
        await edit(query, text=text, reply_markup=keyboards.decided_keyboard(proposal.id))
        return
    target = None
    if button.action is LabelAction.MERGE:
        targets = dict(
            (target_id, label)
            for label, target_id in await _merge_targets(context, proposal, proposals, known)
        )
        target = targets.get(button.target_id)
        if target is None:
            await query.answer(replies.UNKNOWN_BUTTON)
            return
    try:
        outcome = await context.services.labels.decide_label(
            proposal.label, _DECISIONS[button.action], target=target, admin_id=query.from_user.id
        )
    except UnknownLabel:
        await query.answer(labeltexts.GONE, show_alert=True)
        await edit(query, reply_markup=None)
        return
    except InvalidLabelDecision as exc:
        await query.answer(str(exc)[:200], show_alert=True)
        return
    if outcome.recorded:
        await query.answer("Saved.")
    else:
        await query.answer(labeltexts.already_decided(outcome.decision))
    text = labeltexts.decided_text(proposal, outcome.decision)
    await edit(query, text=text, reply_markup=keyboards.decided_keyboard(proposal.id))
