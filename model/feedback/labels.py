"""Labels users typed that the model does not know: how they are spelled, grouped and decided.

A correction typed as "grass", "Grass " or "ｇｒａｓｓ" names one label: its key is the text in
Unicode NFKC, whitespace runs collapsed, case folded (`label_key`). Corrections whose key is
none of the model's labels are grouped by key into proposals, counted in corrections, photos
and distinct users, with close spellings (an edit or two apart: "gras", "grasss") named beside
them. Nothing becomes a class without an admin's decision, one per key:

    add     the label becomes a class of its own (named `class_name(label)`)
    merge   its corrections train as another label (a typo or a synonym)
    reject  its corrections stay in the log and are never trained on

`LabelBook` says what a correction trains as, given the classes there are and the decisions.
Everything here is pure; the table and its queries are in `labeltable`.
"""

from __future__ import annotations

import enum
import hashlib
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from model.feedback.records import FeedbackError

# What a user may type as a new label (the log itself accepts the longer MAX_LABEL_LENGTH,
# which the model's own labels may need).
MAX_TYPED_LABEL_LENGTH = 64
# A class name is a folder name while training: well below the usual 255-byte limit.
MAX_CLASS_NAME_BYTES = 200
# Hex digits of sha256(key) that name a proposal in callback data.
LABEL_ID_LENGTH = 12
CLOSE_SHOWN = 5


class LabelDecisionKind(enum.StrEnum):
    """An admin's decision on a proposed label; stored in SQLite as its value."""

    ADD = "add"
    MERGE = "merge"
    REJECT = "reject"


class LabelProblem(enum.Enum):
    """Why a typed label is refused before anything is stored."""

    EMPTY = "empty"
    TOO_LONG = "too long"
    NO_LETTERS = "no letters or digits"


class InvalidLabelDecision(FeedbackError, ValueError):
    """A decision with an unknown kind, a bad label or target, or a merge that loops."""


class UnknownLabel(FeedbackError, KeyError):
    """No correction names this label, and no decision was taken on it."""

    def __init__(self, label: str) -> None:
        super().__init__(label)
        self.label = label

    def __str__(self) -> str:
        return f"no correction names {self.label!r}"


@dataclass(frozen=True, slots=True)
class LabelDecision:
    """An admin's decision on the label with key `key`.

    `label`: for "add" the class name it trains as, else the label as it was proposed;
    `target`: for "merge" the label its corrections train as; `admin_id`: None when an operator
    decided with `python -m training labels`.
    """

    key: str
    label: str
    decision: LabelDecisionKind
    target: str | None
    admin_id: int | None
    created: float


@dataclass(frozen=True, slots=True)
class DecisionOutcome:
    """Whether `decide` stored the decision, and the decision that stands."""

    recorded: bool
    decision: LabelDecision


@dataclass(frozen=True, slots=True)
class Correction:
    """What one user's corrections say with one spelling: how many, on how many kept photos."""

    label: str
    user_id: int
    corrections: int
    photos: int


@dataclass(frozen=True, slots=True)
class Proposal:
    """Every correction whose label has one key, which is not a label the model knows.

    `label`: the spelling used most; `spellings`: each spelling with its corrections, most
    first; `photos`: of those, the photos kept (what can be trained on); `close`: labels an edit
    or two away (the model's, then other proposals).
    """

    key: str
    label: str
    spellings: tuple[tuple[str, int], ...]
    corrections: int
    photos: int
    users: int
    decision: LabelDecision | None
    close: tuple[str, ...]

    @property
    def id(self) -> str:
        """The short id buttons carry (see `label_id`)."""
        return label_id(self.key)


@dataclass(frozen=True, slots=True)
class LabelProposals:
    """Proposals waiting for a decision (close spellings next to each other), and decided ones."""

    pending: tuple[Proposal, ...]
    decided: tuple[Proposal, ...]

    def find(self, proposal_id: str) -> Proposal | None:
        """The proposal, pending or decided, whose `id` this is."""
        return next((p for p in (*self.pending, *self.decided) if p.id == proposal_id), None)


class Outcome(enum.StrEnum):
    """What a correction's label comes to in training."""

    CLASS = "class"  # one of the classes there are (a training folder), by its key
    ADDED = "added"  # an admin added it as a class
    MERGED = "merged"  # an admin merged it into a class (or an added label)
    REJECTED = "rejected"
    PENDING = "pending"  # no decision yet (or merged into a label that has none)


@dataclass(frozen=True, slots=True)
class Resolution:
    """`outcome`, and `label`: the class it trains as (class, added, merged), else the label
    that was rejected or still awaits a decision."""

    outcome: Outcome
    label: str

    @property
    def trains(self) -> bool:
        """Whether the correction is trained on."""
        return self.outcome in (Outcome.CLASS, Outcome.ADDED, Outcome.MERGED)


def display_label(text: str) -> str:
    """`text` as a label is shown and stored: Unicode NFKC, whitespace runs become one space."""
    return " ".join(unicodedata.normalize("NFKC", text).split())


def label_key(text: str) -> str:
    """What makes two spellings one label: `display_label`, case folded ("Grass " → "grass")."""
    return unicodedata.normalize("NFKC", display_label(text).casefold())


def label_id(key: str) -> str:
    """A short, stable id for a label key, for callback data (the label may not fit in it)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:LABEL_ID_LENGTH]


def typed_label_problem(text: str) -> LabelProblem | None:
    """Why `text` cannot be a typed label (None: it can): empty, too long, or no letters."""
    shown = display_label(text)
    if not shown:
        return LabelProblem.EMPTY
    if len(shown) > MAX_TYPED_LABEL_LENGTH:
        return LabelProblem.TOO_LONG
    # Punctuation, symbols (emoji among them), marks and spaces alone name nothing.
    if not any(unicodedata.category(char)[0] in "LN" for char in shown):
        return LabelProblem.NO_LETTERS
    return None


def class_name(label: str) -> str:
    """The class an added `label` trains as: a name that is also a safe folder name.

    Path separators become "-" and leading dots go ("a/b" → "a-b", "..x" → "x"); raises
    `InvalidLabelDecision` when nothing nameable is left or the name is too long.
    """
    name = display_label(label).replace("/", "-").replace("\\", "-")
    name = " ".join(name.lstrip(". ").split())
    if not name or not any(unicodedata.category(char)[0] in "LN" for char in name):
        raise InvalidLabelDecision(f"{label!r} has no letters or digits to name a class")
    if len(name.encode("utf-8")) > MAX_CLASS_NAME_BYTES:
        raise InvalidLabelDecision(f"{label!r} is too long to be a class; merge or reject it")
    return name


def edit_distance(a: str, b: str, limit: int) -> int:
    """Edits (insert, delete, substitute, swap two neighbours) from `a` to `b`; `limit` + 1 as
    soon as it is sure to be more than `limit`.

    Only the band of cells within `limit` of the diagonal is computed (any path outside it
    costs more than `limit`), and it stops at the first row whose band is all over `limit`.
    """
    big = limit + 1
    if abs(len(a) - len(b)) > limit:
        return big
    width = len(b)
    before: list[int] | None = None
    previous = [j if j <= limit else big for j in range(width + 1)]
    for i in range(1, len(a) + 1):
        low, high = max(1, i - limit), min(width, i + limit)
        current = [big] * (width + 1)
        current[0] = i if i <= limit else big
        char = a[i - 1]
        for j in range(low, high + 1):
            other = b[j - 1]
            cost = previous[j - 1] + (char != other)
            value = min(previous[j] + 1, current[j - 1] + 1, cost)
            if before is not None and j > 1 and char == b[j - 2] and a[i - 2] == other:
                value = min(value, before[j - 2] + 1)
            current[j] = min(value, big)
        if min(current[low - 1 : high + 1]) >= big:
            return big
        before, previous = previous, current
    return previous[width]


def are_close(a: str, b: str) -> bool:
    """Whether two label keys are different spellings of one word: one edit apart for words of
    up to 5 characters, two for longer ones; never for words under 3 characters."""
    if a == b:
        return False
    shorter = min(len(a), len(b))
    if shorter < 3:
        return False
    limit = 1 if shorter <= 5 else 2
    if abs(len(a) - len(b)) > limit or len(set(a) ^ set(b)) > 2 * limit:
        # One edit changes which characters occur by at most two: a cheap bound, first.
        return False
    return edit_distance(a, b, limit) <= limit


def group_proposals(
    corrections: Iterable[Correction],
    known: Iterable[str],
    decisions: Mapping[str, LabelDecision],
) -> LabelProposals:
    """The proposals among `corrections`: those whose key is none of the `known` labels'.

    Pending proposals are ordered so that close spellings stand together: groups of close
    ones, the group with the most corrections first, each group most corrections first.
    """
    known_by_key: dict[str, str] = {}
    for label in known:
        known_by_key.setdefault(label_key(label), label)
    spellings: dict[str, Counter[str]] = {}
    photos: Counter[str] = Counter()
    users: dict[str, set[int]] = {}
    for correction in corrections:
        key = label_key(correction.label)
        if not key or key in known_by_key:
            continue
        spellings.setdefault(key, Counter())[display_label(correction.label)] += (
            correction.corrections
        )
        photos[key] += correction.photos
        users.setdefault(key, set()).add(correction.user_id)
    keys = sorted(spellings)
    shown = {key: _most_used(spellings[key]) for key in keys}
    near: dict[str, list[str]] = {key: [] for key in keys}
    for i, key in enumerate(keys):
        for other in keys[i + 1 :]:
            if are_close(key, other):
                near[key].append(other)
                near[other].append(key)
    proposals = {}
    for key in keys:
        near_known = [label for k, label in known_by_key.items() if are_close(key, k)]
        near_proposed = [shown[k] for k in sorted(near[key])]
        proposals[key] = Proposal(
            key=key,
            label=shown[key],
            spellings=tuple(
                sorted(
                    spellings[key].items(),
                    key=lambda item: (-item[1], item[0].casefold(), item[0]),
                )
            ),
            corrections=sum(spellings[key].values()),
            photos=photos[key],
            users=len(users[key]),
            decision=decisions.get(key),
            close=tuple(sorted(near_known, key=str.casefold) + near_proposed)[:CLOSE_SHOWN],
        )
    pending = [proposals[key] for key in keys if key not in decisions]
    decided = sorted(
        (proposals[key] for key in keys if key in decisions),
        key=lambda p: (-p.corrections, p.key),
    )
    return LabelProposals(tuple(_close_together(pending, near)), tuple(decided))


def _most_used(spellings: Counter[str]) -> str:
    # The most used spelling; among equals the lower-case one ("grass" over "Grass").
    return min(spellings, key=lambda s: (-spellings[s], s != s.lower(), s))


def _close_together(
    proposals: Sequence[Proposal], near: Mapping[str, Sequence[str]]
) -> list[Proposal]:
    """`proposals` with close spellings (`near`, by key) grouped, by a union-find."""
    index = {p.key: i for i, p in enumerate(proposals)}
    parent = list(range(len(proposals)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, proposal in enumerate(proposals):
        for other in near.get(proposal.key, ()):
            if other in index:
                parent[root(index[other])] = root(i)
    groups: dict[int, list[Proposal]] = {}
    for i, proposal in enumerate(proposals):
        groups.setdefault(root(i), []).append(proposal)

    def by_size(p: Proposal) -> tuple[int, str]:
        return (-p.corrections, p.key)

    ordered = sorted(groups.values(), key=lambda g: min(by_size(p) for p in g))
    return [p for group in ordered for p in sorted(group, key=by_size)]


class LabelBook:
    """What a correction's label trains as, given the `classes` there are and the decisions.

    A label that is a class (by its key: "Latte" is the class "latte") trains as that class;
    otherwise its decision says: added, merged (followed to the label it ends at), rejected; no
    decision: pending.
    """

    def __init__(self, classes: Iterable[str], decisions: Mapping[str, LabelDecision]) -> None:
        self._exact = set(classes)
        self._classes: dict[str, str] = {}
        for label in sorted(self._exact):
            self._classes.setdefault(label_key(label), label)
        self._decisions = dict(decisions)

    def resolve(self, label: str) -> Resolution:
        """What `label` comes to in training."""
        if label in self._exact:
            return Resolution(Outcome.CLASS, label)
        key, current, merged = label_key(label), label, False
        seen: set[str] = set()
        while key not in seen:
            seen.add(key)
            if key in self._classes:
                return Resolution(Outcome.MERGED if merged else Outcome.CLASS, self._classes[key])
            decision = self._decisions.get(key)
            if decision is None:
                return Resolution(Outcome.PENDING, current)
            if decision.decision == LabelDecisionKind.ADD:
                # Its class name may be a class already ("a/b" is added as "a-b").
                label = self._classes.get(label_key(decision.label), decision.label)
                return Resolution(Outcome.MERGED if merged else Outcome.ADDED, label)
            if decision.decision == LabelDecisionKind.REJECT:
                return Resolution(Outcome.REJECTED, decision.label)
            assert decision.target is not None  # the table's CHECK
            key, current, merged = label_key(decision.target), decision.target, True
        # A loop of merges (refused when written, but hand-edited databases exist).
        return Resolution(Outcome.PENDING, current)
