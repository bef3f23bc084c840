"""Small, picklable values that cross the process boundary between the bot and the workers."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class LabelScore:
    """One candidate label and the probability the model gives it."""

    label: str
    probability: float


@dataclass(frozen=True, slots=True)
class Prediction:
    """The top-k labels for one image, best first, and which model produced them."""

    scores: tuple[LabelScore, ...]
    model: str
    width: int
    height: int

    @property
    def top(self) -> LabelScore:
        """The most probable label."""
        return self.scores[0]


class ClassifierError(Exception):
    """Base class for everything `Classifier.classify` raises on purpose."""


class ClassifierUnavailable(ClassifierError):
    """The workers cannot answer right now (not started, crashed twice, timed out)."""


class ClassifierBusy(ClassifierError):
    """Too many requests are waiting (or this one waited past its deadline): try again soon."""


class ImageRejected(ClassifierError):
    """The bytes are not an image we can classify; subclasses say why."""


class EmptyFile(ImageRejected):
    """Zero bytes."""


class NotAnImage(ImageRejected):
    """The bytes are not in an image format we read; `kind` names what they look like."""

    def __init__(self, kind: str = "") -> None:
        super().__init__(kind)
        self.kind = kind


class UnsupportedImage(ImageRejected):
    """An image format we recognise but cannot read yet (HEIC, AVIF, SVG, ...)."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


class CorruptImage(ImageRejected):
    """An image format we read, but the data is truncated or damaged."""

    def __init__(self, detail: str = "") -> None:
        super().__init__(detail)
        self.detail = detail


class TooManyPixels(ImageRejected):
    """The image would decode to more pixels than allowed (a decompression bomb guard)."""

    def __init__(self, width: int, height: int, limit: int) -> None:
        super().__init__(width, height, limit)
        self.width = width
        self.height = height
        self.limit = limit
