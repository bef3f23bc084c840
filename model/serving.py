"""Which form of a model version the workers serve: its compiled ONNX form, or the learner on
fastai, by the `INFERENCE_BACKEND` setting and what this install can run.

The bot process uses this module (no torch, no fastai, no onnxruntime imported here).
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path

from model.cards import ModelCard, RegistryError
from model.compiled import CompiledModel, choose_form
from model.registry import Registry, learner_omitted
from model.worker import model_name

logger = logging.getLogger(__name__)

FULL_IMAGE_HINT = (
    "this install serves compiled versions only (no fastai/torch: the slim image); compile it "
    "in a full install (`python -m training compile VERSION`), then move it here with "
    "`python -m training bundle VERSION FILE` there and `python -m training import FILE` here"
)


def fastai_available() -> bool:
    """Whether this install can load fastai learners (the full install, `.[train]`)."""
    return all(importlib.util.find_spec(name) is not None for name in ("torch", "fastai"))


class NeedsFullInstall(RegistryError):
    """The version has no compiled form this install can serve, and fastai is not installed."""


@dataclass(frozen=True, slots=True)
class Served:
    """What to hand the pool for a version: the learner's checked file and sha256, and the
    compiled form to serve instead (None: serve the learner on fastai)."""

    path: Path
    sha256: str | None  # None only for MODEL_PATH: the pool hashes the file and logs it
    compiled: CompiledModel | None
    note: str | None = None  # why the choice differs from what INFERENCE_BACKEND asked for

    @property
    def backend(self) -> str:
        return self.compiled.backend if self.compiled is not None else "fastai"


def served_form(
    registry: Registry, card: ModelCard, backend: str, *, can_fastai: bool | None = None
) -> Served:
    """The form of `card` to serve for `backend`, every file's sha256 checked against the card.

    A compiled file that is missing or altered refuses the version (`IntegrityError`), as an
    altered learner does. Without fastai and without a compiled form: `NeedsFullInstall`.
    """
    can_fastai = fastai_available() if can_fastai is None else can_fastai
    record = card.compile_record
    form, note = choose_form(record, backend, fastai_ok=can_fastai)
    compiled = None
    if form is not None and record is not None and record.spec is not None:
        # A compiled file that is missing or altered refuses the version, as an altered
        # learner does: the model serving now keeps serving (IntegrityError).
        checked = registry.checked_compiled(card, form.kind)
        compiled = CompiledModel(
            backend=form.kind,
            path=checked.path,
            sha256=checked.sha256,
            spec=record.spec,
            name=model_name(registry.models_dir / card.version / card.file, card.sha256),
            labels=card.labels,
        )
    if compiled is None and not can_fastai:
        reason = note or "it has no compiled form"
        raise NeedsFullInstall(
            f"{card.version} cannot be served here: {reason}; {FULL_IMAGE_HINT}"
        )
    # The learner is checked too, whichever form serves: it is the version's source of truth,
    # and an altered one refuses the version (unless it was left out of a bundle).
    learner = _learner(registry, card, needed=compiled is None or not learner_omitted(card))
    return Served(learner[0], learner[1], compiled, note)


def _learner(registry: Registry, card: ModelCard, *, needed: bool) -> tuple[Path, str]:
    """The learner's file and sha256: checked when it will be loaded; else as the card says
    (a version imported without its learner serves its compiled form only)."""
    if needed:
        checked = registry.checked_model(card)
        return checked.path, checked.sha256
    return registry.models_dir / card.version / card.file, card.sha256
