"""`python -m training labels [add|merge|reject|undo]`: the operator's /labels.

The proposals are the same the bot's /labels shows (corrections naming no label of the active
model version); the decisions go into the same table, so the bot and the next fit see them at
once. An operator's decision replaces an earlier one (an admin's tap in the chat never does).
No torch here.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from model.feedback import LabelDecision, Proposal
    from model.registry import Registry

EXIT_ERROR = 2


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _counts(proposal: Proposal) -> str:
    return (
        f"{_plural(proposal.corrections, 'correction')}, {_plural(proposal.photos, 'photo')}, "
        f"{_plural(proposal.users, 'user')}"
    )


def _decision_text(decision: LabelDecision) -> str:
    who = "an operator" if decision.admin_id is None else f"admin {decision.admin_id}"
    when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(decision.created))
    if decision.decision == "merge":
        what = f"merged into {decision.target!r}"
    elif decision.decision == "add":
        what = f"added as {decision.label!r}"
    else:
        what = "rejected"
    return f"{what} (by {who}, {when} UTC)"


def _proposal_json(proposal: Proposal) -> dict[str, Any]:
    decision = proposal.decision
    return {
        "label": proposal.label,
        "id": proposal.id,
        "spellings": dict(proposal.spellings),
        "corrections": proposal.corrections,
        "photos": proposal.photos,
        "users": proposal.users,
        "close": list(proposal.close),
        "decision": None
        if decision is None
        else {
            "decision": decision.decision.value,
            "label": decision.label,
            "target": decision.target,
        },
    }


def known_labels(registry: Registry) -> tuple[str, tuple[str, ...]]:
    """The active version (its id) and its labels: what the bot's /labels counts as known."""
    from training.fit import ensure_default_registered

    ensure_default_registered(registry, export=False)
    active = registry.active() or registry.default()
    if active is None:
        return "no model version", ()
    return active.version, active.labels


def run_labels(
    data_dir: Path,
    registry: Registry,
    *,
    action: str | None,
    label: str | None,
    into: str | None,
    as_json: bool = False,
) -> int:
    """List the proposals (no `action`) or decide about `label`; the exit status."""
    from model.feedback import (
        FeedbackError,
        FeedbackStore,
        InvalidLabelDecision,
        MissingDatabase,
        UnknownLabel,
        label_key,
    )
    from model.registry import RegistryError

    try:
        version, known = known_labels(registry)
    except RegistryError as exc:
        print(f"labels: {exc}", file=sys.stderr)
        return EXIT_ERROR
    try:
        store = FeedbackStore.open(data_dir, create=False)
    except MissingDatabase as exc:
        print(
            f"labels: {exc}; the bot creates it when it starts (is --data-dir or DATA_DIR right?)",
            file=sys.stderr,
        )
        return EXIT_ERROR
    try:
        if action is None:
            return _list(store, version, known, as_json)
        assert label is not None
        table = store.labels
        if action == "undo":
            removed = table.undo(label)
            if removed is None:
                print(f"labels: there is no decision on {label!r} to undo", file=sys.stderr)
                return EXIT_ERROR
            print(f"{label!r} waits for a decision again (was {_decision_text(removed)}).")
            return 0
        before = table.decisions().get(label_key(label))
        outcome = table.decide(label, action, target=into, replace=True)
        decision = outcome.decision
        proposals = table.proposals(known)
        proposal = next(
            (p for p in (*proposals.pending, *proposals.decided) if p.key == decision.key), None
        )
        counted = f" ({_counts(proposal)})" if proposal is not None else ""
        if decision.decision == "add":
            print(
                f"Added {decision.label!r}{counted}: it trains as a label of its own at the next "
                "`fit --with-feedback` or /retrain."
            )
        elif decision.decision == "merge":
            print(f"Merged {decision.label!r} into {decision.target!r}{counted}.")
            target_key = label_key(decision.target or "")
            classes = {label_key(k) for k in known}
            added = {label_key(d.label) for d in table.decisions().values() if d.decision == "add"}
            if target_key not in classes | added:
                print(
                    f"Note: {decision.target!r} is not a label of {version} nor an added label; "
                    "its photos train once it is a folder of the training images, or added."
                )
        else:
            print(
                f"Rejected {decision.label!r}{counted}: its corrections stay in the log and are "
                "never trained on."
            )
        if before is not None and before != decision:
            print(f"(It replaces the earlier decision: {_decision_text(before)}.)")
        return 0
    except UnknownLabel as exc:
        print(f"labels: {exc}; `python -m training labels` lists them", file=sys.stderr)
        return EXIT_ERROR
    except (InvalidLabelDecision, FeedbackError) as exc:
        print(f"labels: {exc}", file=sys.stderr)
        return EXIT_ERROR
    finally:
        store.close()


def _list(store: Any, version: str, known: tuple[str, ...], as_json: bool) -> int:
    proposals = store.labels.proposals(known)
    decisions = store.labels.decisions()
    shown = {p.key for p in (*proposals.pending, *proposals.decided)}
    others = [d for key, d in decisions.items() if key not in shown]
    if as_json:
        print(
            json.dumps(
                {
                    "model_version": version,
                    "pending": [_proposal_json(p) for p in proposals.pending],
                    "decided": [_proposal_json(p) for p in proposals.decided],
                    "other_decisions": [
                        {"label": d.label, "decision": d.decision.value, "target": d.target}
                        for d in others
                    ],
                },
                indent=2,
                ensure_ascii=False,
            )
        )
        return 0
    if not proposals.pending:
        print(f"No new labels wait for a decision (every correction names a label of {version}")
        print("or has a decision).")
    else:
        print(f"New labels users typed that {version} does not know, waiting for a decision:")
        for p in proposals.pending:
            print(f"  {p.label!r}: {_counts(p)}")
            if len(p.spellings) > 1:
                spelled = ", ".join(f"{s!r} ({n})" for s, n in p.spellings)
                print(f"      spelled {spelled}")
            if p.close:
                print(f"      close to {', '.join(repr(c) for c in p.close)}")
    if proposals.decided:
        print("Decided:")
        for p in proposals.decided:
            assert p.decision is not None
            print(f"  {p.label!r}: {_counts(p)}; {_decision_text(p.decision)}")
    if others:
        print(f"Other decisions (labels {version} knows, or without corrections now):")
        for d in others:
            print(f"  {d.label!r}: {_decision_text(d)}")
    print(
        "Decide with `python -m training labels add LABEL`, `labels merge LABEL INTO`, "
        "`labels reject LABEL` (or `labels undo LABEL`); /labels in the bot does the same."
    )
    return 0
