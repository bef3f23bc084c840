"""The services handlers use, and the typed context that hands them over (no globals)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from telegram.ext import Application, CallbackContext, ExtBot

from bot.access import Refusals
from bot.albums import AlbumCollector
from bot.config import Settings
from bot.downloads import MEMORY_BUDGET_BYTES, Downloader, PhotoSlots
from bot.inbox import Inbox
from bot.keeping import Keeping
from bot.metrics import Metrics
from model.compiled import CompiledModel
from model.feedback import (
    LabelLog,
    PredictionLog,
    PrivacyLog,
    ReviewLog,
    SettingsStore,
    VerdictLog,
)
from model.pool import PoolStats
from model.registry import Registry
from model.types import Prediction

if TYPE_CHECKING:
    from bot.retrain import Retrain


class ImageClassifier(Protocol):
    """What the bot needs from the inference side: bytes in, a small result out."""

    model_name: str

    async def classify(self, image: bytes) -> Prediction:
        """Top-k labels for the image, or an `ImageRejected` / `ClassifierUnavailable`."""
        ...

    async def swap(
        self, model_path: Path, sha256: str | None = None, compiled: CompiledModel | None = None
    ) -> str:
        """Serve `model_path` (or its `compiled` form) from now on; the model name.
        `ModelLoadError` keeps the old model serving."""
        ...

    def stats(self) -> PoolStats:
        """Workers, queue and counters, for /readyz, /metrics and /stats."""
        ...

    def labels_for(self, model: str) -> Sequence[str] | None:
        """Every label `model` knows, in its output order, when known."""
        ...


@dataclass
class Tunables:
    """Settings admins change while the bot runs (persisted in the `SettingsStore`)."""

    confidence_threshold: float


class FeedbackBackend(PredictionLog, VerdictLog, PrivacyLog, ReviewLog, Protocol):
    """One log that serves every handler (SQLite does); only `Services.create` needs it."""

    @property
    def labels(self) -> LabelLog:
        """The proposed labels and the admins' decisions, in the same log."""
        ...


@dataclass
class RetrainSlot:
    """The one /retrain that may run at a time."""

    running: Retrain | None = None


@dataclass(frozen=True)
class Services:
    """Everything long-lived the handlers use, and all state they share; in `bot_data` once."""

    settings: Settings
    classifier: ImageClassifier
    # The feedback log, as each kind of handler uses it (one SQLite log implements them all).
    predictions: PredictionLog
    verdicts: VerdictLog
    privacy: PrivacyLog
    reviews: ReviewLog
    stored_settings: SettingsStore
    labels: LabelLog
    metrics: Metrics
    registry: Registry
    tunables: Tunables
    albums: AlbumCollector
    # Images held at once (downloading, queued, classified): as many as the pool's queue,
    # within a budget of bytes.
    photo_slots: PhotoSlots
    downloads: Downloader = field(default_factory=Downloader)
    keeping: Keeping = field(default_factory=Keeping)
    refusals: Refusals = field(default_factory=Refusals)
    retrain: RetrainSlot = field(default_factory=RetrainSlot)
    # Updates kept on disk until handled (a crash loses none); off: `Inbox.disabled()`.
    inbox: Inbox = field(default_factory=Inbox.disabled)
    started: float = field(default_factory=time.time)

    @classmethod
    def create(
        cls,
        settings: Settings,
        classifier: ImageClassifier,
        feedback: FeedbackBackend,
        stored_settings: SettingsStore,
        metrics: Metrics,
        registry: Registry,
        *,
        photo_slots: int,
        inbox: Inbox | None = None,
    ) -> Services:
        """Services with every feedback interface served by `feedback`, the tunables taken
        from the settings, and `photo_slots` images held at once (the pool's queue size),
        weighing `MEMORY_BUDGET_BYTES` together at most (or one file at the download limit)."""
        return cls(
            settings,
            classifier,
            feedback,
            feedback,
            feedback,
            feedback,
            stored_settings,
            feedback.labels,
            metrics,
            registry,
            Tunables(settings.confidence_threshold),
            AlbumCollector(settings.album_wait_s),
            PhotoSlots(photo_slots, max(settings.max_download_bytes, MEMORY_BUDGET_BYTES)),
            inbox=inbox or Inbox.disabled(),
        )


SERVICES_KEY = "services"


class Ctx(CallbackContext[ExtBot[Any], dict[Any, Any], dict[Any, Any], dict[Any, Any]]):
    """Callback context with typed access to the `Services`."""

    @property
    def services(self) -> Services:
        """The application's services."""
        services = self.bot_data[SERVICES_KEY]
        assert isinstance(services, Services)
        return services


BotApp = Application[ExtBot[Any], Ctx, dict[Any, Any], dict[Any, Any], dict[Any, Any], Any]
