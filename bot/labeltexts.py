"""The texts about new labels: typed ones refused or merged, /labels, and a retrain's summary.

Pure functions, so tests can call them directly. The retrain summary reads what `training`
wrote on the new version's card (`metrics["disputed_holdout"]`, `params["feedback_labels"]`),
defensively: cards from older versions have neither.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from model.feedback import (
    MAX_TYPED_LABEL_LENGTH,
    LabelDecision,
    LabelDecisionKind,
    LabelProblem,
    Proposal,
    display_label,
)

SHOWN_PER_LIST = 6


def plural(count: int, word: str) -> str:
    """ "1 photo", "2 photos"."""
    return f"{count} {word}{'' if count == 1 else 's'}"


# ---------------------------------------------------------------------------- typing


def refusal(problem: LabelProblem, typed: str) -> str:
    """Why a typed label was not stored, and what to do instead."""
    again = "Please type what the photo shows, or /cancel."
    if problem is LabelProblem.EMPTY:
        return f"That label is empty. {again}"
    if problem is LabelProblem.TOO_LONG:
        length = len(display_label(typed))
        return (
            f"That label is {length} characters long; a label can have at most "
            f"{MAX_TYPED_LABEL_LENGTH}. Please type a shorter one, or /cancel."
        )
    return f"“{display_label(typed)[:MAX_TYPED_LABEL_LENGTH]}” has no letters or digits. {again}"


def stored(label: str, typed: str, known: bool, added: bool = False) -> str:
    """The confirmation of a typed label; says so when it was merged into an existing label
    (one the model knows, or one the admins `added`)."""
    shown = display_label(typed)
    if known:
        kind = "one of the labels the model knows"
    else:
        kind = "a new label the admins added" if added else "a new label"
    if shown != label:
        kind += f"; “{shown}” is the same label written differently"
    note = "" if known or added else " An admin decides whether the model learns new labels."
    return f"Stored “{label}” ({kind}) as the right label for that photo. Thank you!{note}"


# ---------------------------------------------------------------------------- /labels


def pending_line(pending: int) -> str:
    """One line for /stats and /review."""
    if not pending:
        return "New labels users typed: none waiting for a decision."
    return f"New labels users typed: {pending} waiting for a decision (/labels)."


def no_proposals(decided: int) -> str:
    """/labels when nothing waits."""
    done = f" ({plural(decided, 'label')} decided so far)" if decided else ""
    return (
        "No new labels wait for a decision: every correction names a label the model knows, "
        f"or an admin has decided about it{done}."
    )


def labels_header(pending: int, shown: int) -> str:
    """The first message of /labels."""
    more = f" The {shown} with the most corrections come first." if shown < pending else ""
    return (
        f"🆕 {plural(pending, 'label')} users typed that the model does not know.{more}\n"
        "➕ Add: it becomes a label of its own at the next /retrain. 🔀 Merge: its photos "
        "train as another label (typos, synonyms). 🚫 Reject: kept in the log, never trained."
    )


def proposal_text(proposal: Proposal) -> str:
    """A proposal: its spellings, counts and close spellings."""
    lines = [
        f"🆕 “{proposal.label}”: {plural(proposal.corrections, 'correction')}, "
        f"{plural(proposal.photos, 'photo')} kept, from {plural(proposal.users, 'user')}"
    ]
    if len(proposal.spellings) > 1:
        spelled = ", ".join(f"{s} ({n})" for s, n in proposal.spellings[:SHOWN_PER_LIST])
        lines.append(f"spelled: {spelled}")
    if proposal.close:
        lines.append("close to: " + ", ".join(f"“{label}”" for label in proposal.close))
    return "\n".join(lines)


def decided_text(proposal: Proposal, decision: LabelDecision) -> str:
    """A proposal once decided."""
    photos = plural(proposal.photos, "photo") + (" trains" if proposal.photos == 1 else " train")
    if decision.decision == LabelDecisionKind.ADD:
        renamed = f" (as “{decision.label}”)" if decision.label != proposal.label else ""
        return (
            f"➕ “{proposal.label}” added{renamed}: its {photos} as a label of its own from "
            "the next /retrain."
        )
    if decision.decision == LabelDecisionKind.MERGE:
        return (
            f"🔀 “{proposal.label}” merged into “{decision.target}”: its {photos} as "
            f"“{decision.target}”."
        )
    return (
        f"🚫 “{proposal.label}” rejected: its {plural(proposal.corrections, 'correction')} "
        "stay in the log and are not trained on."
    )


def already_decided(decision: LabelDecision) -> str:
    """The answer to a tap on a proposal another admin decided meanwhile."""
    if decision.decision == LabelDecisionKind.MERGE:
        return f"Already decided: merged into “{decision.target}”."
    added = decision.decision == LabelDecisionKind.ADD
    return f"Already decided: {'added' if added else 'rejected'}."


GONE = "This label is no longer proposed (the model knows it now, or its photos were deleted)."


# ---------------------------------------------------------------------------- /retrain


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _share(right: Any, total: Any) -> str:
    if not isinstance(right, int) or not isinstance(total, int) or total <= 0:
        return "–"
    return f"{right / total:.0%}"


def holdout_lines(metrics: Mapping[str, Any] | None) -> list[str]:
    """Old vs new model on the disputed photos held out from training, overall and per label."""
    holdout = _mapping(_mapping(metrics).get("disputed_holdout"))
    if not holdout:
        return []
    images = holdout.get("images")
    if not isinstance(images, int) or images <= 0:
        note = holdout.get("note") or "no disputed photos were held out"
        return [f"On photos users corrected: {note}."]
    old, new = holdout.get("old_right"), holdout.get("new_right")
    old_version = holdout.get("old_version") or "old"
    lines = [
        f"On photos users corrected ({plural(images, 'photo')} held out from training): "
        f"old {_share(old, images)} → new {_share(new, images)} (old: {old_version})"
    ]
    per_label = _mapping(holdout.get("per_label"))
    for label, row in list(per_label.items())[:SHOWN_PER_LIST]:
        row = _mapping(row)
        n = row.get("images")
        lines.append(f"• {label}: {row.get('old', '–')}/{n} → {row.get('new', '–')}/{n}")
    if len(per_label) > SHOWN_PER_LIST:
        lines.append(f"• … and {len(per_label) - SHOWN_PER_LIST} more labels (see /models)")
    return lines


def feedback_label_lines(params: Mapping[str, Any] | None) -> list[str]:
    """New labels trained, merges, labels short of photos, rejected and pending proposals."""
    labels = _mapping(_mapping(params).get("feedback_labels"))
    if not labels:
        return []
    lines = []
    added = _mapping(labels.get("added"))
    if added:
        lines.append(
            "New labels trained: "
            + ", ".join(f"{label} ({plural(int(n), 'photo')})" for label, n in added.items())
        )
    merged = _mapping(labels.get("merged"))
    if merged:
        lines.append(
            "Merged: " + ", ".join(f"“{source}” → “{target}”" for source, target in merged.items())
        )
    minimum = labels.get("min_images")
    for label, n in list(_mapping(labels.get("short")).items())[:SHOWN_PER_LIST]:
        if isinstance(n, int) and isinstance(minimum, int):
            lines.append(
                f"“{label}” has {plural(n, 'photo')}: it needs {minimum - n} more to be trained "
                f"(at least {minimum})."
            )
    for label, n in list(_mapping(labels.get("rejected")).items())[:SHOWN_PER_LIST]:
        lines.append(f"{_corrections_name(n)} “{label}”: rejected, not trained.")
    for label, n in list(_mapping(labels.get("pending")).items())[:SHOWN_PER_LIST]:
        lines.append(f"{_corrections_name(n)} “{label}”, not yet accepted: /labels")
    return lines


def _corrections_name(count: Any) -> str:
    n = int(count) if isinstance(count, int) else 0
    return f"{n} correction names" if n == 1 else f"{n} corrections name"


def retrain_lines(metrics: Mapping[str, Any] | None, params: Mapping[str, Any] | None) -> str:
    """What a retrain's result message adds to the metrics: evidence and the labels' fate."""
    lines: Sequence[str] = [*holdout_lines(metrics), *feedback_label_lines(params)]
    return "\n".join(lines)
