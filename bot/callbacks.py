"""Every button's callback data: one typed class per kind of button, built and parsed here.

Callback data is at most 64 bytes, so it carries only ids and a short action; everything else
is read back from the feedback log or the registry, which also refuse forged or stale ids.
Each class has a prefix, `encode()` and `parse()`; `app.py` registers its handlers with each
class's `PATTERN`, so that a handler only ever sees data its class parses.

  v:<prediction>:<action>[:<n>]   a verdict button under a prediction (see `VerdictAction`)
  f:<user>:y | f:<user>:n         the /forget confirmation
  d:<offset>                      a page of /disputes
  r:<prediction>:<action>[:<n>]   a /review decision (see `ReviewAction`)
  m:use:<version> | m:keep        after a /retrain
  l:<label>:<action>[:<arg>]      a /labels decision (see `LabelAction`); <label> is a label
                                  id (a hash prefix of its key: the label itself may not fit)
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import ClassVar

# Telegram's limit on callback_data.
MAX_BYTES = 64
_ID = r"[A-Za-z0-9_-]{1,32}"


class VerdictAction(enum.StrEnum):
    """What a tap on a button under a prediction asks for."""

    RIGHT = "r"
    WRONG = "w"  # ask for the right label
    CANDIDATE = "c"  # the n-th candidate of the prediction
    PAGE = "p"  # browse the model's labels, page n
    LABEL = "l"  # the model's label number n
    TYPE = "t"  # "Something else…": type it
    UNSURE = "u"
    BACK = "b"  # back to Right/Wrong
    NOOP = "x"  # the page counter


_NUMBERED_VERDICTS = frozenset({VerdictAction.CANDIDATE, VerdictAction.PAGE, VerdictAction.LABEL})


def _check(data: str) -> str:
    if len(data.encode("utf-8")) > MAX_BYTES:
        raise ValueError(f"callback data over {MAX_BYTES} bytes: {data!r}")
    return data


@dataclass(frozen=True, slots=True)
class VerdictButton:
    """A button under a prediction: which prediction, what to do, and its number argument."""

    prediction_id: str
    action: VerdictAction
    number: int = 0

    PATTERN: ClassVar[re.Pattern[str]] = re.compile(
        rf"^v:({_ID}):(?:([rwtubx])|([cpl]):(\d{{1,6}}))$"
    )

    def encode(self) -> str:
        """The callback data for this button."""
        if self.action in _NUMBERED_VERDICTS:
            return _check(f"v:{self.prediction_id}:{self.action}:{self.number}")
        return _check(f"v:{self.prediction_id}:{self.action}")

    @classmethod
    def parse(cls, data: str) -> VerdictButton | None:
        """The button behind `data`, or None when it is not well-formed (forged or foreign)."""
        match = cls.PATTERN.match(data)
        if match is None:
            return None
        prediction_id, plain, numbered, number = match.groups()
        if plain is not None:
            return cls(prediction_id, VerdictAction(plain))
        return cls(prediction_id, VerdictAction(numbered), int(number))


@dataclass(frozen=True, slots=True)
class ForgetButton:
    """The /forget confirmation: whose data, and whether they confirmed."""

    user_id: int
    confirmed: bool

    PATTERN: ClassVar[re.Pattern[str]] = re.compile(r"^f:(\d{1,20}):([yn])$")

    def encode(self) -> str:
        """The callback data for this button."""
        return _check(f"f:{self.user_id}:{'y' if self.confirmed else 'n'}")

    @classmethod
    def parse(cls, data: str) -> ForgetButton | None:
        """The button behind `data`, or None."""
        match = cls.PATTERN.match(data)
        if match is None:
            return None
        return cls(int(match.group(1)), match.group(2) == "y")


@dataclass(frozen=True, slots=True)
class DisputesPage:
    """Newer/Older under /disputes: the offset of the page to show."""

    offset: int

    PATTERN: ClassVar[re.Pattern[str]] = re.compile(r"^d:(\d{1,9})$")

    def encode(self) -> str:
        """The callback data for this button."""
        return _check(f"d:{max(0, self.offset)}")

    @classmethod
    def parse(cls, data: str) -> DisputesPage | None:
        """The button behind `data`, or None."""
        match = cls.PATTERN.match(data)
        return None if match is None else cls(int(match.group(1)))


class ReviewAction(enum.StrEnum):
    """A decision button in /review."""

    CONFIRM = "c"
    RELABEL = "s"  # as the prediction's n-th candidate
    DISCARD = "d"
    STOP = "q"


@dataclass(frozen=True, slots=True)
class ReviewButton:
    """A /review decision on one prediction."""

    prediction_id: str
    action: ReviewAction
    number: int = 0

    PATTERN: ClassVar[re.Pattern[str]] = re.compile(rf"^r:({_ID}):(?:([cdq])|(s):(\d{{1,3}}))$")

    def encode(self) -> str:
        """The callback data for this button."""
        if self.action is ReviewAction.RELABEL:
            return _check(f"r:{self.prediction_id}:{self.action}:{self.number}")
        return _check(f"r:{self.prediction_id}:{self.action}")

    @classmethod
    def parse(cls, data: str) -> ReviewButton | None:
        """The button behind `data`, or None."""
        match = cls.PATTERN.match(data)
        if match is None:
            return None
        prediction_id, plain, numbered, number = match.groups()
        if plain is not None:
            return cls(prediction_id, ReviewAction(plain))
        return cls(prediction_id, ReviewAction(numbered), int(number))


@dataclass(frozen=True, slots=True)
class ModelButton:
    """[Use it] (with the version) or [Keep current] (version None) after a /retrain."""

    version: str | None

    # Registry versions are short ("v3"); anything printable up to the byte limit parses.
    PATTERN: ClassVar[re.Pattern[str]] = re.compile(r"^m:(?:use:([\w.@+-]{1,58})|(keep))$")

    def encode(self) -> str:
        """The callback data for this button."""
        return _check("m:keep" if self.version is None else f"m:use:{self.version}")

    @classmethod
    def parse(cls, data: str) -> ModelButton | None:
        """The button behind `data`, or None."""
        match = cls.PATTERN.match(data)
        if match is None:
            return None
        return cls(match.group(1))


class LabelAction(enum.StrEnum):
    """A button under a proposed label in /labels."""

    ADD = "a"
    REJECT = "r"
    MERGE = "m"  # into the label whose id is the argument
    PAGE = "p"  # the labels to merge into, page n
    UNDO = "u"  # back to pending after a decision
    BACK = "b"  # back to the proposal's own buttons
    NOOP = "x"  # the page counter


_LABEL_ID = r"[0-9a-f]{12}"


@dataclass(frozen=True, slots=True)
class LabelButton:
    """A /labels decision on a proposed label: its id, the action, and the action's argument
    (the id of the label to merge into, or a page number)."""

    label_id: str
    action: LabelAction
    target_id: str = ""
    page: int = 0

    PATTERN: ClassVar[re.Pattern[str]] = re.compile(
        rf"^l:({_LABEL_ID}):(?:([arubx])|m:({_LABEL_ID})|p:(\d{{1,4}}))$"
    )

    def encode(self) -> str:
        """The callback data for this button."""
        if self.action is LabelAction.MERGE:
            return _check(f"l:{self.label_id}:m:{self.target_id}")
        if self.action is LabelAction.PAGE:
            return _check(f"l:{self.label_id}:p:{self.page}")
        return _check(f"l:{self.label_id}:{self.action}")

    @classmethod
    def parse(cls, data: str) -> LabelButton | None:
        """The button behind `data`, or None."""
        match = cls.PATTERN.match(data)
        if match is None:
            return None
        label_id, plain, target, page = match.groups()
        if plain is not None:
            return cls(label_id, LabelAction(plain))
        if target is not None:
            return cls(label_id, LabelAction.MERGE, target_id=target)
        return cls(label_id, LabelAction.PAGE, page=int(page))
