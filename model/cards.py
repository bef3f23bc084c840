"""A model version's card: what it is (labels, architecture, metrics, sha256, ...).

Stored as ``card.json`` in the version's folder (see model/registry.py for the layout); read
strictly, so that a damaged or hand-edited card is refused with the field it got wrong.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from model.compiled import CompiledFormError, CompileRecord

CARD_NAME = "card.json"
MODEL_FILE = "model.pkl"
CARD_FORMAT = 1
SOURCE_DEFAULT = "default"
SOURCE_FIT = "fit"


class RegistryError(Exception):
    """The registry cannot do what was asked; the message says why, for people."""


class UnknownVersion(RegistryError):
    """No registered version has that name."""


class IntegrityError(RegistryError):
    """A model file is missing or does not match the sha256 its card recorded."""


@dataclass(frozen=True)
class ModelCard:
    """What a registered model version is. Stored as ``card.json`` beside the model file."""

    version: str
    number: int
    created: str  # ISO 8601, UTC
    source: str  # "default" (the bundled ImageNet learner), "fit", or what registered it
    architecture: str
    labels: tuple[str, ...]
    image_size: int | None
    sha256: str
    file_size: int
    file: str = MODEL_FILE
    metrics: dict[str, Any] | None = None
    dataset_fingerprint: str | None = None
    training_images: int | None = None  # images the fit used: training plus validation split
    feedback_images: int | None = None  # of which added from the feedback log
    parent: str | None = None  # the version that was active when this one was made
    params: dict[str, Any] = field(default_factory=dict)
    artifacts: dict[str, str] = field(default_factory=dict)  # kind → file name in the folder
    # What compiling the learner found (model/compiled.py's CompileRecord as JSON); None when
    # the version was never compiled.
    compiled: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # unknown keys, kept as they were

    @property
    def compile_record(self) -> CompileRecord | None:
        """The compile record, read strictly; None when never compiled or unreadable (a
        damaged record makes the version serve on fastai, it does not refuse it)."""
        if self.compiled is None:
            return None
        try:
            return CompileRecord.from_json(self.compiled)
        except CompiledFormError:
            return None

    @property
    def is_default(self) -> bool:
        """Whether this is the bundled ImageNet learner."""
        return self.source == SOURCE_DEFAULT

    def to_json(self) -> dict[str, Any]:
        """The card as a JSON object."""
        data: dict[str, Any] = dict(self.extra)
        data.update(
            {
                "card_format": CARD_FORMAT,
                "version": self.version,
                "number": self.number,
                "created": self.created,
                "source": self.source,
                "architecture": self.architecture,
                "label_count": len(self.labels),
                "labels": list(self.labels),
                "image_size": self.image_size,
                "file": self.file,
                "sha256": self.sha256,
                "file_size": self.file_size,
                "metrics": self.metrics,
                "dataset_fingerprint": self.dataset_fingerprint,
                "training_images": self.training_images,
                "feedback_images": self.feedback_images,
                "parent": self.parent,
                "params": self.params,
                "artifacts": self.artifacts,
                "compiled": self.compiled,
            }
        )
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ModelCard:
        """Read a card; `RegistryError` names the first field that is missing or wrong."""
        known = {
            "card_format",
            "version",
            "number",
            "created",
            "source",
            "architecture",
            "label_count",
            "labels",
            "image_size",
            "file",
            "sha256",
            "file_size",
            "metrics",
            "dataset_fingerprint",
            "training_images",
            "feedback_images",
            "parent",
            "params",
            "artifacts",
            "compiled",
        }
        try:
            labels = data["labels"]
            if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
                raise TypeError("labels must be a list of strings")
            card = cls(
                version=_typed(data, "version", str),
                number=_typed(data, "number", int),
                created=_typed(data, "created", str),
                source=_typed(data, "source", str),
                architecture=_typed(data, "architecture", str),
                labels=tuple(labels),
                image_size=_optional(data, "image_size", int),
                sha256=_typed(data, "sha256", str),
                file_size=_typed(data, "file_size", int),
                file=_typed(data, "file", str),
                metrics=_optional(data, "metrics", dict),
                dataset_fingerprint=_optional(data, "dataset_fingerprint", str),
                training_images=_optional(data, "training_images", int),
                feedback_images=_optional(data, "feedback_images", int),
                parent=_optional(data, "parent", str),
                params=_optional(data, "params", dict) or {},
                artifacts=_optional(data, "artifacts", dict) or {},
                compiled=_optional(data, "compiled", dict),
                extra={k: v for k, v in data.items() if k not in known},
            )
        except KeyError as exc:
            raise RegistryError(f"the card has no {exc.args[0]!r}") from None
        except TypeError as exc:
            raise RegistryError(f"the card is malformed: {exc}") from None
        if not re.fullmatch(r"[0-9a-f]{64}", card.sha256):
            raise RegistryError("the card's sha256 is not a hex digest")
        if Path(card.file).name != card.file or card.file in ("", ".", ".."):
            raise RegistryError(f"the card's file name {card.file!r} is not a plain name")
        return card


def _typed(data: Mapping[str, Any], key: str, kind: type) -> Any:
    value = data[key]
    # bool is an int to Python; a card saying `"number": true` is still wrong.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise TypeError(f"{key} must be {kind.__name__}, not {type(value).__name__}")
    return value


def _optional(data: Mapping[str, Any], key: str, kind: type) -> Any:
    if data.get(key) is None:
        return None
    return _typed(data, key, kind)
